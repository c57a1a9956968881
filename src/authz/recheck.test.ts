import type { RoleConfig } from "../config/schema";
import { compileWorkloads } from "../identity/workloads";
import type { StoredLease } from "../leases/store";
import { compilePolicies, createPolicyEngine, type PolicyEngine } from "../policy/engine";
import { memoizeDecisions, memoizeRechecks } from "../policy/memo";
import { recheckLease, type RecheckInputs } from "./recheck";

const MONDAY_10 = Date.parse("2026-11-23T10:00:00Z");

const POLICIES = `
@id("agents-read") @max_ttl("10m")
permit (principal, action == Action::"request", resource is Role)
when { principal.kind == "agent" && resource.labels has access && resource.labels.access == "read" };

@id("agents-write-approved") @approval("required")
permit (principal, action == Action::"request", resource is Role)
when { principal.kind == "agent" && resource.labels has access && resource.labels.access == "write" };

@id("deploy-hours")
forbid (principal, action == Action::"request", resource is Role)
when { resource.labels has access && resource.labels.access == "read" && (context.time.weekday > 5 || context.time.hour < 7) };

@id("ci-main-only")
forbid (principal, action == Action::"request", resource is Role)
when { principal.kind == "ci" && principal.claims has ref && principal.claims.ref != "refs/heads/main" };

@id("ci-read") permit (principal, action == Action::"request", resource is Role) when { principal.kind == "ci" };
`;

const role = (name: string, access: string, over: Partial<RoleConfig> = {}): RoleConfig =>
  ({ name, backend: "jwt", ttl: { default: 60_000, max: 900_000 }, labels: { access }, jwt: { audience: "x" }, ...over }) as RoleConfig;

const roles = new Map<string, RoleConfig>([
  ["read", role("read", "read")],
  ["write", role("write", "write")],
]);

const workloads = compileWorkloads([
  { id: "agent", kind: "agent", owner: "o", purpose: "p", issuer: "idp", subject: "agent-1", claims: {} },
  { id: "ci", kind: "ci", owner: "o", purpose: "p", issuer: "idp", subject: "repo:a/b", claims: { ref: ["refs/heads/main", "refs/heads/dev"] } },
  { id: "ci-num", kind: "ci", owner: "o", purpose: "p", issuer: "idp", subject: "repo:a/b", claims: { repository_id: 912345 } },
]);

function lease(over: Partial<StoredLease> = {}): StoredLease {
  return {
    id: "l_xxxxxxxxxxxxxxxx",
    role: "read",
    backend: "jwt",
    workload: "agent",
    task_id: "t",
    state: "active",
    issued_at: new Date(MONDAY_10).toISOString(),
    expires_at: new Date(MONDAY_10 + 300_000).toISOString(),
    revocation_kind: "revocable",
    identity: { kind: "oidc", issuer: "idp", subject: "agent-1" },
    policy: { ids: [], hash: "" },
    task: { id: "t", intent: "", tool: "", destination: "", sensitivity: "" },
    ttl_seconds: 300,
    handle: null,
    op: null,
    trigger_at: null,
    delegation: null,
    obo: null,
    has_children: false,
    issued_ms: MONDAY_10,
    expires_ms: MONDAY_10 + 300_000,
    asked_ttl_seconds: 300,
    claims: {},
    ...over,
  };
}

describe("recheckLease", () => {
  const policy = createPolicyEngine(compilePolicies([{ path: "/p/p.cedar", text: POLICIES }]));
  const inputs = { policy, roles, workloads };

  it.each<[string, Partial<StoredLease>, boolean, RegExp | undefined]>([
    ["still allowed", {}, true, undefined],
    ["re-evaluated at the time it was issued (Monday 10:00), not now", {}, true, undefined],
    ["issued on a Saturday: the working-hours forbid applies", { issued_ms: Date.parse("2026-11-28T10:00:00Z") }, false, /forbidden by deploy-hours/],
    ["workload removed from the inventory", { workload: "gone" }, false, /workload gone was removed from the inventory/],
    ["role removed", { role: "nope" }, false, /role nope was removed/],
    ["identity no longer bound: subject changed", { identity: { kind: "oidc", issuer: "idp", subject: "agent-2" } }, false, /no longer matches subject agent-2/],
    ["identity no longer bound: other issuer", { identity: { kind: "oidc", issuer: "other", subject: "agent-1" } }, false, /now bound to issuer idp/],
    ["write lease without approval: the permit now requires one", { role: "write" }, false, /now requires approval/],
    ["write lease that was approved stays", { role: "write", approval: { request_id: "rq_x", approved_by: "alice" } }, true, undefined],
    ["longer than the permit's @max_ttl", { ttl_seconds: 900, asked_ttl_seconds: 900 }, false, /at most 600s/],
    ["ci on main", { workload: "ci", identity: { kind: "oidc", issuer: "idp", subject: "repo:a/b" }, claims: { ref: "refs/heads/main" } }, true, undefined],
    ["ci on dev: forbidden by a claim condition", { workload: "ci", identity: { kind: "oidc", issuer: "idp", subject: "repo:a/b" }, claims: { ref: "refs/heads/dev" } }, false, /ci-main-only/],
    ["ci claim given as a number in the inventory and a string in the token still matches", { workload: "ci-num", identity: { kind: "oidc", issuer: "idp", subject: "repo:a/b" }, claims: { repository_id: "912345" } }, true, undefined],
    ["ci claim no longer accepted by the inventory", { workload: "ci", identity: { kind: "oidc", issuer: "idp", subject: "repo:a/b" }, claims: { ref: "refs/heads/old" } }, false, /requires claim ref/],
  ])("%s", (_name, over, allowed, reason) => {
    const r = recheckLease(lease(over), inputs);
    expect(r.allowed).toBe(allowed);
    if (reason) expect(r.reason).toMatch(reason);
  });

  it("a role whose max TTL shrank below the lease, or whose backend changed, revokes", () => {
    const shrunk = new Map(roles).set("read", role("read", "read", { ttl: { default: 60_000, max: 120_000 } }));
    expect(recheckLease(lease(), { ...inputs, roles: shrunk }).reason).toMatch(/at most 120s/);
    const moved = new Map(roles).set("read", role("read", "read", { backend: "vault", vault: { path: "x" } } as Partial<RoleConfig>));
    expect(recheckLease(lease(), { ...inputs, roles: moved }).reason).toMatch(/now uses backend vault/);
  });

  it("an empty policy set revokes everything (default deny)", () => {
    const none = createPolicyEngine(compilePolicies([]));
    expect(recheckLease(lease(), { ...inputs, policy: none })).toEqual({ allowed: false, reason: expect.stringMatching(/no longer allows it \(no permit matches\)/) });
  });
});

describe("recheckLease with decisions shared between leases (memoizeDecisions, as the re-authorization walk does)", () => {
  const engine = (text: string) => createPolicyEngine(compilePolicies([{ path: "/p/p.cedar", text }]));
  const recheckAll = (leases: StoredLease[], policy: PolicyEngine, extra: Partial<RecheckInputs> = {}) => {
    const memo = memoizeDecisions(policy);
    return { results: leases.map((l) => recheckLease(l, { policy: memo, roles, workloads, ...extra })), memo };
  };

  it("a lease whose task intent a new policy forbids is revoked even though another lease of the same workload with another intent stays", () => {
    const policy = engine(`${POLICIES}\n@id("no-export") forbid (principal, action, resource) when { context.task.intent == "export" };`);
    const leases = [
      lease({ id: "l_a", task: { id: "t1", intent: "read", tool: "", destination: "", sensitivity: "" } }),
      lease({ id: "l_b", task: { id: "t2", intent: "export", tool: "", destination: "", sensitivity: "" } }),
      lease({ id: "l_c", task: { id: "t3", intent: "read", tool: "", destination: "", sensitivity: "" } }),
    ];
    const { results, memo } = recheckAll(leases, policy);
    expect(results.map((r) => r.allowed)).toEqual([true, false, true]);
    expect(results[1]!.reason).toMatch(/forbidden by no-export/);
    expect(memo.stats()).toEqual({ decisions: 3, evaluated: 2 });
  });

  it("a policy that reads the task id is decided per task: one forbidden task loses its lease, the others of the workload stay", () => {
    const policy = engine(`${POLICIES}\n@id("task-t2") forbid (principal, action, resource) when { context.task.id == "t2" };`);
    const leases = ["t1", "t2", "t3", "t2"].map((t, i) => lease({ id: `l_${i}`, task_id: t, task: { id: t, intent: "", tool: "", destination: "", sensitivity: "" } }));
    const { results, memo } = recheckAll(leases, policy);
    expect(results.map((r) => r.allowed)).toEqual([true, false, true, false]);
    expect(memo.stats().evaluated).toBe(3);
  });

  it("a time-based policy is decided on each lease's own issue time: the Saturday lease goes, the Monday lease of the same workload and task stays", () => {
    const saturday = Date.parse("2026-11-28T10:00:00Z");
    const leases = [lease({ id: "l_mon" }), lease({ id: "l_sat", issued_ms: saturday }), lease({ id: "l_mon2", issued_ms: MONDAY_10 + 30_000 })];
    const { results } = recheckAll(leases, engine(POLICIES));
    expect(results.map((r) => r.allowed)).toEqual([true, false, true]);
    expect(results[1]!.reason).toMatch(/deploy-hours/);
  });

  it("a time-based policy uses the configured time zone for every lease, grouped or not", () => {
    // 10:00 UTC on Monday is 05:00 in New York: before the 07:00 opening.
    const { results } = recheckAll([lease(), lease({ id: "l_2" })], engine(POLICIES), { timeZone: "America/New_York" });
    expect(results.map((r) => r.allowed)).toEqual([false, false]);
  });

  it("a grouped decision never applies across workloads, roles, subjects or claims", () => {
    const policy = engine(`${POLICIES}
@id("single-out") forbid (principal, action, resource) when {
  principal == Workload::"ci-num" || resource == Role::"read2" || principal.subject == "agent-9" };`);
    const agentRoles = new Map(roles).set("read2", role("read2", "read"));
    const w = compileWorkloads([
      { id: "agent", kind: "agent", owner: "o", purpose: "p", issuer: "idp", claims: {} },
      { id: "ci", kind: "ci", owner: "o", purpose: "p", issuer: "idp", subject: "repo:a/b", claims: { ref: ["refs/heads/main", "refs/heads/dev"] } },
      { id: "ci-num", kind: "ci", owner: "o", purpose: "p", issuer: "idp", subject: "repo:a/b", claims: {} },
    ]);
    const ci = { identity: { kind: "oidc" as const, issuer: "idp", subject: "repo:a/b" } };
    const cases: [Partial<StoredLease>, boolean][] = [
      [{}, true],
      [{ role: "read2" }, false],
      [{ identity: { kind: "oidc", issuer: "idp", subject: "agent-9" } }, false],
      [{ identity: { kind: "oidc", issuer: "idp", subject: "agent-8" } }, true],
      [{ workload: "ci", ...ci, claims: { ref: "refs/heads/main" } }, true],
      [{ workload: "ci", ...ci, claims: { ref: "refs/heads/dev" } }, false], // ci-main-only reads the claim
      [{ workload: "ci-num", ...ci }, false],
      [{ workload: "ci", ...ci, claims: { ref: "refs/heads/main" } }, true],
      [{}, true],
    ];
    const memo = memoizeDecisions(policy);
    for (const [over, allowed] of cases) expect(recheckLease(lease(over), { policy: memo, roles: agentRoles, workloads: w }).allowed).toBe(allowed);
  });

  it("a delegated lease is decided as a delegation: never given the decision of its workload's own leases", () => {
    const policy = engine(`${POLICIES}\n@id("delegate-shallow") permit (principal, action == Action::"delegate", resource) when { context.delegation.depth <= 1 };`);
    const deleg = (depth: number, id: string) => lease({ id, delegation: { parent: "l_p", depth, ancestors: ["l_p"], chain: ["agent"] } });
    const { results } = recheckAll([lease(), deleg(1, "l_d1"), deleg(2, "l_d2"), lease({ id: "l_x" })], policy);
    expect(results.map((r) => r.allowed)).toEqual([true, true, false, true]);
  });

  // Every lease decided with a shared memo gets exactly what it gets alone, whatever the order.
  it.each<[string, string]>([
    ["the example-like set", POLICIES],
    ["a set reading the task id and the TTL", `${POLICIES}\n@id("f1") forbid (principal, action, resource) when { context.task.id like "*7" || context.ttl_seconds > 600 };`],
    ["a set reading the whole context", `${POLICIES}\n@id("f2") forbid (principal, action, resource) when { context == {} || context.time.minute == 30 };`],
    ["a set reading delegation and on-behalf-of", `${POLICIES}\n@id("d") permit (principal, action == Action::"delegate", resource) when { context.delegation.depth < 2 && !(context has on_behalf_of && context.on_behalf_of.subject == "eve") };`],
  ])("differential: with %s every lease gets the decision it gets alone", (_name, text) => {
    const policy = engine(text);
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const pick = <T,>(xs: T[]) => xs[rnd(xs.length)]!;
    const times = [MONDAY_10, MONDAY_10 + 30 * 60_000, Date.parse("2026-11-28T10:00:00Z"), Date.parse("2026-11-23T06:59:59Z"), Date.parse("2026-11-23T07:00:00Z")];
    const leases: StoredLease[] = [];
    for (let i = 0; i < 600; i++) {
      const who = pick(["agent", "agent", "ci", "ci-num"]);
      const ttl = pick([300, 600, 900]);
      const task = { id: `t${rnd(12)}`, intent: pick(["", "read", "export"]), tool: pick(["", "psql"]), destination: "", sensitivity: "" };
      leases.push(
        lease({
          id: `l_${i}`,
          workload: who,
          role: pick(["read", "write"]),
          identity: { kind: "oidc", issuer: "idp", subject: who === "agent" ? pick(["agent-1", "agent-1", "agent-2"]) : "repo:a/b" },
          claims: who === "ci" ? { ref: pick(["refs/heads/main", "refs/heads/dev"]) } : who === "ci-num" ? { repository_id: pick(["912345", 912345]) } : {},
          task_id: task.id,
          task,
          ttl_seconds: ttl,
          asked_ttl_seconds: pick([ttl, 300]),
          issued_ms: pick(times),
          ...(rnd(4) === 0 ? { approval: { request_id: "rq_1", approved_by: "alice" } } : {}),
          delegation: rnd(5) === 0 ? { parent: "l_p", depth: pick([1, 2, 3]), ancestors: ["l_p"], chain: ["agent"] } : null,
          obo: rnd(6) === 0 ? { issuer: "idp", subject: pick(["eve", "bob"]), claims: {} } : null,
        }),
      );
    }
    const alone = leases.map((l) => recheckLease(l, { policy, roles, workloads }));
    const { results, memo } = recheckAll(leases, policy);
    expect(results).toEqual(alone);
    // And in another order.
    const order = leases.map((_, i) => i).sort((a, b) => ((a * 7919) % 601) - ((b * 7919) % 601));
    const again = recheckAll(order.map((i) => leases[i]!), policy);
    expect(again.results).toEqual(order.map((i) => alone[i]));
    // Both outcomes occur, and the memo did share decisions (the test is not vacuous).
    expect(new Set(alone.map((r) => r.allowed))).toEqual(new Set([true, false]));
    expect(memo.stats().evaluated).toBeLessThan(memo.stats().decisions);

    // The walk's answer memo on top (memoizeRechecks): the same answers, in either order, in
    // another time zone too, and it did share answers.
    const decided = memoizeDecisions(policy);
    const rechecks = memoizeRechecks({ policy: decided, roles, workloads });
    expect(leases.map((l) => rechecks(l))).toEqual(alone);
    expect(decided.stats().decisions).toBeLessThan(leases.length);
    const rechecks2 = memoizeRechecks({ policy: memoizeDecisions(policy), roles, workloads });
    expect(order.map((i) => rechecks2(leases[i]!))).toEqual(order.map((i) => alone[i]));
    const aloneNY = leases.map((l) => recheckLease(l, { policy, roles, workloads, timeZone: "America/New_York" }));
    const rechecksNY = memoizeRechecks({ policy: memoizeDecisions(policy), roles, workloads, timeZone: "America/New_York" });
    expect(leases.map((l) => rechecksNY(l))).toEqual(aloneNY);
  });

  it("the walk's answer memo never reuses an answer of a replaced policy set", () => {
    const policy = engine(POLICIES);
    const rechecks = memoizeRechecks({ policy: memoizeDecisions(policy), roles, workloads });
    expect(rechecks(lease()).allowed).toBe(true);
    policy.replace(compilePolicies([{ path: "/p/p.cedar", text: `${POLICIES}\n@id("all-out") forbid (principal, action, resource);` }]));
    expect(rechecks(lease({ id: "l_2" }))).toEqual({ allowed: false, reason: expect.stringMatching(/forbidden by all-out/) });
  });

  it("the walk's answer memo tells apart leases that differ only in what a policy reads: task id, issue minute, approval, asked TTL, person", () => {
    const policy = engine(`${POLICIES}
@id("picky") forbid (principal, action, resource) when {
  context.task.id == "t-bad" || context.time.minute == 30 || context.ttl_seconds > 600 ||
  (context has on_behalf_of && context.on_behalf_of.subject == "eve") };
@id("approved-only") forbid (principal, action, resource) when { context.task.intent == "approve-me" && !context.approved };`);
    const rechecks = memoizeRechecks({ policy: memoizeDecisions(policy), roles, workloads });
    const cases: [Partial<StoredLease>, boolean][] = [
      [{}, true],
      [{ task_id: "t-bad", task: { id: "t-bad", intent: "", tool: "", destination: "", sensitivity: "" } }, false],
      [{ issued_ms: MONDAY_10 + 30 * 60_000 }, false],
      [{ issued_ms: MONDAY_10 + 31 * 60_000 }, true],
      [{ asked_ttl_seconds: 900 }, false],
      [{ obo: { issuer: "idp", subject: "eve", claims: {} } }, false],
      [{ obo: { issuer: "idp", subject: "bob", claims: {} } }, true],
      [{ task: { id: "t", intent: "approve-me", tool: "", destination: "", sensitivity: "" } }, false],
      [{ task: { id: "t", intent: "approve-me", tool: "", destination: "", sensitivity: "" }, approval: { request_id: "rq", approved_by: "alice" } }, true],
      [{}, true],
    ];
    for (const [over, allowed] of cases) expect([over, rechecks(lease(over)).allowed]).toEqual([over, allowed]);
  });
});
