/**
 * The REST API's shapes as a client sees them (docs/ARCHITECTURE.md, Request path; GET /openapi.json). Self-contained on purpose:
 * `jitbroker/client` has no dependency beyond Node 20. test/clients/types.test.ts checks at
 * compile time that these agree with the broker's own types.
 */

export type LeaseState = "issuing" | "active" | "revoking" | "revoked" | "expired" | "revoke_failed";
export type RevocationTrigger = "expiry" | "task_completed" | "owner" | "operator" | "policy_change" | "issue_failed" | "parent_revoked";

export interface TaskContext {
  id: string;
  intent: string;
  tool: string;
  destination: string;
  sensitivity: string;
}

/** The task a credential is asked for: an id, and optional context the policy can look at. */
export interface TaskInput {
  id: string;
  intent?: string;
  tool?: string;
  destination?: string;
  sensitivity?: string;
}

export interface Lease {
  id: string;
  role: string;
  backend: "jwt" | "vault" | "aws_sts";
  workload: string;
  task_id: string;
  state: LeaseState;
  issued_at: string;
  expires_at: string;
  backend_expires_at?: string;
  revoked_at?: string;
  revocation?: { trigger: RevocationTrigger; by?: string; reason?: string; at?: string };
  revocation_kind: "revocable" | "deny_by_session" | "expiry_only";
  identity: { kind: "oidc" | "spiffe"; issuer: string; subject: string };
  policy: { ids: string[]; hash: string };
  task: TaskContext;
  ttl_seconds: number;
  /** Set when an operator approved the request this lease was issued for. */
  approval?: { request_id: string; approved_by: string };
  /** Delegation (RFC 8693): the lease this one was exchanged from. */
  parent_lease_id?: string;
  /** The person the chain acts for (issuer config name and ID token subject). */
  on_behalf_of?: { issuer: string; subject: string };
  last_error?: string;
  revoke_attempts?: number;
}

export interface JwtCredential {
  type: "jwt";
  token: string;
  expires_at: string;
}
export interface VaultCredential {
  type: "vault";
  /**
   * Dynamic secrets: the secret's fields as Vault returned them (e.g. username, password).
   * Child tokens (token roles): `{token, accessor, policies}`.
   */
  data: Record<string, unknown>;
  /** The Vault lease of a dynamic secret (absent for child tokens). */
  lease_id?: string;
  lease_duration: number;
}
export interface AwsCredential {
  type: "aws";
  access_key_id: string;
  secret_access_key: string;
  session_token: string;
  expiration: string;
  assumed_role_arn?: string;
}
export type Credential = JwtCredential | VaultCredential | AwsCredential;

/** What `POST /v1/credentials` (or collecting an approved request, which adds `request`) answers. */
export interface CredentialGrant {
  lease: Lease;
  credential: Credential;
  /** Set when the credential was collected for an approved request. */
  request?: ApprovalRequest;
}

export type ApprovalState = "pending_approval" | "approved" | "denied" | "expired" | "collected";

/** A credential request that needs (or had) an operator's approval. */
export interface ApprovalRequest {
  id: string;
  state: ApprovalState;
  workload: string;
  role: string;
  task_id: string;
  task: TaskContext;
  ttl_seconds?: number;
  identity: Lease["identity"];
  policy: Lease["policy"];
  created_at: string;
  /** pending_approval: expires then unless decided. */
  expires_at?: string;
  /** approved: collect by then. */
  collect_by?: string;
  decided_by?: string;
  decided_at?: string;
  reason?: string;
  lease_id?: string;
  collected_at?: string;
}

/** The `request` of a 202 answer. */
export type PendingRequest = ApprovalRequest;

export interface WhoAmI {
  workload: { id: string; kind: string; owner: string; purpose: string };
  identity: {
    kind: "oidc" | "spiffe";
    issuer: string;
    iss: string | null;
    subject: string;
    matched_claims: Record<string, unknown>;
    expires_at: string;
  };
}

export interface TaskCompletion {
  task_id: string;
  revoked: number;
}

export interface LeaseFilter {
  workload?: string;
  task_id?: string;
  role?: string;
  issuer?: string;
  state?: LeaseState;
}

export interface LeasePage {
  leases: Lease[];
  next_cursor: string | null;
}

/** Exactly one selector. */
export type RevocationSelector = { lease_id: string } | { task_id: string } | { workload: string } | { role: string } | { issuer: string };

export interface RevocationStarted {
  id: string;
  matched: number;
}

export interface RevocationProgress {
  id: string;
  selector: Record<string, string>;
  reason: string;
  by: string;
  created_at: string;
  matched: number;
  triggered: number;
  revoked: number;
  failed: number;
  state: "running" | "completed" | "completed_with_failures";
  finished_at?: string;
}

export interface AuditEvent {
  type: string;
  at: string;
  actor?: string;
  seq: string;
  hash: string;
  prev: string;
  [field: string]: unknown;
}

/** `GET /v1/admin/leases/{id}/history`: the four questions of I8 (docs/ARCHITECTURE.md). */
export interface LeaseHistory {
  lease: Lease;
  requested_by: { workload: string; task: TaskContext; chain?: string[]; on_behalf_of?: { issuer: string; subject: string } };
  /** Delegated leases: the leases this one derives from, root first. */
  delegation?: { parent_lease_id: string; depth: number; ancestors: { id: string; workload?: string; state: string; policy_ids?: string[] }[] };
  identity: Lease["identity"];
  allowed_by: Lease["policy"];
  ended: { state: LeaseState; trigger: RevocationTrigger; by?: string; reason?: string; at?: string; revoked_at: string | null } | null;
  events: AuditEvent[];
  /** Present when some of the lease's events are no longer in Redis (audit.retention): where they went. */
  evidence?: { events_trimmed: number; trimmed_through?: string; events_missing?: number; sinks: string[]; note: string };
}

/** `POST /v1/oauth/token` (RFC 8693): the new credential and its lease. */
export interface TokenExchangeResult {
  access_token: string;
  issued_token_type: string;
  token_type: "Bearer";
  expires_in: number;
  scope?: string;
  lease_id: string;
}

/** Narrowing asked for in a token exchange; all optional (default: the parent's or the role's). */
export interface ExchangeOptions {
  /** Space-separated, within the subject token's (delegation) or the role's (on-behalf-of). */
  scope?: string;
  /** RFC 8707: the one resource (audience) the new token is bound to. */
  resource?: string;
  audience?: string;
  /** "5m", or seconds; longer than allowed is refused, never clamped. */
  ttl?: string | number;
}

export type Introspection = { active: false } | ({ active: true; lease_id: string; role: string; sub: string; task_id: string; exp: number } & Record<string, unknown>);
