"use strict";
/**
 * Benchmark 3: mass revocation of N (default 100,000) active leases of one workload.
 *
 * Setup (not timed): a private redis-server; the leases are issued through the service layer
 * (createBroker from dist/, worker off, `broker.service.issue` with a synthetic AuthContext for
 * workload agent-0; quota_per_workload 0) in short-lived helper processes of 5,000 leases each
 * (create-leases.js) — the same code path as POST /v1/credentials minus HTTP and token
 * verification: lease record, delayed expiry job, jwt mint, audit events. Role orders-read,
 * ttl 10 min (nothing expires during the run).
 *
 * Timed: the broker as a child `jitbroker serve` process (API + worker, default worker settings)
 * on the same Redis; the operator `ops` sends POST /v1/admin/revocations {workload: "agent-0"}
 * and polls GET /v1/admin/revocations/{id} every 100 ms until its state is completed (or
 * completed_with_failures). Reported: time from sending the POST to the first poll that says
 * completed, plus the broker's and Redis's CPU time and Redis command counts over that window.
 *
 * Usage: node scripts/bench/mass-revoke.js [--n 100000] [--create-concurrency 64]
 */
const fs = require("node:fs");
const L = require("./lib");

const argv = process.argv.slice(2);
const opt = (k, d) => L.numArg(argv, k, d);
const N = opt("n", 100_000);
const CREATE_CONCURRENCY = opt("create-concurrency", 64);
const TIMEOUT_MS = opt("timeout", 600) * 1000;

async function main() {
  const dir = L.tmpdir("mass");
  const redis = await L.startRedis();
  const issuer = await L.createIssuer(dir);
  const port = await L.freePort();
  const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port, quota: 0, issuer });
  let broker;
  const rc = L.redisClient(redis.url);
  try {
    // --- setup: N active leases of agent-0 ----------------------------------------------------
    const t0 = Date.now();
    await L.createLeasesChunked(dir, cfg, { n: N, chunk: 5000, parallel: 2, args: ["--workload", "agent-0", "--task-prefix", "mass", "--ttl-ms", "600000", "--concurrency", String(CREATE_CONCURRENCY)], label: "created" });
    const createMs = Date.now() - t0;
    const live = await rc.scard(`{${cfg.redis.prefix}}:live:workload:agent-0`);
    if (live !== N) throw new Error(`expected ${N} live leases, found ${live}`);
    const usedMemory = Number(/used_memory:(\d+)/.exec(await rc.info("memory"))[1]);
    process.stderr.write(`created ${N} leases in ${(createMs / 1000).toFixed(1)} s (redis used_memory ${(usedMemory / 1048576).toFixed(0)} MiB)\n`);

    // --- timed: the bulk revocation -------------------------------------------------------------
    broker = await L.spawnBroker(dir, cfg);
    const token = await issuer.token("ops");
    const watch = { procs: { broker: broker.pid, redis: redis.pid }, redisPort: redis.port };
    const before = await L.snapshot(watch);
    const start = performance.now();
    const res = await L.request(undefined, `${broker.url}/v1/admin/revocations`, { method: "POST", token, body: { workload: "agent-0", reason: "benchmark: mass revoke" } });
    if (res.status !== 202) throw new Error(`revocation request: ${res.status} ${JSON.stringify(res.body)}`);
    const acceptedMs = performance.now() - start;
    let progress;
    let firstTriggeredAll = null;
    for (;;) {
      progress = (await L.request(undefined, `${broker.url}/v1/admin/revocations/${res.body.id}`, { token })).body;
      if (firstTriggeredAll === null && progress.triggered >= N) firstTriggeredAll = performance.now() - start;
      if (progress.state !== "running") break;
      if (performance.now() - start > TIMEOUT_MS) throw new Error(`not completed after ${TIMEOUT_MS} ms: ${JSON.stringify(progress)}`);
      await L.sleep(100);
    }
    const totalMs = performance.now() - start;
    const after = await L.snapshot(watch);
    const result = {
      n: N,
      create_s: createMs / 1000,
      matched: res.body.matched,
      accepted_ms: acceptedMs,
      total_s: totalMs / 1000,
      rate_per_s: N / (totalMs / 1000),
      final: { state: progress.state, matched: progress.matched, triggered: progress.triggered, revoked: progress.revoked, failed: progress.failed },
      cost: L.costPerRequest(before, after, N),
    };
    process.stderr.write(`mass revoke of ${N}: ${result.total_s.toFixed(1)} s (${result.rate_per_s.toFixed(0)}/s), state ${progress.state}, cpu ms/lease ${JSON.stringify(result.cost?.cpu_ms)}\n`);
    L.emit("mass-revoke", result);
  } finally {
    rc.disconnect();
    await broker?.stop();
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

L.runMain(main);
