"use strict";
/**
 * Benchmark: what the audit sinks cost the credential exchange (issue 14: "the exchange cost with
 * one file sink and one http sink against none, ratio in one run").
 *
 * One process run measures three broker configurations side by side, interleaved round by
 * round so that load from elsewhere on the machine falls on all three alike:
 *
 *   none   no audit sink
 *   file   one file sink (JSON lines, fsync'ed per batch, 100 MB rotation)
 *   http   one http sink (format json) to a receiver child process that drains each POST and
 *          answers 204
 *
 * Each round starts a fresh redis-server and, per configuration, a `jitbroker serve` child (API +
 * worker: the sinks run in the worker part, so their CPU is the broker's), then runs the same
 * closed-loop load as benchmark 1 (exchange.js: CONCURRENCY clients on keep-alive connections,
 * POST /v1/credentials with a new task id each, jwt backend) for WARMUP s + DURATION s, and
 * records exchanges per second, the broker's CPU per exchange (user + system from /proc), the
 * latency percentiles, and how far the sink was behind at the end of the window (events not yet
 * confirmed, from src/audit/retention.ts) and after a 10 s drain.
 *
 * Usage: node scripts/bench/sinks.js [--rounds 3] [--duration 5] [--warmup 2] [--concurrency 50]
 * Prints one RESULT line per configuration and round (bench "sinks"), and a summary on stderr.
 */
const fs = require("node:fs");
const path = require("node:path");
const { spawn } = require("node:child_process");
const L = require("./lib");

const argv = process.argv.slice(2);
const ROUNDS = L.numArg(argv, "rounds", 3);
const DURATION = L.numArg(argv, "duration", 5) * 1000;
const WARMUP = L.numArg(argv, "warmup", 2) * 1000;
const CONCURRENCY = L.numArg(argv, "concurrency", 50);
const CONFIGS = ["none", "file", "http"];

/** The http sink's receiver, as a child process (its CPU is not the broker's). */
async function spawnReceiver(port) {
  const code = `
    const http = require("node:http");
    const s = http.createServer((req, res) => {
      if (req.method === "GET") { res.writeHead(200).end("ok"); return; }
      req.resume();
      req.on("end", () => res.writeHead(204).end());
    });
    s.listen(${port}, "127.0.0.1");
    process.on("SIGTERM", () => { s.closeAllConnections(); s.close(() => process.exit(0)); });
  `;
  const child = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "ignore", "inherit"] });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    const ok = await fetch(url).then((r) => r.ok, () => false);
    if (ok) break;
    await L.sleep(50);
  }
  return {
    url: `${url}/ingest`,
    pid: child.pid,
    stop: () =>
      new Promise((r) => {
        if (child.exitCode !== null) return r();
        child.once("exit", () => r());
        child.kill("SIGTERM");
      }),
  };
}

async function load(url, tokens, runId, watch) {
  const port = Number(new URL(url).port);
  const conns = Array.from({ length: CONCURRENCY }, () => L.connection(port));
  await Promise.all(conns.map((c) => c.ready));
  const start = performance.now();
  const measureFrom = start + WARMUP;
  const end = measureFrom + DURATION;
  let before;
  let after;
  const t1 = setTimeout(() => void L.snapshot(watch).then((v) => (before = v)), WARMUP);
  const t2 = setTimeout(() => void L.snapshot(watch).then((v) => (after = v)), WARMUP + DURATION);
  const lat = [];
  let ok = 0;
  let bad = 0;
  let seq = 0;
  async function client(lane) {
    const conn = conns[lane];
    while (performance.now() < end) {
      const payload = Buffer.from(JSON.stringify({ role: "orders-read", task: { id: `sinks-${runId}-${lane}-${seq++}` } }));
      const bytes = L.requestBytes("POST", "/v1/credentials", { authorization: `Bearer ${tokens[lane]}`, "content-type": "application/json", "content-length": payload.length }, payload);
      const t0 = performance.now();
      const status = await conn.send(bytes).catch(() => "error");
      const tEnd = performance.now();
      if (tEnd >= measureFrom && tEnd <= end) {
        if (status === 201) {
          ok++;
          lat.push(tEnd - t0);
        } else bad++;
      }
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, (_, i) => client(i)));
  for (const c of conns) c.close();
  clearTimeout(t1);
  clearTimeout(t2);
  while (!after) await L.sleep(10);
  lat.sort((a, b) => a - b);
  const cost = L.costPerRequest(before, after, ok);
  return { rps: ok / (DURATION / 1000), ok, errors: bad, cpu_ms_broker: cost?.cpu_ms.server ?? null, cpu_ms_redis: cost?.cpu_ms.redis ?? null, p50_ms: L.percentile(lat, 50), p99_ms: L.percentile(lat, 99) };
}

async function backlog(redisUrl, prefix, sink) {
  const { createAuditBacklog } = require(path.join(L.ROOT, "dist/audit/retention.js"));
  const { createKeyspace } = require(path.join(L.ROOT, "dist/redis/keys.js"));
  const r = L.redisClient(redisUrl);
  try {
    return (await createAuditBacklog(r, createKeyspace(prefix), { sinks: [sink], max: Number.MAX_SAFE_INTEGER, start: false }).check()).events;
  } finally {
    r.disconnect();
  }
}

async function measure(name, round) {
  const dir = L.tmpdir(`sinks-${name}`);
  const redis = await L.startRedis();
  const issuer = await L.createIssuer(dir);
  const port = await L.freePort();
  const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port, quota: 0, issuer });
  let receiver;
  if (name === "file") cfg.audit = { sinks: [{ type: "file", name: "bench", path: path.join(dir, "audit.jsonl"), max_size: "100MB", keep: 3 }] };
  if (name === "http") {
    receiver = await spawnReceiver(await L.freePort());
    cfg.audit = { sinks: [{ type: "http", name: "bench", url: receiver.url, format: "json" }] };
  }
  let broker;
  try {
    broker = await L.spawnBroker(dir, cfg);
    const tokens = await Promise.all(Array.from({ length: CONCURRENCY }, (_, i) => issuer.token(L.agentId(i % L.AGENTS))));
    const r = await load(broker.url, tokens, `${name}${round}${Date.now().toString(36)}`, { procs: { server: broker.pid, redis: redis.pid, loadgen: process.pid } });
    const out = { config: name, round, ...r };
    if (name !== "none") {
      out.sink_backlog_at_end = await backlog(redis.url, cfg.redis.prefix, "bench");
      await L.sleep(10_000);
      out.sink_backlog_after_10s = await backlog(redis.url, cfg.redis.prefix, "bench");
    }
    if (name === "file") out.file_bytes = fs.statSync(path.join(dir, "audit.jsonl")).size;
    if (broker.crashed()) throw new Error("broker crashed");
    return out;
  } finally {
    await broker?.stop();
    await receiver?.stop();
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const rows = [];
  for (let round = 1; round <= ROUNDS; round++) {
    for (const name of CONFIGS) {
      const r = await measure(name, round);
      rows.push(r);
      L.emit("sinks", { concurrency: CONCURRENCY, duration_s: DURATION / 1000, warmup_s: WARMUP / 1000, ...r });
      process.stderr.write(`round ${round} ${name}: ${r.rps.toFixed(0)} req/s, broker ${r.cpu_ms_broker?.toFixed(3)} ms CPU/exchange, p50 ${r.p50_ms.toFixed(1)} ms, p99 ${r.p99_ms.toFixed(1)} ms${r.sink_backlog_at_end !== undefined ? `, sink behind ${r.sink_backlog_at_end} at end, ${r.sink_backlog_after_10s} after 10 s` : ""}\n`);
    }
  }
  const med = (name, k) => L.median(rows.filter((r) => r.config === name).map((r) => r[k]));
  const base = { rps: med("none", "rps"), cpu: med("none", "cpu_ms_broker") };
  for (const name of CONFIGS) {
    const rps = med(name, "rps");
    const cpu = med(name, "cpu_ms_broker");
    process.stderr.write(`median ${name}: ${rps.toFixed(0)} req/s (${((rps / base.rps) * 100).toFixed(0)} % of none), broker ${cpu.toFixed(3)} ms CPU/exchange (${((cpu / base.cpu) * 100).toFixed(0)} % of none), p50 ${med(name, "p50_ms").toFixed(1)} ms, p99 ${med(name, "p99_ms").toFixed(1)} ms\n`);
  }
}

L.runMain(main);
