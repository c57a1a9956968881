/** The shapes of the broker's answers the console reads (DESIGN.md section 5). */
export interface Lease {
  id: string;
  role: string;
  backend: string;
  workload: string;
  task_id: string;
  state: string;
  issued_at: string;
  expires_at: string;
  backend_expires_at?: string;
  revoked_at?: string;
  revocation?: { trigger: string; by?: string; reason?: string; at?: string };
  revocation_kind: string;
  identity: { kind: string; issuer: string; subject: string };
  policy: { ids: string[]; hash: string };
  task: { id: string; intent: string; tool: string; destination: string; sensitivity: string };
  ttl_seconds: number;
  approval?: { request_id: string; approved_by: string };
  parent_lease_id?: string;
  on_behalf_of?: { issuer?: string; subject?: string };
  last_error?: string;
  revoke_attempts?: number;
}

export interface AuditEvent {
  type: string;
  at: string;
  actor?: string;
  seq: string;
  [k: string]: unknown;
}

export interface LeaseHistory {
  lease: Lease;
  requested_by: { workload: string; task: Lease["task"] };
  identity: Lease["identity"];
  allowed_by: Lease["policy"];
  ended: { state: string; trigger: string; by?: string; reason?: string; revoked_at: string | null } | null;
  events: AuditEvent[];
}

export interface ApprovalRequest {
  id: string;
  state: string;
  workload: string;
  role: string;
  task_id: string;
  task: Lease["task"];
  ttl_seconds?: number;
  created_at: string;
  expires_at?: string;
  decided_by?: string;
  decided_at?: string;
  reason?: string;
  lease_id?: string;
}

export interface Session {
  operator: { id: string; kind: string; owner: string; purpose: string; issuer: string };
  csrf_token: string;
  idle_expires_at: string;
  expires_at: string;
  can: { admin_read: boolean; admin_revoke: boolean };
}

export interface RevocationProgress {
  id: string;
  matched: number;
  triggered: number;
  revoked: number;
  failed: number;
  state: string;
  reason?: string;
  by?: string;
}

export interface WorkloadRow {
  id: string;
  kind: string;
  owner: string;
  purpose: string;
  issuer: string;
  live_leases: number;
  last_lease_at: string | null;
}

export interface Health {
  readiness: {
    ready: boolean;
    checks: {
      redis: string;
      issuers: { name: string; state?: string; [k: string]: unknown }[];
      backends: { name: string; state: string; detail?: string; [k: string]: unknown }[];
      audit_sinks?: { name: string; type: string; state: string; position: string | null; lag_seconds: number; consecutive_failures: number; last_error?: string }[];
    };
  };
  redis: { mode: string; role: string };
  leases: { live: number; revoke_failed: number };
  revoke_failed: Lease[];
}
