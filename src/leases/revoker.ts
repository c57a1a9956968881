/**
 * Revocation: takes leases whose revocation was triggered (state revoking or revoke_failed),
 * revokes them at their backend and records the terminal state. Used by the BullMQ worker, the
 * bulk-revocation job and the sweeper alike, so there is exactly one revocation path.
 * Idempotent (I4): a lease that is already terminal is skipped; "already gone" at a backend is
 * the backend's own success.
 *
 * Cascade (RFC 8693 delegation, src/oauth): before a lease with delegated children is revoked at
 * its backend, its children are triggered (`parent_revoked`, first trigger wins) and revoked in
 * the same call, depth first, so one revocation ends the whole chain whatever its trigger. If the
 * cascade cannot be recorded, the parent's attempt fails and is retried like a backend failure.
 */
import type { Logger } from "pino";
import type { AuditLedger } from "../audit/ledger";
import { BackendError, backendErrorCode, type Backend, type BackendErrorCode } from "../backends/types";
import type { LeaseMetrics } from "./metrics";
import type { LeaseStore, RevokingLease } from "./store";

export interface RevokerOptions {
  store: LeaseStore;
  backends: Map<string, Backend>;
  audit: AuditLedger;
  metrics: LeaseMetrics;
  logger: Logger;
  now?: () => number;
  /** Attempts after which a lease shows `revoke_failed` (it is still retried). */
  failAfter: number;
  /** A lease still without a backend handle this long after issue was never minted. */
  mintTimeoutMs: number;
  /** Concurrent backend revocations per backend (protects the backend from a mass expiry). */
  concurrencyPerBackend: number;
}

export interface RevokeOutcome {
  done: string[];
  /** `retry: false` (a misconfigured backend): no immediate retry job; the next attempt is the sweeper's, MISCONFIGURED_RETRY_MS later. */
  failed: { id: string; attempts: number; error: string; code: BackendErrorCode; retry: boolean }[];
}

/**
 * A revocation that failed as `misconfigured` (the role's configuration or the lease's handle
 * can never work as it is) is not retried at the usual pace: it shows revoke_failed at once,
 * counts in jitbroker_revocation_errors_total{code="misconfigured"} (an alert), and is tried again
 * this much later, so that an operator's fix takes effect without anyone re-triggering it. The
 * credential's own expiry (I2) bounds it meanwhile.
 */
export const MISCONFIGURED_RETRY_MS = 3_600_000;

/** Most leases one FINISH script ends (and one audit transaction records). */
const MAX_FINISH = 500;

type Final = "revoked" | "expired" | "unchanged";
/** A lease's FINISH outcome, and the audit append of its batch (resolves once committed; never rejects). */
type Finished = { final: Final; recorded: Promise<void> };
const NOTHING_TO_RECORD: Promise<void> = Promise.resolve();

/** The ids of failed revocations that get an immediate retry job (all but the misconfigured). */
export const toRetry = (outcome: RevokeOutcome): string[] => outcome.failed.filter((f) => f.retry).map((f) => f.id);

/** The step of capped exponential backoff: 500 ms doubling per attempt, at most 60 s. */
export function maxBackoffMs(attempt: number, baseMs = 500, capMs = 60_000): number {
  return Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
}

/** Capped exponential backoff with jitter: a random point in [50%, 100%] of the step. */
export function backoffMs(attempt: number, baseMs = 500, capMs = 60_000, random = Math.random): number {
  return Math.round(maxBackoffMs(attempt, baseMs, capMs) * (0.5 + random() / 2));
}

function semaphore(limit: number) {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active >= limit) await new Promise<void>((r) => waiting.push(r));
    active++;
    try {
      return await fn();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

export function createRevoker(opts: RevokerOptions) {
  const now = opts.now ?? Date.now;
  const limits = new Map<string, ReturnType<typeof semaphore>>();
  const limitFor = (backend: string) => {
    let l = limits.get(backend);
    if (!l) limits.set(backend, (l = semaphore(opts.concurrencyPerBackend)));
    return l;
  };

  /** Triggers the live children of a lease being revoked; answers the ids this call moved. */
  async function cascade(lease: RevokingLease): Promise<string[]> {
    const kids = await opts.store.children(lease.id);
    if (kids.length === 0) return [];
    const trigger = lease.revocation?.trigger ?? "expiry";
    const reason = `parent lease ${lease.id} was revoked (${trigger})`;
    const by = lease.revocation?.by;
    const moved = await opts.store.trigger(kids, { trigger: "parent_revoked", ...(by ? { by } : {}), reason });
    if (moved.length > 0) {
      const at = new Date(now()).toISOString();
      const live = (await opts.store.forRevocation(moved)).filter((l): l is RevokingLease => l !== null);
      await opts.audit.appendMany(
        live.map((l) => ({ type: "revocation_requested", at, lease_id: l.id, workload: l.workload, task_id: l.task_id, actor: by ?? "system", trigger: "parent_revoked", parent_lease_id: lease.id, reason })),
      );
    }
    return moved;
  }

  /** `records` collects, per finished batch, the promise of its audit append (never rejects). */
  async function revokeIds(ids: string[], out: RevokeOutcome, records: Promise<void>[]): Promise<void> {
    await revokeAll(await opts.store.forRevocation(ids), out, records);
  }

  async function revokeAll(leases: readonly (RevokingLease | null)[], out: RevokeOutcome, records: Promise<void>[]): Promise<void> {
    await Promise.all(leases.map((l) => (l ? revokeOne(l, out, records) : undefined)));
  }

  async function revokeOne(lease: RevokingLease, out: RevokeOutcome, records: Promise<void>[]): Promise<void> {
    if (lease.state !== "revoking" && lease.state !== "revoke_failed") return;
    const backend = opts.backends.get(lease.backend);
    try {
      if (lease.has_children) {
        // Children first: they must not outlive the parent's revocation by a retry's backoff.
        const moved = await cascade(lease);
        if (moved.length > 0) await revokeIds(moved, out, records);
      }
      if (lease.handle === null) {
        // Issued but not (yet) minted: wait for the mint to record its handle, or time out. A
        // lease ended with issue_failed was ended by the broker that ran its mint, after the mint
        // returned without a credential: there is nothing to wait for, it ends now.
        if (lease.revocation?.trigger !== "issue_failed" && now() - lease.issued_ms < opts.mintTimeoutMs) throw new Error("mint still in progress");
      } else {
        if (!backend) throw new BackendError(`backend ${lease.backend} is not configured`, "misconfigured");
        await limitFor(lease.backend)(() => backend.revoke(lease, lease.handle!));
      }
    } catch (e) {
      const code = backendErrorCode(e);
      if (code === "gone") {
        // The credential no longer exists at its backend: that is the revocation's success (I4).
        opts.logger.info({ lease_id: lease.id, backend: lease.backend }, "credential already gone at its backend");
      } else {
        const attempts = (lease.revoke_attempts ?? 0) + 1;
        const error = (e as Error).message || String(e);
        const retry = code !== "misconfigured";
        const next = retry ? now() + maxBackoffMs(attempts) + 2000 : now() + MISCONFIGURED_RETRY_MS;
        const state = await opts.store.fail(lease, error, retry ? opts.failAfter : 1, next);
        opts.metrics.revocationFailures.inc({ backend: lease.backend });
        opts.metrics.revocationErrors.inc({ backend: lease.backend, code });
        if (retry) opts.logger.warn({ lease_id: lease.id, backend: lease.backend, attempts, code, error }, "revocation failed; will retry");
        else opts.logger.error({ lease_id: lease.id, backend: lease.backend, attempts, code, error }, `revocation cannot succeed as configured; next attempt in ${MISCONFIGURED_RETRY_MS / 60_000} min`);
        if (state === "now_failed") {
          await opts.audit.append({ type: "revoke_failed", at: new Date(now()).toISOString(), lease_id: lease.id, workload: lease.workload, task_id: lease.task_id, actor: "system", attempts, error });
        }
        out.failed.push({ id: lease.id, attempts, error, code, retry });
        return;
      }
    }
    // Recorded with the other leases whose revocation succeeded in this macrotask (finishSoon).
    const finished = await finishSoon(lease);
    if (finished.final !== "unchanged") out.done.push(lease.id);
    records.push(finished.recorded);
  }

  /**
   * Leases whose backend revocation succeeded are ended together: those that get here within one
   * macrotask (a batch of the poller or of a bulk revocation, all at once for the jwt backend,
   * whose revocation is state only) are finished by one FINISH script per shard and their events
   * appended by one audit transaction, instead of a script and an append each. A lease is still
   * recorded only after its own backend revocation succeeded; until FINISH it stays revoking in
   * the due set, so a process that dies in between leaves it to the sweeper (I3).
   */
  let finishing: { lease: RevokingLease; resolve: (f: Finished) => void; reject: (e: unknown) => void }[] = [];
  function finishSoon(lease: RevokingLease): Promise<Finished> {
    return new Promise<Finished>((resolve, reject) => {
      if (finishing.push({ lease, resolve, reject }) === 1) setImmediate(() => void finishBatch());
    });
  }

  async function finishBatch(): Promise<void> {
    const batch = finishing;
    finishing = [];
    const parts: (typeof batch)[] = [];
    for (let i = 0; i < batch.length; i += MAX_FINISH) parts.push(batch.slice(i, i + MAX_FINISH));
    await Promise.all(parts.map(finishPart));
  }

  async function finishPart(part: typeof finishing): Promise<void> {
    let finals: Final[];
    try {
      finals = await opts.store.finishMany(part.map((p) => p.lease));
    } catch (e) {
      for (const p of part) p.reject(e);
      return;
    }
    const at = now();
    const iso = new Date(at).toISOString();
    const events: Parameters<AuditLedger["append"]>[0][] = [];
    part.forEach(({ lease }, j) => {
      const final = finals[j]!;
      if (final === "unchanged") return; // someone else finished it
      const trigger = lease.revocation?.trigger ?? "expiry";
      if (lease.trigger_at !== null) opts.metrics.revocationLag.observe({ trigger }, Math.max(0, at - lease.trigger_at) / 1000);
      opts.metrics.leaseTransitions.inc({ state: final });
      events.push({
        type: final,
        at: iso,
        lease_id: lease.id,
        workload: lease.workload,
        task_id: lease.task_id,
        actor: lease.revocation?.by ?? "system",
        trigger,
        ...(lease.revocation?.reason ? { reason: lease.revocation.reason } : {}),
        backend: lease.backend,
        revocation_kind: lease.revocation_kind,
        ...(lease.handle === null ? { note: "never minted" } : {}),
      });
    });
    // The leases are terminal now, and no later attempt will record them (only the caller that
    // made the transition does, I4): if Redis went away since FINISH, each event is retried in
    // the background until it lands (audit.record) instead of being lost with this attempt. The
    // events are in the ledger's queue from here on (its close() flushes them); each caller
    // decides whether to wait for the commit (see revokeLeases).
    const recorded =
      events.length > 0
        ? opts.audit.appendMany(events).then(
            () => undefined,
            () => events.forEach((ev) => opts.audit.record(ev)),
          )
        : NOTHING_TO_RECORD;
    part.forEach((p, j) => p.resolve({ final: finals[j]!, recorded }));
  }

  return {
    /** Revokes the given (already triggered) leases. Never throws for one lease's failure (I4). */
    async revoke(ids: string[]): Promise<RevokeOutcome> {
      const out: RevokeOutcome = { done: [], failed: [] };
      const records: Promise<void>[] = [];
      await revokeIds(ids, out, records);
      await Promise.all(records);
      return out;
    },
    /**
     * `revoke` of leases already read as revocation needs them (the trigger that moved them
     * answered them: `store.triggerForRevocation`, the expiry poller's `expireDue`). Resolves once
     * their audit events are committed too, or, with `awaitRecords: false`, as soon as the leases
     * are terminal and their events queued in the ledger: `recorded` then resolves when those are
     * committed (it never rejects; an append that failed goes on in the background, audit.record).
     * The expiry poller uses that to end the next batch while the ledger commits this one.
     */
    async revokeLeases(leases: readonly RevokingLease[], { awaitRecords = true }: { awaitRecords?: boolean } = {}): Promise<RevokeOutcome & { recorded: Promise<void> }> {
      const out: RevokeOutcome = { done: [], failed: [] };
      const records: Promise<void>[] = [];
      await revokeAll(leases, out, records);
      const recorded = Promise.all(records).then(() => undefined);
      if (awaitRecords) await recorded;
      return { ...out, recorded };
    },
  };
}

export type Revoker = ReturnType<typeof createRevoker>;
