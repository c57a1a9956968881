"use strict";
/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`, e.g. BENCH_CPU_PROF=<dir> with the
 * benchmarks): self time by package / source file and the top functions, plus inclusive time
 * of chosen functions (--inclusive name1,name2).
 *
 * Usage: node scripts/bench/profile-summary.js FILE.cpuprofile [--top 30] [--inclusive issue,verify]
 *        [--top-inclusive 60] [--last MS (only the last MS milliseconds of the profile)]
 *        [--parts (self time by part of an exchange: HTTP, verify, Cedar, sign, Redis, audit,
 *        logging, GC, ...; jose's time is split into verify and sign by the caller on the stack)]
 *        [--per N (also print each part as ms per exchange, N = exchanges in the profile)]
 */
const fs = require("node:fs");

const file = process.argv[2];
const argv = process.argv.slice(3);
const opt = (k, d) => {
  const i = argv.indexOf(`--${k}`);
  return i >= 0 ? argv[i + 1] : d;
};
const TOP = Number(opt("top", 30));
const INCLUSIVE = (opt("inclusive", "") || "").split(",").filter(Boolean);

const prof = JSON.parse(fs.readFileSync(file, "utf8"));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Self time per node from samples × timeDeltas; --last MS keeps only the last MS of the profile.
const LAST = Number(opt("last", 0)) * 1000;
const stamps = [];
let ts = prof.startTime;
for (const d of prof.timeDeltas) stamps.push((ts += d));
const from = LAST > 0 ? prof.endTime - LAST : -Infinity;
const self = new Map();
for (let i = 0; i < prof.samples.length; i++) {
  if (stamps[i] < from) continue;
  const id = prof.samples[i];
  self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
const total = [...self.values()].reduce((a, b) => a + b, 0);

function bucket(url, name) {
  if (!url) return name.startsWith("(") ? name : "(native/builtin)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + 13).split("/");
    return rest[0].startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  const d = url.indexOf("/dist/");
  if (d >= 0) return url.slice(d + 1);
  if (url.startsWith("node:")) return url;
  return url;
}

const byBucket = new Map();
const byFn = new Map();
for (const [id, t] of self) {
  const n = byId.get(id);
  const cf = n.callFrame;
  const b = bucket(cf.url, cf.functionName || "(anonymous)");
  byBucket.set(b, (byBucket.get(b) ?? 0) + t);
  const fn = `${cf.functionName || "(anonymous)"} ${b}:${cf.lineNumber + 1}`;
  byFn.set(fn, (byFn.get(fn) ?? 0) + t);
}
const pct = (t) => `${((100 * t) / total).toFixed(1)}%`;
console.log(`total sampled: ${(total / 1e6).toFixed(2)} s`);
console.log("\nself time by package / file:");
for (const [b, t] of [...byBucket].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`  ${pct(t).padStart(6)}  ${b}`);
console.log("\ntop functions (self):");
for (const [f, t] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`  ${pct(t).padStart(6)}  ${f}`);

if (INCLUSIVE.length) {
  // Inclusive time: every sample counts once for each distinct matching frame on its stack.
  console.log("\ninclusive time:");
  for (const name of INCLUSIVE) {
    let t = 0;
    for (const [id, s] of self) {
      let cur = id;
      while (cur !== undefined) {
        if (byId.get(cur).callFrame.functionName === name) {
          t += s;
          break;
        }
        cur = parent.get(cur);
      }
    }
    console.log(`  ${pct(t).padStart(6)}  ${name}`);
  }
}

// Top inclusive functions: each sample counts once for every distinct function on its stack.
if (argv.includes("--top-inclusive")) {
  const incl = new Map();
  for (const [id, s] of self) {
    const seen = new Set();
    let cur = id;
    while (cur !== undefined) {
      const cf = byId.get(cur).callFrame;
      const key = `${cf.functionName || "(anonymous)"} ${bucket(cf.url, cf.functionName || "(anonymous)")}:${cf.lineNumber + 1}`;
      if (!seen.has(key)) {
        seen.add(key);
        incl.set(key, (incl.get(key) ?? 0) + s);
      }
      cur = parent.get(cur);
    }
  }
  console.log("\ntop functions (inclusive):");
  for (const [f, t] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, Number(opt("top-inclusive", 60)) || 60)) console.log(`  ${pct(t).padStart(6)}  ${f}`);
}

// Parts of an exchange: each sample's self time goes to one part, by its frame's package / file,
// or for jose (used to verify and to sign) by which of jwtVerify / SignJWT is on the stack.
if (argv.includes("--parts")) {
  const onStack = (id, names) => {
    let cur = id;
    while (cur !== undefined) {
      const cf = byId.get(cur).callFrame;
      if (names.includes(cf.functionName) || names.some((n) => cf.url.includes(n))) return true;
      cur = parent.get(cur);
    }
    return false;
  };
  const partOf = (id) => {
    const cf = byId.get(id).callFrame;
    const b = bucket(cf.url, cf.functionName || "(anonymous)");
    if (b === "(garbage collector)") return "GC";
    if (b === "(idle)" || b === "(program)") return b;
    if (b === "jose" || b.startsWith("node:crypto") || /crypto/.test(b)) return onStack(id, ["jwtVerify", "verify"]) && !onStack(id, ["sign", "SignJWT"]) ? "verify (jose)" : onStack(id, ["mint", "sign"]) ? "sign (jose)" : "jose/crypto (other)";
    if (b.startsWith("@cedar-policy") || b.includes("dist/policy/") || b.startsWith("wasm://")) return "Cedar (policy engine, wasm)";
    if (b === "ioredis" || b === "bullmq" || b === "redis-parser" || b === "cluster-key-slot" || b === "denque" || b.includes("dist/redis/")) return "Redis client (ioredis, BullMQ, limiter)";
    if (b.includes("dist/audit/")) return "audit ledger";
    if (b === "pino" || b.startsWith("pino") || b === "sonic-boom" || b === "fast-redact" || b.includes("dist/core/logger")) return "logging (pino)";
    if (["express", "router", "body-parser", "raw-body", "finalhandler", "send", "qs", "on-finished", "type-is", "content-type", "iconv-lite", "http-errors", "path-to-regexp", "accepts", "negotiator", "media-typer", "mime-types", "statuses", "encodeurl", "etag", "fresh", "proxy-addr", "depd", "debug", "parseurl", "cookie", "vary", "merge-descriptors"].includes(b) || b.startsWith("node:_http") || b.startsWith("node:http") || b.startsWith("node:net") || b.startsWith("node:stream") || b.startsWith("node:internal/streams") || b.includes("dist/http/")) return "HTTP (node, express, middleware)";
    if (b === "zod" || b.includes("dist/leases/routes") || b.includes("dist/leases/ttl")) return "request validation (zod)";
    if (b === "prom-client" || b.includes("metrics")) return "metrics (prom-client)";
    if (b.includes("dist/leases/") || b.includes("dist/identity/") || b.includes("dist/backends/")) return "broker code (leases, identity, backends)";
    if (b === "(native/builtin)") return "builtins (JSON, strings, ...)";
    return `other: ${b}`;
  };
  const parts = new Map();
  for (const [id, t] of self) parts.set(partOf(id), (parts.get(partOf(id)) ?? 0) + t);
  const busy = [...parts].filter(([p]) => p !== "(idle)" && p !== "(program)").reduce((a, [, t]) => a + t, 0);
  const per = Number(opt("per", 0));
  console.log(`\nself time by part (share of busy time${per ? `; ms per exchange over ${per} exchanges` : ""}):`);
  let rest = 0;
  for (const [p, t] of [...parts].sort((a, b) => b[1] - a[1])) {
    if (p === "(idle)") continue;
    if (p.startsWith("other: ") && t < busy * 0.01) {
      rest += t;
      continue;
    }
    console.log(`  ${((100 * t) / busy).toFixed(1).padStart(5)}%  ${per ? `${(t / 1000 / per).toFixed(3).padStart(6)} ms  ` : ""}${p}`);
  }
  console.log(`  ${((100 * rest) / busy).toFixed(1).padStart(5)}%  ${per ? `${(rest / 1000 / per).toFixed(3).padStart(6)} ms  ` : ""}other (each under 1 %)`);
  console.log(`  busy: ${(busy / 1e6).toFixed(2)} s`);
}
