"use strict";
/**
 * Benchmark 4: Redis memory per active lease, its expiry schedule included (its entry in
 * {p}:leases:due; before issue 17, one delayed BullMQ job per lease, shown as `bullmq job hash`).
 *
 * A private redis-server (no AOF, so no AOF buffer in used_memory). Leases are issued through the
 * service layer (`service.issue`, what POST /v1/credentials calls after authentication; jwt role
 * orders-read, ttl 10 min, 50 agent workloads, one task id per lease) by helper processes
 * (create-leases.js: createBroker from dist/ with the worker off, so nothing expires). 100 warm-up leases create the fixed structures (queue meta, streams); then INFO
 * memory used_memory is read before and after issuing N (default 10,000) more leases, with no
 * other client connected. Per-lease cost = Δused_memory / N.
 *
 * Breakdown: MEMORY USAGE (SAMPLES 0, i.e. exact) of one lease's own keys — the lease hash,
 * its BullMQ job hash (earlier versions), its live:task set (a task's second and later leases,
 * and every lease of earlier versions), its audit index list — and the growth of the shared
 * structures (sorted sets, live sets, live:tasks, leases:policies, the audit stream, BullMQ's
 * events stream) divided by N. MEMORY USAGE counts a listpack's bytes, not its allocation, so
 * "without audit" (total minus the audit stream's MEMORY USAGE) reads low: scale.js measures the
 * lease state alone (no audit) by Δused_memory.
 *
 * Usage: node scripts/bench/memory.js [--n 10000] [--listpack-value 256 (CONFIG SET hash-max-listpack-value)]
 */
const fs = require("node:fs");
const L = require("./lib");

const argv = process.argv.slice(2);
const opt = (k, d) => L.numArg(argv, k, d);
const N = opt("n", 10_000);
// Optional: run Redis with a larger hash-max-listpack-value (default 64) to see its effect.
const LISTPACK_VALUE = opt("listpack-value", 0);
const WARMUP = 100;

async function main() {
  const dir = L.tmpdir("mem");
  const redis = await L.startRedis({ appendonly: false });
  const issuer = await L.createIssuer(dir);
  const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port: 8080, quota: 0, issuer });
  const rc = L.redisClient(redis.url);
  try {
    if (LISTPACK_VALUE) await rc.config("SET", "hash-max-listpack-value", String(LISTPACK_VALUE));
    // Leases are issued by short-lived helper processes (create-leases.js): when they have
    // exited, the only client connected to Redis is this one.
    const create = (n, prefix, ids) => L.createLeasesChunked(dir, cfg, { n, chunk: 5000, parallel: 1, ids, args: ["--spread", "--task-prefix", prefix, "--ttl-ms", "600000", "--concurrency", String(opt("create-concurrency", 32))] });
    await create(WARMUP, "warm", false);

    const tag = `{${cfg.redis.prefix}}`;
    const shared = {
      "leases:due (zset)": `${tag}:leases:due`,
      "leases:all (zset)": `${tag}:leases:all`,
      "live:tasks (hash, a task's first lease)": `${tag}:live:tasks`,
      "leases:policies (hash)": `${tag}:leases:policies`,
      "leases:handles (hash)": `${tag}:leases:handles`,
      "live:workload:* (50 sets)": L.AGENTS > 0 ? Array.from({ length: L.AGENTS }, (_, i) => `${tag}:live:workload:${L.agentId(i)}`) : [],
      "live:role:orders-read (set)": `${tag}:live:role:orders-read`,
      "live:issuer:idp (set)": `${tag}:live:issuer:idp`,
      "bullmq revocations:delayed (zset)": `${tag}:revocations:delayed`,
      "bullmq revocations:events (stream, capped ~10k)": `${tag}:revocations:events`,
      "audit (stream)": `${tag}:audit`,
    };
    const usage = async (k) => (await rc.call("MEMORY", "USAGE", k, "SAMPLES", "0")) ?? 0;
    const sharedUsage = async () => {
      const out = {};
      for (const [name, k] of Object.entries(shared)) {
        let t = 0;
        for (const key of [].concat(k)) t += Number(await usage(key));
        out[name] = t;
      }
      return out;
    };
    const info = async () => {
      const text = await rc.info("memory");
      return Number(/^used_memory:(\d+)/m.exec(text)[1]);
    };

    await L.sleep(200);
    const keysBefore = await rc.dbsize();
    const sharedBefore = await sharedUsage();
    const memBefore = await info();
    const eventsBefore = Number(await rc.xlen(`${tag}:audit`));

    const ids = await create(N, "mem", true);
    await L.sleep(200);

    const memAfter = await info();
    const sharedAfter = await sharedUsage();
    const keysAfter = await rc.dbsize();
    // Earlier versions kept one delayed BullMQ job per lease; now the lease's due-set entry is its
    // schedule and there should be none (reported, so a regression shows).
    const delayed = await rc.zcard(`${tag}:revocations:delayed`);

    // One lease's own keys, averaged over a sample of 200 leases.
    const sample = [];
    for (const id of ids.slice(0, 200)) sample.push({ id, task_id: (await rc.hmget(`${tag}:lease:${id}`, "t", "task_id")).find((v) => v !== null) });
    const own = { "lease hash": 0, "bullmq job hash": 0, "live:task:<t> (set)": 0, "audit:lease:<id> (list)": 0 };
    for (const l of sample) {
      own["lease hash"] += Number(await usage(`${tag}:lease:${l.id}`));
      own["bullmq job hash"] += Number(await usage(`${tag}:revocations:x-${l.id}`));
      own["live:task:<t> (set)"] += Number(await usage(`${tag}:live:task:${l.task_id}`));
      own["audit:lease:<id> (list)"] += Number(await usage(`${tag}:audit:lease:${l.id}`));
    }
    for (const k of Object.keys(own)) own[k] /= sample.length;
    const l0 = sample[0];
    const encodings = {
      lease_hash: await rc.object("ENCODING", `${tag}:lease:${l0.id}`),
      job_hash: await rc.object("ENCODING", `${tag}:revocations:x-${l0.id}`),
    };
    const fieldSizes = async (key) => {
      const h = await rc.hgetall(key);
      return Object.fromEntries(Object.entries(h).map(([f, v]) => [f, v.length]));
    };
    const perShared = {};
    for (const name of Object.keys(shared)) perShared[name] = (sharedAfter[name] - sharedBefore[name]) / N;
    const accounted = Object.values(own).reduce((a, b) => a + b, 0) + Object.values(perShared).reduce((a, b) => a + b, 0);
    const perLease = (memAfter - memBefore) / N;
    const auditShare = own["audit:lease:<id> (list)"] + perShared["audit (stream)"];
    const config = {};
    for (const k of ["hash-max-listpack-entries", "hash-max-listpack-value", "set-max-intset-entries", "set-max-listpack-entries", "zset-max-listpack-entries"]) {
      const r = await rc.config("GET", k);
      if (r.length) config[k] = r[1];
    }
    // The audit stream per issuance, by field: the last 200 events' average sizes (e: canonical
    // JSON of the event; h, p: its hash and the previous one; m: the MAC marker; n: ordinal).
    const last = await rc.xrevrange(`${tag}:audit`, "+", "-", "COUNT", 200);
    const auditFields = {};
    for (const [, flat] of last) for (let i = 0; i < flat.length; i += 2) auditFields[flat[i]] = (auditFields[flat[i]] ?? 0) + Buffer.byteLength(flat[i + 1]) / last.length;
    const auditTypes = {};
    for (const [, flat] of last) {
      const t = JSON.parse(flat[flat.indexOf("e") + 1]).type;
      auditTypes[t] = (auditTypes[t] ?? 0) + 1;
    }
    const result = {
      n: N,
      audit_events_per_issuance: (Number(await rc.xlen(`${tag}:audit`)) - eventsBefore) / N,
      audit_event_field_bytes: auditFields,
      audit_event_types_sampled: auditTypes,
      audit_event_sample: last.find(([, flat]) => JSON.parse(flat[flat.indexOf("e") + 1]).type === "mint")?.[1],
      used_memory_delta: memAfter - memBefore,
      bytes_per_lease: perLease,
      bytes_per_lease_without_audit: perLease - auditShare - perShared["bullmq revocations:events (stream, capped ~10k)"],
      keys_per_lease: (keysAfter - keysBefore) / N,
      delayed_jobs: delayed,
      own_keys: own,
      shared_per_lease: perShared,
      unaccounted_per_lease: perLease - accounted,
      encodings,
      lease_hash_field_sizes: await fieldSizes(`${tag}:lease:${l0.id}`),
      job_hash_field_sizes: await fieldSizes(`${tag}:revocations:x-${l0.id}`),
      job_opts_sample: await rc.hget(`${tag}:revocations:x-${l0.id}`, "opts"),
      lease_task_sample: await rc.hget(`${tag}:lease:${l0.id}`, "task"),
      redis_config: config,
    };
    process.stderr.write(`${N} leases: ${perLease.toFixed(0)} B/lease (without audit: ${result.bytes_per_lease_without_audit.toFixed(0)} B), ${result.keys_per_lease} keys/lease; encodings ${JSON.stringify(encodings)}\n`);
    L.emit("memory", result);
  } finally {
    rc.disconnect();
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

L.runMain(main);
