"use strict";
/**
 * Benchmark 5: continuous re-authorization of N active leases after a policy change.
 *
 * Setup (not timed): a private redis-server; N leases (default 10,000) of role orders-read,
 * ttl 10 min, issued through the service layer as the mass-revoke benchmark does
 * (create-leases.js: `broker.service.issue` with a synthetic AuthContext, helper processes of
 * 5,000 leases), spread over the 50 agent workloads: lease i belongs to agent-(i mod 50).
 *
 * The policy files are `<dir>/policies/*.cedar`, where `<dir>/policies` is a symlink to a copy of
 * config/policies. The change is an atomic swap of that symlink to a second copy that also holds
 * a forbid on the first F workloads (default 5: agent-0 .. agent-4, i.e. F/50 = 10 % of the
 * leases). The broker's file watcher watches the directory the symlink pointed to when it
 * started, which does not change: the reload is the one the benchmark asks for, and no
 * watcher-triggered re-authorization races it.
 *
 * Timed: the broker as a child `jitbroker serve` process (API + worker, default settings);
 *   1. baseline: the probes below run for BASELINE s against the idle broker;
 *   2. the symlink is swapped and the operator `ops` sends POST /v1/admin/policy/reload; its
 *      answer carries {reauthorization: {reevaluated, revoked, kept, skipped}}. If the walk
 *      outlives the broker's wait (20 s) the answer is a 202 and the walk goes on: its end and
 *      its report are then the broker's log line "active leases re-authorized" (broker.log,
 *      polled every 25 ms), and "answer" below means that line;
 *   3. the revoked leases are taken by the worker (same process); the benchmark polls SCARD of
 *      the forbidden workloads' live sets (a lease leaves them when it reaches `revoked`) every
 *      25 ms until they are empty.
 * Probes, open loop (sent on a fixed schedule whether or not the previous one answered, so a
 * stalled event loop shows in every request that arrives during the stall): GET /healthz every
 * 10 ms and POST /v1/credentials (agents agent-F .. agent-49, which stay allowed, a new task each)
 * every 25 ms. Reported per phase (baseline, walk = POST sent → answered, tail = answered → all
 * revoked): p50 / p99 / max latency. The broker's own event-loop delay (prom-client's
 * monitorEventLoopDelay, reset by each GET /metrics) is read just before the POST and right
 * after its answer.
 *
 * Checked (the run fails otherwise): the answer's revoked = exactly the number of leases of the
 * forbidden workloads; kept = reevaluated − revoked; reevaluated + skipped ≥ N and skipped no more
 * than the credential probes sent before the answer (a probe's lease still `issuing` when the walk
 * reads it is skipped: its own request decides it again; leases issued by the probe may be
 * re-evaluated too, so reevaluated can exceed N); afterwards every
 * one of the N leases is read from Redis: the forbidden workloads' leases are `revoked` with
 * trigger `policy_change`, every other one is still `active`; every probe got 200/201.
 *
 * Usage: node scripts/bench/reauth.js [--n 10000] [--forbid 5] [--baseline 3] [--create-concurrency 64]
 */
const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const L = require("./lib");

const argv = process.argv.slice(2);
const opt = (k, d) => L.numArg(argv, k, d);
const N = opt("n", 10_000);
const FORBID = opt("forbid", 5);
const BASELINE_MS = opt("baseline", 3) * 1000;
const CREATE_CONCURRENCY = opt("create-concurrency", 64);
const TIMEOUT_MS = opt("timeout", 600) * 1000;
const HEALTH_EVERY_MS = 10;
const CRED_EVERY_MS = 25;

const forbidden = Array.from({ length: FORBID }, (_, i) => L.agentId(i));

function forbidPolicy() {
  return [
    "// Added by scripts/bench/reauth.js: the policy change that revokes these workloads' leases.",
    '@id("bench-forbid-some-agents")',
    "forbid (principal, action == Action::\"request\", resource is Role)",
    `when { ${forbidden.map((w) => `principal == Workload::"${w}"`).join(" || ")} };`,
    "",
  ].join("\n");
}

/** Two copies of the example policies (the second with the forbid) and a symlink to the first. */
function policyDirs(dir) {
  const before = path.join(dir, "policies-before");
  const after = path.join(dir, "policies-after");
  for (const d of [before, after]) {
    fs.mkdirSync(d);
    for (const f of fs.readdirSync(path.join(L.ROOT, "config/policies"))) {
      if (f.endsWith(".cedar")) fs.copyFileSync(path.join(L.ROOT, "config/policies", f), path.join(d, f));
    }
  }
  fs.writeFileSync(path.join(after, "zz-bench-forbid.cedar"), forbidPolicy());
  const link = path.join(dir, "policies");
  fs.symlinkSync(before, link);
  return {
    pattern: path.join(link, "*.cedar"),
    /** Atomic swap: a new symlink renamed over the old one. */
    swap() {
      const tmp = path.join(dir, "policies.new");
      fs.symlinkSync(after, tmp);
      fs.renameSync(tmp, link);
    },
  };
}

/** New JSON lines of a growing log file, read incrementally: find(pred) scans what arrived since the last call too. */
function logTail(file) {
  let pos = 0;
  let rest = "";
  const lines = [];
  const pull = () => {
    let fd;
    try {
      fd = fs.openSync(file, "r");
    } catch {
      return;
    }
    try {
      const buf = Buffer.alloc(1 << 20);
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, pos);
        if (n <= 0) break;
        pos += n;
        const parts = (rest + buf.toString("utf8", 0, n)).split("\n");
        rest = parts.pop();
        for (const l of parts) {
          if (!l.includes("re-authorized")) continue;
          try {
            lines.push(JSON.parse(l));
          } catch {
            /* not a JSON line */
          }
        }
      }
    } finally {
      fs.closeSync(fd);
    }
  };
  return {
    find(pred) {
      pull();
      return lines.find(pred);
    },
  };
}

const stats = (xs) => {
  const s = xs.map((x) => x.ms).sort((a, b) => a - b);
  return { n: s.length, p50_ms: round(L.percentile(s, 50)), p99_ms: round(L.percentile(s, 99)), max_ms: round(s[s.length - 1] ?? NaN) };
};
const round = (x, d = 1) => (Number.isFinite(x) ? Number(x.toFixed(d)) : null);

/** prom-client's event-loop delay gauges from GET /metrics (seconds → ms). */
async function eventLoopDelay(url) {
  const res = await L.request(undefined, `${url}/metrics`);
  const text = String(res.body);
  const g = (name) => {
    const m = new RegExp(`^jitbroker_nodejs_eventloop_lag_${name}_seconds (\\S+)$`, "m").exec(text);
    return m ? round(Number(m[1]) * 1000) : null;
  };
  return { mean_ms: g("mean"), p50_ms: g("p50"), p99_ms: g("p99"), max_ms: g("max") };
}

async function main() {
  const dir = L.tmpdir("reauth");
  const redis = await L.startRedis();
  const issuer = await L.createIssuer(dir);
  const port = await L.freePort();
  const pol = policyDirs(dir);
  const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port, quota: 0, issuer });
  cfg.policy.files = [pol.pattern];
  const p = `{${cfg.redis.prefix}}`;
  let broker;
  const rc = L.redisClient(redis.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const probes = [];
  try {
    // --- setup: N active leases spread over the 50 agents -------------------------------------
    const t0 = Date.now();
    const ids = await L.createLeasesChunked(dir, cfg, { n: N, chunk: 5000, parallel: 2, ids: true, args: ["--spread", "--task-prefix", "reauth", "--ttl-ms", "600000", "--concurrency", String(CREATE_CONCURRENCY)], label: "created" });
    const createMs = Date.now() - t0;
    const live = await rc.zcard(`${p}:leases:due`);
    if (live !== N || ids.length !== N) throw new Error(`expected ${N} live leases, found ${live} (${ids.length} ids)`);
    let expected = 0;
    for (const w of forbidden) expected += await rc.scard(`${p}:live:workload:${w}`);
    if (expected !== Math.floor(N / L.AGENTS) * FORBID + Math.min(FORBID, N % L.AGENTS)) throw new Error(`unexpected number of leases of the forbidden workloads: ${expected}`);
    process.stderr.write(`created ${N} leases in ${(createMs / 1000).toFixed(1)} s; ${expected} belong to ${forbidden[0]}..${forbidden[FORBID - 1]}\n`);

    // --- the broker, tokens, probes --------------------------------------------------------------
    broker = await L.spawnBroker(dir, cfg);
    const opsToken = await issuer.token("ops");
    const credTokens = await Promise.all(Array.from({ length: L.AGENTS - FORBID }, (_, i) => issuer.token(L.agentId(FORBID + i))));
    const runId = Date.now().toString(36);
    let credSeq = 0;
    const probe = (kind, fn, expectStatus) => {
      const at = performance.now();
      const rec = { kind, at, ms: NaN, status: null };
      probes.push(rec);
      fn().then(
        (r) => {
          rec.ms = performance.now() - at;
          rec.status = r.status;
          if (r.status !== expectStatus) rec.error = JSON.stringify(r.body).slice(0, 300);
        },
        (e) => {
          rec.ms = performance.now() - at;
          rec.status = `error:${e.code ?? e.message}`;
        },
      );
    };
    const health = () => probe("healthz", () => L.request(agent, `${broker.url}/healthz`), 200);
    const cred = () => {
      const k = credSeq++;
      probe("credential", () => L.request(agent, `${broker.url}/v1/credentials`, { method: "POST", token: credTokens[k % credTokens.length], body: { role: "orders-read", task: { id: `probe-${runId}-${k}` } } }), 201);
    };
    // Warm-up (not recorded): the first requests of a fresh process compile their code paths.
    for (let i = 0; i < 50; i++) {
      await L.request(agent, `${broker.url}/healthz`);
      const r = await L.request(agent, `${broker.url}/v1/credentials`, { method: "POST", token: credTokens[i % credTokens.length], body: { role: "orders-read", task: { id: `warm-${runId}-${i}` } } });
      if (r.status !== 201) throw new Error(`warm-up exchange: ${r.status} ${JSON.stringify(r.body)}`);
    }
    const timers = [setInterval(health, HEALTH_EVERY_MS), setInterval(cred, CRED_EVERY_MS)];
    const tBaseline = performance.now();
    await L.sleep(BASELINE_MS);

    // --- timed: policy change + reload -----------------------------------------------------------
    const watch = { procs: { broker: broker.pid, redis: redis.pid }, redisPort: redis.port };
    await eventLoopDelay(broker.url); // resets the broker's event-loop delay histogram
    pol.swap();
    const before = await L.snapshot(watch);
    const tPost = performance.now();
    const reloadP = L.request(undefined, `${broker.url}/v1/admin/policy/reload`, { method: "POST", token: opsToken });
    // Poll the forbidden workloads' live sets until every one of their leases is revoked.
    const liveKeys = forbidden.map((w) => `${p}:live:workload:${w}`);
    const remaining = async () => {
      const pipe = rc.pipeline();
      for (const k of liveKeys) pipe.scard(k);
      return (await pipe.exec()).reduce((a, [, v]) => a + v, 0);
    };
    // The walk's end: the reload's 200 answer carries its report; after a 202 (the walk outlived
    // the broker's wait) the walk goes on, and its end is its log line, polled below.
    const walkLog = logTail(path.join(dir, "broker.log"));
    let answered = null;
    let http202At = null;
    reloadP.then(
      (r) => {
        if (r.status === 202) http202At = performance.now();
        else answered = { r, at: performance.now() };
      },
      (e) => (answered = { e, at: performance.now() }),
    );
    let elAfter = null;
    let mid = null;
    let firstRevokedMs = null;
    let tDone = null;
    for (;;) {
      if (http202At !== null && !answered) {
        const line = walkLog.find((x) => x.msg === "active leases re-authorized" && x.source === "POST /v1/admin/policy/reload");
        if (line) {
          const r = await reloadP;
          const { msg: _m, source: _s, level: _l, time: _t, pid: _p, hostname: _h, cedar_decisions: _c, ms: _ms, ...report } = line;
          answered = { r: { status: 200, body: { ...r.body, reauthorization: { state: "completed", ...report } } }, at: performance.now(), http202At };
        }
      }
      if (answered && !elAfter) {
        elAfter = eventLoopDelay(broker.url);
        mid = L.snapshot(watch);
      }
      const left = await remaining();
      const now = performance.now();
      if (firstRevokedMs === null && left < expected) firstRevokedMs = now - tPost;
      if (left === 0 && answered) {
        tDone = now;
        break;
      }
      if (now - tPost > TIMEOUT_MS) throw new Error(`not done after ${TIMEOUT_MS} ms: ${left} leases of the forbidden workloads still live, answered: ${!!answered}`);
      await L.sleep(25);
    }
    if (!elAfter) {
      // The answer and the last revocation landed in the same poll.
      elAfter = eventLoopDelay(broker.url);
      mid = L.snapshot(watch);
    }
    const after = await L.snapshot(watch);
    // A short tail of probes after the end, then stop them and wait for the last answers.
    await L.sleep(200);
    for (const t of timers) clearInterval(t);
    const settle = performance.now() + 30_000;
    while (probes.some((x) => x.status === null) && performance.now() < settle) await L.sleep(20);

    if (answered.e) throw answered.e;
    const res = answered.r;
    if (res.status !== 200) throw new Error(`reload: ${res.status} ${JSON.stringify(res.body)}`);
    const report = res.body.reauthorization;
    // The broker's own line for the walk: its duration and (since issue 17) its Cedar calls.
    let walkLine;
    for (let i = 0; i < 80 && !walkLine; i++) {
      walkLine = walkLog.find((x) => x.msg === "active leases re-authorized" && x.source === "POST /v1/admin/policy/reload");
      if (!walkLine) await L.sleep(25);
    }
    const el = await elAfter;
    const walkCost = await mid;

    // --- correctness -----------------------------------------------------------------------------
    const problems = [];
    if (!res.body.policy?.changed) problems.push("the reload did not see a changed policy set");
    if (report.revoked !== expected) problems.push(`revoked ${report.revoked}, expected exactly ${expected}`);
    // Only the probe's own leases can be skipped (still issuing when read); none of the N is touched by anything else.
    const probeLeases = probes.filter((x) => x.kind === "credential" && x.at < answered.at).length;
    if (report.skipped > probeLeases) problems.push(`skipped ${report.skipped}, more than the ${probeLeases} probe leases`);
    if (report.kept !== report.reevaluated - report.revoked) problems.push(`kept ${report.kept} != reevaluated ${report.reevaluated} - revoked ${report.revoked}`);
    if (report.reevaluated + report.skipped < N) problems.push(`reevaluated ${report.reevaluated} + skipped ${report.skipped} < ${N}`);
    const states = {};
    {
      const forb = new Set(forbidden);
      for (let i = 0; i < ids.length; i += 5000) {
        const pipe = rc.pipeline();
        for (const id of ids.slice(i, i + 5000)) pipe.hmget(`${p}:lease:${id}`, "w", "state", "trig", "workload");
        for (const [, [w0, st, trig, w1]] of await pipe.exec()) {
          const w = w0 ?? w1;
          const k = forb.has(w) ? `forbidden:${st}:${trig}` : `allowed:${st}`;
          states[k] = (states[k] ?? 0) + 1;
        }
      }
      if (states["forbidden:revoked:policy_change"] !== expected) problems.push(`forbidden workloads' leases revoked by policy_change: ${states["forbidden:revoked:policy_change"] ?? 0}, expected ${expected}`);
      if (states["allowed:active"] !== N - expected) problems.push(`other leases still active: ${states["allowed:active"] ?? 0}, expected ${N - expected}`);
    }
    const badProbes = probes.filter((x) => x.status !== (x.kind === "healthz" ? 200 : 201));
    if (badProbes.length > 0) problems.push(`${badProbes.length} probes failed, e.g. ${JSON.stringify(badProbes[0])}`);

    // --- numbers -------------------------------------------------------------------------------
    const tAnswer = answered.at;
    const phase = (kind, from, to) => stats(probes.filter((x) => x.kind === kind && x.at >= from && x.at < to));
    const answerMs = tAnswer - tPost;
    const result = {
      n: N,
      forbidden_workloads: FORBID,
      expected_revoked: expected,
      create_s: createMs / 1000,
      reauthorization: report,
      answer_ms: round(answerMs),
      reevaluated_per_s: Math.round(report.reevaluated / (answerMs / 1000)),
      // After a 202 (the walk outlived the broker's 20 s wait): when the 202 came, from the POST.
      http_202_ms: answered.http202At ? round(answered.http202At - tPost) : null,
      broker_walk: walkLine ? { ms: walkLine.ms ?? null, cedar_decisions: walkLine.cedar_decisions ?? null } : null,
      first_revoked_ms: round(firstRevokedMs),
      all_revoked_ms: round(tDone - tPost),
      probes: {
        healthz: { baseline: phase("healthz", tBaseline, tPost), walk: phase("healthz", tPost, tAnswer), tail: phase("healthz", tAnswer, tDone) },
        credential: { baseline: phase("credential", tBaseline, tPost), walk: phase("credential", tPost, tAnswer), tail: phase("credential", tAnswer, tDone) },
      },
      broker_event_loop_delay_during_walk: el,
      // Per re-evaluated lease: the walk alone (POST → answer), and until every revoked lease was revoked.
      cost_walk: L.costPerRequest(before, walkCost, report.reevaluated),
      cost_total: L.costPerRequest(before, after, report.reevaluated),
      states,
      ok: problems.length === 0,
      problems,
    };
    const h = result.probes.healthz;
    const c = result.probes.credential;
    process.stderr.write(
      `reauth N=${N}: answer ${answerMs.toFixed(0)} ms (${result.reevaluated_per_s}/s${result.http_202_ms !== null ? `; 202 after ${result.http_202_ms} ms, end from the log` : ""}; broker walk ${JSON.stringify(result.broker_walk)}), ${JSON.stringify(report)}, all ${expected} revoked after ${result.all_revoked_ms} ms; ` +
        `healthz p99 ${h.baseline.p99_ms} → ${h.walk.p99_ms} ms (max ${h.walk.max_ms}); credential p99 ${c.baseline.p99_ms} → ${c.walk.p99_ms} ms; event loop max ${el.max_ms} ms; ` +
        `cpu ms/lease ${JSON.stringify(result.cost_walk?.cpu_ms)}${problems.length ? `; PROBLEMS: ${problems.join("; ")}` : ""}\n`,
    );
    L.emit("reauth", result);
    if (problems.length) process.exitCode = 1;
  } finally {
    agent.destroy();
    rc.disconnect();
    await broker?.stop();
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
