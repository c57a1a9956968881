/**
 * The issuance plan (plan.ts), table-tested: each row is an attack or a mistake, and what the
 * broker answers to it before anything is written or minted.
 */
import type { ApprovalRequest } from "../approvals/store";
import type { AuthContext } from "../authz/principal";
import type { RoleConfig } from "../config/schema";
import type { BrokerError } from "../core/errors";
import type { Decision } from "../policy/types";
import { issueDecisionRequest, planIssue, type CredentialRequest, type ExchangeRequest, type IssueCapabilities, type IssueInput, type IssuePlan } from "./plan";

const NOW = Date.parse("2026-11-23T10:00:00.400Z");

const auth: AuthContext = {
  identity: {
    kind: "oidc",
    issuer: "ci",
    iss: "https://ci.example",
    subject: "repo:acme/app:ref:refs/heads/main",
    claims: { repository: "acme/app", ref: "refs/heads/main", extra: "not constrained" },
    jti: undefined,
    expiresAt: NOW + 600_000,
  },
  workload: { id: "deployer", kind: "ci", owner: "team-a", purpose: "deploys", issuer: "ci", subject: undefined, claims: { repository: ["acme/app"] } },
};

const role = (over: Partial<RoleConfig> = {}): RoleConfig =>
  ({ name: "db-read", backend: "jwt", ttl: { default: 300_000, max: 900_000 }, labels: { access: "read" }, jwt: { audience: "db" }, ...over }) as RoleConfig;

const allow = (over: Partial<Decision> = {}): Decision => ({ decision: "allow", policyIds: ["p1"], policyHash: "h".repeat(64), approvalRequired: false, errors: [], ...over });
const denied: Decision = { decision: "deny", policyIds: [], policyHash: "h".repeat(64), approvalRequired: false, errors: [] };

const approved = (over: Partial<ApprovalRequest> = {}): { request: ApprovalRequest } => ({
  request: {
    id: "rq_AAAAAAAAAAAAAAAA",
    state: "approved",
    workload: "deployer",
    role: "db-read",
    task: { id: "t1", intent: "", tool: "", destination: "", sensitivity: "" },
    identity: { kind: "oidc", issuer: "ci", subject: auth.identity.subject },
    policy: { ids: ["p1"], hash: "h" },
    created_ms: NOW - 60_000,
    deadline_ms: NOW + 60_000,
    decided_by: "alice",
    decided_ms: NOW - 30_000,
    ...over,
  },
});

const delegation = (parentExpiresMs: number): ExchangeRequest => ({
  action: "delegate",
  context: { delegation: { depth: 1, from: "deployer", chain: ["deployer"] } },
  delegation: { parent: "l_parentparentparent", depth: 1, ancestors: ["l_parentparentparent"], chain: ["deployer"], parentExpiresMs },
  token: { subject: "deployer", audience: "db" } as ExchangeRequest["token"],
});

interface Row {
  name: string;
  req?: Partial<CredentialRequest>;
  role?: RoleConfig | null;
  decision?: Decision;
  approval?: { request: ApprovalRequest };
  can?: Partial<IssueCapabilities>;
  expect: { outcome: "deny"; by: "policy" | "broker"; code: string; detail?: RegExp } | { outcome: "approval" } | { outcome: "grant"; ttlMs: number };
}

function plan(row: Row): IssuePlan {
  const input: IssueInput = {
    req: { role: "db-read", task: { id: "t1" }, ...row.req },
    auth,
    role: row.role === null ? undefined : (row.role ?? role()),
    ...(row.approval ? { approval: row.approval } : {}),
    nowMs: NOW,
  };
  return planIssue({ ...input, decision: row.decision ?? allow(), backend: { checksScope: false }, approvalsEnabled: true, ...row.can });
}

const ROWS: Row[] = [
  { name: "a caller no policy allows is refused by the policy (403), for a role that exists", decision: denied, expect: { outcome: "deny", by: "policy", code: "policy_denied" } },
  {
    name: "a caller no policy allows gets the same 403 for a role that does not exist (no role enumeration)",
    role: null,
    req: { role: "no-such-role" },
    decision: denied,
    expect: { outcome: "deny", by: "policy", code: "policy_denied", detail: /to request no-such-role/ },
  },
  {
    name: "a caller no policy allows learns nothing of the role's max TTL: the policy refusal comes first",
    req: { ttlMs: 3_600_000 },
    decision: denied,
    expect: { outcome: "deny", by: "policy", code: "policy_denied" },
  },
  { name: "an unknown role is named only to a caller a policy allows", role: null, req: { role: "nope" }, expect: { outcome: "deny", by: "broker", code: "unknown_role", detail: /no role named "nope"/ } },
  { name: "a role whose backend is not configured here answers backend_unavailable, never a credential", can: { backend: undefined }, expect: { outcome: "deny", by: "broker", code: "backend_unavailable" } },
  { name: "a TTL above the role's max is refused, not clamped", req: { ttlMs: 900_001 }, expect: { outcome: "deny", by: "broker", code: "ttl_too_long", detail: /role's max of 900s/ } },
  { name: "a TTL equal to the role's max is granted in full", req: { ttlMs: 900_000 }, expect: { outcome: "grant", ttlMs: 900_000 } },
  { name: "no TTL asked: the role's default", expect: { outcome: "grant", ttlMs: 300_000 } },
  { name: "a permit's @max_ttl clamps a direct request (the policy's limit, not the caller's mistake)", req: { ttlMs: 600_000 }, decision: allow({ maxTtlSeconds: 120 }), expect: { outcome: "grant", ttlMs: 120_000 } },
  {
    name: "a token exchange asking more than the permit's @max_ttl is refused, not clamped",
    req: { ttlMs: 600_000, exchange: { ...delegation(NOW + 3_600_000) } },
    decision: allow({ maxTtlSeconds: 120 }),
    expect: { outcome: "deny", by: "broker", code: "ttl_too_long", detail: /the 120s the policy allows/ },
  },
  {
    name: "a delegated lease cannot outlive its parent: a TTL beyond the parent's life is refused",
    req: { ttlMs: 120_000, exchange: delegation(NOW + 60_000) },
    expect: { outcome: "deny", by: "broker", code: "ttl_too_long", detail: /the 60s the subject token's lease has left/ },
  },
  { name: "a delegated lease without a TTL ends with its parent, not at the role's default", req: { exchange: delegation(NOW + 60_000) }, expect: { outcome: "grant", ttlMs: 60_000 } },
  {
    name: "a token exchange cannot wait for a human: approval-required is refused, not queued",
    req: { exchange: delegation(NOW + 3_600_000) },
    decision: allow({ approvalRequired: true }),
    expect: { outcome: "deny", by: "broker", code: "policy_denied", detail: /cannot wait for/ },
  },
  { name: "a scope sent to a backend that takes none is refused, not ignored", req: { scope: { Statement: [] } }, expect: { outcome: "deny", by: "broker", code: "invalid_request", detail: /does not accept a scope/ } },
  { name: "a scope sent to a backend that checks scopes goes on (to the backend's own check)", req: { scope: { Statement: [] } }, can: { backend: { checksScope: true } }, expect: { outcome: "grant", ttlMs: 300_000 } },
  { name: "a permit that requires approval gives a pending request, never a credential", decision: allow({ approvalRequired: true }), expect: { outcome: "approval" } },
  {
    name: "approval required where approvals are not enabled is refused, not granted",
    decision: allow({ approvalRequired: true }),
    can: { approvalsEnabled: false },
    expect: { outcome: "deny", by: "broker", code: "policy_denied", detail: /not enabled/ },
  },
  { name: "collecting an approved request mints, though the permit still requires approval", decision: allow({ approvalRequired: true }), approval: approved(), expect: { outcome: "grant", ttlMs: 300_000 } },
  {
    name: "an approval for another role does not mint this one",
    decision: allow({ approvalRequired: true }),
    approval: approved({ role: "db-admin" }),
    expect: { outcome: "deny", by: "broker", code: "policy_denied", detail: /does not approve/ },
  },
  {
    name: "an approval of another workload's request does not mint for this one",
    decision: allow({ approvalRequired: true }),
    approval: approved({ workload: "someone-else" }),
    expect: { outcome: "deny", by: "broker", code: "policy_denied" },
  },
  { name: "an approval for another task does not mint this one", decision: allow({ approvalRequired: true }), approval: approved({ task: { id: "t2", intent: "", tool: "", destination: "", sensitivity: "" } }), expect: { outcome: "deny", by: "broker", code: "policy_denied" } },
  { name: "a request still pending (not approved) does not mint", decision: allow({ approvalRequired: true }), approval: approved({ state: "pending_approval" }), expect: { outcome: "deny", by: "broker", code: "policy_denied" } },
  { name: "a policy that changed to deny after the approval still denies the collection", decision: denied, approval: approved(), expect: { outcome: "deny", by: "policy", code: "policy_denied" } },
];

describe("planIssue: what the broker does with an allowed or refused credential request", () => {
  it.each(ROWS.map((r) => [r.name, r] as const))("%s", (_name, row) => {
    const p = plan(row);
    expect(p.outcome).toBe(row.expect.outcome);
    if (p.outcome === "deny" && row.expect.outcome === "deny") {
      expect(p.by).toBe(row.expect.by);
      expect((p.error as BrokerError).code).toBe(row.expect.code);
      if (row.expect.detail) expect(p.error.message).toMatch(row.expect.detail);
    }
    if (p.outcome === "grant" && row.expect.outcome === "grant") expect(p.ttlMs).toBe(row.expect.ttlMs);
  });

  it("a granted lease expires on a whole second, never later than its TTL (I2)", () => {
    const p = plan({ name: "", expect: { outcome: "grant", ttlMs: 300_000 } });
    if (p.outcome !== "grant") throw new Error(p.outcome);
    expect(p.lease.issuedAt).toBe(NOW);
    expect(p.lease.expiresAt % 1000).toBe(0);
    expect(p.lease.expiresAt).toBeLessThanOrEqual(NOW + 300_000);
    expect(p.lease.expiresAt).toBeGreaterThan(NOW + 300_000 - 1000);
  });

  it("the lease answers who, with which identity and under which policy (I8); only constrained claims are kept", () => {
    const p = plan({ name: "", req: { task: { id: "t1", intent: "deploy" } }, expect: { outcome: "grant", ttlMs: 300_000 } });
    if (p.outcome !== "grant") throw new Error(p.outcome);
    expect(p.lease).toMatchObject({
      role: "db-read",
      backend: "jwt",
      workload: "deployer",
      task: { id: "t1", intent: "deploy", tool: "", destination: "", sensitivity: "" },
      identity: { kind: "oidc", issuer: "ci", subject: auth.identity.subject },
      policy: { ids: ["p1"], hash: "h".repeat(64) },
      askedTtlSeconds: 300,
      claims: { repository: "acme/app" },
    });
    expect(p.lease.claims).not.toHaveProperty("extra");
    expect(p.lease).not.toHaveProperty("approval");
  });

  it("a collected lease records who approved it", () => {
    const p = plan({ name: "", decision: allow({ approvalRequired: true }), approval: approved(), expect: { outcome: "grant", ttlMs: 300_000 } });
    if (p.outcome !== "grant") throw new Error(p.outcome);
    expect(p.lease.approval).toEqual({ request_id: "rq_AAAAAAAAAAAAAAAA", approved_by: "alice" });
  });

  it("a delegated lease records its place in the chain", () => {
    const p = plan({ name: "", req: { exchange: delegation(NOW + 60_000) }, expect: { outcome: "grant", ttlMs: 60_000 } });
    if (p.outcome !== "grant") throw new Error(p.outcome);
    expect(p.lease.delegation).toEqual({ parent: "l_parentparentparent", depth: 1, ancestors: ["l_parentparentparent"], chain: ["deployer"] });
  });

  it("an approval request keeps what was asked (TTL, scope) and the policy that asked for approval", () => {
    const p = plan({ name: "", req: { ttlMs: 60_000, scope: { a: 1 } }, can: { backend: { checksScope: true } }, decision: allow({ approvalRequired: true, policyIds: ["needs-human"] }), expect: { outcome: "approval" } });
    if (p.outcome !== "approval") throw new Error(p.outcome);
    expect(p.request).toEqual({
      workload: "deployer",
      role: "db-read",
      task: { id: "t1", intent: "", tool: "", destination: "", sensitivity: "" },
      ttlMs: 60_000,
      scope: { a: 1 },
      identity: { kind: "oidc", issuer: "ci", subject: auth.identity.subject },
      policy: { ids: ["needs-human"], hash: "h".repeat(64) },
    });
  });
});

describe("issueDecisionRequest: what the policies are asked", () => {
  const base: IssueInput = { req: { role: "db-read", task: { id: "t1" } }, auth, role: role(), nowMs: NOW, timeZone: "UTC" };

  it("an unknown role is asked about as a Role without attributes (no role enumeration through policy errors)", () => {
    expect(issueDecisionRequest({ ...base, req: { role: "ghost", task: { id: "t1" } }, role: undefined }).resource).toEqual({ name: "ghost", backend: "", labels: {} });
  });

  it("the principal carries only the claims the inventory constrains", () => {
    expect(issueDecisionRequest(base).principal).toEqual({ id: "deployer", kind: "ci", owner: "team-a", issuer: "ci", subject: auth.identity.subject, claims: { repository: "acme/app" } });
  });

  it("context.ttl_seconds is the asked TTL, else the role's default, within a delegated lease's parent", () => {
    expect(issueDecisionRequest(base).context.ttl_seconds).toBe(300);
    expect(issueDecisionRequest({ ...base, req: { ...base.req, ttlMs: 42_900 } }).context.ttl_seconds).toBe(42);
    expect(issueDecisionRequest({ ...base, req: { ...base.req, exchange: delegation(NOW + 61_500) } }).context.ttl_seconds).toBe(61);
  });

  it("context.approved is true only when an approved request is collected", () => {
    expect(issueDecisionRequest(base).context.approved).toBe(false);
    expect(issueDecisionRequest({ ...base, approval: approved() }).context.approved).toBe(true);
  });

  it("a token exchange asks its own action with its chain in the context", () => {
    const d = issueDecisionRequest({ ...base, req: { ...base.req, exchange: delegation(NOW + 60_000) } });
    expect(d.action).toBe("delegate");
    expect(d.context["delegation"]).toEqual({ depth: 1, from: "deployer", chain: ["deployer"] });
  });
});
