"use strict";
/**
 * Issue 17, scale rows: with N active leases in one Redis (10k, 100k, 1M), what a lease costs in
 * Redis, what an exchange costs the broker and Redis, and how late a batch of expiries is revoked.
 *
 * 1. A private redis-server (no AOF: a million leases' AOF is not what is measured, and a rewrite
 *    during the run would add its own CPU). The broker starts once for a probe exchange (its
 *    lease's policy ids and set hash become the filled leases' decision), then stops.
 * 2. Fill: short-lived child processes (`scale.js --fill`, 100,000 leases each, two at a time)
 *    write N leases through the lease store's real code (`createLeaseStore` from dist/: CREATE,
 *    then ACTIVATE with a backend handle (`--handle`), then the ledger's `ev` field, as an exchange leaves them),
 *    2,000 in flight on one auto-pipelined connection. 50 agent workloads, role orders-read, one
 *    task id per lease, expiries spread over the hour after `--ttl-min` (default 90) minutes, so
 *    none expires during the run. No audit events: the ledger grows per issuance, not per
 *    active lease (memory.js reports it).
 * 3. Memory: INFO used_memory before and after the fill, with no other client connected;
 *    MEMORY USAGE (exact) of a sample of lease hashes and of the shared structures.
 * 4. Exchange: the broker (`jitbroker serve`, API + worker) on the filled Redis; 50 closed-loop
 *    clients POST /v1/credentials (new task id each, distinct workload tokens from a pool larger
 *    than the verified-token cache, as exchange.js) for WARMUP + DURATION s; broker and Redis
 *    CPU per exchange over the measured window.
 * 5. Lag: LAG_N leases of role short-read are issued so that all expire in the same second T
 *    (as revocation-lag.js), LEAD s ahead; after T the due set's head (ZCOUNT up to T + 1 s: the
 *    filled and exchanged leases expire later) is polled until empty; lag = revoked_at −
 *    expires_at per lease.
 *
 * Usage: node scripts/bench/scale.js --n 100000 [--duration 10] [--warmup 2] [--concurrency 50]
 *        [--lag-n 2000] [--lead 30] [--token-pool 12000] [--fill-chunk 100000] [--fill-parallel 2] [--skip-exchange] [--skip-lag]
 *        [--handle jwt|vault|aws (the filled leases' backend handle shape; default jwt)] [--runs 1]
 * --runs R: R rounds of (exchange, lag) on the one filled Redis; each round's numbers and the
 * medians are printed.
 * BENCH_DIST=<dist> runs another build (lib.js).
 */
const fs = require("node:fs");
const os = require("node:os");
const http = require("node:http");
const path = require("node:path");
const { spawn } = require("node:child_process");
const L = require("./lib");

const argv = process.argv.slice(2);
const opt = (k, d) => L.numArg(argv, k, d);

/**
 * Backend handles as the backends write them (src/backends/*), with real lengths: jwt's is the
 * lease id; a Vault dynamic-secret lease id is `<path>/<24 base62 characters>` (Vault's
 * expiration manager); an AWS session is the role ARN, the session name (the lease id,
 * names.ts), `aws:userid` (`<RoleId>:<session name>`, a RoleId is `AROA` + 17 characters) and
 * upper bounds of the session's issue and end times as the backend computes them (AWS's
 * Expiration has second precision; the session lasts the lease's remaining seconds).
 */
const B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const base62 = (n) => Array.from(require("node:crypto").randomBytes(n), (b) => B62[b % 62]).join("");
const HANDLES = {
  jwt: (id) => ({ jti: id }),
  vault: () => ({ lease_id: `database/creds/orders-read/${base62(24)}` }),
  aws: (id, lease) => {
    const mintedAt = lease.issuedAt + 40;
    const duration = Math.max(900, Math.floor((lease.expiresAt - mintedAt) / 1000));
    const awsExpiry = Math.floor((mintedAt + 60 + duration * 1000) / 1000) * 1000;
    const iso = (ms) => new Date(ms).toISOString();
    return {
      role_arn: "arn:aws:iam::123456789012:role/jitbroker/orders-read",
      session_name: id,
      user_id: `AROA3XFRBF535PLBIFPI4:${id}`,
      issued_at: iso(awsExpiry - duration * 1000 + 1000),
      expires_at: iso(Math.max(awsExpiry, mintedAt + 90 + duration * 1000)),
    };
  },
};

/**
 * The bytes of a small hash's listpack (Redis 7.0, listpack.c): a 6-byte header, per field and
 * value an entry (an integer-looking string as an integer of 1-9 bytes, a string with a 1-5 byte
 * header) plus its 1-3 byte back-length, and the end byte. jemalloc then rounds the allocation up
 * to its size class (160, 192, 224, 256, 320, 384, 448, 512...), which is what used_memory counts.
 */
function listpackBytes(hash) {
  const entry = (s) => {
    let n;
    if (/^-?(0|[1-9]\d{0,18})$/.test(s) && BigInt(s) >= -(2n ** 63n) && BigInt(s) < 2n ** 63n) {
      const v = BigInt(s);
      n = v >= 0n && v <= 127n ? 1 : v >= -4096n && v <= 4095n ? 2 : v >= -32768n && v <= 32767n ? 3 : v >= -8388608n && v <= 8388607n ? 4 : v >= -2147483648n && v <= 2147483647n ? 5 : 9;
    } else {
      const len = Buffer.byteLength(s);
      n = (len < 64 ? 1 : len < 4096 ? 2 : 5) + len;
    }
    return n + (n < 128 ? 1 : n < 16384 ? 2 : 3);
  };
  let total = 7;
  for (const [f, v] of Object.entries(hash)) total += entry(f) + entry(v);
  return total;
}

/** The fill child: writes leases FROM..FROM+COUNT through the lease store. */
async function fill(dir, from, count) {
  const { Redis } = require("ioredis");
  const distDir = process.env.BENCH_DIST ? path.resolve(process.env.BENCH_DIST) : path.join(__dirname, "../../dist");
  const { createKeyspace } = require(path.join(distDir, "redis/keys.js"));
  const { createLeaseStore } = require(path.join(distDir, "leases/store.js"));
  const spec = JSON.parse(fs.readFileSync(path.join(dir, "fill.json"), "utf8"));
  const redis = new Redis(spec.redisUrl, { enableAutoPipelining: true, maxRetriesPerRequest: null });
  const store = createLeaseStore(redis, createKeyspace(spec.prefix), { retentionSeconds: 3600, taskRetentionSeconds: 3600 });
  const leaseKey = (id) => `{${spec.prefix}}:lease:${id}`;
  try {
    const errors = await L.pool(count, 2000, async (k) => {
      const i = from + k;
      const workload = L.agentId(i % L.AGENTS);
      const id = store.newId(workload);
      const issuedAt = Date.now();
      const expiresAt = Math.floor((issuedAt + spec.ttlMs + (i % 3600) * 1000) / 1000) * 1000;
      const lease = {
        id,
        role: "orders-read",
        backend: spec.handle === "jwt" ? "jwt" : spec.handle === "vault" ? "vault" : "aws_sts",
        workload,
        task: { id: `scale-${i}`, intent: "", tool: "", destination: "", sensitivity: "" },
        issuedAt,
        expiresAt,
        identity: { kind: "oidc", issuer: "idp", subject: workload },
        policy: spec.policy,
      };
      const created = await store.create(lease, 0);
      if (created !== "ok") throw new Error(`create ${id}: ${created}`);
      const activated = await store.activate(id, HANDLES[spec.handle](id, lease), undefined, { issuedAt, expiresAt });
      if (activated !== "active") throw new Error(`activate ${id}: ${activated}`);
      // The mint event's id, as the audit ledger appends it to the lease hash (field ev).
      await redis.hset(leaseKey(id), "ev", `${issuedAt}-0`);
    });
    if (errors.length) throw errors[0];
  } finally {
    redis.disconnect();
  }
}

async function fillAll(dir, n, chunk, parallel) {
  const t0 = performance.now();
  const starts = [];
  for (let from = 0; from < n; from += chunk) starts.push(from);
  let done = 0;
  const errors = await L.pool(starts.length, parallel, async (k) => {
    const from = starts[k];
    const count = Math.min(chunk, n - from);
    const child = spawn(process.execPath, [__filename, "--fill", dir, String(from), String(count)], { stdio: ["ignore", "inherit", "inherit"] });
    const { code, sig } = await new Promise((r) => child.once("exit", (code, sig) => r({ code, sig })));
    if (code !== 0) throw new Error(`fill ${from}+${count} failed (code ${code}, signal ${sig})`);
    done += count;
    process.stderr.write(`  filled ${done}/${n} (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
  });
  if (errors.length) throw errors[0];
  return (performance.now() - t0) / 1000;
}

/** Closed-loop exchanges: `concurrency` clients, each sending its next request when the last answered. */
async function exchangeLoad({ url, tokens, warmupMs, durationMs, concurrency, watch, runId }) {
  const port = Number(new URL(url).port);
  const conns = Array.from({ length: concurrency }, () => L.connection(port));
  await Promise.all(conns.map((c) => c.ready));
  const start = performance.now();
  const measureFrom = start + warmupMs;
  const end = measureFrom + durationMs;
  let before;
  let after;
  const t1 = setTimeout(() => void L.snapshot(watch).then((v) => (before = v)), warmupMs);
  const t2 = setTimeout(() => void L.snapshot(watch).then((v) => (after = v)), warmupMs + durationMs);
  const lat = [];
  let ok = 0;
  let bad = 0;
  const badStatus = {};
  let seq = 0;
  async function client(lane) {
    let conn = conns[lane];
    while (performance.now() < end) {
      const n = seq++;
      // 10 min: these leases must not expire during a later run's lag measurement.
      const payload = Buffer.from(JSON.stringify({ role: "orders-read", task: { id: `x-${runId}-${lane}-${n}` }, ttl: "10m" }));
      const headers = { authorization: `Bearer ${tokens[n % tokens.length]}`, "content-type": "application/json", "content-length": payload.length };
      const t0 = performance.now();
      let status;
      try {
        status = await conn.send(L.requestBytes("POST", "/v1/credentials", headers, payload));
      } catch {
        // A closed connection never answers again: open a new one (as exchange.js does).
        status = "error";
        conn.close();
        conn = conns[lane] = L.connection(port);
        await conn.ready.catch(() => undefined);
      }
      const t = performance.now();
      if (t >= measureFrom && t <= end) {
        if (status === 201) {
          ok++;
          lat.push(t - t0);
        } else {
          bad++;
          badStatus[status] = (badStatus[status] ?? 0) + 1;
        }
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, (_, i) => client(i)));
  for (const c of conns) c.close();
  clearTimeout(t1);
  clearTimeout(t2);
  while (!after) await L.sleep(10);
  lat.sort((a, b) => a - b);
  const cost = L.costPerRequest(before, after, ok);
  return { rps: ok / (durationMs / 1000), ok, errors: bad, error_statuses: badStatus, p50_ms: L.percentile(lat, 50), p99_ms: L.percentile(lat, 99), broker_cpu_ms: cost?.cpu_ms.broker, redis_cpu_ms: cost?.cpu_ms.redis, redis: cost?.redis };
}

/** LAG_N short-read leases expiring in the same second; their revocation lag. */
async function expiryLag({ broker, cfg, rc, tokens, n, leadMs }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 25 });
  const T = Math.ceil((Date.now() + leadMs) / 1000) * 1000;
  const ids = [];
  const errors = await L.pool(n, 25, async (i) => {
    for (let attempt = 0; ; attempt++) {
      const ttl = T + 100 - Date.now();
      const token = tokens[i % L.AGENTS];
      const res = await L.request(agent, `${broker.url}/v1/credentials`, { method: "POST", token, body: { role: "short-read", task: { id: `lag-${T}-${i}-${attempt}` }, ttl: `${ttl}ms` } });
      if (res.status !== 201) throw new Error(`issue ${i}: ${res.status} ${JSON.stringify(res.body)}`);
      if (Date.parse(res.body.lease.expires_at) === T) return void ids.push(res.body.lease.id);
      if (attempt >= 3) throw new Error(`lease ${i}: could not hit the expiry second ${T}`);
      await L.request(agent, `${broker.url}/v1/leases/${res.body.lease.id}`, { method: "DELETE", token });
    }
  });
  agent.destroy();
  if (errors.length) throw errors[0];
  if (Date.now() > T - 1000) throw new Error(`issuing ${n} leases reached the common expiry; raise --lead`);
  const due = `{${cfg.redis.prefix}}:leases:due`;
  await L.sleep(Math.max(0, T - Date.now()));
  const deadline = T + 120_000;
  while ((await rc.zcount(due, "-inf", String(T + 1000))) > 0 && Date.now() < deadline) await L.sleep(100);
  const p = rc.pipeline();
  for (const id of ids) p.hmget(`{${cfg.redis.prefix}}:lease:${id}`, "exp", "rat", "state");
  const rows = (await p.exec()).map(([, v]) => v);
  const lags = rows.filter((r) => r[1] !== null).map((r) => Number(r[1]) - Number(r[0]));
  lags.sort((a, b) => a - b);
  const states = {};
  for (const r of rows) states[r[2]] = (states[r[2]] ?? 0) + 1;
  return { n, states, p50_ms: L.percentile(lags, 50), p99_ms: L.percentile(lags, 99), max_ms: lags[lags.length - 1] };
}

async function main() {
  const N = opt("n", 10_000);
  const dir = L.tmpdir("scale");
  const redis = await L.startRedis({ appendonly: false });
  const issuer = await L.createIssuer(dir);
  const port = await L.freePort();
  const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port, quota: 0, issuer });
  const rc = L.redisClient(redis.url);
  const tag = `{${cfg.redis.prefix}}`;
  let broker;
  try {
    // Probe: one real exchange gives the decision (policy ids, set hash) the filled leases carry.
    broker = await L.spawnBroker(dir, cfg);
    const agentTokens = await Promise.all(Array.from({ length: L.AGENTS }, (_, i) => issuer.token(L.agentId(i))));
    const probe = await L.request(undefined, `${broker.url}/v1/credentials`, { method: "POST", token: agentTokens[0], body: { role: "orders-read", task: { id: "probe" } } });
    if (probe.status !== 201) throw new Error(`probe exchange failed: ${probe.status} ${JSON.stringify(probe.body)}`);
    await broker.stop();
    broker = undefined;

    fs.writeFileSync(path.join(dir, "fill.json"), JSON.stringify({ redisUrl: redis.url, prefix: cfg.redis.prefix, ttlMs: opt("ttl-min", 90) * 60_000, handle: L.strArg(argv, "handle") ?? "jwt", policy: probe.body.lease.policy }));
    const info = async () => Number(/^used_memory:(\d+)/m.exec(await rc.info("memory"))[1]);
    await L.sleep(200);
    const memBefore = await info();
    const fillSeconds = await fillAll(dir, N, opt("fill-chunk", 100_000), opt("fill-parallel", 2));
    await L.sleep(200);
    const memAfter = await info();
    const usage = async (k) => Number((await rc.call("MEMORY", "USAGE", k, "SAMPLES", "0")) ?? 0);
    // The filled leases expire last (the probe's lease first): a sample of them.
    const sample = await rc.zrange(`${tag}:leases:due`, -200, -1);
    let hashBytes = 0;
    for (const id of sample) hashBytes += await usage(`${tag}:lease:${id}`);
    const shared = {
      "leases:due": `${tag}:leases:due`,
      "leases:all": `${tag}:leases:all`,
      "live:tasks": `${tag}:live:tasks`,
      "live:workload:*": Array.from({ length: L.AGENTS }, (_, i) => `${tag}:live:workload:${L.agentId(i)}`),
      "live:role:orders-read": `${tag}:live:role:orders-read`,
      "live:issuer:idp": `${tag}:live:issuer:idp`,
    };
    const sharedPerLease = {};
    for (const [name, k] of Object.entries(shared)) {
      let t = 0;
      for (const key of [].concat(k)) t += await usage(key);
      sharedPerLease[name] = Math.round((t / N) * 10) / 10;
    }
    const memory = {
      bytes_per_lease: (memAfter - memBefore) / N,
      used_memory_after: memAfter,
      lease_hash: hashBytes / sample.length,
      lease_hash_encoding: await rc.object("ENCODING", `${tag}:lease:${sample[0]}`),
      lease_hash_fields: Object.keys(await rc.hgetall(`${tag}:lease:${sample[0]}`)).length,
      lease_hash_listpack_bytes: listpackBytes(await rc.hgetall(`${tag}:lease:${sample[0]}`)),
      shared_per_lease: sharedPerLease,
      keys: await rc.dbsize(),
    };
    process.stderr.write(`${N} leases filled in ${fillSeconds.toFixed(0)} s: ${memory.bytes_per_lease.toFixed(0)} B/lease; lease hash ${memory.lease_hash} B (${memory.lease_hash_encoding}, ${memory.lease_hash_fields} fields, ${memory.lease_hash_listpack_bytes} B of listpack); shared ${JSON.stringify(sharedPerLease)}\n`);

    broker = await L.spawnBroker(dir, cfg);
    const result = { n: N, fill_seconds: fillSeconds, memory, exchange: [], lag: [] };
    const tokens = [];
    if (!argv.includes("--skip-exchange")) {
      const poolSize = opt("token-pool", 12_000);
      for (let i = 0; i < poolSize; i += 500) tokens.push(...(await Promise.all(Array.from({ length: Math.min(500, poolSize - i) }, (_, j) => issuer.token(L.agentId((i + j) % L.AGENTS), 3000, { jti: `s${i + j}-${Math.random().toString(36).slice(2)}` })))));
    }
    // --runs R: R rounds of (exchange, lag) on the same filled Redis; the medians are reported.
    for (let run = 1; run <= opt("runs", 1); run++) {
      if (!argv.includes("--skip-exchange")) {
        const x = await exchangeLoad({
          url: broker.url,
          tokens,
          warmupMs: opt("warmup", 2) * 1000,
          durationMs: opt("duration", 10) * 1000,
          concurrency: opt("concurrency", 50),
          watch: { procs: { broker: broker.pid, redis: redis.pid }, redisPort: redis.port },
          runId: `${Date.now().toString(36)}r${run}`,
        });
        result.exchange.push({ ...x, load: os.loadavg()[0] });
        process.stderr.write(`run ${run} exchange: ${x.rps.toFixed(0)} req/s, p99 ${x.p99_ms?.toFixed(1)} ms, broker CPU ${x.broker_cpu_ms?.toFixed(3)} ms, Redis CPU ${x.redis_cpu_ms?.toFixed(3)} ms per exchange, errors ${x.errors} (load ${os.loadavg()[0].toFixed(1)})\n`);
        await L.sleep(1000);
      }
      if (!argv.includes("--skip-lag")) {
        const g = await expiryLag({ broker, cfg, rc, tokens: agentTokens, n: opt("lag-n", 2000), leadMs: opt("lead", 30) * 1000 });
        result.lag.push({ ...g, load: os.loadavg()[0] });
        process.stderr.write(`run ${run} lag of ${g.n} expiries in one second: p50 ${g.p50_ms} ms, p99 ${g.p99_ms} ms, max ${g.max_ms} ms; ${JSON.stringify(g.states)} (load ${os.loadavg()[0].toFixed(1)})\n`);
      }
    }
    const med = (xs) => L.median(xs.filter((x) => typeof x === "number"));
    result.median = {
      broker_cpu_ms: med(result.exchange.map((x) => x.broker_cpu_ms)),
      redis_cpu_ms: med(result.exchange.map((x) => x.redis_cpu_ms)),
      rps: med(result.exchange.map((x) => x.rps)),
      exchange_p99_ms: med(result.exchange.map((x) => x.p99_ms)),
      lag_p50_ms: med(result.lag.map((x) => x.p50_ms)),
      lag_p99_ms: med(result.lag.map((x) => x.p99_ms)),
    };
    process.stderr.write(`medians: ${JSON.stringify(result.median)}\n`);
    if (broker.crashed()) throw new Error("the broker died during the run");
    L.emit("scale", result);
  } finally {
    rc.disconnect();
    await broker?.stop();
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (argv[0] === "--fill") L.runMain(() => fill(argv[1], Number(argv[2]), Number(argv[3])));
else L.runMain(main);
