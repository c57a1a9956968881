/**
 * The REST API's shapes as a client sees them (DESIGN.md section 5). Self-contained on purpose:
 * `jitbroker/client` has no dependency beyond Node 20. test/clients/types.test.ts checks at
 * compile time that these agree with the broker's own types.
 */

export type LeaseState = "issuing" | "active" | "revoking" | "revoked" | "expired" | "revoke_failed";
export type RevocationTrigger = "expiry" | "task_completed" | "owner" | "operator" | "policy_change" | "issue_failed";

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
  /** The secret's fields (dynamic secrets), as Vault returned them. */
  data?: Record<string, unknown>;
  lease_duration?: number;
  /** A Vault token (child-token roles). */
  token?: string;
  accessor?: string;
  [extra: string]: unknown;
}
export interface AwsCredential {
  type: "aws";
  access_key_id: string;
  secret_access_key: string;
  session_token: string;
  expiration: string;
  [extra: string]: unknown;
}
export type Credential = JwtCredential | VaultCredential | AwsCredential;

/** What `POST /v1/credentials` (or collecting an approved request) answers. */
export interface CredentialGrant {
  lease: Lease;
  credential: Credential;
}

export type ApprovalState = "pending_approval" | "approved" | "denied" | "expired" | "collected";

/** A credential request waiting for an operator (202 from `POST /v1/credentials`). */
export interface PendingRequest {
  id: string;
  state: ApprovalState;
  role?: string;
  task_id?: string;
  expires_at?: string;
  [extra: string]: unknown;
}

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

/** `GET /v1/admin/leases/{id}/history`: the four questions of DESIGN.md I8. */
export interface LeaseHistory {
  lease: Lease;
  requested_by: { workload: string; task: TaskContext };
  identity: Lease["identity"];
  allowed_by: Lease["policy"];
  ended: { state: LeaseState; trigger: RevocationTrigger; by?: string; reason?: string; at?: string; revoked_at: string | null } | null;
  events: AuditEvent[];
}

export type Introspection = { active: false } | ({ active: true; lease_id: string; role: string; sub: string; task_id: string; exp: number } & Record<string, unknown>);
