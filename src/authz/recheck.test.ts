import type { RoleConfig } from "../config/schema";
import { compileWorkloads } from "../identity/workloads";
import type { StoredLease } from "../leases/store";
import { compilePolicies, createPolicyEngine } from "../policy/engine";
import { recheckLease } from "./recheck";

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
