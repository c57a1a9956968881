/**
 * Every event type the broker writes to the audit ledger, with its fields (I8: together they
 * answer who asked, with which identity, under which policy, and how access ended). An event of
 * a type not listed here does not compile. No field holds secret material (I6; the ledger also
 * refuses secret-named keys at any depth).
 *
 * Common fields: `type`, `at` (RFC 3339), `actor` (a workload id, or "system"), and where they
 * apply `lease_id`, `task_id`, `workload`; `trace_id` (W3C, 32 hex) when the event was written
 * while a trace was recorded (src/telemetry).
 */

/** Identity a token was read from (I8 "which identity"). */
export interface AuditIdentity {
  kind: "oidc" | "spiffe";
  issuer: string;
  subject: string;
}

/** The task as the workload described it. */
export interface AuditTask {
  id: string;
  intent?: string;
  tool?: string;
  destination?: string;
  sensitivity?: string;
}

/** Who approved or denied (operators are human workloads). */
export interface AuditApprover {
  workload: string;
  kind: string;
  owner: string;
  issuer: string;
  subject: string;
}

interface Base {
  /** RFC 3339. */
  at: string;
  /** Who caused it: a workload id or "system". */
  actor: string;
  /** W3C trace id of the request or job that wrote the event, when traced. */
  trace_id?: string;
  /** A refusal sampled into the ledger (src/limits/refusals.ts): one per workload, kind and interval. */
  sampled?: boolean;
  sample_interval_seconds?: number;
}

interface LeaseRef {
  lease_id: string;
  workload: string;
  task_id: string;
}

type PolicyRef = { policy_ids: string[]; policy_hash: string };

/** A token exchange (RFC 8693, src/oauth): the delegation chain and on whose behalf (I8). */
interface ExchangeRef {
  exchange?: "delegation" | "on_behalf_of";
  parent_lease_id?: string;
  depth?: number;
  chain?: string[];
  ancestors?: string[];
  on_behalf_of?: { issuer: string; subject: string };
}

export interface AuditEventsByType {
  /** A policy decision on a credential request (allow or deny). */
  decision: Base & {
    workload: string;
    task_id: string;
    action: "request" | "delegate";
    role: string;
    identity: AuditIdentity;
    decision: "allow" | "deny";
    errors?: string[];
    approval_required?: boolean;
    approval_request?: string;
    approved_by?: string;
  } & PolicyRef &
    ExchangeRef;
  /** A request the policy sent to a human (`@approval("required")`). */
  approval_requested: Base & {
    request_id: string;
    workload: string;
    task_id: string;
    role: string;
    identity: AuditIdentity;
    expires_at: string;
    task: AuditTask;
  } & PolicyRef;
  approval_approved: Base & ApprovalDecision;
  approval_denied: Base & ApprovalDecision;
  /** An operator the policy does not allow to decide tried to. */
  approval_refused: Base & { request_id: string; approver: AuditApprover; outcome: "approved" | "denied"; policy_ids?: string[]; policy_hash?: string };
  approval_expired: Base & { request_id: string; workload: string; task_id: string; was: string };
  /** The requester collected an approved request (the lease it got). */
  approval_collected: Base & LeaseRef & { request_id: string };
  /** A credential was issued: the lease, its identity, its policy. */
  mint: Base &
    LeaseRef & {
      role: string;
      backend: string;
      identity: AuditIdentity;
      expires_at: string;
      backend_expires_at?: string;
      approval?: { request_id: string; requested_at: string; approved_by?: string; approved_at?: string };
      task: AuditTask;
      /** Claims of the issued token that name the chain (no token). */
      token_claims?: { sub: string; act?: unknown; aud: unknown; scope?: string };
    } & PolicyRef &
    ExchangeRef;
  /** A lease whose credential was never handed out (the mint or its bookkeeping failed). */
  issue_failed: Base & { lease_id: string; workload?: string; task_id?: string; reason: string };
  task_completed: Base & { workload: string; task_id: string; leases: string[] };
  /** A lease was triggered for revocation (owner, operator, policy change). */
  revocation_requested: Base & LeaseRef & { trigger: string; reason?: string; policy_hash?: string };
  /** An operator's bulk revocation (by task, workload, role, issuer or lease). */
  bulk_revocation: Base & { op: string; selector: string; value: string; matched: number; reason: string };
  /** How access ended (I8): revoked at the backend, or expired there. */
  revoked: Base & LeaseEnd;
  expired: Base & LeaseEnd;
  /** Revocation keeps failing (it is still retried). */
  revoke_failed: Base & LeaseRef & { attempts: number; error: string };
  policy_reload: Base & { ok: boolean; policy_hash: string; previous_policy_hash: string; policies: number; problems?: string[] };
  inventory_reload: Base & { source: string; ok: boolean; problems?: string[]; workloads?: number; roles?: number };
  /** Active leases decided again after a policy or inventory change. */
  reauthorization: Base & { source: string; policy_hash: string; reevaluated: number; revoked: number; kept: number; skipped: number };
  vault_orphan_revoked: Base & { vault_lease_id: string; role: string; roles?: string[]; path: string };
  aws_session_ended: Base & LeaseRef & { role_arn: string; session: string; note: string };
  aws_deny_attached: Base &
    LeaseRef & { role_arn: string; policy_name: string; session: string; deny: string; session_expires_at: string; note: string };
  aws_revocation_fallback: Base & {
    role_arn: string;
    policy_name: string;
    issued_before: string;
    until: string;
    revoked_sessions_covered: number;
    leases: string[];
    policy_size: number;
    budget: number;
    note: string;
  };
  /** A token exchange refused before any policy decision (src/oauth). */
  token_exchange_refused: Base & { workload: string; task_id?: string; error: string; code: string; reason: string };
  /** An operator signed in to the console (src/console). */
  console_sign_in: Base & { workload: string; issuer: string; subject: string };
  /** An operator signed out of the console, ending this many sessions. */
  console_sign_out: Base & { workload: string; sessions: number };
  /** The chain switched from unkeyed to keyed links (src/audit/chain.ts). */
  audit_chain_keyed: Base & { legacy_head: string; key_id: string };
}

interface ApprovalDecision {
  request_id: string;
  workload: string;
  task_id: string;
  role: string;
  approver: AuditApprover;
  policy_ids: string[];
  policy_hash: string;
  reason?: string;
}

interface LeaseEnd extends LeaseRef {
  trigger: string;
  reason?: string;
  backend: string;
  revocation_kind: string;
  note?: string;
}

export type AuditEventType = keyof AuditEventsByType;

/** One event, discriminated by `type`. */
export type AuditEvent = { [T in AuditEventType]: { type: T } & AuditEventsByType[T] }[AuditEventType];

/** Every type, for checks and documentation (kept equal to the keys above by the compiler). */
export const AUDIT_EVENT_TYPES = [
  "decision",
  "approval_requested",
  "approval_approved",
  "approval_denied",
  "approval_refused",
  "approval_expired",
  "approval_collected",
  "mint",
  "issue_failed",
  "task_completed",
  "revocation_requested",
  "bulk_revocation",
  "revoked",
  "expired",
  "revoke_failed",
  "policy_reload",
  "inventory_reload",
  "reauthorization",
  "vault_orphan_revoked",
  "aws_session_ended",
  "aws_deny_attached",
  "aws_revocation_fallback",
  "token_exchange_refused",
  "console_sign_in",
  "console_sign_out",
  "audit_chain_keyed",
] as const satisfies readonly AuditEventType[];

type Missing = Exclude<AuditEventType, (typeof AUDIT_EVENT_TYPES)[number]>;
const allListed: Missing extends never ? true : Missing = true;
void allListed;
