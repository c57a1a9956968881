"use strict";
/**
 * Shared helpers for the benchmarks in scripts/bench/. Plain CommonJS; requires the compiled
 * broker from dist/ (run `npm run build` first; scripts/bench/run does).
 *
 * Everything runs on loopback: a private redis-server (src/redis/server.ts), a local OIDC
 * issuer that is just an RSA key pair whose public half is written to a `jwks_file`, and brokers
 * started either in this process (createBroker) or as a child `jitbroker serve` process.
 */
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const http = require("node:http");
const net = require("node:net");
const { spawn } = require("node:child_process");

const ROOT = path.resolve(__dirname, "../..");
// BENCH_DIST: an alternative build to benchmark (e.g. a patched copy); default dist/.
const DIST = process.env.BENCH_DIST ? path.resolve(process.env.BENCH_DIST) : path.join(ROOT, "dist");
const dist = (p) => require(path.join(DIST, p));

const { SignJWT, exportJWK, generateKeyPair } = require("jose");
const YAML = require("yaml");
const { Redis } = require("ioredis");

const ISSUER_URL = "https://idp.bench.invalid";
const AUDIENCE = "jitbroker";

/**
 * Children to stop if this process is interrupted (SIGINT/SIGTERM): redis-servers and brokers
 * are unref'd children, which would otherwise outlive an interrupted benchmark.
 */
const cleanups = new Set();
function onInterrupt(signal) {
  for (const fn of cleanups) {
    try {
      fn();
    } catch {
      /* best effort */
    }
  }
  process.exit(signal === "SIGINT" ? 130 : 143);
}
process.once("SIGINT", onInterrupt);
process.once("SIGTERM", onInterrupt);

function tmpdir(tag) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `jitbroker-bench-${tag}-`));
}

/**
 * A private redis-server on a free loopback port. `opts.dir`: a data directory to start from (a
 * copy of another server's, e.g. a prepared data set); removed by stop() like the default one.
 */
async function startRedis(opts = {}) {
  const { startRedisServer } = dist("redis/server.js");
  const dir = opts.dir ?? tmpdir("redis");
  const r = await startRedisServer({ dir, appendonly: opts.appendonly ?? true });
  const kill = () => process.kill(r.pid, "SIGKILL");
  cleanups.add(kill);
  return {
    ...r,
    async stop() {
      cleanups.delete(kill);
      await r.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A local OIDC issuer: an RS256 key; the public JWKS is written to `<dir>/jwks.json`. */
async function createIssuer(dir) {
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const kid = "bench-1";
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" };
  const jwksFile = path.join(dir, "jwks.json");
  fs.writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));
  return {
    jwksFile,
    /** A workload token: iss, aud, sub, iat now, exp in `ttlSec` (default 50 min; max_token_lifetime is 1h). */
    token(sub, ttlSec = 3000, claims = {}) {
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT(claims).setProtectedHeader({ alg: "RS256", kid, typ: "JWT" }).setIssuer(ISSUER_URL).setAudience(AUDIENCE).setSubject(sub).setIssuedAt(now).setExpirationTime(now + ttlSec).sign(privateKey);
    },
  };
}

const AGENTS = 50;
const agentId = (i) => `agent-${i}`;

/**
 * The benchmark configuration: `AGENTS` agent workloads (agent-0 .. agent-49), one operator
 * (`ops`, kind human, owner @example.com, so the example policies let it revoke), and three
 * jwt roles. The example policies of config/policies are used unchanged.
 */
function brokerConfig({ dir, redisUrl, prefix = "bench", port = 8080, quota = 0, worker = {}, issuer }) {
  return {
    server: { listen: `127.0.0.1:${port}`, public_url: `http://127.0.0.1:${port}`, audience: AUDIENCE },
    redis: { url: redisUrl, prefix },
    identity: { issuers: [{ name: "idp", type: "oidc", issuer: ISSUER_URL, jwks_file: issuer.jwksFile, algorithms: ["RS256"] }] },
    workloads: [
      ...Array.from({ length: AGENTS }, (_, i) => ({ id: agentId(i), kind: "agent", owner: "agents@example.com", purpose: "benchmark agent", issuer: "idp", subject: agentId(i) })),
      { id: "ops", kind: "human", owner: "ops@example.com", purpose: "benchmark operator", issuer: "idp", subject: "ops" },
    ],
    roles: [
      { name: "orders-read", backend: "jwt", ttl: { default: "5m", max: "15m" }, labels: { sensitivity: "internal", access: "read" }, jwt: { audience: "https://orders.internal", scope: "orders:read" } },
      { name: "short-read", backend: "jwt", ttl: { default: "30s", max: "2m" }, labels: { sensitivity: "internal", access: "read" }, jwt: { audience: "https://orders.internal" } },
    ],
    backends: { jwt: { signing_key_file: path.join(dir, "signing-key.json") } },
    leases: { quota_per_workload: quota },
    // The rate limiter stays on (one Redis round trip per request is part of the cost) but never refuses.
    limits: { requests_per_minute: 1_000_000_000 },
    worker,
    policy: { files: [path.join(ROOT, "config/policies/*.cedar")] },
  };
}

function writeConfig(dir, cfg) {
  const file = path.join(dir, "broker.yaml");
  fs.writeFileSync(file, YAML.stringify(cfg));
  return file;
}

/** Child environment without the variables that would override the generated config. */
function childEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  for (const k of ["REDIS_URL", "JITBROKER_LISTEN", "JITBROKER_CONFIG"]) delete env[k];
  return env;
}

async function waitHttp(url, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/**
 * `jitbroker serve --config <file>` as a child process; its log (pino, level info as in
 * production) goes to `<dir>/broker.log`. Set BENCH_CPU_PROF=<dir> to profile it (--cpu-prof).
 * `nodeArgs`: extra V8/Node flags for the broker process (e.g. --cpu-prof). `dist`: another build
 * to run (default DIST), e.g. the one before a change, to measure both side by side.
 */
async function spawnBroker(dir, cfg, { logLevel, nodeArgs: extraNodeArgs = [], dist: distDir = DIST } = {}) {
  const file = writeConfig(dir, cfg);
  const log = fs.openSync(path.join(dir, "broker.log"), "a");
  const nodeArgs = [...extraNodeArgs];
  if (process.env.BENCH_CPU_PROF) nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`);
  const child = spawn(process.execPath, [...nodeArgs, path.join(distDir, "cli/main.js"), "serve", "--config", file], {
    stdio: ["ignore", log, log],
    env: childEnv(logLevel ? { JITBROKER_LOG_LEVEL: logLevel } : {}),
  });
  fs.closeSync(log);
  const kill = () => child.kill("SIGKILL");
  cleanups.add(kill);
  let stopping = false;
  const exited = new Promise((r) =>
    child.once("exit", (code, sig) => {
      if (!stopping) {
        // An unexpected exit: keep the evidence (the temp dir is removed at the end of a run).
        const keep = path.join(os.tmpdir(), `jitbroker-bench-crash-${child.pid}.log`);
        try {
          fs.copyFileSync(path.join(dir, "broker.log"), keep);
        } catch {
          /* nothing to keep */
        }
        process.stderr.write(`!! broker pid ${child.pid} exited unexpectedly (code ${code}, signal ${sig}); log kept in ${keep}\n`);
      }
      r({ code, sig });
    }),
  );
  const url = cfg.server.public_url;
  await Promise.race([waitHttp(`${url}/readyz`), exited.then((e) => Promise.reject(new Error(`broker exited early (${JSON.stringify(e)}); see ${dir}/broker.log`)))]);
  return {
    url,
    pid: child.pid,
    logFile: path.join(dir, "broker.log"),
    exited,
    /** True if the broker died on its own (not through stop()). */
    crashed: () => !stopping && (child.exitCode !== null || child.signalCode !== null),
    async stop() {
      stopping = true;
      cleanups.delete(kill);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** The bare express endpoint (scripts/bench/bare-server.js) as a child process. */
async function spawnBare(port) {
  const child = spawn(process.execPath, [path.join(__dirname, "bare-server.js"), String(port)], { stdio: ["ignore", "ignore", "inherit"], env: childEnv() });
  const kill = () => child.kill("SIGKILL");
  cleanups.add(kill);
  const exited = new Promise((r) => child.once("exit", (code, sig) => r({ code, sig })));
  const url = `http://127.0.0.1:${port}`;
  await Promise.race([waitHttp(`${url}/healthz`), exited.then((e) => Promise.reject(new Error(`bare server exited early (${JSON.stringify(e)})`)))]);
  return {
    url,
    pid: child.pid,
    async stop() {
      cleanups.delete(kill);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/**
 * The limit server (scripts/bench/limit-server.js) as a child process: the exchange's irreducible
 * work with the broker's libraries, policies, issuer keys, signing key file and Redis.
 */
async function spawnLimit(port, dir, cfg, issuer) {
  const roleCfg = cfg.roles.find((r) => r.name === "orders-read");
  const ms = require("ms");
  const file = path.join(dir, "limit.json");
  fs.writeFileSync(
    file,
    JSON.stringify({
      redisUrl: cfg.redis.url,
      prefix: `${cfg.redis.prefix}-limit`,
      jwksFile: issuer.jwksFile,
      issuer: ISSUER_URL,
      audience: AUDIENCE,
      policyFiles: cfg.policy.files,
      signingKeyFile: cfg.backends.jwt.signing_key_file,
      publicUrl: cfg.server.public_url,
      role: { ...roleCfg, ttl: { default: ms(roleCfg.ttl.default), max: ms(roleCfg.ttl.max) } },
    }),
  );
  // BENCH_CPU_PROF profiles the limit server too (limit-*.cpuprofile), to compare part by part.
  const prof = process.env.BENCH_CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`, `--cpu-prof-name=limit-${Date.now()}.cpuprofile`] : [];
  const child = spawn(process.execPath, [...prof, path.join(__dirname, "limit-server.js"), String(port), file], { stdio: ["ignore", "ignore", "inherit"], env: childEnv() });
  const kill = () => child.kill("SIGKILL");
  cleanups.add(kill);
  const exited = new Promise((r) => child.once("exit", (code, sig) => r({ code, sig })));
  const url = `http://127.0.0.1:${port}`;
  await Promise.race([waitHttp(`${url}/healthz`), exited.then((e) => Promise.reject(new Error(`limit server exited early (${JSON.stringify(e)})`)))]);
  return {
    url,
    pid: child.pid,
    async stop() {
      cleanups.delete(kill);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/** A broker in this process (same composition root as `serve`), logging nowhere. */
async function inProcessBroker(dir, cfg, { worker = false } = {}) {
  const { parseConfig } = dist("config/load.js");
  const { createBroker } = dist("broker.js");
  const pino = require("pino");
  const file = writeConfig(dir, cfg);
  const loaded = parseConfig(fs.readFileSync(file, "utf8"), file, {});
  const broker = await createBroker(loaded, { logger: pino({ level: "silent" }), parts: { api: true, worker } });
  // Request-path Redis connections have no offline queue: wait until they are connected.
  const deadline = Date.now() + 10_000;
  while (broker.redis.status !== "ready") {
    if (Date.now() > deadline) throw new Error("in-process broker: redis not ready");
    await sleep(20);
  }
  return broker;
}

/**
 * Issues `n` leases through the service layer in short-lived child processes of `chunk` leases
 * each (scripts/bench/create-leases.js), `parallel` at a time. Returns the lease ids if `ids`.
 */
async function createLeasesChunked(dir, cfg, { n, chunk = 5000, parallel = 1, args = [], ids = false, label = "" }) {
  fs.writeFileSync(path.join(dir, "cfg.json"), JSON.stringify(cfg));
  const out = [];
  const starts = [];
  for (let from = 0; from < n; from += chunk) starts.push(from);
  let done = 0;
  let failed = false;
  await pool(starts.length, parallel, async (k) => {
    const from = starts[k];
    const count = Math.min(chunk, n - from);
    if (failed) return;
    const child = spawn(process.execPath, [path.join(__dirname, "create-leases.js"), dir, String(from), String(count), ...args, ...(ids ? ["--print-ids"] : [])], {
      stdio: ["ignore", "pipe", "inherit"],
      env: childEnv(),
    });
    let text = "";
    child.stdout.on("data", (c) => (text += c));
    const { code, sig } = await new Promise((r) => child.once("exit", (code, sig) => r({ code, sig })));
    if (code !== 0) {
      failed = true;
      throw new Error(`create-leases ${from}+${count} failed (code ${code}, signal ${sig})`);
    }
    if (ids) out.push(...JSON.parse(/^IDS (.*)$/m.exec(text)[1]));
    done += count;
    if (label) process.stderr.write(`  ${label}: ${done}/${n}\n`);
  }).then((errors) => {
    if (errors.length) throw errors[0];
  });
  return out;
}

/** A synthetic AuthContext (what `authenticate` puts on req.auth) for an inventory workload. */
function authFor(broker, cfg, workloadId) {
  const w = cfg.workloads.find((x) => x.id === workloadId);
  return {
    identity: { issuer: "idp", kind: "oidc", iss: ISSUER_URL, subject: w.subject, claims: { sub: w.subject, iss: ISSUER_URL, aud: AUDIENCE }, jti: undefined, expiresAt: Date.now() + 3600_000 },
    workload: { id: w.id, kind: w.kind, owner: w.owner, purpose: w.purpose, issuer: w.issuer, subject: w.subject, claims: {} },
  };
}

/** Runs `fn(i)` for i in [0, n) with at most `concurrency` in flight. Bounded. */
async function pool(n, concurrency, fn) {
  let next = 0;
  const errors = [];
  async function lane() {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      try {
        await fn(i);
      } catch (e) {
        errors.push(e);
        if (errors.length > 20) throw e;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, lane));
  return errors;
}

/** One JSON request over a keep-alive agent. Resolves {status, body} (body parsed if JSON). */
function request(agent, url, { method = "GET", token, body } = {}) {
  const u = new URL(url);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        method,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(payload ? { "content-type": "application/json", "content-length": payload.length } : {}),
        },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            /* keep text */
          }
          resolve({ status: res.statusCode, body: parsed });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    if (payload) req.write(payload);
    req.end();
  });
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return dist("redis/server.js").findFreePort();
}

const CLK_TCK = (() => {
  try {
    return Number(require("node:child_process").execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * CPU seconds a process has used so far, from /proc (Linux): `cpu` user + system, and `sys` the
 * system (kernel) part of it, socket and pipe I/O. NaN for both when the process is gone.
 */
function cpuTimes(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { cpu: (Number(f[11]) + Number(f[12])) / CLK_TCK, sys: Number(f[12]) / CLK_TCK };
  } catch {
    return { cpu: NaN, sys: NaN };
  }
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
function cpuSeconds(pid) {
  return cpuTimes(pid).cpu;
}

/** Redis INFO commandstats as {command: {calls, usec}}. */
async function commandStats(port) {
  const { rawCommand } = dist("redis/server.js");
  const text = (await rawCommand(port, ["INFO", "commandstats"], { timeoutMs: 5000 })) ?? "";
  const out = {};
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) out[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
  return out;
}

/** watch = {procs: {name: pid}, redisPort?}: CPU per process and Redis command counters now. */
async function snapshot(watch = {}) {
  const cpu = {};
  const sys = {};
  for (const [name, pid] of Object.entries(watch.procs ?? {})) ({ cpu: cpu[name], sys: sys[name] } = cpuTimes(pid));
  return { cpu, sys, cmds: watch.redisPort ? await commandStats(watch.redisPort) : {} };
}

/** CPU ms per request by process, and Redis calls / usec per request by command, between two snapshots. */
function costPerRequest(before, after, n) {
  if (!before || !after || n === 0) return null;
  const cpu_ms = {};
  for (const k of Object.keys(after.cpu)) cpu_ms[k] = ((after.cpu[k] - before.cpu[k]) * 1000) / n;
  // Of that, kernel time (socket writes and reads: the cost of each round trip and log write).
  const sys_ms = {};
  for (const k of Object.keys(after.sys ?? {})) sys_ms[k] = ((after.sys[k] - before.sys[k]) * 1000) / n;
  const redis = {};
  for (const [cmd, a] of Object.entries(after.cmds)) {
    const b = before.cmds[cmd] ?? { calls: 0, usec: 0 };
    const calls = a.calls - b.calls;
    if (calls > 0) redis[cmd] = { calls_per_req: calls / n, usec_per_req: (a.usec - b.usec) / n };
  }
  return { cpu_ms, sys_ms, redis };
}

/** Prints one machine-readable result line (the runner collects lines starting with RESULT). */
function emit(name, data) {
  process.stdout.write(`RESULT ${JSON.stringify({ bench: name, ...data })}\n`);
}

function redisClient(url) {
  return new Redis(url, { maxRetriesPerRequest: 3 });
}

/** `--k <number>` from argv, or `d`. */
function numArg(argv, k, d) {
  const i = argv.indexOf(`--${k}`);
  return i >= 0 ? Number(argv[i + 1]) : d;
}

/** `--k <text>` from argv, or undefined. */
function strArg(argv, k) {
  const i = argv.indexOf(`--${k}`);
  return i >= 0 ? argv[i + 1] : undefined;
}

/** Runs a benchmark's main(): exit 0 when it resolves, print the error and exit 1 otherwise. */
function runMain(main) {
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}

/**
 * A lean HTTP/1.1 keep-alive client: one TCP connection per simulated client, requests written
 * as prebuilt bytes, responses parsed just enough (status line, Content-Length or chunked end).
 * node:http's client costs more CPU per request than a bare express handler, and the load
 * generator shares the two cores with the servers, so a heavy client would cap the baseline.
 */
function connection(port) {
  const sock = net.connect({ host: "127.0.0.1", port });
  sock.setNoDelay(true);
  let buf = Buffer.alloc(0);
  let waiting = null;
  const ready = new Promise((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  sock.on("error", (e) => waiting?.reject(e));
  sock.on("close", () => waiting?.reject(new Error("closed")));
  sock.on("data", (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    if (!waiting) return;
    const he = buf.indexOf("\r\n\r\n");
    if (he < 0) return;
    const head = buf.subarray(0, he).toString("latin1");
    const status = Number(head.slice(9, 12));
    const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    let end;
    if (m) {
      end = he + 4 + Number(m[1]);
      if (buf.length < end) return;
    } else {
      const z = buf.indexOf("\r\n0\r\n\r\n", he);
      if (z < 0) return;
      end = z + 7;
    }
    buf = buf.subarray(end);
    const w = waiting;
    waiting = null;
    w.resolve(status);
  });
  return {
    ready,
    send(bytes) {
      return new Promise((resolve, reject) => {
        waiting = { resolve, reject };
        sock.write(bytes);
      });
    },
    close: () => sock.destroy(),
  };
}

function requestBytes(method, path, headers, payload) {
  let head = `${method} ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: keep-alive\r\n`;
  for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
  head += "\r\n";
  return payload ? Buffer.concat([Buffer.from(head, "latin1"), payload]) : Buffer.from(head, "latin1");
}

module.exports = {
  connection,
  requestBytes,
  numArg,
  strArg,
  runMain,
  ROOT,
  DIST,
  dist,
  AGENTS,
  agentId,
  tmpdir,
  startRedis,
  createIssuer,
  brokerConfig,
  writeConfig,
  spawnBroker,
  spawnBare,
  spawnLimit,
  inProcessBroker,
  createLeasesChunked,
  authFor,
  pool,
  request,
  percentile,
  median,
  sleep,
  freePort,
  emit,
  redisClient,
  cpuSeconds,
  commandStats,
  snapshot,
  costPerRequest,
};
