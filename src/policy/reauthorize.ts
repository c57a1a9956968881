/**
 * Continuous re-authorization (docs/ARCHITECTURE.md, Revocation paths; issue 4): when the policy set or the
 * inventory changes, every active lease is decided again, with the context it was issued with
 * (its task, the TTL it asked for, its approval, and the time it was issued at) against the new
 * policies and the current inventory. Leases no longer allowed are revoked with trigger
 * `policy_change`; a workload removed from the inventory loses all its leases (offboarding).
 *
 * A delegated lease (RFC 8693, src/oauth) is decided again as `Action::"delegate"` with the
 * `context.delegation` it was issued with (depth, from, chain); a lease acting for a person with
 * its `context.on_behalf_of`. Its ancestors are decided on their own: revoking one of them
 * revokes it too (the cascade, src/leases/revoker.ts).
 *
 * `recheckLease` is the pure part (no I/O, table-tested); `reauthorizeLeases` walks Redis.
 */
import type { Logger } from "pino";
import type { AuditLedger } from "../audit/ledger";
import type { RoleConfig } from "../config/schema";
import { claimMatches, type Workload, type WorkloadMatcher } from "../identity/workloads";
import type { LeaseMetrics } from "../leases/metrics";
import type { RevocationQueue } from "../leases/queue";
import type { LeaseStore, StoredLease } from "../leases/store";
import { decisionContext, roleResource } from "./context";
import type { PolicyEngine } from "./types";

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

/** Does the identity a lease was issued to still map to this workload of the inventory (as the request-time matcher decides)? */
function stillBound(lease: StoredLease, w: Workload): string | null {
  if (w.issuer !== lease.identity.issuer) return `workload ${w.id} is now bound to issuer ${w.issuer}`;
  if (w.subject !== undefined && w.subject !== lease.identity.subject) return `workload ${w.id} no longer matches subject ${lease.identity.subject}`;
  for (const [name, allowed] of Object.entries(w.claims)) {
    if (!claimMatches(lease.claims[name], allowed)) return `workload ${w.id} now requires claim ${name} to be one of ${JSON.stringify(allowed)}`;
  }
  return null;
}

export function recheckLease(lease: StoredLease, inputs: RecheckInputs): Recheck {
  const w = inputs.workloads.get(lease.workload);
  if (!w) return { allowed: false, reason: `workload ${lease.workload} was removed from the inventory` };
  const unbound = stillBound(lease, w);
  if (unbound) return { allowed: false, reason: unbound };
  const role = inputs.roles.get(lease.role);
  if (!role) return { allowed: false, reason: `role ${lease.role} was removed` };
  if (role.backend !== lease.backend) return { allowed: false, reason: `role ${lease.role} now uses backend ${role.backend}` };
  if (lease.ttl_seconds * 1000 > role.ttl.max) return { allowed: false, reason: `role ${lease.role} now allows at most ${Math.floor(role.ttl.max / 1000)}s` };
  if (lease.delegation && inputs.maxDepth !== undefined && lease.delegation.depth > inputs.maxDepth) {
    return { allowed: false, reason: `delegation.max_depth is now ${inputs.maxDepth} (this lease is ${lease.delegation.depth} hops deep)` };
  }
  const d = inputs.policy.decide({
    principal: { id: w.id, kind: w.kind, owner: w.owner, issuer: lease.identity.issuer, subject: lease.identity.subject, claims: lease.claims as Record<string, string> },
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

/** Longest stretch of decisions without yielding the event loop (docs/BENCHMARKS.md: re-authorization). */
const SLICE_MS = 10;

/**
 * Triggers revocation (trigger policy_change) of leases a policy no longer allows, queues them
 * and audits each one moved. Returns the ids this call moved (others were already triggered).
 */
export async function revokeForPolicyChange(
  deps: { store: LeaseStore; queue: RevocationQueue; audit: AuditLedger; now: () => number },
  leases: Pick<StoredLease, "id" | "workload" | "task_id">[],
  reason: string,
  actor: string,
  policyHash: string,
): Promise<string[]> {
  const moved = await deps.store.trigger(
    leases.map((l) => l.id),
    { trigger: "policy_change", by: actor, reason },
  );
  await deps.queue.revokeSoon(moved);
  const movedSet = new Set(moved);
  const at = new Date(deps.now()).toISOString();
  const events = leases
    .filter((l) => movedSet.has(l.id))
    .map((l) => ({ type: "revocation_requested" as const, at, lease_id: l.id, workload: l.workload, task_id: l.task_id, actor, trigger: "policy_change", reason, policy_hash: policyHash }));
  // The leases are triggered already: their events must not be lost with a failed append.
  if (events.length > 0) await deps.audit.appendMany(events).catch(() => events.forEach((e) => deps.audit.record(e)));
  return moved;
}

export interface ReauthorizationReport {
  policy_hash: string;
  reevaluated: number;
  revoked: number;
  kept: number;
  /** Leases that were already being revoked or were still being issued (not re-evaluated). */
  skipped: number;
}

export async function reauthorizeLeases(
  deps: RecheckInputs & { store: LeaseStore; queue: RevocationQueue; audit: AuditLedger; metrics: LeaseMetrics; logger: Logger; now: () => number },
  cause: { actor: string; source: string },
): Promise<ReauthorizationReport> {
  const report: ReauthorizationReport = { policy_hash: deps.policy.set().hash, reevaluated: 0, revoked: 0, kept: 0, skipped: 0 };
  const seen = new Set<string>();
  const at = () => new Date(deps.now()).toISOString();
  let sliceStart = performance.now();
  for await (const batch of deps.store.allLiveIds(500)) {
    const ids = batch.filter((id) => !seen.has(id));
    for (const id of ids) seen.add(id);
    const leases = await deps.store.getMany(ids);
    const byReason = new Map<string, StoredLease[]>();
    for (const l of leases) {
      // Each decision costs ~0.3 ms of Cedar: give other requests the event loop every ~10 ms.
      if (performance.now() - sliceStart > SLICE_MS) {
        await new Promise((r) => setImmediate(r));
        sliceStart = performance.now();
      }
      // An issuing lease is decided again by its own request once minted (service.issue).
      if (!l || l.state !== "active") {
        if (l) report.skipped++;
        continue;
      }
      report.reevaluated++;
      const r = recheckLease(l, deps);
      if (r.allowed) {
        report.kept++;
        continue;
      }
      const group = byReason.get(r.reason!);
      if (group) group.push(l);
      else byReason.set(r.reason!, [l]);
    }
    for (const [reason, group] of byReason) {
      const moved = await revokeForPolicyChange(deps, group, reason, cause.actor, report.policy_hash);
      report.revoked += moved.length;
      // The others were triggered by something else meanwhile: they are being revoked anyway.
      report.skipped += group.length - moved.length;
    }
  }
  deps.metrics.reauthorized.inc({ outcome: "kept" }, report.kept);
  deps.metrics.reauthorized.inc({ outcome: "revoked" }, report.revoked);
  await deps.audit.append({ type: "reauthorization", at: at(), actor: cause.actor, source: cause.source, ...report });
  deps.logger.info({ ...report, source: cause.source }, "active leases re-authorized");
  return report;
}
