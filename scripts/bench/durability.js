"use strict";
/**
 * Benchmark: credential exchange with redis.durability.replicas 1 versus 0 (I1: WAIT for a
 * replica before answering), in one run on the same primary + replica pair.
 *
 * One run: a private redis-server primary and a replica of it (REPLICAOF, loopback), then for
 * each setting a broker child process (`jitbroker serve`, API + worker) and a closed-loop load of
 * CONCURRENCY clients (keep-alive, one new task per exchange) for WARMUP + DURATION seconds.
 * Reports req/s, p50 and p99 per setting and the ratio durable / not durable.
 *
 * Usage: node scripts/bench/durability.js [--duration 8] [--warmup 2] [--concurrency 20]
 * Short by design (the machine is shared).
 */
const L = require("./lib");

const argv = process.argv.slice(2);
const DURATION = L.numArg(argv, "duration", 8) * 1000;
const WARMUP = L.numArg(argv, "warmup", 2) * 1000;
const CONCURRENCY = L.numArg(argv, "concurrency", 20);

async function load(url, tokens, runId) {
  const port = Number(new URL(url).port);
  const conns = Array.from({ length: CONCURRENCY }, () => L.connection(port));
  await Promise.all(conns.map((c) => c.ready));
  const start = performance.now();
  const measureFrom = start + WARMUP;
  const end = measureFrom + DURATION;
  const lat = [];
  let ok = 0;
  let bad = 0;
  let seq = 0;
  async function client(lane) {
    const conn = conns[lane];
    while (performance.now() < end) {
      const payload = Buffer.from(JSON.stringify({ role: "orders-read", task: { id: `d-${runId}-${lane}-${seq++}` } }));
      const bytes = L.requestBytes("POST", "/v1/credentials", { authorization: `Bearer ${tokens[lane]}`, "content-type": "application/json", "content-length": payload.length }, payload);
      const t0 = performance.now();
      const status = await conn.send(bytes).catch(() => "error");
      const t1 = performance.now();
      if (t1 < measureFrom || t1 > end) continue;
      if (status === 201) {
        ok++;
        lat.push(t1 - t0);
      } else bad++;
    }
  }
  await Promise.all(conns.map((_, i) => client(i)));
  for (const c of conns) c.close();
  lat.sort((a, b) => a - b);
  return { rps: ok / (DURATION / 1000), ok, errors: bad, p50_ms: L.percentile(lat, 50), p99_ms: L.percentile(lat, 99) };
}

async function main() {
  const dir = L.tmpdir("durability");
  const primary = await L.startRedis({ appendonly: false });
  const replica = await L.startRedis({ appendonly: false });
  const r = L.redisClient(replica.url);
  await r.call("REPLICAOF", "127.0.0.1", String(primary.port));
  for (let i = 0; i < 100 && !/master_link_status:up/.test(await r.info("replication")); i++) await L.sleep(100);
  r.disconnect();
  const issuer = await L.createIssuer(dir);
  const tokens = await Promise.all(Array.from({ length: CONCURRENCY }, (_, i) => issuer.token(L.agentId(i % L.AGENTS))));
  const results = {};
  try {
    for (const replicas of [0, 1]) {
      const port = await L.freePort();
      const cfg = L.brokerConfig({ dir, redisUrl: primary.url, prefix: `dur${replicas}`, port, quota: 0, issuer });
      cfg.redis.durability = { replicas, timeout: "1s" };
      const broker = await L.spawnBroker(dir, cfg, { logLevel: "warn" });
      try {
        results[`replicas_${replicas}`] = await load(broker.url, tokens, `${replicas}-${Date.now().toString(36)}`);
        process.stderr.write(`durability.replicas ${replicas}: ${results[`replicas_${replicas}`].rps.toFixed(0)} req/s, p50 ${results[`replicas_${replicas}`].p50_ms.toFixed(1)} ms, p99 ${results[`replicas_${replicas}`].p99_ms.toFixed(1)} ms\n`);
      } finally {
        await broker.stop();
      }
      await L.sleep(1000);
    }
    L.emit("durability", { concurrency: CONCURRENCY, duration_s: DURATION / 1000, results, ratio: results.replicas_1.rps / results.replicas_0.rps });
  } finally {
    await replica.stop();
    await primary.stop();
    require("node:fs").rmSync(dir, { recursive: true, force: true });
  }
}

L.runMain(main);
