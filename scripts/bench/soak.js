"use strict";
/**
 * Soak: sustained credential exchanges against one `jitbroker serve` child process, to show the
 * runtime survives long load (the V8 deoptimizer crash seen on Node 20, docs/BENCHMARKS.md) and
 * does not leak.
 *
 * A private redis-server, the broker started exactly as users start it (`node dist/cli/main.js
 * serve`, no extra V8 flags unless --node-args), 50 closed-loop clients on their own keep-alive
 * connections, each POSTing /v1/credentials (jwt backend, role short-read: 30 s leases, so the
 * worker expires and revokes leases all along) with a new task id every time. Every tenth
 * exchange of a client is followed by completing its task, so both revocation paths run.
 *
 * Every --interval seconds one line: exchanges/s, statuses other than 201, latency p50/p99,
 * broker RSS and heap, event-loop delay p99 (prom-client's nodejs_eventloop_lag_p99_seconds
 * from /metrics, over the interval), active leases. At the end a RESULT line with the whole run
 * (crash or not, RSS first/last/max, event-loop p99 median/max).
 *
 * Usage: node scripts/bench/soak.js [--minutes 20] [--concurrency 50] [--rate 0 (req/s cap for
 *        all clients together; 0 = as fast as it goes)] [--interval 30] [--node-args "--flag ..."]
 * Exit status: 0 survived, 3 the broker died (its log is kept, its signal and last lines printed).
 */
const fs = require("node:fs");
const L = require("./lib");

const argv = process.argv.slice(2);
const MINUTES = L.numArg(argv, "minutes", 20);
const CONCURRENCY = L.numArg(argv, "concurrency", 50);
const RATE = L.numArg(argv, "rate", 0);
const INTERVAL = L.numArg(argv, "interval", 30) * 1000;
const NODE_ARGS = (L.strArg(argv, "node-args") ?? "").split(/\s+/).filter(Boolean);

function rssOf(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

async function metric(url, names) {
  const res = await fetch(`${url}/metrics`).catch(() => null);
  if (!res || !res.ok) return {};
  const text = await res.text();
  const out = {};
  for (const n of names) {
    const m = new RegExp(`^${n.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} ([0-9.eE+-]+)$`, "m").exec(text);
    if (m) out[n] = Number(m[1]);
  }
  return out;
}

const mb = (b) => (b === null || b === undefined ? "?" : `${(b / 1048576).toFixed(1)} MB`);

async function main() {
  const dir = L.tmpdir("soak");
  const redis = await L.startRedis({ appendonly: false });
  const issuer = await L.createIssuer(dir);
  const port = await L.freePort();
  const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port, quota: 0, issuer });
  const broker = await L.spawnBroker(dir, cfg, { logLevel: "warn", nodeArgs: NODE_ARGS });
  const signTokens = () => Promise.all(Array.from({ length: CONCURRENCY }, (_, i) => issuer.token(L.agentId(i % L.AGENTS))));
  let tokens = await signTokens();
  // Workload tokens live 50 minutes; sign new ones every 10 so a long soak never presents an expired one.
  const resign = setInterval(() => void signTokens().then((t) => (tokens = t)), 600_000);

  const runId = Date.now().toString(36);
  const started = performance.now();
  const end = started + MINUTES * 60_000;
  const perClientGapMs = RATE > 0 ? (1000 * CONCURRENCY) / RATE : 0;
  let lat = [];
  let ok = 0;
  let completes = 0;
  let other = {};
  const samples = [];
  let died = null;
  broker.exited.then((e) => {
    if (broker.crashed()) died = e;
  });

  const portNo = Number(new URL(broker.url).port);
  async function client(lane) {
    let conn = L.connection(portNo);
    await conn.ready;
    let seq = 0;
    while (performance.now() < end && !died) {
      const t0 = performance.now();
      const task = `soak-${runId}-${lane}-${seq++}`;
      const payload = Buffer.from(JSON.stringify({ role: "short-read", task: { id: task } }));
      const headers = { authorization: `Bearer ${tokens[lane]}`, "content-type": "application/json", "content-length": payload.length };
      let status;
      try {
        status = await conn.send(L.requestBytes("POST", "/v1/credentials", headers, payload));
        if (status === 201 && seq % 10 === 0) {
          const s = await conn.send(L.requestBytes("POST", `/v1/tasks/${task}/complete`, { authorization: `Bearer ${tokens[lane]}`, "content-length": 0 }));
          if (s === 200) completes++;
          else other[`complete ${s}`] = (other[`complete ${s}`] ?? 0) + 1;
        }
      } catch (e) {
        status = `error:${e.code ?? e.message}`;
        conn.close();
        if (died) return;
        await L.sleep(200);
        conn = L.connection(portNo);
        await conn.ready.catch(() => undefined);
      }
      const t1 = performance.now();
      if (status === 201) {
        ok++;
        lat.push(t1 - t0);
      } else other[status] = (other[status] ?? 0) + 1;
      if (perClientGapMs > 0) {
        const wait = perClientGapMs - (performance.now() - t0);
        if (wait > 0) await L.sleep(wait);
      }
    }
    conn.close();
  }

  async function sampler() {
    let last = performance.now();
    while (performance.now() < end && !died) {
      await L.sleep(Math.min(INTERVAL, Math.max(0, end - performance.now())));
      if (died) break;
      const now = performance.now();
      // Take this interval's numbers before awaiting anything: clients keep pushing meanwhile.
      const l = lat.sort((a, b) => a - b);
      const nOk = ok;
      const nCompletes = completes;
      const nOther = other;
      lat = [];
      ok = 0;
      completes = 0;
      other = {};
      const m = await metric(broker.url, ["jitbroker_nodejs_eventloop_lag_p99_seconds", "jitbroker_nodejs_heap_size_used_bytes", "jitbroker_leases{state=\"active\"}"]);
      const s = {
        t_min: Number(((now - started) / 60_000).toFixed(2)),
        rps: Math.round((nOk * 1000) / (now - last)),
        p50_ms: Number(L.percentile(l, 50)?.toFixed(2) ?? NaN),
        p99_ms: Number(L.percentile(l, 99)?.toFixed(2) ?? NaN),
        non_201: nOther,
        completes: nCompletes,
        rss: rssOf(broker.pid),
        heap_used: m.jitbroker_nodejs_heap_size_used_bytes ?? null,
        eventloop_p99_ms: m.jitbroker_nodejs_eventloop_lag_p99_seconds !== undefined ? Number((m.jitbroker_nodejs_eventloop_lag_p99_seconds * 1000).toFixed(2)) : null,
        leases_active: m['jitbroker_leases{state="active"}'] ?? null,
      };
      samples.push(s);
      process.stdout.write(
        `[${s.t_min.toFixed(1)} min] ${s.rps} exch/s  p50 ${s.p50_ms} ms  p99 ${s.p99_ms} ms  rss ${mb(s.rss)}  heap ${mb(s.heap_used)}  event-loop p99 ${s.eventloop_p99_ms} ms  active ${s.leases_active}  completes ${nCompletes}  other ${JSON.stringify(nOther)}\n`,
      );
      last = now;
    }
  }

  process.stdout.write(`soak: ${MINUTES} min, ${CONCURRENCY} clients, ${RATE > 0 ? `${RATE} req/s cap` : "no rate cap"}, node ${process.version}, broker pid ${broker.pid}, node args ${JSON.stringify(NODE_ARGS)}\n`);
  await Promise.all([sampler(), ...Array.from({ length: CONCURRENCY }, (_, i) => client(i))]);
  clearInterval(resign);

  const rss = samples.map((s) => s.rss).filter((x) => x !== null);
  const el = samples.map((s) => s.eventloop_p99_ms).filter((x) => x !== null).sort((a, b) => a - b);
  const result = {
    node: process.version,
    node_args: NODE_ARGS,
    minutes: MINUTES,
    concurrency: CONCURRENCY,
    rate_cap: RATE,
    crashed: Boolean(died),
    exit: died,
    exchanges_per_s_median: samples.length ? samples.map((s) => s.rps).sort((a, b) => a - b)[Math.floor(samples.length / 2)] : 0,
    rss_first: rss[0] ?? null,
    rss_last: rss[rss.length - 1] ?? null,
    rss_max: rss.length ? Math.max(...rss) : null,
    eventloop_p99_ms_median: el.length ? el[Math.floor(el.length / 2)] : null,
    eventloop_p99_ms_max: el.length ? el[el.length - 1] : null,
    samples: samples.length,
  };
  if (died) {
    const log = fs.readFileSync(broker.logFile, "utf8").split("\n").slice(-40).join("\n");
    process.stderr.write(`!! the broker died: ${JSON.stringify(died)}\n--- last lines of its log ---\n${log}\n`);
  } else {
    await broker.stop();
  }
  await redis.stop();
  L.emit("soak", result);
  if (died) process.exit(3);
}

L.runMain(main);
