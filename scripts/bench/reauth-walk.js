"use strict";
/**
 * The re-authorization walk alone (beside benchmark 5, reauth.js): N active leases spread over
 * the 50 agent workloads (as reauth.js sets them up), then R reloads in one in-process broker
 * (API part only: no worker, no HTTP probes), each after adding a policy that changes the set's
 * hash but forbids nothing, so every lease is decided again and kept. Per walk: wall time, leases
 * per second, the process's CPU per lease (user + system, so V8's GC and compiler threads count)
 * and the event-loop delay during the walk (p99 / max). The first walk of a process runs on cold
 * code (V8 compiles as it goes); the later ones show the warm cost. Where the full benchmark mixes
 * in the worker's revocations and the probes' requests, this isolates the walk.
 *
 * Usage: node scripts/bench/reauth-walk.js [--n 10000] [--repeats 3]   (BENCH_DIST=<dist> for another build)
 */
const fs = require("node:fs");
const path = require("node:path");
const { monitorEventLoopDelay } = require("node:perf_hooks");
const L = require("./lib");

const argv = process.argv.slice(2);
const N = L.numArg(argv, "n", 10_000);
const REPEATS = L.numArg(argv, "repeats", 3);

async function main() {
  const dir = L.tmpdir("reauth-walk");
  const redis = await L.startRedis();
  let broker;
  try {
    const issuer = await L.createIssuer(dir);
    const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port: await L.freePort(), quota: 0, issuer });
    // One copy of the example policies per walk, behind a symlink swapped atomically (as in
    // reauth.js): the file watcher watches the first copy, which never changes, so the reload
    // the walk is measured on is the one asked for here.
    const copy = (r) => {
      const d = path.join(dir, `policies-${r}`);
      fs.mkdirSync(d);
      for (const f of fs.readdirSync(path.join(L.ROOT, "config/policies"))) {
        if (f.endsWith(".cedar")) fs.copyFileSync(path.join(L.ROOT, "config/policies", f), path.join(d, f));
      }
      if (r > 0) fs.writeFileSync(path.join(d, "zz-noop.cedar"), `@id("noop-${r}")\nforbid (principal, action, resource) when { principal.kind == "nobody-${r}" };\n`);
      return d;
    };
    const link = path.join(dir, "policies");
    fs.symlinkSync(copy(0), link);
    cfg.policy.files = [path.join(link, "*.cedar")];
    await L.createLeasesChunked(dir, cfg, { n: N, chunk: 5000, parallel: 2, args: ["--spread", "--task-prefix", "walk", "--ttl-ms", "600000"], label: "created" });
    broker = await L.inProcessBroker(dir, cfg, { worker: false });
    const walks = [];
    for (let r = 0; r < REPEATS; r++) {
      fs.symlinkSync(copy(r + 1), `${link}.new`);
      fs.renameSync(`${link}.new`, link);
      const el = monitorEventLoopDelay({ resolution: 1 });
      el.enable();
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const out = await broker.reload({ actor: "bench", source: "reauth-walk.js" });
      const report = await out.reauthorization;
      const ms = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      el.disable();
      if (!report || report.kept !== report.reevaluated || report.reevaluated < N) throw new Error(`unexpected report ${JSON.stringify(report)}`);
      walks.push({
        ms: Math.round(ms),
        per_s: Math.round((report.reevaluated / ms) * 1000),
        cpu_ms_per_lease: Number(((cpu.user + cpu.system) / 1000 / report.reevaluated).toFixed(4)),
        event_loop_p99_ms: Number((el.percentile(99) / 1e6).toFixed(1)),
        event_loop_max_ms: Number((el.max / 1e6).toFixed(1)),
        reevaluated: report.reevaluated,
      });
      process.stderr.write(`walk ${r + 1}: ${JSON.stringify(walks[walks.length - 1])}\n`);
    }
    L.emit("reauth-walk", { n: N, walks });
  } finally {
    await broker?.close();
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

L.runMain(main);
