"use strict";
/**
 * Setup helper (not a benchmark): issues leases through the service layer in a fresh process.
 *
 *   node scripts/bench/create-leases.js DIR FROM COUNT [--workload agent-0 | --spread]
 *                                        [--role orders-read] [--ttl-ms 600000] [--concurrency 64]
 *
 * DIR holds cfg.json (the benchmark's broker configuration, written by createLeasesChunked in
 * lib.js). Task ids are `<prefix>-<i>` for i in [FROM, FROM+COUNT). With --spread, lease i
 * belongs to workload agent-(i mod 50).
 *
 * Why separate processes: a fresh heap per chunk keeps the setup of 100,000+ leases fast. (On
 * Node 20 they also had to run with --no-turbo-inlining because of a V8 crash; Node 26 does not
 * crash, see docs/BENCHMARKS.md "The broker crashes under load".) Setup only: nothing timed runs here.
 */
const fs = require("node:fs");
const path = require("node:path");
const L = require("./lib");

async function main() {
  const [dir, fromS, countS, ...rest] = process.argv.slice(2);
  const opt = (k, d) => {
    const i = rest.indexOf(`--${k}`);
    return i >= 0 ? rest[i + 1] : d;
  };
  const from = Number(fromS);
  const count = Number(countS);
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, "cfg.json"), "utf8"));
  const role = opt("role", "orders-read");
  const ttlMs = Number(opt("ttl-ms", 600_000));
  const prefix = opt("task-prefix", "t");
  const spread = rest.includes("--spread");
  const broker = await L.inProcessBroker(dir, cfg, { worker: false });
  try {
    const auths = spread ? Array.from({ length: L.AGENTS }, (_, i) => L.authFor(broker, cfg, L.agentId(i))) : [L.authFor(broker, cfg, opt("workload", "agent-0"))];
    const ids = [];
    const errors = await L.pool(count, Number(opt("concurrency", 64)), async (k) => {
      const i = from + k;
      const out = await broker.service.issue(auths[i % auths.length], { role, task: { id: `${prefix}-${i}` }, ttlMs });
      ids.push(out.lease.id);
    });
    if (errors.length) throw errors[0];
    if (rest.includes("--print-ids")) process.stdout.write(`IDS ${JSON.stringify(ids)}\n`);
  } finally {
    await broker.close();
  }
}

L.runMain(main);
