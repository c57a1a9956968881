"use strict";
/**
 * Benchmark 3: forced (bulk) revocation of N (default 100,000) active leases of one workload.
 *
 * Setup (not timed, done once): a private redis-server; the leases are issued through the
 * service layer (createBroker from dist/, worker off, `broker.service.issue` with a synthetic
 * AuthContext for workload agent-0; quota_per_workload 0) in short-lived helper processes of
 * 5,000 leases each (create-leases.js) — the same code path as POST /v1/credentials minus HTTP
 * and token verification: lease record and expiry schedule, jwt mint, audit events. Role
 * orders-read, ttl 10 min (the policies' maximum); afterwards every lease's expiry (`exp` and
 * its due-set score) is moved one hour on, so that none expires while the runs go on. Redis is
 * then stopped and its data directory kept as the template of every run.
 *
 * Timed, `--runs` times: a copy of the template on a fresh redis-server, and the broker as a
 * child `jitbroker serve` process (API + worker, default worker settings) on it; the operator
 * `ops` sends POST /v1/admin/revocations {workload: "agent-0"} and polls
 * GET /v1/admin/revocations/{id} every 100 ms until its state is completed (or
 * completed_with_failures). Reported per run: `total_s`, from sending the POST to the first poll
 * that says completed; `last_revoked_s`, from sending the POST to the largest `revoked_at` of the
 * N leases (read from Redis afterwards: the moment the last lease was `revoked`) and the rate
 * N / last_revoked_s; the broker's and Redis's CPU time and Redis command counts over the window.
 * Checked per run: every lease is `revoked`, and the audit events written during the run are
 * exactly one `revoked` per lease and the `bulk_revocation` event (other events are reported).
 *
 * With `--before DIR` (the root of another build: DIR/dist), each run measures both builds, each
 * on its own copy of the template, alternating which goes first; the medians of both are printed.
 *
 * Usage: node scripts/bench/mass-revoke.js [--n 100000] [--runs 1] [--before DIR]
 *        [--create-concurrency 64] [--timeout 600]
 */
const fs = require("node:fs");
const path = require("node:path");
const { execFileSync } = require("node:child_process");
const L = require("./lib");

const argv = process.argv.slice(2);
const opt = (k, d) => L.numArg(argv, k, d);
const N = opt("n", 100_000);
const RUNS = opt("runs", 1);
const CREATE_CONCURRENCY = opt("create-concurrency", 64);
const TIMEOUT_MS = opt("timeout", 600) * 1000;
const BEFORE = L.strArg(argv, "before");

/** Moves every lease's expiry (hash field exp, due-set score) `byMs` later. */
async function postpone(rc, prefix, byMs) {
  const due = `{${prefix}}:leases:due`;
  const flat = await rc.zrange(due, 0, -1, "WITHSCORES");
  for (let i = 0; i < flat.length; i += 2000) {
    const p = rc.pipeline();
    for (let j = i; j < Math.min(flat.length, i + 2000); j += 2) {
      const id = flat[j];
      const exp = Number(flat[j + 1]) + byMs;
      p.hset(`{${prefix}}:lease:${id}`, "exp", String(exp));
      p.zadd(due, String(exp), id);
    }
    await p.exec();
  }
}

async function runOnce(template, cfg, issuer, distDir, label) {
  const dataDir = L.tmpdir("mass-data");
  fs.rmSync(dataDir, { recursive: true, force: true });
  execFileSync("cp", ["-a", template, dataDir]);
  const redis = await L.startRedis({ dir: dataDir });
  const dir = L.tmpdir("mass-run");
  const port = await L.freePort();
  const runCfg = { ...cfg, redis: { ...cfg.redis, url: redis.url }, server: { ...cfg.server, listen: `127.0.0.1:${port}`, public_url: `http://127.0.0.1:${port}` } };
  const rc = L.redisClient(redis.url);
  let broker;
  try {
    const prefix = cfg.redis.prefix;
    const live = await rc.scard(`{${prefix}}:live:workload:agent-0`);
    if (live !== N) throw new Error(`expected ${N} live leases, found ${live}`);
    const [[lastAuditId]] = await rc.xrevrange(`{${prefix}}:audit`, "+", "-", "COUNT", 1);
    broker = await L.spawnBroker(dir, runCfg, { dist: distDir });
    const token = await issuer.token("ops");
    const watch = { procs: { broker: broker.pid, redis: redis.pid }, redisPort: redis.port };
    const before = await L.snapshot(watch);
    const startWall = Date.now();
    const start = performance.now();
    const res = await L.request(undefined, `${broker.url}/v1/admin/revocations`, { method: "POST", token, body: { workload: "agent-0", reason: "benchmark: mass revoke" } });
    if (res.status !== 202) throw new Error(`revocation request: ${res.status} ${JSON.stringify(res.body)}`);
    const acceptedMs = performance.now() - start;
    let progress;
    for (;;) {
      progress = (await L.request(undefined, `${broker.url}/v1/admin/revocations/${res.body.id}`, { token })).body;
      if (progress.state !== "running") break;
      if (performance.now() - start > TIMEOUT_MS) throw new Error(`not completed after ${TIMEOUT_MS} ms: ${JSON.stringify(progress)}`);
      await L.sleep(100);
    }
    const totalMs = performance.now() - start;
    const after = await L.snapshot(watch);
    // The moment the last lease became `revoked`, and every lease's state.
    let lastRat = 0;
    const states = {};
    let cursor = "0";
    do {
      const [next, ids] = await rc.sscan(`{${prefix}}:live:workload:agent-0`, cursor, "COUNT", 1000);
      cursor = next;
      if (ids.length) throw new Error(`${ids.length}+ leases of agent-0 still live after completion`);
    } while (cursor !== "0");
    const all = await rc.zrange(`{${prefix}}:leases:all`, 0, -1);
    for (let i = 0; i < all.length; i += 5000) {
      const p = rc.pipeline();
      for (const id of all.slice(i, i + 5000)) p.hmget(`{${prefix}}:lease:${id}`, "state", "rat");
      for (const [, [state, rat]] of await p.exec()) {
        states[state] = (states[state] ?? 0) + 1;
        if (rat !== null) lastRat = Math.max(lastRat, Number(rat));
      }
    }
    if (states.revoked !== N) throw new Error(`expected ${N} revoked leases: ${JSON.stringify(states)}`);
    // The events written during the run: exactly one `revoked` per lease, and the bulk_revocation.
    // (A lease's event is appended right after FINISH counted it in the op: allow the last
    // batches' appends a few seconds to land.)
    const byType = {};
    const revokedIds = new Set();
    let from = `(${lastAuditId}`;
    const settle = Date.now() + 15_000;
    for (;;) {
      const page = await rc.xrange(`{${prefix}}:audit`, from, "+", "COUNT", 10000);
      for (const [id, fields] of page) {
        const e = JSON.parse(fields[fields.indexOf("e") + 1]);
        byType[e.type] = (byType[e.type] ?? 0) + 1;
        if (e.type === "revoked") revokedIds.add(e.lease_id);
        from = `(${id}`;
      }
      if (page.length === 10000) continue;
      if ((byType.revoked ?? 0) >= N || Date.now() > settle) break;
      await L.sleep(200);
    }
    const auditAdded = Object.values(byType).reduce((a, b) => a + b, 0);
    if (byType.revoked !== N || revokedIds.size !== N || byType.bulk_revocation !== 1) {
      throw new Error(`audit events written during the run: ${JSON.stringify(byType)} for ${revokedIds.size} leases; expected ${N} revoked (one per lease) and one bulk_revocation`);
    }
    const lastRevokedMs = lastRat - startWall;
    const result = {
      build: label,
      n: N,
      accepted_ms: acceptedMs,
      total_s: totalMs / 1000,
      last_revoked_s: lastRevokedMs / 1000,
      rate_per_s: N / (lastRevokedMs / 1000),
      load_1m: Number(fs.readFileSync("/proc/loadavg", "utf8").split(" ")[0]),
      final: { state: progress.state, matched: progress.matched, triggered: progress.triggered, revoked: progress.revoked, failed: progress.failed },
      audit_events: byType,
      cost: L.costPerRequest(before, after, N),
    };
    process.stderr.write(
      `[${label}] mass revoke of ${N}: last revoked after ${result.last_revoked_s.toFixed(2)} s (${result.rate_per_s.toFixed(0)}/s), completed seen after ${result.total_s.toFixed(2)} s, cpu ms/lease ${JSON.stringify(result.cost?.cpu_ms)}, load ${result.load_1m}\n`,
    );
    return result;
  } catch (e) {
    // Keep the broker's log as the evidence.
    if (broker) fs.copyFileSync(broker.logFile, path.join(require("node:os").tmpdir(), `jitbroker-bench-mass-${label}-${Date.now()}.log`));
    throw e;
  } finally {
    rc.disconnect();
    await broker?.stop();
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const dir = L.tmpdir("mass");
  const template = L.tmpdir("mass-template");
  // The setup's Redis keeps its data directory when stopped (SIGTERM: the AOF is complete).
  const redis = await L.dist("redis/server.js").startRedisServer({ dir: template, appendonly: true });
  const issuer = await L.createIssuer(dir);
  const port = await L.freePort();
  const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port, quota: 0, issuer });
  // Every run's broker chains onto the setup's audit head: one audit key for all.
  cfg.audit = { key_file: path.join(dir, "audit.key") };
  try {
    try {
      // --- setup, once: N active leases of agent-0 -----------------------------------------------
      const t0 = Date.now();
      await L.createLeasesChunked(dir, cfg, { n: N, chunk: 5000, parallel: 2, args: ["--workload", "agent-0", "--task-prefix", "mass", "--ttl-ms", "600000", "--concurrency", String(CREATE_CONCURRENCY)], label: "created" });
      const createMs = Date.now() - t0;
      const rc = L.redisClient(redis.url);
      await postpone(rc, cfg.redis.prefix, 3600_000);
      const usedMemory = Number(/used_memory:(\d+)/.exec(await rc.info("memory"))[1]);
      rc.disconnect();
      process.stderr.write(`created ${N} leases in ${(createMs / 1000).toFixed(1)} s (redis used_memory ${(usedMemory / 1048576).toFixed(0)} MiB)\n`);
    } finally {
      await redis.stop();
    }
    // --- timed: the bulk revocation, on a fresh copy of the data each time -----------------------
    const builds = [{ label: "after", dist: L.DIST }, ...(BEFORE ? [{ label: "before", dist: path.join(path.resolve(BEFORE), "dist") }] : [])];
    const results = [];
    for (let r = 0; r < RUNS; r++) {
      const order = r % 2 === 0 ? builds : [...builds].reverse();
      for (const b of order) {
        const result = await runOnce(template, cfg, issuer, b.dist, b.label);
        results.push({ run: r + 1, ...result });
        L.emit("mass-revoke", { run: r + 1, ...result });
      }
    }
    const summary = {};
    for (const b of builds) {
      const mine = results.filter((x) => x.build === b.label);
      summary[b.label] = {
        runs: mine.length,
        last_revoked_s: L.median(mine.map((x) => x.last_revoked_s)),
        rate_per_s: L.median(mine.map((x) => x.rate_per_s)),
        total_s: L.median(mine.map((x) => x.total_s)),
        broker_cpu_ms_per_lease: L.median(mine.map((x) => x.cost.cpu_ms.broker)),
        redis_cpu_ms_per_lease: L.median(mine.map((x) => x.cost.cpu_ms.redis)),
      };
    }
    process.stderr.write(`medians: ${JSON.stringify(summary)}\n`);
    L.emit("mass-revoke-summary", { n: N, runs: RUNS, medians: summary });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(template, { recursive: true, force: true });
  }
}

L.runMain(main);
