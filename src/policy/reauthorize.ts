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
 *
 * Cost (docs/ARCHITECTURE.md, Revocation paths; docs/BENCHMARKS.md, Issue 17): leases that agree
 * on everything a decision reads share one Cedar call (`memoizeDecisions`, src/policy/memo.ts),
 * and leases that agree on everything `recheckLease` reads share its answer (`memoizeRechecks`),
 * so the walk is bounded by reading the leases. It reads only their decision inputs
 * (`store.decisionInputs`: 250 leases' fields but the handle and the history, one script call
 * and one JSON reply, after a ZSCAN of their ids), on its own connection, three batches ahead of
 * the one it decides; shards side by side; revocations of refused leases in flight meanwhile.
 */
import type { Logger } from "pino";
import type { AuditLedger } from "../audit/ledger";
import type { RecheckInputs } from "../authz/recheck";
import type { LeaseMetrics } from "../leases/metrics";
import { revokeForPolicyChange } from "../leases/policy-change";
import type { RevocationQueue } from "../leases/queue";
import { isUnreadable, type DecisionInputs, type LeaseStore, type ShardStore, type UnreadableLease } from "../leases/store";
import { memoizeDecisions, memoizeRechecks } from "./memo";

/** Longest stretch of synchronous work without yielding the event loop (docs/BENCHMARKS.md: re-authorization). */
const SLICE_MS = 5;
/**
 * Lease ids per ZSCAN and per read (one `jitLeaseDecisionInputs` call). Redis runs a read as one
 * script, so this bounds how long a read keeps other clients waiting (≈ 1–2 ms at 250 leases).
 */
const BATCH = 250;
/**
 * Batches read ahead of the one being decided: the reads' round trips overlap the decisions (on a
 * loaded machine a round trip, not Redis's work, is what a read costs). The reads go over the
 * walk's own connection (src/broker.ts), so they never queue in front of the request path's commands.
 */
const READ_AHEAD = 3;
/** Revocation calls (trigger, queue, audit) in flight while the walk goes on. */
const REVOKING = 4;
/** Shards (`redis.shards`) walked at the same time. */
const SHARDS_AT_ONCE = 4;
/** Distinct decisions kept per walk (src/policy/memo.ts). */
const MEMO_ENTRIES = 20_000;

export interface ReauthorizationReport {
  policy_hash: string;
  reevaluated: number;
  revoked: number;
  kept: number;
  /** Leases that were already being revoked or were still being issued (not re-evaluated). */
  skipped: number;
}

/**
 * `load` applied to each item of `source` in order, up to `ahead` items ahead of the consumer:
 * the next batches are read from Redis while this one is decided. A batch that fails is
 * reported when the consumer reaches it.
 */
async function* readAhead<T, U>(source: AsyncGenerator<T>, load: (x: T) => Promise<U>, ahead: number): AsyncGenerator<U> {
  const pending: Promise<{ done: true } | { done: false; value: U }>[] = [];
  let ended = false;
  const fill = () => {
    while (!ended && pending.length < ahead + 1) {
      // Async generators answer next() calls in order, so the ids stay in ZSCAN order.
      const p = source.next().then(async (n) => {
        if (n.done) {
          ended = true;
          return { done: true as const };
        }
        return { done: false as const, value: await load(n.value) };
      });
      p.catch(() => undefined); // awaited below; not an unhandled rejection meanwhile
      pending.push(p);
    }
  };
  try {
    for (;;) {
      fill();
      const next = await pending.shift()!;
      if (next.done) return;
      yield next.value;
    }
  } finally {
    ended = true;
    await source.return(undefined).catch(() => undefined);
  }
}

export async function reauthorizeLeases(
  deps: RecheckInputs & {
    store: LeaseStore;
    /** The store the walk reads through: the same keys on the walk's own connection (src/broker.ts). Default: `store`. */
    reader?: LeaseStore;
    queue: RevocationQueue;
    audit: AuditLedger;
    metrics: LeaseMetrics;
    logger: Logger;
    now: () => number;
  },
  cause: { actor: string; source: string },
): Promise<ReauthorizationReport> {
  const report: ReauthorizationReport = { policy_hash: deps.policy.set().hash, reevaluated: 0, revoked: 0, kept: 0, skipped: 0 };
  const at = () => new Date(deps.now()).toISOString();
  // Leases with the same decision inputs share one Cedar call (src/policy/memo.ts).
  const policy = memoizeDecisions(deps.policy, { maxEntries: MEMO_ENTRIES });
  // And leases that agree on everything recheckLease reads share its answer (memoizeRechecks).
  const recheck = memoizeRechecks({ ...deps, policy } satisfies RecheckInputs, { maxEntries: MEMO_ENTRIES });
  const started = performance.now();

  const revoking = new Set<Promise<void>>();
  let revokeError: unknown;
  const revoke = async (group: (DecisionInputs | UnreadableLease)[], reason: string) => {
    while (revoking.size >= REVOKING) await Promise.race(revoking);
    if (revokeError !== undefined) throw revokeError;
    const p = revokeForPolicyChange(deps, group, reason, cause.actor, report.policy_hash).then(
      (moved) => {
        report.revoked += moved.length;
        // The others were triggered by something else meanwhile: they are being revoked anyway.
        report.skipped += group.length - moved.length;
      },
      (e: unknown) => {
        revokeError ??= e;
      },
    );
    const tracked = p.finally(() => revoking.delete(tracked));
    revoking.add(tracked);
  };

  let sliceStart = performance.now();
  let stop = false;
  /** One shard's live leases, batch by batch: read (the next batches while this one is decided), decide, revoke. */
  const walkShard = async (shard: ShardStore) => {
    // ZSCAN may return an id twice: each lease is counted and decided once.
    const seen = new Set<string>();
    const batches = readAhead(
      shard.allLiveIds(BATCH),
      (batch: string[]) => {
        // Runs in ZSCAN order, as each batch's ids arrive.
        const ids = batch.filter((id) => !seen.has(id));
        for (const id of ids) seen.add(id);
        return shard.decisionInputs(ids);
      },
      READ_AHEAD,
    );
    for await (const { leases, skipped } of batches) {
      if (stop) return;
      // Being issued (decided again by its own request once minted, service.issue), being revoked or ended.
      report.skipped += skipped.length;
      const byReason = new Map<string, (DecisionInputs | UnreadableLease)[]>();
      for (const l of leases) {
        // Give other requests the event loop every few ms.
        if (performance.now() - sliceStart > SLICE_MS) {
          await new Promise((r) => setImmediate(r));
          sliceStart = performance.now();
        }
        report.reevaluated++;
        // A lease that cannot be decided again is not known to be allowed: it goes (fail closed).
        const reason = isUnreadable(l) ? `its decision inputs cannot be read (${l.unreadable})` : recheck(l).reason;
        if (reason === undefined) {
          report.kept++;
          continue;
        }
        const group = byReason.get(reason);
        if (group) group.push(l);
        else byReason.set(reason, [l]);
      }
      for (const [reason, group] of byReason) await revoke(group, reason);
    }
  };

  // Shards are walked side by side, a few at a time (each one's reads overlap the others' decisions).
  const shards = (deps.reader ?? deps.store).shardStores;
  let next = 0;
  let walkError: unknown;
  const walker = async () => {
    while (!stop && next < shards.length) {
      const shard = shards[next++]!;
      await walkShard(shard).catch((e: unknown) => {
        walkError ??= e;
        stop = true;
      });
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(SHARDS_AT_ONCE, shards.length) }, walker));
  } finally {
    await Promise.all(revoking);
  }
  if (walkError !== undefined) throw walkError;
  if (revokeError !== undefined) throw revokeError;
  deps.metrics.reauthorized.inc({ outcome: "kept" }, report.kept);
  deps.metrics.reauthorized.inc({ outcome: "revoked" }, report.revoked);
  await deps.audit.append({ type: "reauthorization", at: at(), actor: cause.actor, source: cause.source, ...report });
  const memo = policy.stats();
  deps.logger.info({ ...report, source: cause.source, cedar_decisions: memo.evaluated, ms: Math.round(performance.now() - started) }, "active leases re-authorized");
  return report;
}
