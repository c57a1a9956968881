/**
 * Lint of the inventory and the policies (`jitbroker config check` warnings): entries that are
 * valid but risky or useless. Each warning names where it is (a config path such as
 * `workloads[2] (deployer)`, or a policy id with file:line) and how to fix it.
 *
 *  aud_only            a workload with no subject and no claims: any token of its issuer (with
 *                      the broker's audience) maps to it;
 *  github_unpinned     a GitHub Actions workload (issuer https://token.actions.githubusercontent.com
 *                      or a GHES `/_services/token` issuer, or GitHub claim names) pinned neither
 *                      to `repository_id` nor `repository_owner_id` (in claims, or in a customized
 *                      subject): repository and owner names can be recycled;
 *  ambiguous_identity  one identity matches two workloads (the broker then refuses it): the
 *                      example identity is checked with the broker's own matcher;
 *  human_on_ci_issuer  a `human` workload (an operator) bound to GitHub Actions, a CI issuer;
 *  role_never_granted  no workload of the inventory is allowed the role (directly or after
 *                      approval) in any of the sampled contexts (see `samples`): a sample, not a
 *                      proof, and the warning says so. Workloads (roles) that no policy can tell
 *                      apart (same attributes read, identity never used: `observedBy`) are
 *                      sampled once: 50 x 50 look-alikes take ~1 s instead of ~30 s;
 *  unknown_role, unknown_workload, unknown_action
 *                      a policy names `Role::"x"`, `Workload::"y"` or `Action::"z"` (in its scope
 *                      or conditions, read from Cedar's JSON form of the policy) that the
 *                      inventory / the broker's model does not have: that part never matches.
 *  unbounded_delegation
 *                      a permit of `Action::"delegate"` without a depth condition
 *                      (`context.delegation.depth`) or without any condition on the resource
 *                      (a role in its scope, or `resource.` in its conditions): any holder of a
 *                      credential may hand it on, for every role, up to `delegation.max_depth` hops.
 */
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import type { LoadedConfig } from "../config/load";
import type { IssuerConfig, WorkloadConfig } from "../config/schema";
import { compileWorkloads } from "../identity/workloads";
import { createPolicyEngine, type ClaimValue, type PolicyEngine, type PolicySet } from "./engine";
import { ACTION_NAMES, actionConstraintApplies, buildRequest, inventoryOf, outcomeOf, workloadAccepts, type ContextInput } from "./simulate";

export type WarningKind =
  | "aud_only"
  | "github_unpinned"
  | "ambiguous_identity"
  | "human_on_ci_issuer"
  | "role_never_granted"
  | "unknown_role"
  | "unknown_workload"
  | "unknown_action"
  | "unbounded_delegation";

export interface LintWarning {
  kind: WarningKind;
  /** `workloads[2] (deployer)`, `roles[0] (orders-read)` or `policy <id>`. */
  where: string;
  /** For policies: the file and line of the offending reference. */
  file?: string;
  line?: number;
  message: string;
  fix: string;
}

export function formatWarning(w: LintWarning, showPath: (file: string) => string = (f) => f): string {
  const at = w.file ? `${w.where} (${showPath(w.file)}:${w.line ?? 1})` : w.where;
  return `${at}: ${w.message}; fix: ${w.fix}`;
}

// ---------------------------------------------------------------------------------------------
// inventory

export const GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com";

/** Claim names only GitHub Actions tokens carry (GitLab shares ref, sha, environment...). */
const GITHUB_CLAIMS = new Set([
  "repository",
  "repository_id",
  "repository_owner",
  "repository_owner_id",
  "repository_visibility",
  "job_workflow_ref",
  "job_workflow_sha",
  "workflow_ref",
  "workflow_sha",
  "runner_environment",
  "enterprise",
  "enterprise_id",
]);

/** GitHub.com (also with an enterprise's custom issuer path) or GitHub Enterprise Server. */
function isGithubIssuer(iss: IssuerConfig | undefined): boolean {
  if (!iss || iss.type !== "oidc") return false;
  const url = iss.issuer.replace(/\/$/, "");
  return url === GITHUB_ACTIONS_ISSUER || url.startsWith(`${GITHUB_ACTIONS_ISSUER}/`) || /^https:\/\/[^/]+\/_services\/token$/.test(url);
}

/** A customized GitHub subject (`repository_owner_id:4242:environment:prod`) may embed the ids. */
const PINNED_SUBJECT = /(^|:)repository(_owner)?_id:\d+(:|$)/;

const claimsText = (claims: Record<string, ClaimValue>) =>
  Object.entries(claims)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(" ");

const firstValue = (v: WorkloadConfig["claims"][string]): ClaimValue => (Array.isArray(v) ? v[0]! : v);

/** An identity both workloads match, checked with the broker's matcher; undefined if none. */
function sharedIdentity(a: WorkloadConfig, b: WorkloadConfig): { subject: string | undefined; claims: Record<string, ClaimValue> } | undefined {
  if (a.issuer !== b.issuer) return undefined;
  if (a.subject !== undefined && b.subject !== undefined && a.subject !== b.subject) return undefined;
  const claims: Record<string, ClaimValue> = {};
  for (const [name, allowed] of Object.entries(a.claims)) {
    if (name in b.claims) {
      const common = (Array.isArray(allowed) ? allowed : [allowed]).find((v) => workloadAccepts(b, { [name]: v }));
      if (common === undefined) return undefined;
      claims[name] = common;
    } else {
      claims[name] = firstValue(allowed);
    }
  }
  for (const [name, allowed] of Object.entries(b.claims)) if (!(name in claims)) claims[name] = firstValue(allowed);
  const subject = a.subject ?? b.subject;
  try {
    compileWorkloads([a, b]).match({ issuer: a.issuer, subject: subject ?? "any-subject", claims });
  } catch (e) {
    if ((e as { reason?: string }).reason === "ambiguous") return { subject, claims };
  }
  return undefined;
}

export function lintInventory(cfg: LoadedConfig): LintWarning[] {
  const out: LintWarning[] = [];
  const issuers = new Map(cfg.identity.issuers.map((i) => [i.name, i]));
  const at = (i: number) => `workloads[${i}] (${cfg.workloads[i]!.id})`;

  cfg.workloads.forEach((w, i) => {
    const iss = issuers.get(w.issuer);
    const claimNames = Object.keys(w.claims);
    if (w.subject === undefined && claimNames.length === 0) {
      const who = iss?.type === "spiffe" ? `any JWT-SVID of trust domain ${iss.trust_domain}` : `any token of issuer ${w.issuer}`;
      out.push({
        kind: "aud_only",
        where: at(i),
        message: `bound only by issuer and audience (no subject, no claims): ${who} with aud "${cfg.server.audience}" maps to it`,
        fix: "set subject (the exact sub of its tokens) or claims that only its tokens carry",
      });
    }
    const github = isGithubIssuer(iss) || claimNames.some((c) => GITHUB_CLAIMS.has(c));
    if (github && !("repository_id" in w.claims) && !("repository_owner_id" in w.claims) && !PINNED_SUBJECT.test(w.subject ?? "")) {
      out.push({
        kind: "github_unpinned",
        where: at(i),
        message:
          "GitHub Actions workload not pinned to repository_id or repository_owner_id: it is matched by names (repository, owner, the sub), and a deleted or renamed repository's or owner's name can be registered again by someone else",
        fix: 'add claims: { repository_id: "<numeric id>" } or repository_owner_id (both are in every job\'s token)',
      });
    }
    if (w.kind === "human" && isGithubIssuer(iss)) {
      out.push({
        kind: "human_on_ci_issuer",
        where: at(i),
        message: `a human workload (an operator) is bound to issuer ${w.issuer}, which is GitHub Actions: CI jobs would hold operator rights`,
        fix: "bind operators to an issuer of people, or give this workload kind ci",
      });
    }
  });

  for (let i = 0; i < cfg.workloads.length; i++) {
    for (let j = i + 1; j < cfg.workloads.length; j++) {
      const a = cfg.workloads[i]!;
      const b = cfg.workloads[j]!;
      const shared = sharedIdentity(a, b);
      if (!shared) continue;
      const example = [`a token of issuer ${a.issuer}`, shared.subject !== undefined ? `with sub ${JSON.stringify(shared.subject)}` : "with any sub"];
      if (Object.keys(shared.claims).length) example.push(`and claims ${claimsText(shared.claims)}`);
      out.push({
        kind: "ambiguous_identity",
        where: `${at(i)} and ${at(j)}`,
        message: `one identity matches both (e.g. ${example.join(" ")}); the broker refuses such tokens as ambiguous (403 unknown_workload)`,
        fix: "make them disjoint: a subject or a claim value that only one of them accepts",
      });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// policies

interface EntityRef {
  type: string;
  id: string;
}

/** Every entity reference in a policy's JSON form: scope constraints and literals in conditions. */
export function entityRefs(json: cedar.PolicyJson): EntityRef[] {
  const out: EntityRef[] = [];
  const uid = (u: unknown) => {
    if (u === null || typeof u !== "object") return;
    const e = ("__entity" in u ? (u as { __entity: unknown }).__entity : u) as Partial<EntityRef>;
    if (typeof e.type === "string" && typeof e.id === "string") out.push({ type: e.type, id: e.id });
  };
  for (const c of [json.principal, json.action, json.resource] as Record<string, unknown>[]) {
    uid(c["entity"]);
    if (Array.isArray(c["entities"])) c["entities"].forEach(uid);
    if (c["in"] && typeof c["in"] === "object") uid((c["in"] as Record<string, unknown>)["entity"]);
  }
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v !== null && typeof v === "object") {
      if ("__entity" in v) uid(v);
      else Object.values(v).forEach(walk);
    }
  };
  walk(json.conditions);
  return out;
}

/** What policies can observe of the principal (or resource): the attributes they read, or its identity. */
export interface Observed {
  /** Its uid is compared or used as a value somewhere (`principal == ...`, `principal in ...`, `[...].contains(principal)`). */
  identity: boolean;
  /** Attributes read (`principal.kind`, `principal has claims`). */
  attrs: Set<string>;
}

export function observedBy(policies: cedar.PolicyJson[], v: "principal" | "resource"): Observed {
  const o: Observed = { identity: false, attrs: new Set() };
  const isVar = (e: unknown) => e !== null && typeof e === "object" && (e as { Var?: unknown }).Var === v;
  const walk = (e: unknown): void => {
    if (Array.isArray(e)) return e.forEach(walk);
    if (e === null || typeof e !== "object") return;
    const rec = e as Record<string, unknown>;
    if (isVar(rec)) {
      o.identity = true; // any use other than the attribute reads and type tests below
      return;
    }
    for (const op of [".", "has"]) {
      const x = rec[op] as { left?: unknown; attr?: unknown } | undefined;
      if (x && isVar(x.left)) {
        const attr = Array.isArray(x.attr) ? (x.attr[0] as unknown) : x.attr;
        if (typeof attr === "string") o.attrs.add(attr);
        else o.identity = true;
        return;
      }
    }
    const is = rec["is"] as { left?: unknown; in?: unknown } | undefined;
    if (is && isVar(is.left) && is.in === undefined) return; // a type test: every principal is a Workload
    Object.values(rec).forEach(walk);
  };
  for (const p of policies) {
    const scope = p[v];
    if (!(scope.op === "All" || (scope.op === "is" && scope.in === undefined))) o.identity = true;
    walk(p.conditions);
  }
  return o;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Sampled contexts for role_never_granted (documented in the warning). */
function samples(labels: Record<string, string>, timeZone: string): { contexts: ContextInput[]; description: string } {
  const x = { id: "x", intent: "x", tool: "x", destination: "x", sensitivity: "x" };
  const sensitivities = [...new Set(Object.values(labels))].filter((v) => v !== "x");
  const tasks = [{}, x, ...sensitivities.map((s) => ({ ...x, sensitivity: s }))];
  const times = [
    { weekday: 1, hour: 10 },
    { weekday: 7, hour: 3 },
  ];
  const contexts: ContextInput[] = [];
  for (const approved of [false, true])
    for (const ttl of [undefined, 2])
      for (const task of tasks) for (const time of times) contexts.push({ task, approved, time, ...(ttl !== undefined ? { ttl } : {}) });
  const description = `approved or not, ttl the role's default or 2s, task fields empty or "x"${sensitivities.length ? ` (sensitivity also ${sensitivities.map((s) => JSON.stringify(s)).join(", ")})` : ""}, Monday 10:00 and Sunday 03:00 ${timeZone}`;
  return { contexts, description };
}

export function lintPolicies(cfg: LoadedConfig, set: PolicySet, engine: PolicyEngine = createPolicyEngine(set)): LintWarning[] {
  const out: LintWarning[] = [];
  const roles = new Set(cfg.roles.map((r) => r.name));
  const workloads = new Set(cfg.workloads.map((w) => w.id));
  const actions = new Set<string>(ACTION_NAMES);
  const known = (s: Set<string>) => (s.size ? [...s].join(", ") : "none");

  // Each policy's JSON form, parsed once (a compiled set always parses).
  const parsedPolicies = set.policies.flatMap((p) => {
    const r = cedar.policyToJson(p.text);
    return r.type === "success" ? [{ p, json: r.json }] : [];
  });
  for (const { p, json } of parsedPolicies) {
    const seen = new Set<string>();
    for (const ref of entityRefs(json)) {
      const key = `${ref.type}::${ref.id}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const m = new RegExp(`\\b${escapeRegExp(ref.type)}\\s*::\\s*"${escapeRegExp(ref.id)}"`).exec(p.text);
      const line = (p.line ?? 1) + (m ? p.text.slice(0, m.index).split("\n").length - 1 : 0);
      const base = { where: `policy ${p.id}`, file: p.file, line };
      if (ref.type === "Role" && !roles.has(ref.id)) {
        out.push({ ...base, kind: "unknown_role", message: `names Role::${JSON.stringify(ref.id)}, which is not a role of the inventory (roles: ${known(roles)})`, fix: "correct the name, or add the role to roles" });
      } else if (ref.type === "Workload" && !workloads.has(ref.id)) {
        out.push({ ...base, kind: "unknown_workload", message: `names Workload::${JSON.stringify(ref.id)}, which is not a workload of the inventory (workloads: ${known(workloads)})`, fix: "correct the id, or add the workload to workloads" });
      } else if (ref.type === "Action" && !actions.has(ref.id)) {
        out.push({ ...base, kind: "unknown_action", message: `names Action::${JSON.stringify(ref.id)}, which the broker never asks (actions: ${[...actions].join(", ")})`, fix: "use one of the broker's actions" });
      }
    }
  }

  // Delegation permits that bound neither the chain's depth nor the roles that may be handed on.
  for (const { p, json } of parsedPolicies) {
    if (p.effect !== "permit" || !actionConstraintApplies(json.action, "delegate")) continue;
    const missing: string[] = [];
    if (!/context\s*\.\s*delegation\s*\.\s*depth/.test(p.text)) missing.push("a depth condition (context.delegation.depth)");
    if (json.resource.op === "All" && !/\bresource\s*\./.test(p.text)) missing.push("a condition on the role (resource)");
    if (missing.length > 0) {
      out.push({
        where: `policy ${p.id}`,
        file: p.file,
        line: p.line ?? 1,
        kind: "unbounded_delegation",
        message: `permits Action::"delegate" without ${missing.join(" or ")}: any holder of a credential may hand it on${missing.length === 2 ? ", for every role," : ""} up to delegation.max_depth hops`,
        fix: 'add e.g. `context.delegation.depth <= 1` and `resource.labels.access == "read"` to its when clause',
      });
    }
  }

  // Workloads (roles) the policies cannot tell apart get the same decisions: each group is
  // sampled once (50 workloads x 50 roles of one shape: 32 decisions instead of 80,000).
  const inv = inventoryOf(cfg);
  const now = Date.now();
  // Only policies that apply to requests matter here.
  const jsons = parsedPolicies.filter(({ json }) => actionConstraintApplies(json.action, "request")).map(({ json }) => json);
  const seesPrincipal = observedBy(jsons, "principal");
  const seesResource = observedBy(jsons, "resource");
  const principals = new Map<string, string>(); // signature -> a workload id
  for (const w of cfg.workloads) {
    const built = buildRequest(inv, { workload: w.id, role: cfg.roles[0]?.name ?? "", context: {} }, now);
    const p = built.sim?.request.principal as unknown as Record<string, unknown> | undefined;
    const sig = seesPrincipal.identity || !p ? `id:${w.id}` : JSON.stringify([...seesPrincipal.attrs].sort().map((a) => p[a] ?? null));
    if (!principals.has(sig)) principals.set(sig, w.id);
  }
  const grantedBySignature = new Map<string, boolean>();
  cfg.roles.forEach((role, i) => {
    const { contexts, description } = samples(role.labels, inv.timeZone);
    const sig = seesResource.identity ? `name:${role.name}` : JSON.stringify([role.backend, role.labels, role.ttl.default, role.ttl.max]);
    let granted = grantedBySignature.get(sig);
    if (granted === undefined) {
      granted = [...principals.values()].some((workload) =>
        contexts.some((context) => {
          if (context.ttl !== undefined && (context.ttl as number) * 1000 > role.ttl.max) return false;
          const built = buildRequest(inv, { workload, role: role.name, context }, now);
          return built.sim !== undefined && outcomeOf(engine.decide(built.sim.request)) !== "deny";
        }),
      );
      grantedBySignature.set(sig, granted);
    }
    if (!granted) {
      out.push({
        kind: "role_never_granted",
        where: `roles[${i}] (${role.name})`,
        message: `no workload of the inventory is granted role ${role.name} by the policies in the sampled contexts (${cfg.workloads.length} workload${cfg.workloads.length === 1 ? "" : "s"}; ${description})`,
        fix: `write a permit policy for it (check with \`jitbroker policy why --workload <id> --role ${role.name}\`), or remove the role`,
      });
    }
  });
  return out;
}

export function lintConfig(cfg: LoadedConfig, set: PolicySet, engine?: PolicyEngine): LintWarning[] {
  return [...lintInventory(cfg), ...lintPolicies(cfg, set, engine)];
}
