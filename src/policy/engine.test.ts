import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import { parse as parseYaml } from "yaml";
import {
  PolicyError,
  compilePolicies,
  createPolicyEngine,
  hashPolicies,
  loadPolicyFiles,
  type ActionName,
  type DecisionRequest,
  type PolicyFile,
  type PrincipalInfo,
  type ResourceInfo,
} from "./engine";
import { splitStatements } from "./source";
import { timeContext } from "./context";

const REPO = path.resolve(__dirname, "../..");
const EXAMPLES = path.join(REPO, "config/policies/*.cedar");

// ---------------------------------------------------------------------------------------------
// helpers

const file = (p: string, text: string): PolicyFile => ({ path: p, text });

function principal(kind: string, over: Partial<PrincipalInfo> = {}): PrincipalInfo {
  return {
    id: `${kind}-1`,
    kind,
    owner: "alice@example.com",
    issuer: "mesh",
    subject: `spiffe://prod.example.org/${kind}`,
    claims: {},
    ...over,
  };
}

function role(backend: string, labels: Record<string, string> = {}, name = "r1"): ResourceInfo {
  return { name, backend, labels };
}

const BROKER = { type: "Broker" as const, id: "jitbroker" };

interface ReqOpts {
  /** When given, context.time of that instant (UTC), as the broker builds it. */
  at?: string;
  ttl?: number;
  approved?: boolean;
  task?: Partial<DecisionRequest["context"]["task"]>;
  extra?: Record<string, unknown>;
}

function req(p: PrincipalInfo, action: ActionName, resource: DecisionRequest["resource"], o: ReqOpts = {}): DecisionRequest {
  return {
    principal: p,
    action,
    resource,
    context: {
      task: { id: "t-1", intent: "", tool: "", destination: "", sensitivity: "", ...o.task },
      ttl_seconds: o.ttl ?? 300,
      approved: o.approved ?? false,
      ...(o.at ? { time: timeContext(Date.parse(o.at)) } : {}),
      ...o.extra,
    },
  };
}

function engineOf(...files: PolicyFile[]) {
  return createPolicyEngine(compilePolicies(files));
}

function compileError(files: PolicyFile[]): PolicyError {
  try {
    compilePolicies(files);
  } catch (e) {
    expect(e).toBeInstanceOf(PolicyError);
    return e as PolicyError;
  }
  throw new Error("expected compilePolicies to throw");
}

// ---------------------------------------------------------------------------------------------
// the example policies in config/policies

describe("example policies (config/policies)", () => {
  let engine: ReturnType<typeof createPolicyEngine>;
  // Monday 10:00 UTC: inside the working hours of ci-deploy-working-hours unless a case says otherwise.
  const ex = (p: PrincipalInfo, a: ActionName, r: DecisionRequest["resource"], o: ReqOpts = {}) => req(p, a, r, { at: "2026-11-23T10:00:00Z", ...o });

  beforeAll(async () => {
    const files = await loadPolicyFiles([EXAMPLES]);
    expect(files.map((f) => path.basename(f.path))).toEqual(["agents.cedar", "ci.cedar", "operators.cedar", "restricted.cedar"]);
    engine = createPolicyEngine(compilePolicies(files));
  });

  it("every policy has an @id", () => {
    const ids = engine.set().policies.map((p) => p.id).sort();
    expect(ids).toEqual([
      "agents-request-read",
      "agents-request-write-or-restricted-with-approval",
      "ci-deploy-working-hours",
      "ci-request-deploy-or-read",
      "operators-admin-read",
      "operators-admin-revoke",
      "operators-approve",
      "operators-no-approval-of-own-workloads",
      "restricted-long-lease-needs-approval",
    ]);
    for (const p of engine.set().policies) expect(p.annotations["id"]).toBe(p.id);
  });

  const internalRead = { sensitivity: "internal", access: "read" };
  const restrictedRead = { sensitivity: "restricted", access: "read" };
  const restrictedDeploy = { sensitivity: "restricted", access: "deploy" };
  const human = (owner: string) => principal("human", { owner });

  // workload × role × action × context → decision + determining policies (+ max ttl)
  const table: {
    name: string;
    r: DecisionRequest;
    decision: "allow" | "deny";
    ids: string[];
    maxTtl?: number;
    approval?: boolean;
  }[] = [
    // agents
    { name: "agent reads an internal read role", r: ex(principal("agent"), "request", role("jwt", internalRead)), decision: "allow", ids: ["agents-request-read"], maxTtl: 600 },
    { name: "agent, any backend, read role", r: ex(principal("agent"), "request", role("vault", { sensitivity: "public", access: "read" })), decision: "allow", ids: ["agents-request-read"], maxTtl: 600 },
    { name: "agent, restricted read role, no intent", r: ex(principal("agent"), "request", role("jwt", restrictedRead)), decision: "deny", ids: [] },
    { name: "agent, write role, no intent", r: ex(principal("agent"), "request", role("jwt", { sensitivity: "internal", access: "write" })), decision: "deny", ids: [] },
    { name: "agent, restricted read role, with intent: approval", r: ex(principal("agent"), "request", role("jwt", restrictedRead), { task: { intent: "refund #42" } }), decision: "allow", ids: ["agents-request-write-or-restricted-with-approval"], maxTtl: 900, approval: true },
    { name: "agent, write role, with intent: approval", r: ex(principal("agent"), "request", role("jwt", { sensitivity: "internal", access: "write" }), { task: { intent: "fix order 7" } }), decision: "allow", ids: ["agents-request-write-or-restricted-with-approval"], maxTtl: 900, approval: true },
    { name: "agent, restricted write role, 10 minutes, not yet approved: forbidden", r: ex(principal("agent"), "request", role("jwt", { sensitivity: "restricted", access: "write" }), { task: { intent: "x" }, ttl: 600 }), decision: "deny", ids: ["restricted-long-lease-needs-approval"] },
    { name: "agent, restricted write role, 10 minutes, approved", r: ex(principal("agent"), "request", role("jwt", { sensitivity: "restricted", access: "write" }), { task: { intent: "x" }, ttl: 600, approved: true }), decision: "allow", ids: ["agents-request-write-or-restricted-with-approval"], maxTtl: 900, approval: true },
    { name: "agent, internal read with intent: direct, no approval", r: ex(principal("agent"), "request", role("jwt", internalRead), { task: { intent: "answer ticket" } }), decision: "allow", ids: ["agents-request-read"], maxTtl: 600 },
    { name: "agent, role without labels", r: ex(principal("agent"), "request", role("jwt", {})), decision: "deny", ids: [] },
    { name: "agent, read role without sensitivity label", r: ex(principal("agent"), "request", role("jwt", { access: "read" })), decision: "deny", ids: [] },
    { name: "agent may not admin_read", r: ex(principal("agent"), "admin_read", BROKER), decision: "deny", ids: [] },
    { name: "agent may not approve", r: ex(principal("agent"), "approve", BROKER), decision: "deny", ids: [] },
    { name: "agent owned by @example.com may not admin_revoke", r: ex(principal("agent"), "admin_revoke", BROKER), decision: "deny", ids: [] },
    // ci
    { name: "ci, jwt read role", r: ex(principal("ci"), "request", role("jwt", internalRead)), decision: "allow", ids: ["ci-request-deploy-or-read"] },
    { name: "ci, aws_sts deploy role", r: ex(principal("ci"), "request", role("aws_sts", { sensitivity: "internal", access: "deploy" })), decision: "allow", ids: ["ci-request-deploy-or-read"] },
    { name: "ci, vault read role", r: ex(principal("ci"), "request", role("vault", internalRead)), decision: "deny", ids: [] },
    { name: "ci, aws_sts admin role", r: ex(principal("ci"), "request", role("aws_sts", { sensitivity: "internal", access: "admin" })), decision: "deny", ids: [] },
    { name: "ci, role without labels", r: ex(principal("ci"), "request", role("aws_sts")), decision: "deny", ids: [] },
    { name: "ci, restricted deploy, 5 minutes", r: ex(principal("ci"), "request", role("aws_sts", restrictedDeploy), { ttl: 300 }), decision: "allow", ids: ["ci-request-deploy-or-read"] },
    { name: "ci, restricted deploy, 10 minutes: forbidden", r: ex(principal("ci"), "request", role("aws_sts", restrictedDeploy), { ttl: 600 }), decision: "deny", ids: ["restricted-long-lease-needs-approval"] },
    { name: "ci, restricted deploy, 10 minutes, approved", r: ex(principal("ci"), "request", role("aws_sts", restrictedDeploy), { ttl: 600, approved: true }), decision: "allow", ids: ["ci-request-deploy-or-read"] },
    { name: "ci, deploy on Saturday: outside working hours", r: ex(principal("ci"), "request", role("aws_sts", { sensitivity: "internal", access: "deploy" }), { at: "2026-11-28T10:00:00Z" }), decision: "deny", ids: ["ci-deploy-working-hours"] },
    { name: "ci, deploy at 06:59 Monday", r: ex(principal("ci"), "request", role("aws_sts", { sensitivity: "internal", access: "deploy" }), { at: "2026-11-23T06:59:00Z" }), decision: "deny", ids: ["ci-deploy-working-hours"] },
    { name: "ci, deploy at 07:00 Monday", r: ex(principal("ci"), "request", role("aws_sts", { sensitivity: "internal", access: "deploy" }), { at: "2026-11-23T07:00:00Z" }), decision: "allow", ids: ["ci-request-deploy-or-read"] },
    { name: "ci, deploy at 18:59 Friday", r: ex(principal("ci"), "request", role("aws_sts", { sensitivity: "internal", access: "deploy" }), { at: "2026-11-27T18:59:00Z" }), decision: "allow", ids: ["ci-request-deploy-or-read"] },
    { name: "ci, deploy at 19:00 Friday", r: ex(principal("ci"), "request", role("aws_sts", { sensitivity: "internal", access: "deploy" }), { at: "2026-11-27T19:00:00Z" }), decision: "deny", ids: ["ci-deploy-working-hours"] },
    { name: "ci, read role on Sunday night: reads are not bound to hours", r: ex(principal("ci"), "request", role("jwt", internalRead), { at: "2026-11-29T23:00:00Z" }), decision: "allow", ids: ["ci-request-deploy-or-read"] },
    { name: "ci may not admin_read", r: ex(principal("ci"), "admin_read", BROKER), decision: "deny", ids: [] },
    // other kinds
    { name: "service, jwt read role", r: ex(principal("service"), "request", role("jwt", internalRead)), decision: "deny", ids: [] },
    { name: "human may not request credentials", r: ex(human("ops@example.com"), "request", role("jwt", internalRead)), decision: "deny", ids: [] },
    // operators
    { name: "human admin_read", r: ex(human("ops@other.org"), "admin_read", BROKER), decision: "allow", ids: ["operators-admin-read"] },
    { name: "human @example.com admin_revoke", r: ex(human("ops@example.com"), "admin_revoke", BROKER), decision: "allow", ids: ["operators-admin-revoke"] },
    { name: "human elsewhere admin_revoke", r: ex(human("ops@other.org"), "admin_revoke", BROKER), decision: "deny", ids: [] },
    { name: "owner merely containing @example.com", r: ex(human("ops@example.com.evil.org"), "admin_revoke", BROKER), decision: "deny", ids: [] },
    { name: "human approve", r: ex(human("ops@other.org"), "approve", BROKER), decision: "allow", ids: ["operators-approve"] },
    { name: "human approves another team's request", r: ex(human("ops@other.org"), "approve", role("jwt", restrictedRead), { extra: { requester: { id: "agent-1", kind: "agent", owner: "alice@example.com" } } }), decision: "allow", ids: ["operators-approve"] },
    { name: "human approves a request of a workload they own: forbidden", r: ex(human("alice@example.com"), "approve", role("jwt", restrictedRead), { extra: { requester: { id: "agent-1", kind: "agent", owner: "alice@example.com" } } }), decision: "deny", ids: ["operators-no-approval-of-own-workloads"] },
  ];

  it.each(table)("$name → $decision", ({ r, decision, ids, maxTtl, approval }) => {
    const d = engine.decide(r);
    expect(d).toMatchObject({ decision, policyIds: ids, policyHash: engine.set().hash, approvalRequired: approval ?? false, errors: [] });
    expect(d.maxTtlSeconds).toBe(maxTtl);
  });

  it("is valid against the workloads and roles of config/broker.yaml", () => {
    const cfg = parseYaml(require("node:fs").readFileSync(path.join(REPO, "config/broker.yaml"), "utf8")) as {
      workloads: { id: string; kind: string; owner: string; issuer: string; subject?: string; claims?: PrincipalInfo["claims"] }[];
      roles: { name: string; backend: string; labels?: Record<string, string> }[];
    };
    expect(cfg.workloads.length).toBeGreaterThan(0);
    expect(cfg.roles.length).toBeGreaterThan(0);
    const seen: Record<string, string> = {};
    for (const w of cfg.workloads) {
      const p: PrincipalInfo = { id: w.id, kind: w.kind, owner: w.owner, issuer: w.issuer, subject: w.subject ?? "", claims: w.claims ?? {} };
      for (const r of cfg.roles) {
        for (const action of ["request", "admin_read", "admin_revoke", "approve"] as const) {
          const resource = action === "request" ? { name: r.name, backend: r.backend, labels: r.labels ?? {} } : BROKER;
          for (const ttl of [60, 3600]) {
            const d = engine.decide(ex(p, action, resource, { ttl }));
            expect(d.errors).toEqual([]); // no policy errors on the shipped inventory
            if (action === "request" && ttl === 60) seen[`${w.id}/${r.name}`] = `${d.decision} ${d.policyIds.join(",")} ${d.maxTtlSeconds ?? "-"}`;
          }
        }
      }
    }
    expect(seen["support-agent/orders-read"]).toBe("allow agents-request-read 600");
    expect(seen["payments-deployer/orders-read"]).toBe("allow ci-request-deploy-or-read -");
  });
});

// ---------------------------------------------------------------------------------------------
// decisions

describe("decide", () => {
  it("denies by default with zero policies", () => {
    for (const set of [compilePolicies([]), compilePolicies([file("/p/empty.cedar", "// nothing here\n\n")])]) {
      expect(set.policies).toEqual([]);
      expect(set.hash).toMatch(/^[0-9a-f]{64}$/);
      const engine = createPolicyEngine(set);
      for (const action of ["request", "admin_read", "admin_revoke", "approve"] as const) {
        expect(engine.decide(req(principal("human"), action, action === "request" ? role("jwt") : BROKER))).toEqual({
          decision: "deny",
          policyIds: [],
          policyHash: set.hash,
          approvalRequired: false,
          errors: [],
        });
      }
    }
  });

  it("clamps to the minimum @max_ttl over the determining permits", () => {
    const engine = engineOf(
      file("/p/a.cedar", `@id("ten") @max_ttl("10m") permit(principal, action, resource);\n@id("free") permit(principal, action, resource);`),
      file("/p/b.cedar", `@id("five") @max_ttl("5m") permit(principal, action, resource) when { context.task.tool == "psql" };\n@id("never") @max_ttl("1m") permit(principal, action, resource) when { false };`),
    );
    const withTool = engine.decide(req(principal("agent"), "request", role("jwt"), { task: { tool: "psql" } }));
    expect(withTool).toMatchObject({ decision: "allow", policyIds: ["five", "free", "ten"], maxTtlSeconds: 300 });
    const without = engine.decide(req(principal("agent"), "request", role("jwt")));
    expect(without).toMatchObject({ decision: "allow", policyIds: ["free", "ten"], maxTtlSeconds: 600 });
    // a permit that did not apply ("never") does not clamp; none with @max_ttl → no clamp
    const unclamped = engineOf(file("/p/c.cedar", "permit(principal, action, resource);")).decide(req(principal("agent"), "request", role("jwt")));
    expect(unclamped.maxTtlSeconds).toBeUndefined();
    expect("maxTtlSeconds" in unclamped).toBe(false);
  });

  it("flags approval when any determining permit has @approval(\"required\")", () => {
    const engine = engineOf(
      file(
        "/p/a.cedar",
        `@id("plain") permit(principal, action, resource) when { principal.kind == "agent" };
         @id("gated") @approval("required") permit(principal, action, resource) when { resource.labels has sensitivity && resource.labels.sensitivity == "high" };
         @id("explicit-none") @approval("none") permit(principal, action, resource) when { principal.kind == "ci" };`,
      ),
    );
    expect(engine.decide(req(principal("agent"), "request", role("jwt", { sensitivity: "low" })))).toMatchObject({ decision: "allow", policyIds: ["plain"], approvalRequired: false });
    expect(engine.decide(req(principal("agent"), "request", role("jwt", { sensitivity: "high" })))).toMatchObject({ decision: "allow", policyIds: ["gated", "plain"], approvalRequired: true });
    expect(engine.decide(req(principal("service"), "request", role("jwt", { sensitivity: "high" })))).toMatchObject({ decision: "allow", policyIds: ["gated"], approvalRequired: true });
    expect(engine.decide(req(principal("ci"), "request", role("jwt")))).toMatchObject({ decision: "allow", policyIds: ["explicit-none"], approvalRequired: false });
    expect(engine.decide(req(principal("service"), "request", role("jwt")))).toMatchObject({ decision: "deny", approvalRequired: false });
  });

  it("lets a forbid override a permit, and reports the forbid", () => {
    const engine = engineOf(
      file("/p/a.cedar", `@id("all") @max_ttl("1h") @approval("required") permit(principal, action, resource);`),
      file("/p/b.cedar", `@id("no-prod") forbid(principal, action == Action::"request", resource) when { context.task.destination like "prod-*" };`),
    );
    expect(engine.decide(req(principal("ci"), "request", role("jwt"), { task: { destination: "staging" } }))).toMatchObject({ decision: "allow", policyIds: ["all"], maxTtlSeconds: 3600, approvalRequired: true });
    const d = engine.decide(req(principal("ci"), "request", role("jwt"), { task: { destination: "prod-eu" } }));
    expect(d).toEqual({ decision: "deny", policyIds: ["no-prod"], policyHash: engine.set().hash, approvalRequired: false, errors: [] });
  });

  it("never allows through a policy that fails to evaluate", () => {
    const engine = engineOf(
      file("/p/a.cedar", `@id("unguarded") permit(principal, action, resource) when { resource.labels.access == "read" };`),
    );
    // role without labels: the permit errors, is skipped, nothing else permits → deny
    const d = engine.decide(req(principal("agent"), "request", role("jwt", {})));
    expect(d.decision).toBe("deny");
    expect(d.policyIds).toEqual([]);
    expect(d.errors).toHaveLength(1);
    expect(d.errors[0]).toMatch(/^policy unguarded: .*access/);
    // same policy, attribute present → allowed, no errors
    expect(engine.decide(req(principal("agent"), "request", role("jwt", { access: "read" })))).toMatchObject({ decision: "allow", errors: [] });
  });

  it("denies when a forbid fails to evaluate, even if a permit allows (fail closed)", () => {
    const engine = engineOf(
      file("/p/a.cedar", `@id("all") permit(principal, action, resource);
        @id("bad-forbid") forbid(principal, action, resource) when { resource.labels.sensitivity == "restricted" };`),
    );
    const d = engine.decide(req(principal("agent"), "request", role("jwt", {})));
    expect(d.decision).toBe("deny");
    expect(d.policyIds).toEqual(["bad-forbid"]);
    expect(d.errors.join("\n")).toMatch(/policy bad-forbid: /);
    expect(d.errors.join("\n")).toMatch(/fail closed/);
    expect(engine.decide(req(principal("agent"), "request", role("jwt", { sensitivity: "low" })))).toMatchObject({ decision: "allow", policyIds: ["all"], errors: [] });
  });

  it("denies with errors when the request cannot be evaluated", () => {
    const engine = engineOf(file("/p/a.cedar", "permit(principal, action, resource);"));
    const ok = req(principal("agent"), "request", role("jwt"));
    expect(engine.decide(ok).decision).toBe("allow");
    const bad: DecisionRequest[] = [
      { ...ok, context: { ...ok.context, ttl_seconds: 1.5 } },
      { ...ok, context: { ...ok.context, ttl_seconds: Number.NaN } },
      { ...ok, context: { ...ok.context, __entity: { type: "X", id: "y" } } },
      { ...ok, context: { ...ok.context, nested: { __extn: { fn: "ip", arg: "1.2.3.4" } } } },
      { ...ok, context: { ...ok.context, when: new Date() } },
      { ...ok, action: "delete" as ActionName },
    ];
    for (const r of bad) {
      const d = engine.decide(r);
      expect(d).toMatchObject({ decision: "deny", policyIds: [], approvalRequired: false });
      expect(d.errors.length).toBeGreaterThan(0);
      expect(d.errors[0]).toMatch(/^policy engine: /);
    }
  });

  it("exposes claims, context extras and absent task fields to policies", () => {
    const engine = engineOf(
      file(
        "/p/a.cedar",
        `@id("claims") permit(principal, action, resource) when {
           principal.claims has repository_id && principal.claims.repository_id == "912345" && principal.claims.ref.contains("refs/heads/main") &&
           principal.claims.run_attempt == 2 && principal.claims.protected && principal.claims has ratio &&
           principal.issuer == "github" && principal.subject == "repo:acme/payments" && principal.owner == "team@example.com"
         };
         @id("context") permit(principal, action, resource) when {
           context has requester && context.requester.id == "op-1" && context.tags.contains("x") &&
           context.task.intent == "" && context.task.sensitivity == "" && context.task.id == "t-9"
         };`,
      ),
    );
    const p = principal("ci", {
      issuer: "github",
      subject: "repo:acme/payments",
      owner: "team@example.com",
      claims: { repository_id: "912345", ref: ["refs/heads/main", "refs/heads/dev"], run_attempt: 2, protected: true, ratio: 0.5 },
    });
    expect(engine.decide(req(p, "request", role("jwt")))).toMatchObject({ decision: "allow", policyIds: ["claims"], errors: [] });
    const partial = { id: "t-9" } as DecisionRequest["context"]["task"]; // other task fields absent
    const r = req(principal("agent"), "request", role("jwt"), { extra: { requester: { id: "op-1", note: null }, tags: ["x", 1, true] } });
    r.context.task = partial;
    expect(engine.decide(r)).toMatchObject({ decision: "allow", policyIds: ["context"], errors: [] });
  });

  it("uses Role:: for roles and Broker::\"jitbroker\" for admin actions", () => {
    const engine = engineOf(
      file(
        "/p/a.cedar",
        `@id("role") permit(principal == Workload::"w1", action == Action::"request", resource == Role::"orders-read");
         @id("broker") permit(principal, action in [Action::"admin_read", Action::"admin_revoke"], resource == Broker::"jitbroker");
         @id("is-role") permit(principal, action == Action::"approve", resource is Role) when { resource.backend == "vault" };`,
      ),
    );
    const w1 = principal("agent", { id: "w1" });
    expect(engine.decide(req(w1, "request", role("jwt", {}, "orders-read")))).toMatchObject({ decision: "allow", policyIds: ["role"] });
    expect(engine.decide(req(w1, "request", role("jwt", {}, "other"))).decision).toBe("deny");
    expect(engine.decide(req(principal("human", { id: "w2" }), "request", role("jwt", {}, "orders-read"))).decision).toBe("deny");
    expect(engine.decide(req(w1, "admin_revoke", BROKER))).toMatchObject({ decision: "allow", policyIds: ["broker"] });
    expect(engine.decide(req(w1, "admin_revoke", { type: "Broker", id: "other" })).decision).toBe("deny");
    expect(engine.decide(req(w1, "approve", BROKER)).decision).toBe("deny");
    expect(engine.decide(req(w1, "approve", role("vault"))).decision).toBe("allow");
  });

  it("replace() swaps the set; a set that fails to load leaves the old one in place", () => {
    const a = compilePolicies([file("/p/a.cedar", `@id("a") permit(principal, action, resource);`)]);
    const b = compilePolicies([file("/p/b.cedar", `@id("b") forbid(principal, action, resource);`)]);
    const engine = createPolicyEngine(a);
    const other = createPolicyEngine(b); // engines do not share their preparsed sets
    const r = req(principal("agent"), "request", role("jwt"));
    expect(engine.decide(r)).toMatchObject({ decision: "allow", policyIds: ["a"], policyHash: a.hash });
    engine.replace(b);
    expect(engine.set()).toBe(b);
    expect(engine.decide(r)).toMatchObject({ decision: "deny", policyIds: ["b"], policyHash: b.hash });
    engine.replace(a);
    expect(other.decide(r)).toMatchObject({ decision: "deny", policyIds: ["b"] });

    const broken = { policies: [{ ...b.policies[0]!, id: "x" }, { ...b.policies[0]!, id: "x" }], hash: "h" };
    expect(() => engine.replace(broken)).toThrow(PolicyError);
    const unparsable = { policies: [{ id: "y", effect: "permit" as const, annotations: {}, file: "/p/y.cedar", text: "permit(" }], hash: "h" };
    expect(() => engine.replace(unparsable)).toThrow(PolicyError);
    expect(() => createPolicyEngine(unparsable)).toThrow(PolicyError);
    expect(engine.set()).toBe(a);
    expect(engine.decide(r)).toMatchObject({ decision: "allow", policyIds: ["a"], policyHash: a.hash });
  });

  it("evaluates a preparsed set: no policy parsing per decision", () => {
    const engine = engineOf(file("/p/a.cedar", "permit(principal, action, resource);"));
    // The module object itself (the `import * as` namespace is a read-only view of it).
    const raw = require("@cedar-policy/cedar-wasm/nodejs") as typeof cedar;
    const parse = [
      jest.spyOn(raw, "isAuthorized"),
      jest.spyOn(raw, "policyToJson"),
      jest.spyOn(raw, "preparsePolicySet"),
      jest.spyOn(raw, "checkParsePolicySet"),
      jest.spyOn(raw, "policySetTextToParts"),
    ];
    const stateful = jest.spyOn(raw, "statefulIsAuthorized");
    try {
      for (let i = 0; i < 5; i++) engine.decide(req(principal("agent"), "request", role("jwt")));
      expect(stateful).toHaveBeenCalledTimes(5);
      for (const s of parse) expect(s).not.toHaveBeenCalled();
    } finally {
      jest.restoreAllMocks();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// compiling

describe("compilePolicies", () => {
  it("ids: @id, else <basename>#<index in file>; keeps effect, annotations, text and line", () => {
    const set = compilePolicies([
      file(
        "/etc/p/main.cedar",
        `// header; with a semicolon
permit(principal, action, resource) when { context.task.intent like "a;b*" };

@id("named") @owner("team") @flag
forbid(principal, action, resource) when { context.task.tool == "x\\";y" };
permit(principal, action, resource); // trailing; comment
`,
      ),
    ]);
    expect(set.policies.map((p) => [p.id, p.effect, p.line])).toEqual([
      ["main.cedar#0", "permit", 2],
      ["named", "forbid", 4],
      ["main.cedar#2", "permit", 6],
    ]);
    expect(set.policies[1]!.annotations).toEqual({ id: "named", owner: "team", flag: "" });
    expect(set.policies[1]!.file).toBe("/etc/p/main.cedar");
    expect(set.policies[1]!.text).toBe(`@id("named") @owner("team") @flag\nforbid(principal, action, resource) when { context.task.tool == "x\\";y" };`);
    expect(set.policies[0]!.text.startsWith("permit(")).toBe(true);
  });

  it("reports every problem of every file with file:line", () => {
    const e = compileError([
      file("/p/one.cedar", `@id("fine") permit(principal, action, resource);\n\npermit(principal, action, resource) when { x == };\n`),
      file("/p/ok.cedar", `permit(principal, action, resource);`),
      file("/p/two.cedar", `// broken twice\npermit(principal, action resource);\n@id("also-fine") forbid(principal, action, resource);\nallow(principal, action, resource);\npermit(principal, action, resource)`),
    ]);
    expect(e.problems).toHaveLength(4);
    expect(e.problems[0]).toMatch(/^\/p\/one\.cedar:3: /);
    expect(e.problems[1]).toMatch(/^\/p\/two\.cedar:2: /);
    expect(e.problems[2]).toMatch(/^\/p\/two\.cedar:4: /);
    expect(e.problems[3]).toMatch(/^\/p\/two\.cedar:5: .*end of input/);
    expect(e.message).toContain("4 policy problems");
    for (const p of e.problems) expect(e.message).toContain(p);
  });

  it("reports the line of a syntax error after multi-byte text", () => {
    const e = compileError([file("/p/u.cedar", `// ünïcödé ✓\npermit(principal, action, resource)\n  when { "é" == };`)]);
    expect(e.problems).toEqual([expect.stringMatching(/^\/p\/u\.cedar:3: unexpected token `}`/)]);
  });

  it("refuses templates, invalid @max_ttl / @approval and empty @id, with the annotation's line", () => {
    const e = compileError([
      file(
        "/p/a.cedar",
        `permit(?principal, action, resource);
@id("x")
@max_ttl("ten minutes")
permit(principal, action, resource);
@max_ttl("500ms") permit(principal, action, resource);
@max_ttl("5m")
forbid(principal, action, resource);
@approval("requried") permit(principal, action, resource);
@id("") permit(principal, action, resource);
@approval("required") forbid(principal, action, resource);
@max_ttl("1h") @approval("required") permit(principal, action, resource);
`,
      ),
    ]);
    expect(e.problems).toEqual([
      expect.stringMatching(/^\/p\/a\.cedar:1: unexpected token `\?principal`/),
      expect.stringMatching(/^\/p\/a\.cedar:3: invalid @max_ttl: "ten minutes" is not a duration/),
      expect.stringMatching(/^\/p\/a\.cedar:5: invalid @max_ttl: "500ms" is shorter than 1s/),
      "/p/a.cedar:6: @max_ttl only applies to permit policies",
      '/p/a.cedar:8: invalid @approval("requried"): use "required" or "none"',
      "/p/a.cedar:9: @id must not be empty",
      "/p/a.cedar:10: @approval only applies to permit policies",
    ]);
  });

  it("refuses duplicate ids across files (and generated ids of same-named files)", () => {
    const e = compileError([
      file("/p/a.cedar", `@id("dup") permit(principal, action, resource);`),
      file("/p/b.cedar", `permit(principal, action, resource);\n\n@id("dup") forbid(principal, action, resource);`),
      file("/q/x.cedar", `permit(principal, action, resource);`),
      file("/r/x.cedar", `permit(principal, action, resource);`),
    ]);
    expect(e.problems).toEqual([
      '/p/b.cedar:3: duplicate policy id "dup" (first defined at /p/a.cedar:1)',
      '/r/x.cedar:1: duplicate policy id "x.cedar#0" (first defined at /q/x.cedar:1)',
    ]);
  });

  it("hash: changes with a policy, stable under file order, independent of paths", () => {
    const a = file("/p/a.cedar", `@id("a") permit(principal, action, resource);`);
    const b = file("/p/b.cedar", `@id("b") forbid(principal, action, resource) when { context.approved };`);
    const h = compilePolicies([a, b]).hash;
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(compilePolicies([b, a]).hash).toBe(h);
    expect(compilePolicies([{ ...b, path: "/elsewhere/zz.cedar" }, { ...a, path: "/other/a.cedar" }]).hash).toBe(h);
    expect(compilePolicies([a, { ...b, text: b.text.replace("approved", "task.tool == \"x\"") }]).hash).not.toBe(h);
    expect(compilePolicies([a, { ...b, text: b.text.replace('"b"', '"b2"') }]).hash).not.toBe(h);
    expect(compilePolicies([a]).hash).not.toBe(h);
    const set = compilePolicies([a, b]);
    expect(hashPolicies(set.policies)).toBe(h);
    expect(hashPolicies([...set.policies].reverse())).toBe(h);
  });
});

describe("splitStatements", () => {
  it("cuts at top-level semicolons only", () => {
    const text = `// a; b\n@id("x;y") permit(principal, action, resource) when { context.s == "\\";" }; // c;\n  forbid(principal, action, resource);\n`;
    const parts = splitStatements(text);
    expect(parts.map((p) => p.text)).toEqual([`@id("x;y") permit(principal, action, resource) when { context.s == "\\";" };`, "forbid(principal, action, resource);"]);
    for (const p of parts) {
      expect(text.slice(p.start, p.end)).toBe(p.text);
      expect(p.masked).toHaveLength(p.text.length);
    }
    expect(parts[0]!.masked).not.toContain("x;y");
  });
});

// ---------------------------------------------------------------------------------------------
// loading

describe("loadPolicyFiles", () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "jitbroker-policy-"));
    await writeFile(path.join(dir, "b.cedar"), "permit(principal, action, resource);");
    await writeFile(path.join(dir, "a.cedar"), "forbid(principal, action, resource);");
    await writeFile(path.join(dir, ".hidden.cedar"), "permit(principal, action, resource);");
    await writeFile(path.join(dir, "notes.txt"), "not a policy");
    await mkdir(path.join(dir, "dir.cedar"));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("expands * in the last segment, sorted, files only, no dotfiles", async () => {
    const files = await loadPolicyFiles([path.join(dir, "*.cedar")]);
    expect(files.map((f) => path.basename(f.path))).toEqual(["a.cedar", "b.cedar"]);
    expect(files[0]!.text).toBe("forbid(principal, action, resource);");
    expect(files.every((f) => path.isAbsolute(f.path))).toBe(true);
  });

  it("takes literal paths, dedupes, and treats missing files and directories as empty", async () => {
    const files = await loadPolicyFiles([
      path.join(dir, "b.cedar"),
      path.join(dir, "*.cedar"),
      path.join(dir, "?.txt"),
      path.join(dir, "missing.cedar"),
      path.join(dir, "nope", "*.cedar"),
      path.join(dir, "*.none"),
    ]);
    expect(files.map((f) => path.basename(f.path))).toEqual(["a.cedar", "b.cedar"]);
    expect(await loadPolicyFiles([])).toEqual([]);
    expect(await loadPolicyFiles([path.join(dir, "nope", "*.cedar")])).toEqual([]);
  });

  it("refuses relative patterns", async () => {
    await expect(loadPolicyFiles(["policies/*.cedar"])).rejects.toThrow(PolicyError);
  });

  it("feeds compilePolicies", async () => {
    const set = compilePolicies(await loadPolicyFiles([path.join(dir, "*.cedar")]));
    expect(set.policies.map((p) => p.id)).toEqual(["a.cedar#0", "b.cedar#0"]);
  });
});
