/**
 * A lease decided again (docs/ARCHITECTURE.md, Revocation paths): when the policy set or the
 * inventory changes, and when either changed while the lease's own credential was being minted.
 * The lease is decided with the context it was issued with (its task, the TTL it asked for, its
 * approval, the time it was issued at) against the current policies and inventory. A delegated
 * lease is decided as `Action::"delegate"` with the `context.delegation` it was issued with, a
 * lease acting for a person with its `context.on_behalf_of`. Pure: no I/O; the walk over Redis is
 * `reauthorizeLeases` (src/policy/reauthorize.ts).
 */
import type { RoleConfig } from "../config/schema";
import type { WorkloadMatcher } from "../identity/workloads";
import type { DecisionInputs, StoredLease } from "../leases/store";
import type { PolicyEngine } from "../policy/types";
import { decisionContext, roleResource } from "./context";
import { leasePrincipal } from "./principal";
import { leaseStillGranted } from "./refusals";

export interface Recheck {
  allowed: boolean;
  /** Why a lease must go (shown in the lease's revocation and its audit event). */
  reason?: string;
}

export interface RecheckInputs {
  policy: PolicyEngine;
  roles: Map<string, RoleConfig>;
  workloads: Pick<WorkloadMatcher, "get">;
  timeZone?: string;
  /** delegation.max_depth: a delegated lease deeper than this is no longer allowed. */
  maxDepth?: number;
}

/** The Cedar context a delegated or on-behalf-of lease was decided with (empty for others). */
export function chainContext(lease: Pick<StoredLease, "delegation" | "obo">): Record<string, unknown> {
  const d = lease.delegation;
  return {
    ...(d ? { delegation: { depth: d.depth, from: d.chain[d.chain.length - 1] ?? "", chain: d.chain } } : {}),
    ...(lease.obo ? { on_behalf_of: lease.obo } : {}),
  };
}

/** `lease` needs only its decision inputs: a whole StoredLease, or what the walk reads (`decisionInputs`). */
export function recheckLease(lease: DecisionInputs, inputs: RecheckInputs): Recheck {
  const granted = leaseStillGranted(lease, inputs);
  if (granted.refused !== undefined) return { allowed: false, reason: granted.refused };
  const { workload: w, role } = granted;
  const d = inputs.policy.decide({
    principal: leasePrincipal(w, lease),
    action: lease.delegation ? "delegate" : "request",
    resource: roleResource(role),
    context: {
      ...decisionContext({ task: lease.task, ttlSeconds: lease.asked_ttl_seconds, approved: lease.approval !== undefined, atMs: lease.issued_ms, timeZone: inputs.timeZone }),
      ...chainContext(lease),
    },
  });
  const hash = d.policyHash.slice(0, 12);
  if (d.decision !== "allow") {
    const by = d.policyIds.length > 0 ? ` (forbidden by ${d.policyIds.join(", ")})` : " (no permit matches)";
    return { allowed: false, reason: `policy set ${hash} no longer allows it${by}` };
  }
  if (d.approvalRequired && lease.approval === undefined) return { allowed: false, reason: `policy set ${hash} now requires approval (${d.policyIds.join(", ")})` };
  if (d.maxTtlSeconds !== undefined && lease.ttl_seconds > d.maxTtlSeconds) return { allowed: false, reason: `policy set ${hash} now allows at most ${d.maxTtlSeconds}s` };
  return { allowed: true };
}
