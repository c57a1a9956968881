/**
 * Policy simulation (`jitbroker policy test` and `policy why`; docs/ARCHITECTURE.md, Feature folders): decides
 * requests that were never made, against the configured policies and inventory, with the Cedar
 * request the broker would build for them.
 *
 * How a simulated request is built (the broker's own builders are used wherever they exist):
 *  - principal `Workload::"<id>"` as `principalOf` (authz/principal.ts) builds it from a token
 *    that matched the workload: kind and owner from the inventory; `issuer` the issuer *name*;
 *    `subject` the workload's configured subject, else `context.subject`, else "" (a workload
 *    without a subject matches any `sub`: give `context.subject` when a policy reads it);
 *    `claims` holds exactly the claim names the workload constrains, each with its first
 *    configured value unless `context.claims` names another allowed one (a token could carry
 *    any of them). A claim value the workload would not match, or a claim it does not
 *    constrain (the broker never passes those to policies), is an input error.
 *  - resource `Role::"<name>"` with the role's backend and labels (for `request` and
 *    `approve`); `Broker::"jitbroker"` for the admin actions.
 *  - context from `decisionContext` (authz/context.ts), the broker's one builder: the task
 *    (absent fields ""; the id defaults to ""), `ttl_seconds` (the asked TTL, by default the
 *    role's default; a TTL above the role's max is an input error, as the broker answers 422
 *    `ttl_too_long` before any policy is asked; 0 for admin actions), `approved` (default
 *    false), `time` in `policy.timezone` (default: now), and for `approve` the `requester`
 *    workload's `{id, kind, owner}`.
 *  - `time: {weekday, hour, minute}` is shorthand for the instant with that local time in the
 *    week of Monday 2024-01-08 (in `policy.timezone`); give `at` when a policy reads
 *    `context.time.date`.
 *
 * Outcomes: `deny`; `approval` when allowed and a determining permit has `@approval("required")`;
 * `allow` when allowed without approval (Decision.approvalRequired false).
 *
 * `explain` adds, on a deny, each permit policy of the action evaluated *alone* by Cedar: whether
 * its scope matches, and otherwise the first condition (top-level `&&` operand of `when`, or a
 * whole `unless`) that is false or fails to evaluate, found by evaluating growing prefixes of
 * the conditions, which is how Cedar itself evaluates them (left to right, short-circuiting).
 */
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import { isNode, LineCounter, parseDocument, type Document } from "yaml";
import { z } from "zod";
import type { LoadedConfig } from "../config/load";
import { formatPath } from "../config/path";
import { configSchema, type RoleConfig, type WorkloadConfig } from "../config/schema";
import { isOwnRequest, mayBeOperator } from "../authz/refusals";
import { compileWorkloads } from "../identity/workloads";
import { leaseTtlMs, parseTtlMs } from "../leases/ttl";
import { DAYS, decisionContext, roleResource, timeContext } from "../authz/context";
import {
  BROKER_RESOURCE_ID,
  toCedarRequest,
  type ActionName,
  type ClaimValue,
  type CompiledPolicy,
  type Decision,
  type DecisionRequest,
  type PolicyEngine,
  type PrincipalInfo,
} from "./engine";

export type Outcome = "allow" | "approval" | "deny";
export const OUTCOMES = ["allow", "deny", "approval"] as const;
export const ACTION_NAMES = ["request", "admin_read", "admin_revoke", "approve", "delegate"] as const satisfies readonly ActionName[];

/** What simulation needs from a configuration: its inventory and the policy time zone. */
export interface Inventory {
  issuers: string[];
  workloads: WorkloadConfig[];
  roles: RoleConfig[];
  timeZone: string;
}

export function inventoryOf(cfg: LoadedConfig): Inventory {
  return { issuers: cfg.identity.issuers.map((i) => i.name), workloads: cfg.workloads, roles: cfg.roles, timeZone: cfg.policy.timezone };
}

/** One problem of a simulation input, at a path of the input (`context.ttl`, `cases[2].role`). */
export interface Problem {
  path: PropertyKey[];
  message: string;
}

/** Bad simulation input: `problems` lists every problem, each one line, ready to print. */
export class SimulationInputError extends Error {
  constructor(
    readonly problems: string[],
    summary?: string,
  ) {
    super(summary ?? (problems.length === 1 ? problems[0]! : `${problems.length} problems:\n  ${problems.join("\n  ")}`));
    this.name = "SimulationInputError";
  }
}

// ---------------------------------------------------------------------------------------------
// input schema

/** Task ids as the API accepts them (docs/ARCHITECTURE.md, Request path); "" (absent) is allowed here. */
const TASK_ID = /^[A-Za-z0-9._:@-]{0,128}$/;
const taskText = z.string().max(256);
const WEEKDAY = "must be 1 (Monday) .. 7 (Sunday) or mon..sun";

export const contextInputSchema = z
  .strictObject({
    task: z
      .strictObject({
        id: z.string().regex(TASK_ID, "must be up to 128 characters of [A-Za-z0-9._:@-]").optional(),
        intent: taskText.optional(),
        tool: taskText.optional(),
        destination: taskText.optional(),
        sensitivity: taskText.optional(),
      })
      .optional(),
    ttl: z.union([z.string(), z.number()]).optional(),
    approved: z.boolean().optional(),
    at: z.iso.datetime({ offset: true, message: 'must be an RFC 3339 time such as "2026-03-02T10:00:00Z"' }).optional(),
    time: z
      .strictObject({
        weekday: z.union([z.number().int().min(1, WEEKDAY).max(7, WEEKDAY), z.enum(DAYS)], { message: WEEKDAY }),
        hour: z.number().int().min(0).max(23),
        minute: z.number().int().min(0).max(59).optional(),
      })
      .optional(),
    subject: z.string().min(1).optional(),
    claims: z.record(z.string().min(1), z.union([z.string(), z.number(), z.boolean()])).optional(),
    requester: z.string().min(1).optional(),
    /** Action delegate (RFC 8693, src/oauth): the chain so far; chain defaults to [from]. */
    delegation: z.strictObject({ depth: z.number().int().min(1).max(16), from: z.string().min(1), chain: z.array(z.string().min(1)).max(16).optional() }).optional(),
    /** A person an agent acts for: their users issuer, subject and ID token claims. */
    on_behalf_of: z
      .strictObject({ issuer: z.string().min(1), subject: z.string().min(1), claims: z.record(z.string().min(1), z.union([z.string(), z.number(), z.boolean(), z.array(z.string())])).optional() })
      .optional(),
  })
  .superRefine((c, ctx) => {
    if (c.at !== undefined && c.time !== undefined) ctx.addIssue({ code: "custom", path: ["time"], message: "give at or time, not both" });
  });

export type ContextInput = z.output<typeof contextInputSchema>;

export interface SimInput {
  workload: string;
  action?: ActionName;
  role?: string;
  context?: ContextInput;
}

const caseSchema = z.strictObject({
  name: z.string().min(1).optional(),
  workload: z.string().min(1),
  action: z.enum(ACTION_NAMES).optional(),
  role: z.string().min(1).optional(),
  context: contextInputSchema.optional(),
  expect: z.enum(OUTCOMES, { message: "must be allow, deny or approval" }),
});

export type PolicyTestCase = z.output<typeof caseSchema>;

const testFileSchema = z.strictObject({
  /** Extra workloads and roles for this table only, validated like the config's own. */
  inventory: z.strictObject({ workloads: configSchema.shape.workloads, roles: configSchema.shape.roles }).optional(),
  cases: z.array(caseSchema).min(1, "at least one case is needed"),
});

/** Zod issues as problems; an unknown key is reported at its own path. */
function zodProblems(error: z.ZodError, prefix: PropertyKey[] = []): Problem[] {
  const out: Problem[] = [];
  for (const issue of error.issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) out.push({ path: [...prefix, ...issue.path, key], message: "unknown key (check the spelling)" });
    } else if (/expected \w+, received undefined$/.test(issue.message)) {
      out.push({ path: [...prefix, ...issue.path], message: "required" });
    } else {
      out.push({ path: [...prefix, ...issue.path], message: issue.message });
    }
  }
  return out;
}

/** Validates a context; `label` names a problem's path in the messages (default: `task.intent`). */
export function parseContextInput(value: unknown, label: (path: PropertyKey[]) => string = formatPath): ContextInput {
  const r = contextInputSchema.safeParse(value ?? {});
  if (!r.success) throw new SimulationInputError(zodProblems(r.error).map((p) => `${label(p.path)}: ${p.message}`));
  return r.data;
}

// ---------------------------------------------------------------------------------------------
// building requests

const REFERENCE_MONDAY = Date.UTC(2024, 0, 8); // 2024-01-08 is a Monday

/** The instant whose local time in `timeZone` is that weekday (1 = Monday), hour and minute in the week of 2024-01-08. */
export function instantInWeek(weekday: number, hour: number, minute: number, timeZone: string): number {
  const wanted = REFERENCE_MONDAY + ((weekday - 1) * 24 + hour) * 3_600_000 + minute * 60_000;
  let at = wanted;
  for (let i = 0; i < 4; i++) {
    const t = timeContext(at, timeZone);
    const [y, m, d] = t.date.split("-").map(Number) as [number, number, number];
    const seen = Date.UTC(y, m - 1, d, t.hour, t.minute);
    if (seen === wanted) return at;
    at += wanted - seen;
  }
  const hhmm = `${String(hour).padStart(2, "0")}:${String(minute).padStart(2, "0")}`;
  throw new RangeError(`${DAYS[weekday - 1]} ${hhmm} does not exist in ${timeZone} in the week of 2024-01-08`);
}

/** A request ready to decide, and what it was built from. */
export interface Simulated {
  request: DecisionRequest;
  workload: WorkloadConfig;
  role?: RoleConfig;
  atMs: number;
  /** request/approve: the TTL asked (role default unless given) and the role's limits. */
  ttl?: { askedMs: number; roleDefaultMs: number; roleMaxMs: number };
}

function known(names: string[]): string {
  return names.length ? names.join(", ") : "none";
}

/** Whether `workload` matches a token with these claim values (the broker's own matcher). */
export function workloadAccepts(w: WorkloadConfig, claims: Record<string, ClaimValue>): boolean {
  try {
    compileWorkloads([{ ...w, subject: undefined, claims: Object.fromEntries(Object.keys(claims).map((k) => [k, w.claims[k]!])) }]).match({
      issuer: w.issuer,
      subject: "",
      claims,
    });
    return true;
  } catch {
    return false;
  }
}

function principalFor(w: WorkloadConfig, ctx: ContextInput, problems: Problem[]): PrincipalInfo {
  if (w.subject !== undefined && ctx.subject !== undefined && ctx.subject !== w.subject) {
    problems.push({ path: ["context", "subject"], message: `workload ${w.id} only matches tokens with sub "${w.subject}"` });
  }
  const claims: Record<string, ClaimValue> = {};
  for (const [name, allowed] of Object.entries(w.claims)) claims[name] = Array.isArray(allowed) ? allowed[0]! : allowed;
  for (const [name, value] of Object.entries(ctx.claims ?? {})) {
    if (!(name in w.claims)) {
      const constrained = Object.keys(w.claims);
      problems.push({
        path: ["context", "claims", name],
        message: `workload ${w.id} does not constrain claim ${name}, so the broker never passes it to policies (its claims: ${known(constrained)})`,
      });
    } else if (!workloadAccepts(w, { [name]: value })) {
      const allowed = w.claims[name]!;
      problems.push({
        path: ["context", "claims", name],
        message: `${JSON.stringify(value)} is not a value workload ${w.id} matches (allowed: ${(Array.isArray(allowed) ? allowed : [allowed]).map((v) => JSON.stringify(v)).join(", ")})`,
      });
    } else {
      claims[name] = value;
    }
  }
  return { id: w.id, kind: w.kind, owner: w.owner, issuer: w.issuer, subject: w.subject ?? ctx.subject ?? "", claims };
}

function ttlMsOf(v: string | number, problems: Problem[]): number | undefined {
  // As the API reads `ttl`.
  try {
    return parseTtlMs(v);
  } catch (e) {
    problems.push({ path: ["context", "ttl"], message: (e as Error).message });
    return undefined;
  }
}

/**
 * Builds the decision request of a simulated input. Returns the problems instead (paths relative
 * to the input: `workload`, `role`, `context.ttl`...) when the input cannot be simulated.
 */
export function buildRequest(inv: Inventory, input: SimInput, nowMs: number): { sim: Simulated; problems: [] } | { sim?: undefined; problems: Problem[] } {
  const problems: Problem[] = [];
  const action: ActionName = input.action ?? "request";
  const ctx = input.context ?? {};
  const workload = inv.workloads.find((w) => w.id === input.workload);
  if (!workload) problems.push({ path: ["workload"], message: `unknown workload "${input.workload}" (known: ${known(inv.workloads.map((w) => w.id))})` });

  const admin = action === "admin_read" || action === "admin_revoke";
  let role: RoleConfig | undefined;
  if (admin) {
    if (input.role !== undefined) problems.push({ path: ["role"], message: `${action} acts on the broker as a whole: give no role` });
  } else if (input.role === undefined) {
    problems.push({ path: ["role"], message: `required for action ${action}` });
  } else {
    role = inv.roles.find((r) => r.name === input.role);
    if (!role) problems.push({ path: ["role"], message: `unknown role "${input.role}" (known: ${known(inv.roles.map((r) => r.name))})` });
  }

  let requester: { id: string; kind: string; owner: string } | undefined;
  if (action === "approve") {
    if (ctx.requester === undefined) problems.push({ path: ["context", "requester"], message: "required for action approve: the workload whose request is approved" });
    else {
      const r = inv.workloads.find((w) => w.id === ctx.requester);
      if (!r) problems.push({ path: ["context", "requester"], message: `unknown workload "${ctx.requester}"` });
      else requester = { id: r.id, kind: r.kind, owner: r.owner };
    }
  } else if (ctx.requester !== undefined) {
    problems.push({ path: ["context", "requester"], message: "only for action approve" });
  }

  if (action === "delegate" && ctx.delegation === undefined) problems.push({ path: ["context", "delegation"], message: "required for action delegate: {depth, from, chain?}" });
  if (action !== "delegate" && ctx.delegation !== undefined) problems.push({ path: ["context", "delegation"], message: "only for action delegate" });
  if (ctx.on_behalf_of !== undefined && action !== "request" && action !== "delegate") problems.push({ path: ["context", "on_behalf_of"], message: "only for actions request and delegate" });

  let ttl: Simulated["ttl"];
  if (admin) {
    if (ctx.ttl !== undefined) problems.push({ path: ["context", "ttl"], message: `${action} has no TTL` });
  } else if (role) {
    const asked = ctx.ttl === undefined ? role.ttl.default : ttlMsOf(ctx.ttl, problems);
    if (asked !== undefined && asked > role.ttl.max) {
      problems.push({
        path: ["context", "ttl"],
        message: `${Math.round(asked / 1000)}s exceeds role ${role.name}'s max of ${Math.round(role.ttl.max / 1000)}s (the broker answers 422 ttl_too_long when a policy allows the request, 403 policy_denied otherwise)`,
      });
    } else if (asked !== undefined) {
      ttl = { askedMs: asked, roleDefaultMs: role.ttl.default, roleMaxMs: role.ttl.max };
    }
  }

  let atMs = nowMs;
  if (ctx.at !== undefined) atMs = Date.parse(ctx.at);
  if (ctx.time !== undefined) {
    const t = ctx.time;
    const weekday = typeof t.weekday === "number" ? t.weekday : DAYS.indexOf(t.weekday) + 1;
    try {
      atMs = instantInWeek(weekday, t.hour, t.minute ?? 0, inv.timeZone);
    } catch (e) {
      problems.push({ path: ["context", "time"], message: (e as Error).message });
    }
  }

  const principal = workload ? principalFor(workload, ctx, problems) : undefined;
  if (problems.length > 0 || !workload || !principal) return { problems };

  const request: DecisionRequest = {
    principal,
    action,
    resource: role ? roleResource(role) : { type: "Broker", id: BROKER_RESOURCE_ID },
    context: decisionContext({
      task: ctx.task ?? {},
      ttlSeconds: ttl ? Math.floor(ttl.askedMs / 1000) : 0,
      approved: ctx.approved ?? false,
      atMs,
      timeZone: inv.timeZone,
      ...(requester ? { requester } : {}),
    }),
  };
  // The chain context the token exchange adds (docs/ARCHITECTURE.md, Delegation).
  if (ctx.delegation) request.context.delegation = { depth: ctx.delegation.depth, from: ctx.delegation.from, chain: ctx.delegation.chain ?? [ctx.delegation.from] };
  if (ctx.on_behalf_of) request.context.on_behalf_of = { issuer: ctx.on_behalf_of.issuer, subject: ctx.on_behalf_of.subject, claims: ctx.on_behalf_of.claims ?? {} };
  return { sim: { request, workload, ...(role ? { role } : {}), atMs, ...(ttl ? { ttl } : {}) }, problems: [] };
}

/**
 * Refusals the broker makes before asking any policy, which simulation must not report as
 * allowed (src/authz/refusals.ts): admin actions and approvals are for `human` workloads only,
 * and a workload can never approve its own request.
 */
export function brokerRefusal(sim: Simulated): string | undefined {
  const { action } = sim.request;
  if (action === "request" || action === "delegate") return undefined;
  if (!mayBeOperator(sim.workload)) return `only human workloads (operators) may ${action}: the broker refuses ${sim.workload.kind} workloads before asking the policies`;
  const requester = sim.request.context["requester"] as { id: string } | undefined;
  if (action === "approve" && requester !== undefined && isOwnRequest({ workload: sim.workload.id }, { workload: requester.id })) return "a workload can never approve its own request, whatever the policies say";
  return undefined;
}

export function outcomeOf(d: Decision): Outcome {
  if (d.decision !== "allow") return "deny";
  return d.approvalRequired ? "approval" : "allow";
}

// ---------------------------------------------------------------------------------------------
// policy test tables

export interface LoadedTests {
  inventory: Inventory;
  cases: { index: number; test: PolicyTestCase; sim: Simulated; line?: number }[];
}

function lineOf(doc: Document, lc: LineCounter, p: PropertyKey[]): number | undefined {
  for (let n = p.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(p.slice(0, n) as unknown[], true);
    if (isNode(node) && node.range) return lc.linePos(node.range[0]).line;
  }
  return undefined;
}

/**
 * Reads a policy test table (YAML `{inventory?, cases: [{name?, workload, action?, role?,
 * context?, expect}]}`) and builds every case's request. Throws SimulationInputError listing
 * every problem as `<file>:<line>: cases[i].field: message`.
 */
export function loadPolicyTests(text: string, file: string, base: Inventory, nowMs: number): LoadedTests {
  const lc = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false, lineCounter: lc });
  if (doc.errors.length > 0) {
    throw new SimulationInputError(
      doc.errors.map((err) => {
        const pos = lc.linePos(err.pos[0]);
        return `${file}:${pos.line}:${pos.col}: ${err.message.split("\n")[0]}`;
      }),
    );
  }
  const at = (p: Problem) => {
    const line = lineOf(doc, lc, p.path);
    return `${file}${line ? `:${line}` : ""}: ${formatPath(p.path)}: ${p.message}`;
  };
  const raw = doc.toJS({ maxAliasCount: 100 }) as unknown;
  const parsed = testFileSchema.safeParse(raw ?? {});
  if (!parsed.success) throw new SimulationInputError(zodProblems(parsed.error).map(at));

  const problems: Problem[] = [];
  const inventory: Inventory = { ...base, workloads: [...base.workloads], roles: [...base.roles] };
  const extra = parsed.data.inventory;
  extra?.workloads.forEach((w, i) => {
    const path = ["inventory", "workloads", i];
    if (inventory.workloads.some((x) => x.id === w.id)) problems.push({ path: [...path, "id"], message: `workload "${w.id}" is already defined (in the config or above)` });
    else if (!inventory.issuers.includes(w.issuer)) problems.push({ path: [...path, "issuer"], message: `unknown issuer "${w.issuer}" (known: ${known(inventory.issuers)})` });
    else inventory.workloads.push(w);
  });
  extra?.roles.forEach((r, i) => {
    if (inventory.roles.some((x) => x.name === r.name)) problems.push({ path: ["inventory", "roles", i, "name"], message: `role "${r.name}" is already defined (in the config or above)` });
    else inventory.roles.push(r);
  });

  const cases: LoadedTests["cases"] = [];
  parsed.data.cases.forEach((test, index) => {
    const built = buildRequest(inventory, test, nowMs);
    if (built.sim) {
      const line = lineOf(doc, lc, ["cases", index]);
      cases.push({ index, test, sim: built.sim, ...(line ? { line } : {}) });
    } else {
      problems.push(...built.problems.map((p) => ({ path: ["cases", index, ...p.path], message: p.message })));
    }
  });
  if (problems.length > 0) throw new SimulationInputError(problems.map(at));
  return { inventory, cases };
}

export interface CaseResult {
  index: number;
  name?: string;
  line?: number;
  workload: string;
  action: ActionName;
  role?: string;
  expected: Outcome;
  actual: Outcome;
  ok: boolean;
  policyIds: string[];
  maxTtlSeconds?: number;
  errors: string[];
  /** Refused by the broker before the policies (brokerRefusal); the policy ids are then what the policies alone decided. */
  refusal?: string;
}

export interface TestReport {
  policyHash: string;
  passed: number;
  failed: number;
  results: CaseResult[];
}

export function runPolicyTests(engine: PolicyEngine, tests: LoadedTests): TestReport {
  const results = tests.cases.map(({ index, test, sim, line }): CaseResult => {
    const d = engine.decide(sim.request);
    const refusal = brokerRefusal(sim);
    const actual = refusal ? "deny" : outcomeOf(d);
    return {
      index,
      ...(test.name !== undefined ? { name: test.name } : {}),
      ...(line !== undefined ? { line } : {}),
      workload: test.workload,
      action: sim.request.action,
      ...(sim.role ? { role: sim.role.name } : {}),
      expected: test.expect,
      actual,
      ok: actual === test.expect,
      policyIds: d.policyIds,
      ...(d.maxTtlSeconds !== undefined ? { maxTtlSeconds: d.maxTtlSeconds } : {}),
      errors: d.errors,
      ...(refusal ? { refusal } : {}),
    };
  });
  const passed = results.filter((r) => r.ok).length;
  return { policyHash: engine.set().hash, passed, failed: results.length - passed, results };
}

// ---------------------------------------------------------------------------------------------
// explaining one decision

export interface PolicyRef {
  id: string;
  effect: "permit" | "forbid";
  file: string;
  line: number;
  /** `@id` first, then the others as Cedar lists them. */
  annotations: Record<string, string>;
}

/** One policy evaluated alone against the request. */
export interface PolicyCheck extends PolicyRef {
  /** Its scope and conditions all hold. */
  satisfied: boolean;
  /** When not satisfied: which part failed (`scope`, `condition`) or could not be evaluated (`error`). */
  failed?: "scope" | "condition" | "error";
  /** The scope constraint or condition, as Cedar text; for `error`, the error too. */
  detail?: string;
}

export interface Explanation {
  outcome: Outcome;
  /** The broker refuses this request before asking the policies (brokerRefusal); `decision` is then what the policies alone decide. */
  refusal?: string;
  decision: Decision;
  /** The determining policies (permits on allow, forbids on a forbid deny; none on a default deny). */
  determining: PolicyRef[];
  /** Determining forbids that could not be evaluated (the engine denies then: fail closed). */
  erroredForbids: string[];
  /** Denied because no permit matched (rather than by a forbid or an engine failure). */
  defaultDeny: boolean;
  request: DecisionRequest;
  /** On allow, for request/approve: the TTL asked, the limits and what the lease would get. */
  ttl?: { askedSeconds: number; roleMaxSeconds: number; policyMaxSeconds?: number; maxSeconds: number; leaseSeconds: number };
  /** On deny: every permit that applies to the action, evaluated alone (which ones matched, why the others did not). */
  permits: PolicyCheck[];
}

const refOf = (p: CompiledPolicy): PolicyRef => {
  const { id, ...rest } = p.annotations;
  return { id: p.id, effect: p.effect, file: p.file, line: p.line ?? 1, annotations: { ...(id !== undefined ? { id } : {}), ...rest } };
};

type Uid = { __entity: { type: string; id: string } } | { type: string; id: string };
const uidText = (u: Uid) => {
  const e = "__entity" in u ? u.__entity : u;
  return `${e.type}::${JSON.stringify(e.id)}`;
};

type Constraint = cedar.PrincipalConstraint | cedar.ActionConstraint | cedar.ResourceConstraint;

/** A scope constraint as Cedar text: `principal == Workload::"x"`, `resource is Role`, `action in [...]`. */
export function scopeText(v: "principal" | "action" | "resource", c: Constraint): string {
  switch (c.op) {
    case "All":
      return v;
    case "==":
      return "slot" in c ? `${v} == ${c.slot}` : `${v} == ${uidText(c.entity)}`;
    case "in":
      if ("entities" in c) return `${v} in [${c.entities.map(uidText).join(", ")}]`;
      return "slot" in c ? `${v} in ${c.slot}` : `${v} in ${uidText(c.entity)}`;
    case "is":
      return `${v} is ${c.entity_type}${c.in ? ` in ${"slot" in c.in ? c.in.slot : uidText(c.in.entity)}` : ""}`;
  }
}

/** The top-level `&&` operands of an expression, left to right. */
function conjuncts(e: cedar.Expr): cedar.Expr[] {
  const and = (e as { "&&"?: { left: cedar.Expr; right: cedar.Expr } })["&&"];
  return and ? [...conjuncts(and.left), ...conjuncts(and.right)] : [e];
}

const ALL = { op: "All" } as const;

function clauseText(c: cedar.Clause): string {
  const r = cedar.policyToText({ effect: "permit", principal: ALL, action: ALL, resource: ALL, conditions: [c] });
  if (r.type !== "success") return "(condition)";
  const m = /^permit\s*\(\s*principal,\s*action,\s*resource\s*\)\s*([\s\S]*);\s*$/.exec(r.text);
  const text = (m ? m[1]! : r.text).replace(/\s+/g, " ").trim();
  return c.kind === "when" ? text.replace(/^when \{ ([\s\S]*) \}$/, "$1") : text;
}

/** Evaluates one policy JSON alone (as a permit). */
function satisfied(json: cedar.PolicyJson, call: ReturnType<typeof toCedarRequest>): { ok: boolean; error?: string } {
  const answer = cedar.isAuthorized({ ...call, policies: { staticPolicies: { p: { ...json, effect: "permit", annotations: {} } } } });
  if (answer.type !== "success") return { ok: false, error: answer.errors.map((e) => e.message).join("; ") };
  const err = answer.response.diagnostics.errors[0];
  if (err) return { ok: false, error: err.error.message };
  return { ok: answer.response.decision === "allow" };
}

/** One policy evaluated alone by Cedar: satisfied, or the first part of it that failed. */
export function checkPolicy(policy: CompiledPolicy, request: DecisionRequest): PolicyCheck {
  const ref = refOf(policy);
  const parsed = cedar.policyToJson(policy.text);
  if (parsed.type !== "success") return { ...ref, satisfied: false, failed: "error", detail: parsed.errors.map((e) => e.message).join("; ") };
  const json = parsed.json;
  const call = toCedarRequest(request);
  const whole = satisfied(json, call);
  if (whole.ok) return { ...ref, satisfied: true };

  const scopeOnly = { ...json, conditions: [] };
  if (!satisfied(scopeOnly, call).ok) {
    const failing = (["principal", "action", "resource"] as const).filter((v) => !satisfied({ ...scopeOnly, principal: ALL, action: ALL, resource: ALL, [v]: json[v] }, call).ok);
    return { ...ref, satisfied: false, failed: "scope", detail: failing.map((v) => scopeText(v, json[v])).join(", ") };
  }
  const parts: cedar.Clause[] = json.conditions.flatMap<cedar.Clause>((c) => (c.kind === "when" ? conjuncts(c.body).map((body) => ({ kind: "when" as const, body })) : [c]));
  for (let i = 1; i <= parts.length; i++) {
    const r = satisfied({ ...json, conditions: parts.slice(0, i) }, call);
    if (r.error !== undefined) return { ...ref, satisfied: false, failed: "error", detail: `${clauseText(parts[i - 1]!)}: ${r.error}` };
    if (!r.ok) return { ...ref, satisfied: false, failed: "condition", detail: clauseText(parts[i - 1]!) };
  }
  // Every prefix held but the whole did not: only an evaluation error can do that.
  return { ...ref, satisfied: false, failed: "error", detail: whole.error ?? "the policy did not evaluate to true" };
}

export function explain(engine: PolicyEngine, sim: Simulated): Explanation {
  const decision = engine.decide(sim.request);
  const byId = new Map(engine.set().policies.map((p) => [p.id, p]));
  const determining = decision.policyIds.flatMap((id) => {
    const p = byId.get(id);
    return p ? [refOf(p)] : [];
  });
  const refusal = brokerRefusal(sim);
  const out: Explanation = {
    outcome: refusal ? "deny" : outcomeOf(decision),
    ...(refusal ? { refusal } : {}),
    decision,
    determining,
    erroredForbids: decision.decision === "deny" ? decision.policyIds.filter((id) => decision.errors.some((e) => e.startsWith(`policy ${id}: `))) : [],
    defaultDeny: decision.decision === "deny" && decision.policyIds.length === 0 && !decision.errors.some((e) => e.startsWith("policy engine:")),
    request: sim.request,
    permits: [],
  };
  if (decision.decision === "allow" && !refusal && sim.ttl) {
    const policyMaxMs = decision.maxTtlSeconds === undefined ? undefined : decision.maxTtlSeconds * 1000;
    const leaseMs = leaseTtlMs({ requestedMs: sim.ttl.askedMs, roleDefaultMs: sim.ttl.roleDefaultMs, roleMaxMs: sim.ttl.roleMaxMs, policyMaxMs });
    out.ttl = {
      askedSeconds: Math.floor(sim.ttl.askedMs / 1000),
      roleMaxSeconds: Math.floor(sim.ttl.roleMaxMs / 1000),
      ...(decision.maxTtlSeconds !== undefined ? { policyMaxSeconds: decision.maxTtlSeconds } : {}),
      maxSeconds: Math.floor(Math.min(sim.ttl.roleMaxMs, policyMaxMs ?? Infinity) / 1000),
      leaseSeconds: Math.floor(leaseMs / 1000),
    };
  }
  if (decision.decision === "deny") {
    // Permits of other actions are not part of the story.
    for (const p of engine.set().policies) {
      if (p.effect === "permit" && actionApplies(p, sim.request.action)) out.permits.push(checkPolicy(p, sim.request));
    }
  }
  return out;
}

/** Whether a policy's action scope admits the action (no action groups exist in the broker's model). */
function actionApplies(p: CompiledPolicy, action: ActionName): boolean {
  const parsed = cedar.policyToJson(p.text);
  return parsed.type !== "success" || actionConstraintApplies(parsed.json.action, action);
}

/** Does a policy's action constraint (its JSON form) cover `action`? (The broker has no action groups.) */
export function actionConstraintApplies(c: cedar.ActionConstraint, action: ActionName): boolean {
  const id = (u: Uid) => ("__entity" in u ? u.__entity : u).id;
  if (c.op === "All") return true;
  if (c.op === "==") return "entity" in c && id(c.entity) === action;
  return "entities" in c ? c.entities.some((e) => id(e) === action) : id(c.entity) === action;
}
