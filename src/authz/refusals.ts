/**
 * Refusals the broker makes before asking any policy (docs/ARCHITECTURE.md, Operators and
 * authorization), whatever the policies say. One definition each, used by the operator check,
 * approvals, re-authorization and `jitbroker policy test|why` (which must not report as allowed
 * what the broker refuses first). Pure: each answers what is refused; the caller words its
 * answer (403, a simulation outcome, a revocation reason).
 */
import type { RoleConfig } from "../config/schema";
import { claimMatches, type Workload } from "../identity/workloads";

/** Actions only an operator may take: the admin actions and approving or denying a request. */
export type OperatorAction = "admin_read" | "admin_revoke" | "approve";

/** Only `human` workloads are operators: a service, an agent or a CI job never is. */
export const mayBeOperator = (workload: Pick<Workload, "kind">): boolean => workload.kind === "human";

/** Who made a request, or who is deciding it: the workload and, when known, the token's identity. */
export interface Party {
  workload: string;
  identity?: { issuer: string; subject: string };
}

/**
 * A workload can never approve its own request: the same workload, or the same person or
 * service under another workload (same issuer and subject).
 */
export function isOwnRequest(approver: Party, requester: Party): boolean {
  if (approver.workload === requester.workload) return true;
  const a = approver.identity;
  const r = requester.identity;
  return a !== undefined && r !== undefined && a.issuer === r.issuer && a.subject === r.subject;
}

/** What a lease was issued to and for, as stored on it. */
export interface LeaseGrant {
  workload: string;
  role: string;
  backend: string;
  ttl_seconds: number;
  identity: { issuer: string; subject: string };
  claims: Record<string, unknown>;
  delegation?: { depth: number } | null;
}

/**
 * Is a lease still within what the inventory allows before any policy is asked: its workload
 * still exists and still matches the identity the lease was issued to (issuer, subject, every
 * constrained claim, as the request-time matcher decides); its role still exists, with the same
 * backend and a max TTL no shorter than the lease's; a delegated lease is no deeper than
 * `delegation.max_depth`. Answers the workload and the role, or why the lease must go.
 */
export function leaseStillGranted(
  lease: LeaseGrant,
  inventory: { workloads: { get(id: string): Workload | undefined }; roles: Map<string, RoleConfig>; maxDepth?: number },
): { workload: Workload; role: RoleConfig; refused?: undefined } | { refused: string } {
  const w = inventory.workloads.get(lease.workload);
  if (!w) return { refused: `workload ${lease.workload} was removed from the inventory` };
  if (w.issuer !== lease.identity.issuer) return { refused: `workload ${w.id} is now bound to issuer ${w.issuer}` };
  if (w.subject !== undefined && w.subject !== lease.identity.subject) return { refused: `workload ${w.id} no longer matches subject ${lease.identity.subject}` };
  for (const [name, allowed] of Object.entries(w.claims)) {
    if (!claimMatches(lease.claims[name], allowed)) return { refused: `workload ${w.id} now requires claim ${name} to be one of ${JSON.stringify(allowed)}` };
  }
  const role = inventory.roles.get(lease.role);
  if (!role) return { refused: `role ${lease.role} was removed` };
  if (role.backend !== lease.backend) return { refused: `role ${lease.role} now uses backend ${role.backend}` };
  if (lease.ttl_seconds * 1000 > role.ttl.max) return { refused: `role ${lease.role} now allows at most ${Math.floor(role.ttl.max / 1000)}s` };
  if (lease.delegation && inventory.maxDepth !== undefined && lease.delegation.depth > inventory.maxDepth) {
    return { refused: `delegation.max_depth is now ${inventory.maxDepth} (this lease is ${lease.delegation.depth} hops deep)` };
  }
  return { workload: w, role };
}
