"use strict";
/**
 * Task completion → revoked (issue 17, target p99 ≤ 100 ms).
 *
 * One broker (`jitbroker serve`, API + worker) on a private Redis. N leases are issued (one task
 * each, 50 agent workloads, 5-minute TTL), then their tasks are completed, `--rate` completions
 * per second (open loop). Per lease, lag = revoked_at − revocation.at: from the moment the
 * completion triggered the lease (in the completion request) to the moment the worker recorded
 * it revoked. Every lease must end `revoked` by `task_completed`.
 *
 * Usage: node scripts/bench/completion-lag.js [--n 500] [--rate 100]
 */
const http = require("node:http");
const L = require("./lib");

const argv = process.argv.slice(2);
const N = L.numArg(argv, "n", 500);
const RATE = L.numArg(argv, "rate", 100);

async function main() {
  const dir = L.tmpdir("completion");
  const redis = await L.startRedis();
  const issuer = await L.createIssuer(dir);
  const port = await L.freePort();
  const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port, quota: 0, issuer });
  let broker;
  try {
    broker = await L.spawnBroker(dir, cfg);
    const tokens = await Promise.all(Array.from({ length: L.AGENTS }, (_, i) => issuer.token(L.agentId(i))));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
    const runId = Date.now().toString(36);
    const leases = [];
    const errors = await L.pool(N, 25, async (i) => {
      const res = await L.request(agent, `${broker.url}/v1/credentials`, { method: "POST", token: tokens[i % L.AGENTS], body: { role: "orders-read", task: { id: `c-${runId}-${i}` } } });
      if (res.status !== 201) throw new Error(`issue ${i}: ${res.status} ${JSON.stringify(res.body)}`);
      leases[i] = res.body.lease.id;
    });
    if (errors.length) throw errors[0];
    const before = L.snapshot({ procs: { broker: broker.pid, redis: redis.pid } });
    const t0 = performance.now();
    const completions = [];
    for (let i = 0; i < N; i++) {
      const due = t0 + (i * 1000) / RATE;
      const wait = due - performance.now();
      if (wait > 0) await L.sleep(wait);
      completions.push(
        L.request(agent, `${broker.url}/v1/tasks/${encodeURIComponent(`c-${runId}-${i}`)}/complete`, { method: "POST", token: tokens[i % L.AGENTS] }).then((r) => {
          if (r.status !== 200 || r.body.revoked !== 1) throw new Error(`complete ${i}: ${r.status} ${JSON.stringify(r.body)}`);
        }),
      );
    }
    await Promise.all(completions);
    // Wait until every lease is revoked, then read them back.
    const lags = [];
    const deadline = Date.now() + 60_000;
    for (let i = 0; i < N; ) {
      const r = await L.request(agent, `${broker.url}/v1/leases/${leases[i]}`, { token: tokens[i % L.AGENTS] });
      const l = r.body.lease;
      if (l?.state === "revoked") {
        if (l.revocation?.trigger !== "task_completed") throw new Error(`lease ${l.id}: trigger ${l.revocation?.trigger}`);
        lags.push(Date.parse(l.revoked_at) - Date.parse(l.revocation.at));
        i++;
      } else if (Date.now() > deadline) {
        throw new Error(`lease ${leases[i]} still ${l?.state} 60 s after its task was completed`);
      } else {
        await L.sleep(50);
      }
    }
    const after = L.snapshot({ procs: { broker: broker.pid, redis: redis.pid } });
    agent.destroy();
    lags.sort((a, b) => a - b);
    const cost = L.costPerRequest(await before, await after, N);
    const result = { n: N, rate: RATE, lag_ms: { min: lags[0], p50: L.percentile(lags, 50), p99: L.percentile(lags, 99), max: lags[lags.length - 1] }, cost };
    process.stderr.write(`completion → revoked: p50 ${result.lag_ms.p50} ms, p99 ${result.lag_ms.p99} ms, max ${result.lag_ms.max} ms (${N} tasks at ${RATE}/s)\n`);
    L.emit("completion-lag", result);
  } finally {
    await broker?.stop();
    await redis.stop();
    require("node:fs").rmSync(dir, { recursive: true, force: true });
  }
}

L.runMain(main);
