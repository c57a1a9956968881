"use strict";
/**
 * Turns the RESULT lines collected by scripts/bench/run into the results section of
 * docs/BENCHMARKS.md: everything between `<!-- results:begin -->` and `<!-- results:end -->` is
 * replaced; the hand-written text around it (method, analysis, fixes) is kept. If the file does
 * not exist yet, a skeleton is written.
 *
 * Usage: node scripts/bench/report.js RESULTS.jsonl META.json [docs/BENCHMARKS.md]
 */
const fs = require("node:fs");
const path = require("node:path");

const [resultsFile, metaFile, docArg] = process.argv.slice(2);
const doc = docArg ?? path.resolve(__dirname, "../../docs/BENCHMARKS.md");
const meta = JSON.parse(fs.readFileSync(metaFile, "utf8"));
const rows = fs
  .readFileSync(resultsFile, "utf8")
  .split("\n")
  .filter((l) => l.startsWith("{"))
  .map((l) => JSON.parse(l));

const median = (xs) => {
  const s = xs.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const f = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "—");
const pct = (x) => (Number.isFinite(x) ? `${(x * 100).toFixed(0)} %` : "—");
const list = (xs, d = 0) => xs.map((x) => f(x, d)).join(", ");
const runs = (n) => `${n} run${n === 1 ? "" : "s"}`;
const by = (bench, variant = "") => rows.filter((r) => r.bench === bench && (r.variant ?? "") === variant);
const out = [];
const verdicts = [];

// --- 1. exchange ----------------------------------------------------------------------------------
const ex = by("exchange");
if (ex.length) {
  const R = (t, k) => ex.map((r) => r.results[t]?.[k]);
  const C = (t, k) => ex.map((r) => r.results[t]?.cost?.cpu_ms?.[k]);
  const ratio = median(ex.map((r) => r.ratio));
  verdicts.push(["Exchange throughput ≥ 50 % of bare express", pct(ratio), ratio >= 0.5 ? "**met**" : "**not met**"]);
  out.push(`### 1. Exchange throughput and latency (${runs(ex.length)}, ${ex[0].concurrency} clients, ${ex[0].warmup_s} s warm-up + ${ex[0].duration_s} s measured per target)`);
  out.push("");
  out.push("| target | req/s (median) | p50 ms | p99 ms | server CPU ms/req | Redis CPU ms/req | load-gen CPU ms/req | errors |");
  out.push("|---|---:|---:|---:|---:|---:|---:|---:|");
  for (const t of ["bare", "limit", "whoami", "exchange"]) {
    if (!ex[0].results[t]) continue;
    out.push(
      `| ${t} | ${f(median(R(t, "rps")))} | ${f(median(R(t, "p50_ms")), 1)} | ${f(median(R(t, "p99_ms")), 1)} | ${f(median(C(t, "server")), 3)} | ${f(median(C(t, "redis")), 3)} | ${f(median(C(t, "loadgen")), 3)} | ${R(t, "errors").reduce((a, b) => a + (b ?? 0), 0)} |`,
    );
  }
  out.push("");
  out.push(`**exchange / bare = ${pct(ratio)}** (median of the per-run ratios; per run: ${ex.map((r) => pct(r.ratio)).join(", ")}).`);
  if (ex.some((r) => r.cpu_vs_limit !== undefined)) {
    const cl = median(ex.map((r) => r.cpu_vs_limit));
    verdicts.push(["Broker CPU per exchange ≤ 1.25× the limit server's (same run)", `${f(cl, 2)}×`, cl <= 1.25 ? "**met**" : "**not met**"]);
    const rc = median(C("exchange", "redis"));
    verdicts.push(["Redis CPU per exchange ≤ 0.1 ms", `${f(rc, 3)} ms`, rc <= 0.1 ? "**met**" : "**not met**"]);
    out.push(`**broker CPU / limit-server CPU per exchange = ${f(cl, 2)}×** (median of the per-run ratios; per run: ${ex.map((r) => f(r.cpu_vs_limit, 2)).join(", ")}); workload tokens: ${ex[0].tokens ?? "one per client, repeated"}.`);
  }
  out.push(`Per run, req/s — bare: ${list(R("bare", "rps"))}; limit: ${list(R("limit", "rps"))}; whoami: ${list(R("whoami", "rps"))}; exchange: ${list(R("exchange", "rps"))}.`);
  const redis = {};
  for (const r of ex) for (const [cmd, v] of Object.entries(r.results.exchange?.cost?.redis ?? {})) (redis[cmd] ??= []).push(v);
  const cmds = Object.entries(redis)
    .map(([cmd, vs]) => [cmd, median(vs.map((v) => v.calls_per_req)), median(vs.map((v) => v.usec_per_req))])
    .filter(([, calls]) => calls >= 0.05)
    .sort((a, b) => b[2] - a[2]);
  out.push("");
  out.push("Redis commands per exchange (INFO commandstats over the measured window; commands run inside Lua scripts are counted too, and the script's own line includes them):");
  out.push("");
  out.push("| command | calls / exchange | µs / exchange |");
  out.push("|---|---:|---:|");
  for (const [cmd, calls, usec] of cmds) out.push(`| ${cmd.replace("|", "\\|")} | ${f(calls, 2)} | ${f(usec, 1)} |`);
  out.push("");
}

// exchange what-ifs and broker crashes ------------------------------------------------------------
const crashes = (variant) => rows.filter((r) => r.bench === "exchange-crash" && (r.variant ?? "") === variant);
const exVariants = [...new Set(rows.filter((r) => (r.bench === "exchange" || r.bench === "exchange-crash") && r.variant).map((r) => r.variant))];
if (ex.length || exVariants.length) {
  const line = (label, rs, v) => {
    const m = (t, k) => median(rs.map((r) => r.results[t]?.[k]));
    const c = crashes(v);
    return `| ${label} | ${rs.length} | ${c.length} | ${f(m("bare", "rps"))} | ${f(m("exchange", "rps"))} | ${pct(median(rs.map((r) => r.ratio)))} | ${f(m("exchange", "p50_ms"), 1)} | ${f(m("exchange", "p99_ms"), 1)} | ${f(median(rs.map((r) => r.results.exchange?.cost?.cpu_ms?.server)), 3)} | ${f(median(rs.map((r) => r.results.exchange?.cost?.cpu_ms?.redis)), 3)} | ${f(median(rs.map((r) => r.cpu_vs_limit)), 2)} |`;
  };
  out.push("Broker crashes and what-ifs (a run whose broker process died is discarded and repeated; see \"The broker crashes under load\" below):");
  out.push("");
  out.push("| configuration | good runs | runs lost to a broker crash | bare req/s | exchange req/s | ratio | exchange p50 ms | p99 ms | broker CPU ms/exchange | Redis CPU ms/exchange | broker / limit CPU |");
  out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
  out.push(line("defaults (as above)", ex, ""));
  for (const v of exVariants) out.push(line(`what-if: ${v}`, by("exchange", v), v));
  out.push("");
}

// --- micro ---------------------------------------------------------------------------------------
const mi = by("micro");
if (mi.length) {
  out.push(`#### Fixed per-exchange work, measured alone (scripts/bench/micro.js, ${runs(mi.length)}, median µs per call)`);
  out.push("");
  out.push("| operation | µs |");
  out.push("|---|---:|");
  for (const k of Object.keys(mi[0].us_per_call)) out.push(`| ${k} | ${f(median(mi.map((r) => r.us_per_call[k])), 1)} |`);
  out.push("");
}

// --- 2. revocation lag ------------------------------------------------------------------------
const lagTable = (rs) =>
  `| ${f(median(rs.map((r) => r.lag_ms.p50)))} | ${f(median(rs.map((r) => r.lag_ms.p99)))} | ${f(median(rs.map((r) => r.lag_ms.max)))} | ${f(median(rs.map((r) => r.cost?.cpu_ms?.broker)), 3)} | ${f(median(rs.map((r) => r.cost?.cpu_ms?.redis)), 3)} | ${f(median(rs.map((r) => r.revoked_by_sweeper)))} |`;
const lag = by("revocation-lag");
if (lag.length) {
  const p99 = median(lag.map((r) => r.lag_ms.p99));
  verdicts.push([`Revocation lag p99 ≤ ${lag[0].n > 2000 ? "1 s" : "200 ms"} (${lag[0].n.toLocaleString("en")} leases expiring in one second; issue 17)`, `${f(p99)} ms`, p99 <= (lag[0].n > 2000 ? 1000 : 200) ? "**met**" : "**not met**"]);
  out.push(`### 2. Revocation lag, ${lag[0].n} leases expiring in the same second (${runs(lag.length)})`);
  out.push("");
  out.push("| configuration | p50 ms | p99 ms | max ms | broker CPU ms/lease | Redis CPU ms/lease | revoked by sweeper |");
  out.push("|---|---:|---:|---:|---:|---:|---:|");
  out.push(`| defaults (worker.concurrency 50, sweep_interval 250ms, sweep_grace 250ms) ${lagTable(lag)}`);
  for (const v of [...new Set(rows.filter((r) => r.bench === "revocation-lag" && r.variant).map((r) => r.variant))]) {
    const rs = by("revocation-lag", v);
    out.push(`| what-if: ${v} (${runs(rs.length)}) ${lagTable(rs)}`);
  }
  out.push("");
  out.push(`Per run (defaults), p50 / p99 / max ms: ${lag.map((r) => `${r.lag_ms.p50} / ${r.lag_ms.p99} / ${r.lag_ms.max}`).join("; ")}. Every run ended with all ${lag[0].n} leases \`expired\`: ${lag.every((r) => r.states.expired === r.n) ? "yes" : "NO"}.`);
  out.push("");
}

// --- 3. mass revoke ----------------------------------------------------------------------------
const mass = by("mass-revoke");
if (mass.length) {
  const t = median(mass.map((r) => r.total_s));
  verdicts.push([`Mass revoke of ${mass[0].n.toLocaleString("en")} leases of one workload ≤ 60 s`, `${f(t, 1)} s`, t <= 60 ? "**met**" : "**not met**"]);
  out.push(`### 3. Mass revoke, ${mass[0].n.toLocaleString("en")} active leases of one workload (${runs(mass.length)})`);
  out.push("");
  out.push("| metric | median | per run |");
  out.push("|---|---:|---|");
  out.push(`| POST → progress says completed (s) | ${f(t, 1)} | ${list(mass.map((r) => r.total_s), 1)} |`);
  out.push(`| leases revoked per second | ${f(median(mass.map((r) => r.rate_per_s)))} | ${list(mass.map((r) => r.rate_per_s))} |`);
  out.push(`| POST /v1/admin/revocations answered (ms) | ${f(median(mass.map((r) => r.accepted_ms)))} | ${list(mass.map((r) => r.accepted_ms))} |`);
  out.push(`| broker CPU ms / lease | ${f(median(mass.map((r) => r.cost?.cpu_ms?.broker)), 3)} | ${list(mass.map((r) => r.cost?.cpu_ms?.broker), 3)} |`);
  out.push(`| Redis CPU ms / lease | ${f(median(mass.map((r) => r.cost?.cpu_ms?.redis)), 3)} | ${list(mass.map((r) => r.cost?.cpu_ms?.redis), 3)} |`);
  out.push(`| final state | | ${mass.map((r) => `${r.final.state} (${r.final.revoked}/${r.final.matched})`).join(", ")} |`);
  out.push(`| setup: issuing the leases (s, not timed) | ${f(median(mass.map((r) => r.create_s)))} | ${list(mass.map((r) => r.create_s))} |`);
  out.push("");
}

// --- 4. memory ---------------------------------------------------------------------------------
const memSection = (rs, title) => {
  const r0 = rs[0];
  out.push(title);
  out.push("");
  out.push(`Δused_memory / N: **${f(median(rs.map((r) => r.bytes_per_lease)))} B per lease** (per run: ${list(rs.map((r) => r.bytes_per_lease))}); without the audit ledger and BullMQ's capped event stream: **${f(median(rs.map((r) => r.bytes_per_lease_without_audit)))} B**. Keys per lease: ${r0.keys_per_lease}; delayed BullMQ jobs: ${r0.delayed_jobs ?? "one per lease"}. Encodings: lease hash \`${r0.encodings.lease_hash}\`, job hash \`${r0.encodings.job_hash}\` (hash-max-listpack-value ${r0.redis_config["hash-max-listpack-value"]}).`);
  out.push("");
  out.push("| where the bytes go (per lease) | bytes |");
  out.push("|---|---:|");
  for (const [k, v] of Object.entries(r0.own_keys)) out.push(`| own key: ${k} | ${f(median(rs.map((r) => r.own_keys[k])))} |`);
  for (const k of Object.keys(r0.shared_per_lease)) out.push(`| shared: ${k} | ${f(median(rs.map((r) => r.shared_per_lease[k])))} |`);
  out.push(`| not attributed (keyspace dict buckets, expires dict, allocator rounding) | ${f(median(rs.map((r) => r.unaccounted_per_lease)))} |`);
  out.push(`| **total (Δused_memory / N)** | **${f(median(rs.map((r) => r.bytes_per_lease)))}** |`);
  out.push("");
};
const mem = by("memory");
if (mem.length) {
  const all = median(mem.map((r) => r.bytes_per_lease));
  const noAudit = median(mem.map((r) => r.bytes_per_lease_without_audit));
  verdicts.push([`Redis memory ≤ 1 KB per active lease, its schedule included (N = ${rs[0].n.toLocaleString("en")}; issue 17)`, `${f(all)} B (${f(noAudit)} B without the audit ledger)`, all <= 1024 ? "**met**" : noAudit <= 1024 ? "**met without the audit ledger** (the audit per issuance has its own bound, issue 11)" : "**not met**"]);
  memSection(mem, `### 4. Redis memory per active lease, N = ${mem[0].n.toLocaleString("en")} (${runs(mem.length)})`);
  const m0 = mem[0];
  out.push(`Field sizes of one lease hash (bytes): ${Object.entries(m0.lease_hash_field_sizes).map(([k, v]) => `${k} ${v}`).join(", ")}. One job hash: ${Object.entries(m0.job_hash_field_sizes).map(([k, v]) => `${k} ${v}`).join(", ")}.`);
  out.push("");
  out.push("Sample values: lease `task` = `" + m0.lease_task_sample + "`; job `opts` = `" + m0.job_opts_sample + "`.");
  out.push("");
}
for (const v of [...new Set(rows.filter((r) => r.bench === "memory" && r.variant).map((r) => r.variant))]) {
  memSection(by("memory", v), `#### What-if: ${v} (${runs(by("memory", v).length)})`);
}

// --- 5. re-authorization -----------------------------------------------------------------------
const reauth = by("reauth");
for (const n of [...new Set(reauth.map((r) => r.n))].sort((a, b) => a - b)) {
  const rs = reauth.filter((r) => r.n === n);
  const M = (get, d = 0) => f(median(rs.map(get)), d);
  const P = (get, d = 0) => list(rs.map(get), d);
  const correct = rs.every((r) => r.ok);
  const r0 = rs[0];
  verdicts.push([
    `Re-authorization of ${n.toLocaleString("en")} active leases, ${pct(r0.expected_revoked / n)} revoked by the change (no target set)`,
    `reload answered in ${f(median(rs.map((r) => r.answer_ms)) / 1000, 1)} s (${M((r) => r.reevaluated_per_s)} leases/s); /healthz p99 during the walk ${M((r) => r.probes.healthz.walk.p99_ms)} ms`,
    correct ? `**correct** in every run (revoked = ${r0.expected_revoked.toLocaleString("en")} exactly)` : "**WRONG** in some run (see below)",
  ]);
  out.push(`### 5. Re-authorization of ${n.toLocaleString("en")} active leases, ${r0.forbidden_workloads} of 50 workloads forbidden (${runs(rs.length)})`);
  out.push("");
  out.push("| metric | median | per run |");
  out.push("|---|---:|---|");
  out.push(`| POST /v1/admin/policy/reload answered (ms) | ${M((r) => r.answer_ms)} | ${P((r) => r.answer_ms)} |`);
  out.push(`| leases re-evaluated per second (reevaluated / answer time) | ${M((r) => r.reevaluated_per_s)} | ${P((r) => r.reevaluated_per_s)} |`);
  out.push(`| first forbidden lease \`revoked\` after (ms from POST) | ${M((r) => r.first_revoked_ms)} | ${P((r) => r.first_revoked_ms)} |`);
  out.push(`| all ${r0.expected_revoked.toLocaleString("en")} forbidden leases \`revoked\` after (ms from POST) | ${M((r) => r.all_revoked_ms)} | ${P((r) => r.all_revoked_ms)} |`);
  for (const [kind, label] of [["healthz", "GET /healthz"], ["credential", "POST /v1/credentials"]]) {
    for (const [ph, phl] of [["baseline", "before the reload"], ["walk", "during the walk"]]) {
      const g = (k) => (r) => r.probes[kind][ph][k];
      out.push(`| ${label} ${phl}: p50 / p99 / max ms | ${M(g("p50_ms"), 1)} / ${M(g("p99_ms"), 1)} / ${M(g("max_ms"), 1)} | ${rs.map((r) => `${f(g("p50_ms")(r), 1)} / ${f(g("p99_ms")(r), 1)} / ${f(g("max_ms")(r), 1)}`).join("; ")} |`);
    }
  }
  out.push(`| broker event-loop delay during the walk: p99 / max ms | ${M((r) => r.broker_event_loop_delay_during_walk.p99_ms)} / ${M((r) => r.broker_event_loop_delay_during_walk.max_ms)} | ${rs.map((r) => `${f(r.broker_event_loop_delay_during_walk.p99_ms)} / ${f(r.broker_event_loop_delay_during_walk.max_ms)}`).join("; ")} |`);
  out.push(`| broker CPU ms / re-evaluated lease (walk) | ${M((r) => r.cost_walk?.cpu_ms?.broker, 3)} | ${P((r) => r.cost_walk?.cpu_ms?.broker, 3)} |`);
  out.push(`| Redis CPU ms / re-evaluated lease (walk) | ${M((r) => r.cost_walk?.cpu_ms?.redis, 3)} | ${P((r) => r.cost_walk?.cpu_ms?.redis, 3)} |`);
  out.push(`| answer: reevaluated / revoked / kept / skipped | | ${rs.map((r) => `${r.reauthorization.reevaluated} / ${r.reauthorization.revoked} / ${r.reauthorization.kept} / ${r.reauthorization.skipped}`).join("; ")} |`);
  out.push(`| checks (revoked = ${r0.expected_revoked} exactly; leases read back: forbidden ones \`revoked\` by \`policy_change\`, the others \`active\`; every probe answered 200/201) | | ${rs.map((r) => (r.ok ? "ok" : `FAILED: ${r.problems.join("; ")}`)).join("; ")} |`);
  out.push(`| setup: issuing the leases (s, not timed) | ${M((r) => r.create_s)} | ${P((r) => r.create_s)} |`);
  out.push("");
  out.push(`Probes: GET /healthz every 10 ms and POST /v1/credentials every 25 ms, open loop; "during the walk" = sent between the POST and its answer (per run: ${rs.map((r) => `${r.probes.healthz.walk.n} + ${r.probes.credential.walk.n}`).join(", ")} requests).`);
  out.push("");
}

// --- assemble ------------------------------------------------------------------------------------
const section = [
  "<!-- results:begin (generated by scripts/bench/report.js; edit outside these markers) -->",
  "",
  "## Results",
  "",
  `Run ${meta.date}: \`${meta.command}\` — ${meta.runs}.`,
  "",
  "| target | measured (median) | verdict |",
  "|---|---|---|",
  ...verdicts.map((v) => `| ${v.join(" | ")} |`),
  "",
  "### Machine",
  "",
  "| | |",
  "|---|---|",
  ...Object.entries(meta.machine).map(([k, v]) => `| ${k} | ${v} |`),
  "",
  ...out,
  "<!-- results:end -->",
].join("\n");

let text = fs.existsSync(doc) ? fs.readFileSync(doc, "utf8") : "# Benchmarks\n\n<!-- results:begin -->\n<!-- results:end -->\n";
const re = /<!-- results:begin[^>]*-->[\s\S]*<!-- results:end -->/;
text = re.test(text) ? text.replace(re, () => section) : `${text}\n${section}\n`;
fs.mkdirSync(path.dirname(doc), { recursive: true });
fs.writeFileSync(doc, text);
console.log(`wrote ${doc}`);
