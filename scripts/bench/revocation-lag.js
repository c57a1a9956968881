"use strict";
/**
 * Benchmark 2: revocation lag when N (default 2,000) leases expire in the same second.
 *
 * A private redis-server and the broker as a child `jitbroker serve` process (API + worker,
 * default worker settings: concurrency 50, sweep_interval 250ms, sweep_grace 250ms). N leases of the
 * jwt role `short-read` are issued over HTTP (25 concurrent clients, 50 agent workloads) with a
 * per-request `ttl` in milliseconds chosen so that every lease's expires_at (floored to whole
 * seconds by the broker) is the same second T, about LEAD seconds after the start (a lease that
 * misses T because its request was slow is revoked at once and issued again). After T the
 * lease records are read straight from Redis (HMGET of the lease hash: exp, rat, state, trig)
 * until every lease is terminal; lag = revoked_at − expires_at per lease.
 *
 * Usage: node scripts/bench/revocation-lag.js [--n 2000] [--lead 20] [--concurrency C]
 *        [--sweep-interval 1s] [--sweep-grace 2s] [--brokers 1]
 */
const fs = require("node:fs");
const http = require("node:http");
const L = require("./lib");

const argv = process.argv.slice(2);
const opt = (k, d) => L.numArg(argv, k, d);
const N = opt("n", 2000);
const LEAD = opt("lead", 20) * 1000;
const sopt = (k) => L.strArg(argv, k);
// Optional worker settings (defaults: the broker's own) and more than one broker process.
const WORKER = Object.fromEntries(
  [
    ["concurrency", sopt("concurrency") && Number(sopt("concurrency"))],
    ["sweep_interval", sopt("sweep-interval")],
    ["sweep_grace", sopt("sweep-grace")],
    ["expiry_poll_interval", sopt("expiry-poll-interval")],
  ].filter(([, v]) => v !== undefined),
);
const BROKERS = opt("brokers", 1);

async function main() {
  const dir = L.tmpdir("lag");
  const redis = await L.startRedis();
  const issuer = await L.createIssuer(dir);
  const port = await L.freePort();
  const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port, quota: 0, issuer, worker: WORKER });
  let broker;
  const extra = [];
  const rc = L.redisClient(redis.url);
  try {
    broker = await L.spawnBroker(dir, cfg);
    for (let b = 1; b < BROKERS; b++) {
      const d = L.tmpdir("lag-extra");
      const p2 = await L.freePort();
      // Same Redis and prefix, same signing key: another API + worker instance.
      extra.push(await L.spawnBroker(d, { ...cfg, server: { ...cfg.server, listen: `127.0.0.1:${p2}`, public_url: `http://127.0.0.1:${p2}` } }));
    }
    const tokens = await Promise.all(Array.from({ length: L.AGENTS }, (_, i) => issuer.token(L.agentId(i))));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });

    const T = Math.ceil((Date.now() + LEAD) / 1000) * 1000;
    const ids = [];
    const issueStart = Date.now();
    let retried = 0;
    const errors = await L.pool(N, 25, async (i) => {
      for (let attempt = 0; ; attempt++) {
        // expires_at = floor((issued_at + ttl) / 1000) * 1000 = T as long as the request reaches
        // the broker within 900 ms of this line; if not, the lease is revoked and issued again.
        const ttl = T + 100 - Date.now();
        const token = tokens[i % L.AGENTS];
        const res = await L.request(agent, `${broker.url}/v1/credentials`, { method: "POST", token, body: { role: "short-read", task: { id: `lag-${i}-${attempt}` }, ttl: `${ttl}ms` } });
        if (res.status !== 201) throw new Error(`issue ${i}: ${res.status} ${JSON.stringify(res.body)}`);
        if (Date.parse(res.body.lease.expires_at) === T) {
          ids.push(res.body.lease.id);
          return;
        }
        if (attempt >= 3) throw new Error(`lease ${i}: could not hit the expiry second ${T}`);
        retried++;
        await L.request(agent, `${broker.url}/v1/leases/${res.body.lease.id}`, { method: "DELETE", token });
      }
    });
    if (errors.length) throw errors[0];
    const issueMs = Date.now() - issueStart;
    agent.destroy();
    if (Date.now() > T - 1000) throw new Error(`issuing ${N} leases took ${issueMs} ms, too close to the common expiry; raise --lead`);

    const key = (id) => `{${cfg.redis.prefix}}:lease:${id}`;
    const exps = new Set();
    {
      const p = rc.pipeline();
      for (const id of ids) p.hget(key(id), "exp");
      for (const [, v] of await p.exec()) exps.add(Number(v));
    }
    if (exps.size !== 1 || !exps.has(T)) throw new Error(`leases do not share one expiry second: ${[...exps].join(", ")} (wanted ${T})`);

    // Wait for T, then poll (bounded) until every lease is terminal.
    await L.sleep(Math.max(0, T - 300 - Date.now()));
    const watch = { procs: { broker: broker.pid, redis: redis.pid, ...Object.fromEntries(extra.map((b, i) => [`broker${i + 2}`, b.pid])) }, redisPort: redis.port };
    const before = await L.snapshot(watch);
    await L.sleep(Math.max(0, T - Date.now()));
    const deadline = T + 120_000;
    // Every live lease is in the due set: poll its size (one cheap command), then read the records.
    while ((await rc.zcard(`{${cfg.redis.prefix}}:leases:due`)) > 0 && Date.now() < deadline) await L.sleep(100);
    const after = await L.snapshot(watch);
    const p = rc.pipeline();
    for (const id of ids) p.hmget(key(id), "exp", "rat", "state", "trig");
    const rows = (await p.exec()).map(([, v]) => v);
    const lags = rows.filter((r) => r[1] !== null).map((r) => Number(r[1]) - Number(r[0]));
    lags.sort((a, b) => a - b);
    const states = {};
    for (const r of rows) states[r[2]] = (states[r[2]] ?? 0) + 1;
    const log = [broker, ...extra].map((b) => fs.readFileSync(b.logFile, "utf8")).join("\n");
    const bySweeper = [...log.matchAll(/"revoked":(\d+),"msg":"sweeper revoked overdue leases"/g)].reduce((a, m) => a + Number(m[1]), 0);
    const result = {
      n: N,
      brokers: BROKERS,
      worker: WORKER,
      issue_ms: issueMs,
      reissued: retried,
      states,
      lag_ms: { min: lags[0], p50: L.percentile(lags, 50), p99: L.percentile(lags, 99), max: lags[lags.length - 1] },
      all_done_after_ms: lags[lags.length - 1],
      revoked_by_sweeper: bySweeper,
      // Per revoked lease, from just before T until all were terminal (includes the polling reads).
      cost: L.costPerRequest(before, after, N),
    };
    process.stderr.write(`lag p50 ${result.lag_ms.p50} ms, p99 ${result.lag_ms.p99} ms, max ${result.lag_ms.max} ms; states ${JSON.stringify(states)}; sweeper ${bySweeper}\n`);
    L.emit("revocation-lag", result);
  } finally {
    rc.disconnect();
    for (const b of extra) await b.stop();
    await broker?.stop();
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

L.runMain(main);
