/**
 * The revocation queue (BullMQ) and its worker, the expiry poller, and the sweeper that is the
 * safety net (I3).
 *
 * Expiry is scheduled by the lease itself: `{p}:leases:due` (src/leases/store.ts) holds every
 * live lease with its expiry as score, written in the same script as the lease. The worker's
 * poller walks that set every `expiry_poll_interval` (EXPIRE_DUE: expired, untriggered leases
 * are moved to revoking, in batches of 500) and revokes what it moved; leases whose revocation is
 * already in flight are passed over, so they never stall it. No per-lease job exists, which is
 * most of a lease's Redis memory saved (docs/BENCHMARKS.md). What is revoked together is also
 * ended together: one FINISH script and one audit transaction per batch (src/leases/revoker.ts).
 *
 * Queue `revocations` under each shard's hash tag (`{p}:revocations:*`, BullMQ's own keys; one
 * queue and one BullMQ Worker per shard with `redis.shards` > 1, a job on its lease's shard) for
 * the revocation work that needs retries and backoff. Jobs (custom ids contain no ':' as BullMQ
 * requires):
 *   r-<lease id>   "revoke"  immediate: completion, owner, operator, policy change, failed issue,
 *                            and every revocation that failed once (the poller hands it over)
 *   b-<op id>      "bulk"    a bulk revocation by selector (task, workload, role, issuer)
 *   x-<lease id>   "expire"  written by earlier versions (one delayed job per lease); still
 *                            processed, so leases issued before an upgrade expire on time
 * Failed revocations are retried with capped exponential backoff and jitter, without limit:
 * a revocation is never dropped. The sweeper revokes whatever is due in every shard's
 * `{p}:leases:due` and more than `graceMs` late, which covers a poller that stopped (its process
 * died) or fell behind; one sweeper at a time holds `{p}:sweeper` (base tag), released
 * owner-checked. The poller walks every shard's due set.
 */
import { luaScript, registerScripts, runScript } from "../redis/scripts";
import { randomBytes } from "node:crypto";
import { Queue, Worker, type Job, type JobType } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { AuditLedger } from "../audit/ledger";
import type { Keyspace } from "../redis/keys";
import type { LeaseMetrics } from "./metrics";
import { backoffMs, toRetry, type Revoker } from "./revoker";
import type { LeaseStore, RevokingLease, ShardStore } from "./store";
import type { RevocationTrigger } from "./types";

export const QUEUE_NAME = "revocations";
const FOREVER = 2 ** 31 - 1;
/** Leases a bulk revocation triggers and revokes per step (one TRIGGER, one FINISH, one audit transaction). */
const BULK_CHUNK = 1000;
/** Steps of a bulk revocation, or batches of the expiry poller, revoked at once. */
const IN_FLIGHT = 4;
/** Batches of the expiry poller already ended whose audit events may still be committing (bounds what waits in memory). */
const RECORDING = 16;

export type Selector = "lease" | "task" | "workload" | "role" | "issuer";

export interface BulkJobData {
  op: string;
  selector: Selector;
  value: string;
  trigger: RevocationTrigger;
  by?: string;
  reason?: string;
}

const RELEASE_LOCK = luaScript<number>("jitSweeperLockRelease", `
-- KEYS: 1 lock.  ARGV: 1 owner token.  Output: 1 released, 0 held by another (or expired)
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

const jobOpts = { attempts: FOREVER, backoff: { type: "jitter" }, removeOnComplete: true, removeOnFail: true } as const;

export function createRevocationQueue(connection: Redis, keys: Keyspace) {
  // One queue per shard, under the shard's tag (a job's keys and its lease's on one shard).
  const queues = keys.shardKeys.map((sk) => {
    const queue = new Queue(QUEUE_NAME, { connection, prefix: sk.tag });
    // BullMQ 6 re-emits connection errors on the queue, and prints them when nobody listens;
    // they surface on the commands (the caller sees them), so no second report here.
    queue.on("error", () => undefined);
    return queue;
  });
  const byTag = new Map(keys.shardKeys.map((sk, i) => [sk.tag, queues[i]!]));
  const ofId = (id: string) => byTag.get(keys.forId(id).tag)!;
  return {
    /** Shard 0's queue (the only one with one shard). */
    queue: queues[0]!,
    queues,
    async revokeSoon(leaseIds: string[]): Promise<unknown[]> {
      if (leaseIds.length === 0) return [];
      const groups = new Map<Queue, string[]>();
      for (const id of leaseIds) {
        const q = ofId(id);
        groups.set(q, [...(groups.get(q) ?? []), id]);
      }
      const added = await Promise.all([...groups].map(([q, ids]) => q.addBulk(ids.map((id) => ({ name: "revoke", data: { lease: id }, opts: { ...jobOpts, jobId: `r-${id}` } })))));
      return added.flat();
    },
    /** A bulk job runs on the op's shard; it visits every shard the selector can match. */
    bulk: (data: BulkJobData) => ofId(data.op).add("bulk", data, { ...jobOpts, jobId: `b-${data.op}` }),
    /** Job counts summed over the shards' queues. */
    async getJobCounts(...types: JobType[]): Promise<Record<string, number>> {
      const all = await Promise.all(queues.map((q) => q.getJobCounts(...types)));
      const out: Record<string, number> = {};
      for (const c of all) for (const [k, v] of Object.entries(c)) out[k] = (out[k] ?? 0) + v;
      return out;
    },
    close: () => Promise.all(queues.map((q) => q.close())).then(() => undefined),
  };
}

export type RevocationQueue = ReturnType<typeof createRevocationQueue>;

export interface WorkerOptions {
  /** Opens the worker's and the sweeper's own connections (src/redis/connect.ts). */
  connect: (name: string, use: "blocking" | "request") => Redis;
  /** The queues' shards (a worker per shard queue) and the sweeper's lock. */
  keys: Keyspace;
  store: LeaseStore;
  revoker: Revoker;
  queue: RevocationQueue;
  audit: AuditLedger;
  metrics: LeaseMetrics;
  logger: Logger;
  concurrency: number;
  /** How often the poller walks the expiry schedule (worker.expiry_poll_interval). */
  expiryPollMs?: number;
  sweepIntervalMs: number;
  graceMs: number;
  /** A lease still `issuing` this long after issue lost its activation (worker.mint_timeout). */
  mintTimeoutMs?: number;
  /** Where worker and sweeper errors go (counted, logged once per change of state). */
  onError?: (connection: string, e: unknown) => void;
  onRecovered?: (connection: string) => void;
  now?: () => number;
  /** OpenTelemetry (src/telemetry): runs each job in a trace of its own. */
  traceJob?: <T>(name: string, jobId: string, fn: () => Promise<T>) => Promise<T>;
}

export function startRevocationWorker(opts: WorkerOptions) {
  const now = opts.now ?? Date.now;
  const onError = opts.onError ?? ((connection: string, e: unknown) => opts.logger.warn({ connection, err: { message: (e as Error).message } }, "revocation worker error; retrying"));
  // BullMQ's Worker blocks its connection: one per shard queue.
  const shardCount = opts.keys.shardKeys.length;
  const workerConns = opts.keys.shardKeys.map((_, i) => opts.connect(shardCount === 1 ? "jitbroker-worker" : `jitbroker-worker-${i}`, "blocking"));
  const sweeperConn = opts.connect("jitbroker-sweeper", "request");
  registerScripts(sweeperConn, [RELEASE_LOCK]);

  /**
   * A bulk revocation: walks the selector's live set (SSCAN, BULK_CHUNK at a time), triggering each chunk
   * (first trigger wins: leases triggered by someone else are not counted or revoked here) and
   * revoking it while the walk goes on, at most IN_FLIGHT chunks in flight. `triggered` is counted in the
   * op as each chunk is triggered; `state: triggered` is written once every chunk was revoked
   * (or handed to a retrying job). A process that dies meanwhile leaves the job to be retried
   * (BullMQ) and what it triggered to the sweeper.
   */
  async function processBulk(data: BulkJobData): Promise<void> {
    const sel = data.selector === "lease" ? null : data.selector;
    let triggered = 0;
    const chunks: AsyncIterable<string[]> = sel === null ? (async function* () { yield [data.value]; })() : opts.store.liveIds(sel, data.value, BULK_CHUNK);
    const inFlight = new Set<Promise<void>>();
    let failure: { e: unknown } | null = null;
    for await (const ids of chunks) {
      if (failure) break;
      // The moved leases come back as revocation needs them (no second read).
      const moved = await opts.store.triggerForRevocation(ids, { trigger: data.trigger, by: data.by, reason: data.reason, op: data.op });
      if (moved.length === 0) continue;
      triggered += moved.length;
      // Counted before the revocations can finish (revoked never runs ahead of triggered), and
      // added to, so that a retried job's count continues the first attempt's.
      await opts.store.incrOp(data.op, "triggered", moved.length);
      const p: Promise<void> = (async () => {
        const outcome = await opts.revoker.revokeLeases(moved);
        // Leases that failed get their own retrying job; the bulk job moves on (I4).
        await opts.queue.revokeSoon(toRetry(outcome));
      })()
        .catch((e: unknown) => void (failure ??= { e }))
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= IN_FLIGHT) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    if (failure) throw (failure as { e: unknown }).e;
    await opts.store.updateOp(data.op, { state: "triggered", finished_at: new Date(now()).toISOString() });
    if (triggered > 0) opts.logger.info({ op: data.op, triggered }, "bulk revocation triggered");
  }

  /**
   * The expiry poller: walks the due set from its head (EXPIRE_DUE), triggering expired live
   * leases 500 at a time, and revokes each batch while it walks on (at most IN_FLIGHT batches in
   * flight). Entries of leases already triggered are passed over by offset, so a head of
   * revocations in flight (a slow backend, a bulk revocation) cannot hide an expired lease behind
   * it. `trigger` is first-wins: processes polling at once take disjoint leases. A revocation that
   * fails continues as a retrying "revoke" job.
   */
  let polling = false;
  async function pollExpiries(): Promise<number> {
    if (polling) return 0;
    polling = true;
    const inFlight = new Set<Promise<void>>();
    // Audit appends of ended batches still being committed: the walk goes on meanwhile (the
    // events are queued in the ledger already), up to RECORDING of them; the poll ends when all
    // are committed, so one poll's events are in before the next poll starts.
    const recording = new Set<Promise<void>>();
    try {
      const at = now();
      let moved = 0;
      // Each shard's due set in turn (one with one shard).
      for (const shard of opts.store.shardStores) moved += await walkExpiries(shard, at, async (_ids, leases) => {
        const p: Promise<void> = opts.revoker
          .revokeLeases(leases, { awaitRecords: false })
          .then((outcome) => {
            const r = outcome.recorded.finally(() => recording.delete(r));
            recording.add(r);
            return opts.queue.revokeSoon(toRetry(outcome));
          })
          .then(
            () => undefined,
            (e: unknown) => onError("expiry", e), // the sweeper takes these over after sweep_grace
          )
          .finally(() => inFlight.delete(p));
        inFlight.add(p);
        if (inFlight.size >= IN_FLIGHT) await Promise.race(inFlight);
        while (recording.size >= RECORDING) await Promise.race(recording);
      });
      await Promise.all(inFlight);
      await Promise.all(recording);
      opts.onRecovered?.("expiry");
      return moved;
    } catch (e) {
      await Promise.all(inFlight);
      await Promise.all(recording);
      onError("expiry", e);
      return 0;
    } finally {
      polling = false;
    }
  }

  async function processLease(job: Job<{ lease: string }>): Promise<void> {
    const id = job.data.lease;
    if (job.name === "expire") {
      // A delayed job of an earlier version: expire the lease if it is due (else the poller will).
      const moved = await opts.store.trigger([id], { trigger: "expiry", onlyIfExpired: true });
      if (moved.length === 0) return;
    }
    const outcome = await opts.revoker.revoke([id]);
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

  const workers = opts.keys.shardKeys.map((sk, i) => {
    const worker = new Worker(
      QUEUE_NAME,
      async (job: Job) => {
        const run = () => (job.name === "bulk" ? processBulk(job.data as BulkJobData) : processLease(job as Job<{ lease: string }>));
        return opts.traceJob ? opts.traceJob(`job ${job.name}`, job.id ?? "", run) : run();
      },
      {
        connection: workerConns[i]!,
        prefix: sk.tag,
        concurrency: opts.concurrency,
        settings: { backoffStrategy: (attemptsMade: number) => backoffMs(attemptsMade) },
        // For jobs that do not say (expiry jobs of earlier versions): keep nothing finished.
        removeOnComplete: { count: 0 },
        removeOnFail: { count: 0 },
        // After a Redis error the fetch loop waits this long (BullMQ's default, 15 s, would delay
        // revocations after a failover; the sweeper covers the gap either way).
        runRetryDelay: 1000,
        autorun: true,
      },
    );
    // Errors are counted and logged on change of state (src/redis/health.ts), never one line each.
    worker.on("error", (e) => onError(shardCount === 1 ? "worker" : `worker-${i}`, e));
    return worker;
  });

  // The sweeper: one instance at a time cluster-wide (a short Redis lock per tick).
  // Owner-checked: a tick that outlived its lock must not release the next holder's.
  const lockKey = opts.keys.sweeper;
  const lockToken = `${process.pid}-${randomBytes(9).toString("base64url")}`;
  let sweeping = false;
  async function sweep(): Promise<number> {
    // Not connected (yet, or during an outage): the next tick sweeps. /readyz reports Redis; a
    // warning per tick here would only repeat it.
    if (sweeping || sweeperConn.status !== "ready") return 0;
    sweeping = true;
    try {
      const got = await sweeperConn.set(lockKey, lockToken, "PX", Math.max(1000, opts.sweepIntervalMs * 2), "NX");
      if (got !== "OK") return 0;
      let total = 0;
      for (;;) {
        const ids = await opts.store.due(now() - opts.graceMs, 500);
        if (ids.length === 0) break;
        await opts.store.trigger(ids, { trigger: "expiry", onlyIfExpired: true });
        const outcome = await opts.revoker.revoke(ids);
        total += outcome.done.length;
        if (outcome.done.length === 0) break; // the rest are failing: their retry time moved on
      }
      if (total > 0) opts.logger.info({ revoked: total }, "sweeper revoked overdue leases");
      await runScript(sweeperConn, RELEASE_LOCK, [lockKey], [lockToken]);
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
  const pollTimer = setInterval(() => void pollExpiries(), opts.expiryPollMs ?? 50);
  pollTimer.unref();

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
    /** Shard 0's worker (the only one with one shard). */
    worker: workers[0]!,
    workers,
    sweep,
    pollExpiries,
    reconcileIssuing,
    async close(): Promise<void> {
      clearInterval(timer);
      clearInterval(pollTimer);
      clearInterval(reconcileTimer);
      // Running jobs may finish (bounded): a worker whose Redis is gone must still shut down.
      await Promise.all(
        workers.map(async (worker) => {
          if (!(await within(worker.close(), 10_000))) await within(worker.close(true), 2000);
        }),
      );
      for (const c of workerConns) c.disconnect();
      sweeperConn.disconnect();
    },
  };
}

export type RevocationWorker = ReturnType<typeof startRevocationWorker>;

/**
 * One walk of the expiry schedule at time `at`: EXPIRE_DUE from the head of the due set, `scan`
 * entries per step, each step triggering at most `batch` expired live leases, handed to
 * `onMoved` with the leases as revocation needs them, read by the same script (awaited: it
 * applies the back-pressure). Entries of leases already triggered stay in
 * place and are stepped over by offset; moved leases leave the range (score `at` + IN_FLIGHT_MS,
 * src/leases/store.ts), so later walks do not step over them again while they are revoked.
 * Stops at the end of what is due, or after `maxSteps`. Returns how many leases it moved.
 */
export async function walkExpiries(
  store: Pick<ShardStore, "expireDue">,
  at: number,
  onMoved: (ids: string[], leases: RevokingLease[]) => Promise<void>,
  { scan = 2000, batch = 500, maxSteps = 200 }: { scan?: number; batch?: number; maxSteps?: number } = {},
): Promise<number> {
  let offset = 0;
  let moved = 0;
  for (let step = 0; step < maxSteps; step++) {
    const r = await store.expireDue(at, offset, scan, batch);
    if (r.moved.length > 0) {
      moved += r.moved.length;
      await onMoved(r.moved, r.leases);
    }
    // The end of what is due: fewer entries than asked, and none left unwalked for the batch cap.
    if (r.scanned < scan && r.moved.length < batch) break;
    offset += r.scanned - r.moved.length;
  }
  return moved;
}

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
