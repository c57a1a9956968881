/** The lease, as stored and as shown by the API (docs/ARCHITECTURE.md, Lease record; the API shape is a public contract). */
export const LEASE_STATES = ["issuing", "active", "revoking", "revoked", "expired", "revoke_failed"] as const;
export type LeaseState = (typeof LEASE_STATES)[number];
export type RevocationTrigger = "expiry" | "task_completed" | "owner" | "operator" | "policy_change" | "issue_failed" | "parent_revoked";
export type BackendKind = "jwt" | "vault" | "aws_sts";


/** The task a credential is for (docs/ARCHITECTURE.md, Request path): the policy engine's own shape. */
import type { TaskContext } from "../policy/types";
export type { TaskContext };

export interface Lease {
  id: string;
  role: string;
  backend: BackendKind;
  workload: string;
  task_id: string;
  state: LeaseState;
  /** RFC 3339 UTC. */
  issued_at: string;
  expires_at: string;
  backend_expires_at?: string;
  revoked_at?: string;
  revocation?: { trigger: RevocationTrigger; by?: string; reason?: string; at?: string };
  /** What "revoked" means for this backend: cut at the backend, or deny attached, or only expiry. */
  revocation_kind: "revocable" | "deny_by_session" | "expiry_only";
  /** I8: which identity was used. */
  identity: { kind: "oidc" | "spiffe"; issuer: string; subject: string };
  /** I8: which policy allowed it. */
  policy: { ids: string[]; hash: string };
  task: TaskContext;
  ttl_seconds: number;
  /** Set when an operator approved the request this lease was issued for. */
  approval?: { request_id: string; approved_by: string };
  /** Delegation (RFC 8693): the lease this one was exchanged from (src/oauth). */
  parent_lease_id?: string;
  /** The person the chain acts for (on-behalf-of): the issuer (config name) and subject of their ID token. */
  on_behalf_of?: { issuer: string; subject: string };
  last_error?: string;
  revoke_attempts?: number;
}
