"use strict";
/**
 * Benchmark 1: credential exchange throughput and latency.
 *
 * One run: a private redis-server, the broker as a child `jitbroker serve` process (API +
 * worker, pino logging at info to a file, as in production), and a bare express JSON endpoint as
 * another child process. The load generator (this process: 50 closed-loop clients, each on its own
 * keep-alive TCP connection, see `connection` in lib.js) measures, one after another:
 *
 *   bare      POST /x            {ok: true} from express.json() — the ceiling
 *   limit     POST /v1/credentials on the limit server (scripts/bench/limit-server.js): only the
 *             work an exchange cannot avoid (verify, one Cedar decision, sign, one Redis write),
 *             the same token, policies, signing key and Redis — the yardstick of issue 17
 *   whoami    GET  /v1/whoami    broker middleware + workload JWT verification (RS256) only
 *   exchange  POST /v1/credentials {role: "orders-read", task: {id: <unique>}} → 201, jwt backend
 *
 * each for WARMUP s (discarded) then DURATION s (measured). Workload tokens are signed before
 * the measurement (one per client; 50 agent workloads). Every exchange uses a new task id.
 * The load generator shares the machine's cores with the broker and Redis.
 *
 * The report's main figure is broker CPU / limit CPU per exchange, both measured in this run.
 * --before DIR: also run the broker of another build (DIR = its dist/, e.g. main before a change)
 * on the same Redis (its own prefix) as target `before`, measured right after `exchange`.
 * --repeat-tokens: each client sends the same workload token every time (the verified-token
 * cache hits); by default each exchange carries a token signed for it (a cache never hits).
 *
 * Usage: node scripts/bench/exchange.js [--duration 10] [--warmup 2] [--concurrency 50]
 *        [--targets bare,limit,whoami,exchange] [--repeat-tokens] [--log-level warn] [--no-turbo-inlining] [--rate-limit off]
 * --rate-limit off: limits.requests_per_minute 0 (the per-workload rate limiter, and its Redis
 * round trip per request, are skipped); by default it is on and never refuses (lib.js).
 * Exits 3 (and prints an `exchange-crash` result) if the broker process died during the run.
 */
const L = require("./lib");

const argv = process.argv.slice(2);
const args = {};
for (let i = 0; i < argv.length; i++) {
  if (!argv[i].startsWith("--")) continue;
  const k = argv[i].slice(2);
  args[k] = argv[i + 1] !== undefined && !argv[i + 1].startsWith("--") ? argv[++i] : true;
}
const DURATION = Number(args.duration ?? 10) * 1000;
const WARMUP = Number(args.warmup ?? 2) * 1000;
const CONCURRENCY = Number(args.concurrency ?? 50);
const TARGETS = (args.targets ?? "bare,limit,whoami,exchange").split(",");
const REPEAT_TOKENS = args["repeat-tokens"] === true;
const BEFORE = typeof args.before === "string" ? require("node:path").resolve(args.before) : null;
if (BEFORE && !TARGETS.includes("before")) TARGETS.splice(TARGETS.indexOf("exchange") + 1, 0, "before");
const LOG_LEVEL = args["log-level"]; // optional: e.g. warn, to measure the cost of info logging
// Optional: run the broker with V8's TurboFan inlining off (a mitigation for the V8 crash, see
// docs/BENCHMARKS.md).
const BROKER_NODE_ARGS = args["no-turbo-inlining"] ? ["--no-turbo-inlining"] : [];
// Optional: extra Node/V8 flags for the measured broker only (not `before`), space-separated and
// without their leading dashes (the argument parser takes "--x" for an option), e.g.
// --after-node-args "max-semi-space-size=32" to compare a runtime setting side by side.
const AFTER_NODE_ARGS = typeof args["after-node-args"] === "string" ? args["after-node-args"].split(" ").filter(Boolean).map((f) => `--${f}`) : [];
const RATE_LIMIT = args["rate-limit"] === "off" ? "off" : "on";

const TOKEN_POOL = Number(args["token-pool"] ?? 12000);

/** `n` distinct workload tokens (a random jti each), round-robin over the agent workloads. */
async function signPool(issuer, n) {
  const t0 = performance.now();
  const out = [];
  for (let i = 0; i < n; i += 500) out.push(...(await Promise.all(Array.from({ length: Math.min(500, n - i) }, (_, j) => issuer.token(L.agentId((i + j) % L.AGENTS), 3000, { jti: `t${i + j}-${Math.random().toString(36).slice(2)}` })))));
  process.stderr.write(`signed ${n} distinct workload tokens in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  return out;
}

/** Closed-loop load: CONCURRENCY clients, each sending its next request when the last answered. */
async function load(name, url, makeRequest, expectStatus, watch) {
  const port = Number(new URL(url).port);
  const conns = Array.from({ length: CONCURRENCY }, () => L.connection(port));
  await Promise.all(conns.map((c) => c.ready));
  const start = performance.now();
  const measureFrom = start + WARMUP;
  const end = measureFrom + DURATION;
  // CPU of each process and Redis command counts over exactly the measured window.
  let before;
  let after;
  const snap = () => L.snapshot(watch);
  const t1 = setTimeout(() => void snap().then((v) => (before = v)), WARMUP);
  const t2 = setTimeout(() => void snap().then((v) => (after = v)), WARMUP + DURATION);
  const lat = [];
  let ok = 0;
  let bad = 0;
  const badStatus = {};
  let seq = 0;
  async function client(lane) {
    let conn = conns[lane];
    while (performance.now() < end) {
      const { method, path, headers, payload } = makeRequest(lane, seq++);
      const bytes = L.requestBytes(method, path, headers, payload);
      const t0 = performance.now();
      let status;
      try {
        status = await conn.send(bytes);
      } catch (e) {
        status = `error:${e.code ?? e.message}`;
        conn.close();
        conn = conns[lane] = L.connection(port);
        await conn.ready.catch(() => undefined);
      }
      const t1 = performance.now();
      if (t1 >= measureFrom && t1 <= end) {
        if (status === expectStatus) {
          ok++;
          lat.push(t1 - t0);
        } else {
          bad++;
          badStatus[status] = (badStatus[status] ?? 0) + 1;
        }
      }
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, (_, i) => client(i)));
  for (const c of conns) c.close();
  clearTimeout(t1);
  clearTimeout(t2);
  while (!after) await L.sleep(10);
  lat.sort((a, b) => a - b);
  return {
    cost: L.costPerRequest(before, after, ok),
    target: name,
    rps: ok / (DURATION / 1000),
    ok,
    errors: bad,
    error_statuses: badStatus,
    p50_ms: L.percentile(lat, 50),
    p99_ms: L.percentile(lat, 99),
    max_ms: lat[lat.length - 1],
  };
}

async function main() {
  const dir = L.tmpdir("exchange");
  const redis = await L.startRedis();
  const issuer = await L.createIssuer(dir);
  const port = await L.freePort();
  const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port, quota: 0, issuer });
  if (RATE_LIMIT === "off") cfg.limits = { requests_per_minute: 0 };
  let broker;
  let bare;
  let limit;
  let before;
  try {
    broker = await L.spawnBroker(dir, cfg, { logLevel: LOG_LEVEL, nodeArgs: [...BROKER_NODE_ARGS, ...AFTER_NODE_ARGS] });
    bare = await L.spawnBare(await L.freePort());
    limit = TARGETS.includes("limit") ? await L.spawnLimit(await L.freePort(), dir, cfg, issuer) : null;
    if (BEFORE) {
      const bdir = L.tmpdir("exchange-before");
      const bport = await L.freePort();
      const bcfg = { ...cfg, server: { ...cfg.server, listen: `127.0.0.1:${bport}`, public_url: `http://127.0.0.1:${bport}` }, redis: { ...cfg.redis, prefix: `${cfg.redis.prefix}b` } };
      before = await L.spawnBroker(bdir, bcfg, { logLevel: LOG_LEVEL, nodeArgs: BROKER_NODE_ARGS, dist: BEFORE });
    }
    const tokens = await Promise.all(Array.from({ length: CONCURRENCY }, (_, i) => issuer.token(L.agentId(i % L.AGENTS))));
    // Without --repeat-tokens, exchanges cycle through a pool of distinct tokens larger than the
    // broker's verified-token cache (identity.token_cache.max_entries, default 10,000): a cyclic
    // walk over more entries than an LRU holds never hits, so every exchange verifies its token.
    const pool = REPEAT_TOKENS ? tokens : await signPool(issuer, TOKEN_POOL);
    const runId = Date.now().toString(36);
    const bodyFor = (lane, seq) => Buffer.from(JSON.stringify({ role: "orders-read", task: { id: `bench-${runId}-${lane}-${seq}` } }));
    const json = (lane, payload, seq) => ({ authorization: `Bearer ${REPEAT_TOKENS ? tokens[lane] : pool[seq % pool.length]}`, "content-type": "application/json", "content-length": payload.length });

    // Sanity: one exchange must work before we measure anything.
    const probe = await L.request(undefined, `${broker.url}/v1/credentials`, { method: "POST", token: tokens[0], body: { role: "orders-read", task: { id: `probe-${runId}` } } });
    if (probe.status !== 201) throw new Error(`probe exchange failed: ${probe.status} ${JSON.stringify(probe.body)}`);

    const procs = { redis: redis.pid, loadgen: process.pid };
    const watchBare = { procs: { server: bare.pid, ...procs } };
    const watchBroker = { procs: { server: broker.pid, ...procs }, redisPort: redis.port };
    const targets = {
      bare: () =>
        load("bare", bare.url, (lane, seq) => {
          const payload = bodyFor(lane, seq);
          return { method: "POST", path: "/x", headers: json(lane, payload, seq), payload };
        }, 200, watchBare),
      limit: () =>
        load("limit", limit.url, (lane, seq) => {
          const payload = bodyFor(lane, seq);
          return { method: "POST", path: "/v1/credentials", headers: json(lane, payload, seq), payload };
        }, 201, { procs: { server: limit.pid, ...procs }, redisPort: redis.port }),
      whoami: () => load("whoami", broker.url, (lane) => ({ method: "GET", path: "/v1/whoami", headers: { authorization: `Bearer ${tokens[lane]}` } }), 200, watchBroker),
      exchange: () =>
        load("exchange", broker.url, (lane, seq) => {
          const payload = bodyFor(lane, seq);
          return { method: "POST", path: "/v1/credentials", headers: json(lane, payload, seq), payload };
        }, 201, watchBroker),
      before: () =>
        load("before", before.url, (lane, seq) => {
          const payload = bodyFor(lane, seq);
          return { method: "POST", path: "/v1/credentials", headers: json(lane, payload, seq), payload };
        }, 201, { procs: { server: before.pid, ...procs }, redisPort: redis.port }),
    };
    const results = {};
    for (const t of TARGETS) {
      results[t] = await targets[t]();
      process.stderr.write(`${t}: ${results[t].rps.toFixed(0)} req/s, p50 ${results[t].p50_ms.toFixed(1)} ms, p99 ${results[t].p99_ms.toFixed(1)} ms, errors ${results[t].errors}, cpu ms/req ${JSON.stringify(results[t].cost?.cpu_ms)} (of it kernel ${JSON.stringify(results[t].cost?.sys_ms)})\n`);
      await L.sleep(1000);
    }
    const out = { concurrency: CONCURRENCY, duration_s: DURATION / 1000, warmup_s: WARMUP / 1000, log_level: LOG_LEVEL ?? "info", broker_node_args: BROKER_NODE_ARGS, after_node_args: AFTER_NODE_ARGS, rate_limit: RATE_LIMIT, tokens: REPEAT_TOKENS ? "repeated" : `distinct (pool of ${pool.length})`, results };
    if (results.bare && results.exchange) out.ratio = results.exchange.rps / results.bare.rps;
    // Issue 17's yardstick: broker CPU per exchange over the limit server's, same run.
    const cpu = (t) => results[t]?.cost?.cpu_ms?.server;
    if (results.limit && results.exchange) out.cpu_vs_limit = cpu("exchange") / cpu("limit");
    if (results.limit && results.before) out.before_cpu_vs_limit = cpu("before") / cpu("limit");
    if (results.before && results.exchange) out.cpu_vs_before = cpu("exchange") / cpu("before");
    if (results.before) process.stderr.write(`broker CPU after / before: ${out.cpu_vs_before?.toFixed(2)}; before / limit ${out.before_cpu_vs_limit?.toFixed(2)}; Redis CPU before ${results.before.cost?.cpu_ms?.redis?.toFixed(3)} ms\n`);
    if (results.limit) process.stderr.write(`broker CPU / limit CPU per exchange: ${out.cpu_vs_limit?.toFixed(2)}; Redis CPU per exchange ${results.exchange?.cost?.cpu_ms?.redis?.toFixed(3)} ms (limit ${results.limit.cost?.cpu_ms?.redis?.toFixed(3)})\n`);
    if (broker.crashed()) {
      // The numbers of a run whose broker died are meaningless: say so, and fail the run.
      L.emit("exchange-crash", { broker_node_args: BROKER_NODE_ARGS, exchanges_before_crash: results.exchange?.ok ?? null });
      process.exitCode = 3;
      return;
    }
    L.emit("exchange", out);
  } finally {
    await broker?.stop();
    await bare?.stop();
    await limit?.stop();
    await before?.stop();
    await redis.stop();
    require("node:fs").rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
