/**
 * The issuance decision as a pure function (docs/ARCHITECTURE.md, Request path, steps 5 to 9):
 * what the broker asks the policies about a credential request (`issueDecisionRequest`), and,
 * given their decision, what it does (`planIssue`): refuse with a code, ask for approval, or
 * grant a lease with its TTL and the fields it is written with. No I/O and one clock reading,
 * so every row of its table test (plan.test.ts) is one attack or mistake it stops; the service
 * (service.ts) runs the effects (rate limit, task marker, audit, lease write, schedule, mint,
 * activation) and their undo steps.
 */
import type { ApprovalRequest, NewApprovalRequest } from "../approvals/store";
import { decisionContext, requestedRoleResource } from "../authz/context";
import { principalOf, type AuthContext } from "../authz/principal";
import type { MintRequest } from "../backends/types";
import type { RoleConfig } from "../config/schema";
import { BrokerError } from "../core/errors";
import type { Decision, DecisionRequest } from "../policy/types";
import type { LeaseDelegation, NewLease, OnBehalfOf } from "./store";
import { leaseTtlMs, requestedTtlMs } from "./ttl";
import type { TaskContext } from "./types";

export interface CredentialRequest {
  role: string;
  task: Partial<TaskContext> & { id: string };
  ttlMs?: number;
  /** Backend-specific narrowing (MintRequest.scope), validated by the backend before anything is written. */
  scope?: Record<string, unknown>;
  /** A token exchange (src/oauth, RFC 8693): delegation or on-behalf-of. */
  exchange?: ExchangeRequest;
}

/**
 * What a token exchange adds to a credential request, already checked by src/oauth to be no
 * wider than the parent lease and the role. Differences from a direct request: Cedar decides
 * `action` with `context` added (delegation, on_behalf_of); an explicit TTL longer than the
 * parent's remaining life or the policy's @max_ttl is refused, never clamped; a delegated lease
 * is registered under its parent (and revoked with it); approvals are not available.
 */
export interface ExchangeRequest {
  action: "request" | "delegate";
  context: { delegation?: { depth: number; from: string; chain: string[] }; on_behalf_of?: OnBehalfOf };
  delegation?: LeaseDelegation & { parentExpiresMs: number };
  onBehalfOf?: OnBehalfOf;
  token: NonNullable<MintRequest["token"]>;
}

/** What one issuance is about: the request, who asks, the role it names, and the clock. */
export interface IssueInput {
  req: CredentialRequest;
  auth: AuthContext;
  /** The role the request names, if there is one. */
  role: RoleConfig | undefined;
  /** Set when the requester collects an approved request (GET /v1/requests/{id}). */
  approval?: { request: ApprovalRequest };
  nowMs: number;
  /** IANA zone of context.time (policy.timezone). */
  timeZone?: string;
}

/** A task as the policies and the lease see it: absent fields are "". */
export const taskOf = (t: CredentialRequest["task"]): TaskContext => ({
  id: t.id,
  intent: t.intent ?? "",
  tool: t.tool ?? "",
  destination: t.destination ?? "",
  sensitivity: t.sensitivity ?? "",
});

/** What a delegated lease has left of its parent's life (ms); unbounded for anything else. */
const parentLeftMs = (i: Pick<IssueInput, "req" | "nowMs">) => (i.req.exchange?.delegation ? i.req.exchange.delegation.parentExpiresMs - i.nowMs : Number.POSITIVE_INFINITY);

/** The TTL the policies see (`context.ttl_seconds`): asked, else the role's default; within a parent's life. */
const askedSeconds = (i: Pick<IssueInput, "req" | "role" | "nowMs">) => Math.floor(Math.min(i.req.ttlMs ?? i.role?.ttl.default ?? 0, parentLeftMs(i)) / 1000);

/**
 * The decision request of a credential request. An unknown role is decided as a Role without
 * attributes: a caller no policy allows gets the same answer for a role that exists and one that
 * does not, and learns neither which roles exist nor their limits.
 */
export function issueDecisionRequest(i: IssueInput): DecisionRequest {
  const ex = i.req.exchange;
  return {
    principal: principalOf(i.auth),
    action: ex?.action ?? "request",
    resource: requestedRoleResource(i.req.role, i.role),
    context: { ...decisionContext({ task: taskOf(i.req.task), ttlSeconds: askedSeconds(i), approved: i.approval !== undefined, atMs: i.nowMs, timeZone: i.timeZone }), ...(ex?.context ?? {}) },
  };
}

/** What this broker can do for the role: its backend, if configured here, and whether approvals are enabled. */
export interface IssueCapabilities {
  /** The role's backend, if configured in this broker: does it validate a `scope` (checkRequest)? */
  backend: { checksScope: boolean } | undefined;
  approvalsEnabled: boolean;
}

export type IssuePlan =
  /**
   * Refused. `by: "policy"`: the policies did not allow it (nothing is written per attempt, the
   * refusal is sampled); `by: "broker"`: allowed, then refused for what the request asks (the
   * decision is audited first).
   */
  | { outcome: "deny"; by: "policy" | "broker"; error: BrokerError }
  /** A determining permit says @approval("required"): record this request and mint nothing. */
  | { outcome: "approval"; role: RoleConfig; request: NewApprovalRequest }
  /** Mint: the lease to write (its id is chosen by the store) and its TTL. */
  | { outcome: "grant"; role: RoleConfig; ttlMs: number; lease: Omit<NewLease, "id"> };

const deny = (error: BrokerError): IssuePlan => ({ outcome: "deny", by: "broker", error });

/**
 * From a credential request, the caller, the role, the policies' decision and the clock: refuse
 * (with the code the caller gets), ask for approval, or grant. In this order, so that a caller
 * the policies refuse learns nothing about the role, and one they allow learns first what makes
 * its request impossible:
 *
 *   policy deny → unknown role → backend not here → approval a token exchange cannot wait for →
 *   TTL above @max_ttl (exchange) → TTL beyond the parent's life (delegation) → TTL above the
 *   role's max → a scope the backend takes none of → approval → grant.
 *
 * The backend's own check of a `scope` (checkRequest) runs after this, before any write.
 */
export function planIssue(i: IssueInput & { decision: Decision } & IssueCapabilities): IssuePlan {
  const { req, role, decision: d, approval } = i;
  const ex = req.exchange;
  const workload = i.auth.workload.id;
  const action = ex?.action ?? "request";
  if (d.decision !== "allow") {
    return { outcome: "deny", by: "policy", error: new BrokerError("policy_denied", `policy does not allow ${workload} to ${action} ${req.role}`, { extra: { policy_hash: d.policyHash } }) };
  }
  if (!role) return deny(new BrokerError("unknown_role", `no role named "${req.role}"`));
  if (!i.backend) return deny(new BrokerError("backend_unavailable", `backend ${role.backend} is not available in this broker`));
  if (approval && (approval.request.state !== "approved" || approval.request.workload !== workload || approval.request.role !== role.name || approval.request.task.id !== req.task.id)) {
    // The collection route passes the request it collects; anything else is a bug, never a credential.
    return deny(new BrokerError("policy_denied", `approval request ${approval.request.id} does not approve ${workload} for ${role.name} (task ${req.task.id})`));
  }
  if (ex && d.approvalRequired) return deny(new BrokerError("policy_denied", `the policy requires approval for ${role.name}, which a token exchange cannot wait for; use POST /v1/credentials`));
  if (ex && req.ttlMs !== undefined && d.maxTtlSeconds !== undefined && req.ttlMs > d.maxTtlSeconds * 1000) {
    return deny(new BrokerError("ttl_too_long", `requested ttl ${Math.round(req.ttlMs / 1000)}s exceeds the ${d.maxTtlSeconds}s the policy allows`, { extra: { max_ttl_seconds: d.maxTtlSeconds } }));
  }
  const parentLeft = parentLeftMs(i);
  if (ex?.delegation && req.ttlMs !== undefined && req.ttlMs > parentLeft) {
    const left = Math.max(0, Math.floor(parentLeft / 1000));
    return deny(new BrokerError("ttl_too_long", `requested ttl ${Math.round(req.ttlMs / 1000)}s exceeds the ${left}s the subject token's lease has left`, { extra: { max_ttl_seconds: left } }));
  }
  const ttlIn = { requestedMs: req.ttlMs, roleDefaultMs: role.ttl.default, roleMaxMs: role.ttl.max };
  try {
    requestedTtlMs(ttlIn);
  } catch (e) {
    return deny(e as BrokerError);
  }
  // Backend-specific input is looked at only for callers the policy allows: its answers describe
  // the role, which a refused caller must not learn about.
  if (req.scope !== undefined && !i.backend.checksScope) return deny(new BrokerError("invalid_request", `scope: role ${role.name} (backend ${role.backend}) does not accept a scope`));

  const task = taskOf(req.task);
  const identity = { kind: i.auth.identity.kind, issuer: i.auth.identity.issuer, subject: i.auth.identity.subject };
  const policy = { ids: d.policyIds, hash: d.policyHash };
  if (d.approvalRequired && !approval) {
    if (!i.approvalsEnabled) return deny(new BrokerError("policy_denied", `requesting ${role.name} requires human approval, which is not enabled in this broker`));
    return {
      outcome: "approval",
      role,
      request: { workload, role: role.name, task, ...(req.ttlMs !== undefined ? { ttlMs: req.ttlMs } : {}), ...(req.scope !== undefined ? { scope: req.scope } : {}), identity, policy },
    };
  }

  // min(asked or the role's default, the role's max, the permit's @max_ttl), within a parent's life.
  const ttlMs = Math.min(leaseTtlMs({ ...ttlIn, policyMaxMs: d.maxTtlSeconds === undefined ? undefined : d.maxTtlSeconds * 1000 }), parentLeft);
  // Whole seconds: JWT exp and most backends count in seconds; never later than the lease (I2).
  const expiresAt = Math.floor((i.nowMs + ttlMs) / 1000) * 1000;
  const del = ex?.delegation;
  return {
    outcome: "grant",
    role,
    ttlMs,
    lease: {
      role: role.name,
      backend: role.backend,
      workload,
      task,
      issuedAt: i.nowMs,
      expiresAt,
      identity,
      policy,
      askedTtlSeconds: askedSeconds(i),
      claims: principalOf(i.auth).claims,
      ...(approval ? { approval: { request_id: approval.request.id, approved_by: approval.request.decided_by ?? "" } } : {}),
      ...(del ? { delegation: { parent: del.parent, depth: del.depth, ancestors: del.ancestors, chain: del.chain } } : {}),
      ...(ex?.onBehalfOf ? { onBehalfOf: ex.onBehalfOf } : {}),
    },
  };
}
