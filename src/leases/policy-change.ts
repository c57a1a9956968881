/**
 * Revocation because a policy or the inventory no longer allows a lease (trigger
 * `policy_change`; docs/ARCHITECTURE.md, Revocation paths): used by the re-authorization walk
 * (src/policy/reauthorize.ts) and by issuance for a lease minted across a reload.
 */
import type { AuditLedger } from "../audit/ledger";
import type { RevocationQueue } from "./queue";
import type { LeaseStore, StoredLease } from "./store";

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
