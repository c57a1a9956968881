/**
 * `jitbroker policy test FILE` and `jitbroker policy why` (docs/ARCHITECTURE.md, Feature folders), and the policy
 * half of `jitbroker config check` (lint warnings). The logic is in policy/simulate.ts and
 * policy/lint.ts; this file reads files and flags and prints.
 *
 * Exit codes: `policy test` 0 when every case passes, 1 on a mismatch, 2 on a bad table, config
 * or policy set; `policy why` 0 whenever it explains (whatever the decision), 2 on bad input.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { Command, Option } from "commander";
import type { LoadedConfig } from "../config/load";
import { formatPath } from "../config/path";
import { formatDuration } from "../core/duration";
import { compilePolicies, createPolicyEngine, loadPolicyFiles, PolicyError, type PolicyEngine, type PolicySet } from "../policy/engine";
import { formatWarning, lintConfig } from "../policy/lint";
import {
  ACTION_NAMES,
  buildRequest,
  explain,
  inventoryOf,
  loadPolicyTests,
  outcomeOf,
  parseContextInput,
  runPolicyTests,
  SimulationInputError,
  type CaseResult,
  type ContextInput,
  type Explanation,
  type Outcome,
  type PolicyRef,
} from "../policy/simulate";
import type { ActionName } from "../policy/types";
// main.ts imports this module too; CliError and load are only used when a command runs.
import { CliError, load } from "./errors";
import { offlineConfigFile } from "./config-files";

const rel = (p: string) => path.relative(process.cwd(), p) || p;

/** The configured policy set, compiled; a set with errors is printed on stderr and exits 2. */
async function loadPolicySet(cfg: LoadedConfig): Promise<{ set: PolicySet; engine: PolicyEngine; files: number }> {
  try {
    const files = await loadPolicyFiles(cfg.policy.files);
    const set = compilePolicies(files);
    return { set, engine: createPolicyEngine(set), files: files.length };
  } catch (e) {
    if (e instanceof PolicyError) {
      process.stderr.write(`${e.message}\n`);
      throw new CliError("the policy set has errors", 2);
    }
    throw e;
  }
}

/** The lint warnings of `config check`, one line each (policies are loaded from the config). */
export async function configWarnings(cfg: LoadedConfig): Promise<string[]> {
  const { set, engine } = await loadPolicySet(cfg);
  return lintConfig(cfg, set, engine).map((w) => formatWarning(w, rel));
}

function inputError(e: unknown): never {
  if (e instanceof SimulationInputError) {
    if (e.problems.length === 1) throw new CliError(e.problems[0]!, 2);
    process.stderr.write(`${e.problems.join("\n")}\n`);
    throw new CliError(`${e.problems.length} problems; nothing was run`, 2);
  }
  throw e;
}

const OUTCOME_TEXT: Record<Outcome, string> = { allow: "allow", approval: "allow after approval", deny: "deny" };

function caseLabel(r: Pick<CaseResult, "name" | "workload" | "action" | "role">, requester?: string): string {
  if (r.name) return r.name;
  if (r.action === "request") return `${r.workload} → ${r.role}`;
  if (r.action === "approve") return `${r.workload} → approve ${r.role}${requester ? ` for ${requester}` : ""}`;
  return `${r.workload} → ${r.action}`;
}

const policiesText = (ids: string[]) => (ids.length ? ids.join(", ") : "no policy matched: default deny");

function printTestReport(file: string, results: CaseResult[], requesters: Map<number, string>, header: string): void {
  const out: string[] = [header];
  for (const r of results) {
    const label = caseLabel(r, requesters.get(r.index));
    if (r.ok) out.push(`ok    ${label}: ${r.actual} (${policiesText(r.policyIds)})`);
    else out.push(`FAIL  ${label}: expected ${r.expected}, got ${r.actual} (${policiesText(r.policyIds)})  [${rel(file)}${r.line ? `:${r.line}` : ""}]`);
    if (r.refusal) out.push(`        refused by the broker: ${r.refusal}`);
    for (const e of r.errors) out.push(`        error: ${e}`);
  }
  const failed = results.filter((r) => !r.ok).length;
  out.push(`${results.length - failed} passed, ${failed} failed`);
  process.stdout.write(`${out.join("\n")}\n`);
}

function annotationsText(a: Record<string, string>): string {
  return Object.entries(a)
    .map(([k, v]) => `@${k}(${JSON.stringify(v)})`)
    .join(" ");
}

function policyLine(p: PolicyRef): string {
  return `${p.id}  ${p.effect}  ${rel(p.file)}:${p.line}`;
}

const seconds = (s: number) => formatDuration(s * 1000);

function contextText(c: Explanation["request"]["context"]): string {
  const task = Object.entries(c.task)
    .filter(([, v]) => v !== "")
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  const parts = [`task ${task.length ? task.join(" ") : "(all fields empty)"}`, `ttl_seconds ${c.ttl_seconds}`, `approved ${c.approved}`];
  const t = c["time"] as { day: string; date: string; hour: number; minute: number; timezone: string } | undefined;
  if (t) parts.push(`time ${t.day} ${t.date} ${String(t.hour).padStart(2, "0")}:${String(t.minute).padStart(2, "0")} ${t.timezone}`);
  const requester = c["requester"] as { id: string; owner: string } | undefined;
  if (requester) parts.push(`requester ${requester.id} (owner ${requester.owner})`);
  return parts.join("; ");
}

function printExplanation(x: Explanation, roleText: string | undefined): void {
  const p = x.request.principal;
  const claims = Object.entries(p.claims).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  const out = [
    `workload:  ${p.id} (kind ${p.kind}, owner ${p.owner}, issuer ${p.issuer}, subject ${JSON.stringify(p.subject)}${claims.length ? `, claims ${claims.join(" ")}` : ""})`,
    `action:    ${x.request.action}`,
    ...(roleText ? [`role:      ${roleText}`] : []),
    `context:   ${contextText(x.request.context)}`,
    `decision:  ${OUTCOME_TEXT[x.outcome]}`,
  ];
  if (x.refusal) out.push(`  refused by the broker before any policy: ${x.refusal}`, `policies alone: ${OUTCOME_TEXT[outcomeOf(x.decision)]}`);
  if (x.defaultDeny) out.push("  no permit policy matched; nothing is allowed unless a policy permits it");
  if (x.determining.length > 0) {
    out.push("determining policies:");
    for (const d of x.determining) {
      out.push(`  ${policyLine(d)}`);
      if (Object.keys(d.annotations).length > 0) out.push(`    ${annotationsText(d.annotations)}`);
    }
    if (x.erroredForbids.length > 0) out.push(`  ${x.erroredForbids.join(", ")} could not be evaluated: denied (fail closed)`);
    else if (x.decision.decision === "deny") out.push("  a forbid policy matched: a forbid overrides every permit");
  }
  if (x.ttl) {
    const limits = [`role max ${seconds(x.ttl.roleMaxSeconds)}`, ...(x.ttl.policyMaxSeconds !== undefined ? [`@max_ttl ${seconds(x.ttl.policyMaxSeconds)}`] : [])];
    out.push(`max ttl:   ${seconds(x.ttl.maxSeconds)} (${limits.join(", ")}); asked ${seconds(x.ttl.askedSeconds)}, the lease would last ${seconds(x.ttl.leaseSeconds)}`);
  }
  out.push(`errors:    ${x.decision.errors.length ? "" : "none"}`.trimEnd());
  for (const e of x.decision.errors) out.push(`  ${e}`);
  if (x.permits.length > 0 || x.decision.decision === "deny") {
    out.push(`permit policies for action ${x.request.action}, each evaluated alone:${x.permits.length ? "" : " none"}`);
    for (const c of x.permits) {
      out.push(`  ${c.id}  ${rel(c.file)}:${c.line}`);
      if (c.satisfied) out.push(`    matches${x.decision.decision === "deny" ? " (overridden)" : ""}`);
      else if (c.failed === "scope") out.push(`    scope does not match: ${c.detail}`);
      else if (c.failed === "condition") out.push(`    condition false: ${c.detail}`);
      else out.push(`    could not be evaluated: ${c.detail}`);
    }
  }
  process.stdout.write(`${out.join("\n")}\n`);
}

function explanationJson(x: Explanation) {
  const ref = (p: PolicyRef) => ({ id: p.id, effect: p.effect, file: rel(p.file), line: p.line, annotations: p.annotations });
  return {
    decision: x.outcome,
    decision_text: OUTCOME_TEXT[x.outcome],
    ...(x.refusal ? { refusal: x.refusal, policies_alone: outcomeOf(x.decision) } : {}),
    default_deny: x.defaultDeny,
    policy_ids: x.decision.policyIds,
    policy_hash: x.decision.policyHash,
    determining: x.determining.map(ref),
    ...(x.ttl
      ? {
          ttl: {
            asked_seconds: x.ttl.askedSeconds,
            role_max_seconds: x.ttl.roleMaxSeconds,
            ...(x.ttl.policyMaxSeconds !== undefined ? { policy_max_seconds: x.ttl.policyMaxSeconds } : {}),
            max_seconds: x.ttl.maxSeconds,
            lease_seconds: x.ttl.leaseSeconds,
          },
        }
      : {}),
    errors: x.decision.errors,
    permits: x.permits.map((c) => ({ ...ref(c), satisfied: c.satisfied, ...(c.failed ? { failed: c.failed, detail: c.detail } : {}) })),
    request: x.request,
  };
}

export function registerPolicyCommands(program: Command): void {
  const policy = program.command("policy").description("simulate and explain policy decisions");

  policy
    .command("test")
    .description("run a table of requests against the policies (exit 1 on a mismatch)")
    .argument("<file>", "YAML {cases: [{name?, workload, role, context?, expect: allow|deny|approval}]}")
    .option("--config <file>", "configuration file: inventory and policy files (default: $JITBROKER_CONFIG, the running jitbroker dev's, or config/broker.yaml)")
    .option("--json", "print the results as JSON")
    .action(async (file: string, opts: { config?: string; json?: boolean }) => {
      const cfg = load(offlineConfigFile(opts.config));
      let text: string;
      try {
        text = readFileSync(file, "utf8");
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        throw new CliError(`${file}: ${code === "ENOENT" ? "file not found" : `cannot read: ${code ?? String(e)}`}`, 2);
      }
      let tests;
      try {
        tests = loadPolicyTests(text, file, inventoryOf(cfg), Date.now());
      } catch (e) {
        inputError(e);
      }
      const { set, engine, files } = await loadPolicySet(cfg);
      const report = runPolicyTests(engine, tests);
      const requesters = new Map(tests.cases.flatMap((c) => (c.test.context?.requester ? [[c.index, c.test.context.requester] as const] : [])));
      if (opts.json) {
        process.stdout.write(
          `${JSON.stringify(
            {
              file: rel(file),
              policy_hash: report.policyHash,
              passed: report.passed,
              failed: report.failed,
              cases: report.results.map((r) => ({
                index: r.index,
                ...(r.line !== undefined ? { line: r.line } : {}),
                ...(r.name !== undefined ? { name: r.name } : {}),
                workload: r.workload,
                action: r.action,
                ...(r.role !== undefined ? { role: r.role } : {}),
                expected: r.expected,
                actual: r.actual,
                ok: r.ok,
                policy_ids: r.policyIds,
                ...(r.maxTtlSeconds !== undefined ? { max_ttl_seconds: r.maxTtlSeconds } : {}),
                errors: r.errors,
                ...(r.refusal ? { refusal: r.refusal } : {}),
              })),
            },
            null,
            2,
          )}\n`,
        );
      } else {
        const header = `${rel(file)}: ${report.results.length} case${report.results.length === 1 ? "" : "s"} against ${set.policies.length} policies from ${files} file${files === 1 ? "" : "s"} (set ${set.hash.slice(0, 12)}), inventory of ${rel(cfg.file)}`;
        printTestReport(file, report.results, requesters, header);
      }
      if (report.failed > 0) throw new CliError(`${report.failed} of ${report.results.length} cases failed`, 1);
    });

  policy
    .command("why")
    .description("explain the decision on one request: determining policies, annotations, max TTL")
    .requiredOption("--workload <id>", "the requesting workload")
    .option("--role <name>", "the requested role (not for admin actions)")
    .addOption(new Option("--action <action>", "the action").choices([...ACTION_NAMES]).default("request"))
    .option("--context <json>", 'JSON context: {"task": {...}, "ttl": "10m", "approved": true, "at": "...", "time": {...}, "claims": {...}, "subject": "...", "requester": "..."}')
    .option("--ttl <duration>", "requested TTL (default: the role's default)")
    .option("--at <time>", "RFC 3339 time of the request (default: now)")
    .option("--config <file>", "configuration file: inventory and policy files (default: $JITBROKER_CONFIG, the running jitbroker dev's, or config/broker.yaml)")
    .option("--json", "print the explanation as JSON")
    .action(async (opts: { workload: string; role?: string; action: ActionName; context?: string; ttl?: string; at?: string; config?: string; json?: boolean }) => {
      const cfg = load(offlineConfigFile(opts.config));
      let raw: unknown = {};
      if (opts.context !== undefined) {
        try {
          raw = JSON.parse(opts.context) as unknown;
        } catch (e) {
          throw new CliError(`--context: not JSON: ${(e as Error).message}`, 2);
        }
        if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new CliError("--context: must be a JSON object", 2);
      }
      const flags: Record<string, unknown> = {};
      if (opts.ttl !== undefined) flags["ttl"] = /^\d+$/.test(opts.ttl) ? Number(opts.ttl) : opts.ttl;
      if (opts.at !== undefined) flags["at"] = opts.at;
      // Problems are named after the flag the value came from: --ttl, --at, --context.task.intent, --role.
      const flag = (p: PropertyKey[]) => {
        if (p[0] !== "context") return `--${String(p[0])}`;
        if ((p[1] === "ttl" || p[1] === "at") && flags[p[1]] !== undefined) return `--${p[1]}`;
        return p.length > 1 ? `--context.${formatPath(p.slice(1))}` : "--context";
      };
      let context: ContextInput;
      try {
        context = parseContextInput({ ...(raw as object), ...flags }, (p) => flag(["context", ...p]));
      } catch (e) {
        inputError(e);
      }
      const built = buildRequest(inventoryOf(cfg), { workload: opts.workload, action: opts.action, ...(opts.role !== undefined ? { role: opts.role } : {}), context }, Date.now());
      if (!built.sim) {
        inputError(new SimulationInputError(built.problems.map((p) => `${flag(p.path)}: ${p.message}`)));
      }
      const { engine } = await loadPolicySet(cfg);
      const x = explain(engine, built.sim);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(explanationJson(x), null, 2)}\n`);
        return;
      }
      const r = built.sim.role;
      const roleText = r
        ? `${r.name} (backend ${r.backend}${Object.keys(r.labels).length ? `, labels ${Object.entries(r.labels).map(([k, v]) => `${k}=${v}`).join(" ")}` : ""}, ttl ${formatDuration(r.ttl.default)} max ${formatDuration(r.ttl.max)})`
        : undefined;
      printExplanation(x, roleText);
    });
}
