"use strict";
/**
 * Crash check (not a benchmark): N credential issues through the service layer in a tight loop
 * in ONE fresh process, with no V8 flags (scripts/bench/create-leases.js in a single chunk). On
 * Node 20 this crashed in 8 of 10 runs between 10,000 and 25,000 issues (docs/BENCHMARKS.md,
 * "The broker crashes under load"); it must not crash on the runtime we ship.
 *
 * Usage: node scripts/bench/issue-loop.js [N=30000]   (after npm run build)
 * Exit status: 0 survived, 1 the issuing process died.
 */
const L = require("./lib");

L.runMain(async () => {
  const n = Number(process.argv[2] ?? 30000);
  const dir = L.tmpdir("loop");
  const redis = await L.startRedis({ appendonly: false });
  const issuer = await L.createIssuer(dir);
  const cfg = L.brokerConfig({ dir, redisUrl: redis.url, port: await L.freePort(), quota: 0, issuer });
  const t = Date.now();
  try {
    await L.createLeasesChunked(dir, cfg, { n, chunk: n, label: "issued" });
  } finally {
    await redis.stop();
  }
  L.emit("issue-loop", { node: process.version, issues: n, crashed: false, seconds: Math.round((Date.now() - t) / 1000) });
});
