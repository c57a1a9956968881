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
 * `recheckLease` (src/authz/recheck.ts) is the pure part (no I/O, table-tested); `reauthorizeLeases`
 * walks Redis and `revokeForPolicyChange` (src/leases/policy-change.ts) ends what it refuses.
 */
import type { Logger } from "pino";
import type { AuditLedger } from "../audit/ledger";
import { recheckLease, type RecheckInputs } from "../authz/recheck";
import type { LeaseMetrics } from "../leases/metrics";
import { revokeForPolicyChange } from "../leases/policy-change";
import type { RevocationQueue } from "../leases/queue";
import type { LeaseStore, StoredLease } from "../leases/store";

/** Longest stretch of decisions without yielding the event loop (docs/BENCHMARKS.md: re-authorization). */
const SLICE_MS = 10;

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
