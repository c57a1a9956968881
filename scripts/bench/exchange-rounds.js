"use strict";
/**
 * Issue 17's exchange row: `exchange.js` several times in a row, the order of the two brokers
 * alternating (after first, then before first), and the medians of the ratios each run measured
 * side by side: broker CPU / limit-server CPU, after / before, Redis CPU per exchange, p99.
 *
 * Usage: node scripts/bench/exchange-rounds.js --before DIR [--rounds 4] [--duration 8] [--warmup 2]
 *        [--repeat-tokens] [--concurrency 50] [--after-node-args "FLAGS" (Node/V8 flags of the measured broker only, without their dashes)]
 * DIR is the dist/ of the build to compare with (`npm ci && npm run build` of that commit; its
 * directory also needs node_modules/ and config/ beside dist/). Prints one line per run and a
 * final `RESULT {json}`.
 */
const { spawnSync } = require("node:child_process");
const path = require("node:path");

const L = require("./lib");

const argv = process.argv.slice(2);
const BEFORE = L.strArg(argv, "before");
if (typeof BEFORE !== "string") {
  console.error("usage: exchange-rounds.js --before DIR [--rounds 4] [--duration 8] [--warmup 2] [--repeat-tokens]");
  process.exit(2);
}
const ROUNDS = L.numArg(argv, "rounds", 4);
const REPEAT_TOKENS = argv.includes("--repeat-tokens");
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const runs = [];
for (let r = 0; r < ROUNDS; r++) {
  const targets = r % 2 === 0 ? "limit,exchange,before" : "limit,before,exchange";
  const cmd = [
    path.join(__dirname, "exchange.js"),
    "--duration", String(L.numArg(argv, "duration", 8)),
    "--warmup", String(L.numArg(argv, "warmup", 2)),
    "--concurrency", String(L.numArg(argv, "concurrency", 50)),
    "--targets", targets,
    "--before", BEFORE,
    ...(REPEAT_TOKENS ? ["--repeat-tokens"] : []),
    ...(typeof L.strArg(argv, "after-node-args") === "string" ? ["--after-node-args", L.strArg(argv, "after-node-args")] : []),
  ];
  const load = require("node:os").loadavg()[0];
  const out = spawnSync(process.execPath, cmd, { encoding: "utf8", maxBuffer: 64 << 20 });
  const line = out.stdout.split("\n").find((l) => l.startsWith("RESULT "));
  if (!line) {
    console.error(out.stderr.slice(-2000));
    throw new Error(`run ${r + 1}: no RESULT line (exit ${out.status})`);
  }
  const res = JSON.parse(line.slice(7)).results;
  const a = res.exchange;
  const b = res.before;
  const l = res.limit;
  const run = {
    order: targets,
    load_1m: Number(load.toFixed(1)),
    limit_cpu_ms: l.cost.cpu_ms.server,
    after_cpu_ms: a.cost.cpu_ms.server,
    before_cpu_ms: b.cost.cpu_ms.server,
    after_redis_ms: a.cost.cpu_ms.redis,
    before_redis_ms: b.cost.cpu_ms.redis,
    limit_redis_ms: l.cost.cpu_ms.redis,
    after_vs_limit: a.cost.cpu_ms.server / l.cost.cpu_ms.server,
    before_vs_limit: b.cost.cpu_ms.server / l.cost.cpu_ms.server,
    after_vs_before: a.cost.cpu_ms.server / b.cost.cpu_ms.server,
    redis_after_vs_before: a.cost.cpu_ms.redis / b.cost.cpu_ms.redis,
    rps: { limit: l.rps, after: a.rps, before: b.rps },
    p99_ms: { limit: l.p99_ms, after: a.p99_ms, before: b.p99_ms },
  };
  runs.push(run);
  console.log(
    `run ${r + 1} (${targets}, load ${run.load_1m}): broker/limit ${run.after_vs_limit.toFixed(2)} (before ${run.before_vs_limit.toFixed(2)}), after/before ${run.after_vs_before.toFixed(2)}, ` +
      `Redis ms/exchange ${run.after_redis_ms.toFixed(3)} (before ${run.before_redis_ms.toFixed(3)}, limit ${run.limit_redis_ms.toFixed(3)}), ` +
      `p99 ms ${run.p99_ms.after.toFixed(0)} (before ${run.p99_ms.before.toFixed(0)}, limit ${run.p99_ms.limit.toFixed(0)}), req/s ${run.rps.after.toFixed(0)} (before ${run.rps.before.toFixed(0)}, limit ${run.rps.limit.toFixed(0)})`,
  );
}
const pick = (f) => median(runs.map(f));
const summary = {
  bench: "exchange-rounds",
  rounds: ROUNDS,
  tokens: REPEAT_TOKENS ? "repeated" : "distinct",
  median: {
    after_vs_limit: pick((r) => r.after_vs_limit),
    before_vs_limit: pick((r) => r.before_vs_limit),
    after_vs_before: pick((r) => r.after_vs_before),
    after_redis_ms: pick((r) => r.after_redis_ms),
    before_redis_ms: pick((r) => r.before_redis_ms),
    limit_redis_ms: pick((r) => r.limit_redis_ms),
    after_cpu_ms: pick((r) => r.after_cpu_ms),
    before_cpu_ms: pick((r) => r.before_cpu_ms),
    limit_cpu_ms: pick((r) => r.limit_cpu_ms),
    p99_after_ms: pick((r) => r.p99_ms.after),
    p99_before_ms: pick((r) => r.p99_ms.before),
    p99_limit_ms: pick((r) => r.p99_ms.limit),
  },
  runs,
};
const m = summary.median;
console.log(
  `median of ${ROUNDS}: broker/limit ${m.after_vs_limit.toFixed(2)} (before ${m.before_vs_limit.toFixed(2)}), after/before ${m.after_vs_before.toFixed(2)}, ` +
    `Redis ms/exchange ${m.after_redis_ms.toFixed(3)} (before ${m.before_redis_ms.toFixed(3)}), p99 ${m.p99_after_ms.toFixed(0)} ms (before ${m.p99_before_ms.toFixed(0)})`,
);
console.log(`RESULT ${JSON.stringify(summary)}`);
