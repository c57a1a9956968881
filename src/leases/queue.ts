/**
 * The revocation queue (BullMQ) and its worker, plus the sweeper that is the safety net (I3).
 *
 * Queue `revocations` under the broker's hash tag (`{p}:revocations:*`, BullMQ's own keys).
 * Jobs (custom ids contain no ':' as BullMQ requires):
 *   x-<lease id>   "expire"  delayed until the lease's expires_at; triggers expiry, then revokes
 *   r-<lease id>   "revoke"  immediate: completion, owner, operator, policy change, failed issue
 *   b-<op id>      "bulk"    a bulk revocation by selector (task, workload, role, issuer)
 * Failed revocations are retried with capped exponential backoff and jitter, without limit:
 * a revocation is never dropped. The sweeper revokes whatever is due in `{p}:leases:due` and
 * more than `graceMs` late, which covers delayed jobs that fire late or were lost.
 */
import { Queue, Worker, type Job } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { AuditLedger } from "../audit/ledger";
import type { LeaseMetrics } from "./metrics";
import { backoffMs, toRetry, type Revoker } from "./revoker";
import type { LeaseStore } from "./store";
import type { RevocationTrigger } from "./types";

export const QUEUE_NAME = "revocations";
const FOREVER = 2 ** 31 - 1;

export type Selector = "lease" | "task" | "workload" | "role" | "issuer";

export interface BulkJobData {
  op: string;
  selector: Selector;
  value: string;
  trigger: RevocationTrigger;
  by?: string;
  reason?: string;
}

const jobOpts = { attempts: FOREVER, backoff: { type: "jitter" }, removeOnComplete: true, removeOnFail: true } as const;

export function createRevocationQueue(connection: Redis, prefix: string) {
  const queue = new Queue(QUEUE_NAME, { connection, prefix });
  // BullMQ 6 re-emits connection errors on the queue, and prints them when nobody listens;
  // they surface on the commands (the caller sees them), so no second report here.
  queue.on("error", () => undefined);
  return {
    queue,
    /** The fast path for expiry: a delayed job at the lease's expiry (I1: before the mint). */
    scheduleExpiry: (leaseId: string, expiresAt: number, now = Date.now()) =>
      // Minimal options, one per active lease: BullMQ stores them as JSON in the job hash, and
      // under 64 bytes the hash keeps Redis's compact encoding (the memory budget: docs/ARCHITECTURE.md, Lease record).
      // No retries here: a failed expiry hands over to a retrying "revoke" job (processLease),
      // and the worker's removeOnComplete/removeOnFail apply.
      queue.add("expire", { lease: leaseId }, { jobId: `x-${leaseId}`, delay: Math.max(0, expiresAt - now) }),
    revokeSoon: (leaseIds: string[]) =>
      leaseIds.length === 0 ? Promise.resolve([]) : queue.addBulk(leaseIds.map((id) => ({ name: "revoke", data: { lease: id }, opts: { ...jobOpts, jobId: `r-${id}` } }))),
    bulk: (data: BulkJobData) => queue.add("bulk", data, { ...jobOpts, jobId: `b-${data.op}` }),
    /** Drops the expiry job of a lease that ended early (saves memory; the job would no-op). */
    dropExpiry: async (leaseIds: string[]) => {
      await Promise.all(leaseIds.map((id) => queue.remove(`x-${id}`).catch(() => 0)));
    },
    close: () => queue.close(),
  };
}

export type RevocationQueue = ReturnType<typeof createRevocationQueue>;

export interface WorkerOptions {
  /** Opens the worker's and the sweeper's own connections (src/redis/connect.ts). */
  connect: (name: string, use: "blocking" | "request") => Redis;
  prefix: string;
  store: LeaseStore;
  revoker: Revoker;
  queue: RevocationQueue;
  audit: AuditLedger;
  metrics: LeaseMetrics;
  logger: Logger;
  concurrency: number;
  sweepIntervalMs: number;
  graceMs: number;
  /** A lease still `issuing` this long after issue lost its activation (worker.mint_timeout). */
  mintTimeoutMs?: number;
  /** Where worker and sweeper errors go (counted, logged once per change of state). */
  onError?: (connection: string, e: unknown) => void;
  onRecovered?: (connection: string) => void;
  now?: () => number;
}

export function startRevocationWorker(opts: WorkerOptions) {
  const now = opts.now ?? Date.now;
  const onError = opts.onError ?? ((connection: string, e: unknown) => opts.logger.warn({ connection, err: { message: (e as Error).message } }, "revocation worker error; retrying"));
  const workerConn = opts.connect("jitbroker-worker", "blocking");
  const sweeperConn = opts.connect("jitbroker-sweeper", "request");

  async function processBulk(data: BulkJobData): Promise<void> {
    const sel = data.selector === "lease" ? null : data.selector;
    let triggered = 0;
    const chunks: AsyncIterable<string[]> = sel === null ? (async function* () { yield [data.value]; })() : opts.store.liveIds(sel, data.value, 500);
    for await (const ids of chunks) {
      const moved = await opts.store.trigger(ids, { trigger: data.trigger, by: data.by, reason: data.reason, op: data.op });
      triggered += moved.length;
      await opts.store.updateOp(data.op, { triggered: String(triggered) });
      const outcome = await opts.revoker.revoke(moved);
      // Leases that failed get their own retrying job; the bulk job moves on (I4).
      await opts.queue.revokeSoon(toRetry(outcome));
      await opts.queue.dropExpiry(outcome.done);
    }
    await opts.store.updateOp(data.op, { state: "triggered", triggered: String(triggered), finished_at: new Date(now()).toISOString() });
  }

  /**
   * When one expiry job fires, the leases due at the same moment are revoked together, in
   * batches (one trigger script and one read per 500 leases) instead of one job at a time: a
   * burst of expiries costs a fraction of the per-job path. `trigger` is first-wins, so a lease
   * is revoked by exactly one batch or job; the others find it terminal. One batch at a time per
   * process; concurrent processes take disjoint leases.
   */
  let batching = false;
  async function expireDueBatch(): Promise<void> {
    if (batching) return;
    batching = true;
    try {
      for (let round = 0; round < 20; round++) {
        const ids = await opts.store.due(now(), 500);
        if (ids.length === 0) return;
        const moved = await opts.store.trigger(ids, { trigger: "expiry", onlyIfExpired: true });
        if (moved.length === 0) return; // the rest are already triggered (their jobs run) or not due
        const outcome = await opts.revoker.revoke(moved);
        await opts.queue.revokeSoon(toRetry(outcome));
      }
    } finally {
      batching = false;
    }
  }

  async function processLease(job: Job<{ lease: string }>): Promise<void> {
    const id = job.data.lease;
    if (job.name === "expire") {
      await expireDueBatch();
      // Common case first (one round trip): the lease is live and expired, so this moves it.
      const moved = await opts.store.trigger([id], { trigger: "expiry", onlyIfExpired: true });
      if (moved.length === 0) {
        // Not moved: gone, already triggered or terminal (the revoke below finishes or skips
        // it), or not expired yet.
        const lease = await opts.store.get(id);
        if (!lease) return;
        if (lease.expires_ms > now() + 1000) {
          // Fired early (clock skew between hosts): put it back until the real expiry.
          await opts.queue.scheduleExpiry(id, lease.expires_ms, now());
          return;
        }
      }
    }
    const outcome = await opts.revoker.revoke([id]);
    if (job.name === "revoke") await opts.queue.dropExpiry(outcome.done);
    // Delegated children revoked with this lease (the cascade) that failed get their own job.
    const others = toRetry(outcome).filter((f) => f !== id);
    if (others.length > 0) await opts.queue.revokeSoon(others);
    const mine = outcome.failed.find((f) => f.id === id);
    if (mine?.retry) {
      // Expiry jobs do not retry themselves: the revocation continues as a retrying job. (A
      // misconfigured backend is not retried here: the sweeper tries it again, see the revoker.)
      if (job.name === "expire") await opts.queue.revokeSoon([id]);
      else throw new Error(mine.error);
    }
  }

  const worker = new Worker(
    QUEUE_NAME,
    async (job: Job) => {
      if (job.name === "bulk") return processBulk(job.data as BulkJobData);
      return processLease(job as Job<{ lease: string }>);
    },
    {
      connection: workerConn,
      prefix: opts.prefix,
      concurrency: opts.concurrency,
      settings: { backoffStrategy: (attemptsMade: number) => backoffMs(attemptsMade) },
      // For jobs that do not say (expiry jobs): keep nothing finished.
      removeOnComplete: { count: 0 },
      removeOnFail: { count: 0 },
      // After a Redis error the fetch loop waits this long (BullMQ's default, 15 s, would delay
      // revocations after a failover; the sweeper covers the gap either way).
      runRetryDelay: 1000,
      autorun: true,
    },
  );
  // Errors are counted and logged on change of state (src/redis/health.ts), never one line each.
  worker.on("error", (e) => onError("worker", e));

  // The sweeper: one instance at a time cluster-wide (a short Redis lock per tick).
  const lockKey = `${opts.prefix}:sweeper`;
  let sweeping = false;
  async function sweep(): Promise<number> {
    // Not connected (yet, or during an outage): the next tick sweeps. /readyz reports Redis; a
    // warning per tick here would only repeat it.
    if (sweeping || sweeperConn.status !== "ready") return 0;
    sweeping = true;
    try {
      const got = await sweeperConn.set(lockKey, String(process.pid), "PX", Math.max(1000, opts.sweepIntervalMs * 2), "NX");
      if (got !== "OK") return 0;
      let total = 0;
      for (;;) {
        const ids = await opts.store.due(now() - opts.graceMs, 500);
        if (ids.length === 0) break;
        await opts.store.trigger(ids, { trigger: "expiry", onlyIfExpired: true });
        const outcome = await opts.revoker.revoke(ids);
        total += outcome.done.length;
        await opts.queue.dropExpiry(outcome.done);
        if (outcome.done.length === 0) break; // the rest are failing: their retry time moved on
      }
      if (total > 0) opts.logger.info({ revoked: total }, "sweeper revoked overdue leases");
      await sweeperConn.del(lockKey);
      opts.onRecovered?.("sweeper");
      return total;
    } catch (e) {
      onError("sweeper", e);
      return 0;
    } finally {
      sweeping = false;
    }
  }
  const timer = setInterval(() => void sweep(), opts.sweepIntervalMs);
  timer.unref();

  /**
   * I3 after a crash or failover: a lease whose activation was lost stays `issuing` (its
   * credential may have been minted, and no 201 answered it). Leases issued more than
   * `mintTimeoutMs` ago and still issuing are ended with trigger issue_failed (the revoker revokes
   * the credential where a handle exists, and ends the lease as never minted otherwise; Vault's
   * reconciliation finds an orphan Vault lease), instead of waiting for their expiry.
   * The scan walks the leases by issue time, from an hour before start, a bounded batch per tick.
   */
  const mintTimeoutMs = opts.mintTimeoutMs ?? 30_000;
  let scanFrom = now() - 3600_000;
  let reconciling = false;
  async function reconcileIssuing(): Promise<number> {
    if (reconciling) return 0;
    reconciling = true;
    let ended = 0;
    try {
      for (let round = 0; round < 4; round++) {
        const until = now() - mintTimeoutMs;
        const { ids, next } = await opts.store.stuckIssuing(scanFrom, until, 500);
        if (ids.length > 0) {
          const moved = await opts.store.trigger(ids, { trigger: "issue_failed", reason: "still issuing after worker.mint_timeout: its activation was lost (crash or failover)" });
          const outcome = await opts.revoker.revoke(moved);
          await opts.queue.revokeSoon(toRetry(outcome));
          ended += moved.length;
        }
        if (next === null) {
          scanFrom = until;
          break;
        }
        scanFrom = next;
      }
      if (ended > 0) opts.logger.warn({ leases: ended }, "ended leases stuck in issuing (their activation was lost)");
    } catch (e) {
      onError("reconciler", e);
    } finally {
      reconciling = false;
    }
    return ended;
  }
  const reconcileTimer = setInterval(() => void reconcileIssuing(), Math.max(1000, Math.min(5000, mintTimeoutMs / 2)));
  reconcileTimer.unref();

  return {
    worker,
    sweep,
    reconcileIssuing,
    async close(): Promise<void> {
      clearInterval(timer);
      clearInterval(reconcileTimer);
      // Running jobs may finish (bounded): a worker whose Redis is gone must still shut down.
      if (!(await within(worker.close(), 10_000))) await within(worker.close(true), 2000);
      workerConn.disconnect();
      sweeperConn.disconnect();
    },
  };
}

export type RevocationWorker = ReturnType<typeof startRevocationWorker>;

/** Resolves true when `p` settles within `ms`, false otherwise (never rejects). */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = p.then(
    () => true,
    () => true,
  );
  const late = new Promise<boolean>((r) => {
    timer = setTimeout(() => r(false), ms);
    timer.unref();
  });
  try {
    return await Promise.race([settled, late]);
  } finally {
    clearTimeout(timer);
  }
}
