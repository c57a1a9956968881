/**
 * The audit ledger: an append-only, hash-chained Redis stream of everything that happens to a
 * lease (I8 in docs/ARCHITECTURE.md), written without secret material (I6).
 *
 * Redis keys (all under the keyspace's hash tag `{p}`; passed in as options until the integrator
 * moves them into src/redis/keys.ts):
 *
 *   {p}:audit              stream (`opts.streamKey`). One entry per event, fields:
 *                            e = canonical JSON of the event (keys sorted recursively; no seq/hash/prev)
 *                            h = sha256hex(p + "\n" + e)
 *                            p = h of the previous entry ("0" x 64 for the first event)
 *                          Entry ids are assigned by the ledger (see "ids" below). No TTL.
 *                          Trimmed only if `maxLen` is set (XTRIM MAXLEN ~ in the same transaction).
 *   {p}:audit:head         string (`opts.headKey`): h of the last entry. No TTL.
 *   {p}:audit:lease:<id>   list (`opts.leaseIndexPrefix` + lease id, so the prefix includes the
 *                          trailing colon): the stream ids of that lease's events, in chain order.
 *                          EXPIRE `leaseIndexTtlSeconds`, refreshed on every append for the lease.
 *
 * One linear chain across processes (group commit): appends queue up inside a process and are
 * flushed one batch at a time through an optimistic transaction on a dedicated connection:
 *   WATCH head stream; GET head; XINFO STREAM stream      (one round trip)
 *   compute the batch's ids and hashes in order
 *   MULTI; XADD stream <id> e .. h .. p .. (each); RPUSH/EXPIRE the lease indexes; SET head; EXEC
 * EXEC answers null when another process committed in between (WATCH conflict): the whole batch
 * is recomputed and retried. WATCH is connection state, so the ledger owns a connection used for
 * nothing else (`opts.watchConnection()`, default `redis.duplicate()`), closed by `close()`.
 *
 * Ids: the ledger assigns explicit stream ids (`max(now, last-generated ms)`-`seq`), strictly
 * greater than the stream's last-generated-id read under WATCH, instead of `XADD *`. That way
 * the ids are known before EXEC and the per-lease index is written in the same transaction as
 * the events (a crash cannot leave an event out of its lease's history). Because the stream key
 * is WATCHed too, no id can collide at EXEC time.
 *
 * Secrets (I6): an event containing, at any depth, a key named token, secret, password,
 * secret_access_key, session_token, credential(s), client_secret, access_token, id_token,
 * refresh_token, secret_id, private_key or authorization (case-insensitive, `-`/`_` ignored) is
 * refused with an error naming the field path only, never the value; nothing of it is written.
 *
 * Trimming: off by default. With `maxLen`, the oldest entries go (approximately); the chain of the
 * remaining entries still verifies when `verifyAuditChain` is called with
 * `{ allowTrimmedStart: true }`: it then anchors on the first remaining entry's `p` instead of
 * requiring "0" x 64 (a deleted *first* entry is then indistinguishable from trimming).
 */
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { BrokerError } from "../core/errors";

export type AuditEventType =
  | "decision"
  | "mint"
  | "revocation_requested"
  | "revoked"
  | "expired"
  | "revoke_failed"
  | "issue_failed"
  | "task_completed"
  | "bulk_revocation"
  | "policy_reload"
  | "approval"
  | (string & {});

export interface AuditEvent {
  type: AuditEventType;
  /** RFC 3339. */
  at: string;
  lease_id?: string;
  task_id?: string;
  workload?: string;
  /** Who caused it: a workload id or "system". */
  actor?: string;
  [k: string]: unknown;
}

export interface StoredAuditEvent extends AuditEvent {
  /** Stream entry id. */
  seq: string;
  hash: string;
  prev: string;
}

export interface AuditLedger {
  /** Resolves once the event is committed (durable as far as Redis is) with its place in the chain. */
  append(event: AuditEvent): Promise<StoredAuditEvent>;
  /** Commits the events atomically and contiguously, in order (all or none). */
  appendMany(events: AuditEvent[]): Promise<StoredAuditEvent[]>;
  /** The lease's events in chain order, the first `limit` (default 1000). */
  byLease(leaseId: string, limit?: number): Promise<StoredAuditEvent[]>;
  /**
   * Events in chain order from `from` (a stream id, inclusive; prefix it with "(" to make it
   * exclusive, as when paging on from the last seq seen; default "-"), at most `count` (default 100,
   * max 10000).
   */
  range(opts: { from?: string; count?: number }): Promise<StoredAuditEvent[]>;
  /** Flushes what is queued, then closes the ledger's own connection. Later appends reject. */
  close(): Promise<void>;
}

export interface AuditLedgerOptions {
  streamKey: string;
  headKey: string;
  /** Lease index key = leaseIndexPrefix + lease id (e.g. `{jit}:audit:lease:`). */
  leaseIndexPrefix: string;
  /** TTL of a lease's index; should match the lease record's retention. */
  leaseIndexTtlSeconds: number;
  logger?: Logger;
  /** Approximate cap on the stream length (XTRIM MAXLEN ~). Default: no trimming. */
  maxLen?: number;
  /** Creates the dedicated WATCH connection. Default: `redis.duplicate()`. The ledger closes it. */
  watchConnection?: () => Redis;
  /** Most events committed in one transaction. Default 512. */
  maxBatch?: number;
  /** Clock for stream ids (ms since epoch). Default Date.now. */
  now?: () => number;
  /**
   * Keep each lease's event ids in a field of an existing hash (the lease record) instead of a
   * list of its own: space-separated stream ids, appended only while that hash exists, so the
   * index lives and expires with the lease and costs no key of its own. Without it, the list
   * `leaseIndexPrefix + id` is used.
   */
  leaseIndexField?: { hashKey: (leaseId: string) => string; field: string };
}

/** Appends ARGV[2] to hash field ARGV[1] of KEYS[1], only if the hash exists. */
const APPEND_FIELD = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then v = v .. ' ' .. ARGV[2] else v = ARGV[2] end
redis.call('HSET', KEYS[1], ARGV[1], v)
return 1
`;

export const GENESIS_HASH = "0".repeat(64);

const SECRET_KEYS = new Set(
  [
    "token",
    "secret",
    "password",
    "secret_access_key",
    "session_token",
    "credential",
    "credentials",
    "client_secret",
    "access_token",
    "id_token",
    "refresh_token",
    "secret_id",
    "private_key",
    "authorization",
  ].map(normalizeKey),
);

function normalizeKey(k: string): string {
  return k.toLowerCase().replace(/[-_]/g, "");
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const STREAM_ID = /^\d+-\d+$/;
const RANGE_START = /^(-|\(?\d+(-\d+)?)$/;

function refuse(detail: string, reason: string): BrokerError {
  return new BrokerError("internal", `audit event refused: ${detail}`, { reason });
}

/**
 * Canonical JSON: object keys sorted (by UTF-16 code units, Array.prototype.sort's default) at
 * every depth, no whitespace, `undefined` object members omitted, `toJSON()` honoured (Dates).
 * Anything JSON cannot carry faithfully (bigint, functions, symbols, NaN/Infinity, undefined in an
 * array, class instances without toJSON, cycles) is an error rather than silently changed.
 * Keys that name secret material are refused (I6). Errors name the path only, never a value.
 */
export function canonicalJSON(value: unknown): string {
  return canon(value, "$", new Set());
}

function canon(value: unknown, path: string, stack: Set<object>): string {
  if (value === null) return "null";
  if (typeof value === "object" && typeof (value as { toJSON?: unknown }).toJSON === "function") {
    return canon((value as { toJSON: () => unknown }).toJSON(), path, stack);
  }
  switch (typeof value) {
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) throw refuse(`${path} is not a finite number`, "audit_invalid_event");
      return JSON.stringify(value);
    case "object": {
      if (stack.has(value)) throw refuse(`${path} is circular`, "audit_invalid_event");
      stack.add(value);
      try {
        if (Array.isArray(value)) {
          return `[${value
            .map((v, i) => {
              if (v === undefined) throw refuse(`${path}[${i}] is undefined`, "audit_invalid_event");
              return canon(v, `${path}[${i}]`, stack);
            })
            .join(",")}]`;
        }
        const proto = Object.getPrototypeOf(value);
        if (proto !== Object.prototype && proto !== null) throw refuse(`${path} is not a plain object`, "audit_invalid_event");
        const rec = value as Record<string, unknown>;
        const parts: string[] = [];
        for (const k of Object.keys(rec).sort()) {
          const childPath = `${path}.${k}`;
          if (SECRET_KEYS.has(normalizeKey(k))) throw refuse(`field ${childPath} names secret material (I6)`, "audit_secret_field");
          const v = rec[k];
          if (v === undefined) continue;
          parts.push(`${JSON.stringify(k)}:${canon(v, childPath, stack)}`);
        }
        return `{${parts.join(",")}}`;
      } finally {
        stack.delete(value);
      }
    }
    default:
      throw refuse(`${path} has type ${typeof value}, which JSON cannot carry`, "audit_invalid_event");
  }
}

/** The chain hash of one entry: sha256hex(prev + "\n" + canonical event JSON). */
export function auditHash(prev: string, canonicalEvent: string): string {
  return createHash("sha256").update(`${prev}\n${canonicalEvent}`, "utf8").digest("hex");
}

/** Validates an event and returns its canonical JSON (without seq/hash/prev). Throws on refusal. */
function prepare(event: AuditEvent): string {
  if (event === null || typeof event !== "object" || Array.isArray(event)) throw refuse("not an object", "audit_invalid_event");
  if (typeof event.type !== "string" || event.type.length === 0) throw refuse("type must be a non-empty string", "audit_invalid_event");
  if (typeof event.at !== "string" || !RFC3339.test(event.at) || Number.isNaN(Date.parse(event.at))) {
    throw refuse("at must be an RFC 3339 timestamp", "audit_invalid_event");
  }
  for (const k of ["lease_id", "task_id", "workload", "actor"] as const) {
    if (event[k] !== undefined && (typeof event[k] !== "string" || (event[k] as string).length === 0)) {
      throw refuse(`${k} must be a non-empty string`, "audit_invalid_event");
    }
  }
  for (const k of ["seq", "hash", "prev"] as const) {
    // These belong to the chain; an event field of that name would be lost on read.
    if (k in event) throw refuse(`field ${k} is reserved for the chain`, "audit_invalid_event");
  }
  return canonicalJSON(event);
}

interface Pending {
  events: { e: string; leaseId: string | undefined }[];
  resolve(stored: StoredAuditEvent[]): void;
  reject(err: unknown): void;
}

function fieldsToMap(fields: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) m.set(fields[i]!, fields[i + 1]!);
  return m;
}

function toStored(id: string, fields: string[]): StoredAuditEvent {
  const f = fieldsToMap(fields);
  const e = f.get("e");
  const parsed: Record<string, unknown> = e === undefined ? {} : (JSON.parse(e) as Record<string, unknown>);
  return { ...(parsed as AuditEvent), seq: id, hash: f.get("h") ?? "", prev: f.get("p") ?? "" };
}

function parseId(id: string): { ms: number; seq: number } {
  const [ms, seq] = id.split("-");
  return { ms: Number(ms ?? 0), seq: Number(seq ?? 0) };
}

/** `last-generated-id` out of an XINFO STREAM reply (a flat name/value array). */
function lastGeneratedId(info: unknown): string {
  if (!Array.isArray(info)) return "0-0";
  for (let i = 0; i + 1 < info.length; i += 2) {
    if (info[i] === "last-generated-id") return String(info[i + 1]);
  }
  return "0-0";
}

function waitReady(conn: Redis, timeoutMs: number): Promise<void> {
  if (conn.status === "ready") return Promise.resolve();
  if (conn.status === "wait") void conn.connect().catch(() => undefined);
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      clearTimeout(timer);
      conn.off("ready", onReady);
      conn.off("end", onEnd);
    };
    const onReady = (): void => {
      cleanup();
      resolve();
    };
    const onEnd = (): void => {
      cleanup();
      reject(new Error("audit ledger connection closed"));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error("audit ledger connection not ready"));
    }, timeoutMs);
    conn.on("ready", onReady);
    conn.on("end", onEnd);
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Wraps Redis failures so callers see 503 store_unavailable (I7); keeps BrokerErrors as they are. */
function storeError(e: unknown, what: string): BrokerError {
  if (e instanceof BrokerError) return e;
  return new BrokerError("store_unavailable", `the audit ledger (Redis) could not ${what}`, { cause: e, reason: "redis" });
}

const MAX_ATTEMPTS = 200;

export function createAuditLedger(redis: Redis, opts: AuditLedgerOptions): AuditLedger {
  const { streamKey, headKey, leaseIndexPrefix, logger } = opts;
  const ttl = Math.floor(opts.leaseIndexTtlSeconds);
  if (!(ttl > 0)) throw new Error("leaseIndexTtlSeconds must be a positive number");
  if (opts.maxLen !== undefined && !(Number.isInteger(opts.maxLen) && opts.maxLen > 0)) throw new Error("maxLen must be a positive integer");
  const maxBatch = opts.maxBatch ?? 512;
  const now = opts.now ?? Date.now;

  const queue: Pending[] = [];
  let flushing = false;
  let closed = false;
  let drained: (() => void)[] = [];
  let conn: Redis | undefined;

  function watchConn(): Redis {
    if (!conn) {
      conn = opts.watchConnection ? opts.watchConnection() : redis.duplicate({ connectionName: "jitbroker-audit" });
      conn.on("error", () => undefined); // failures surface on the commands; avoid unhandled 'error'
    }
    return conn;
  }

  /** One optimistic attempt: null on a WATCH conflict, else the stored events in order. */
  async function tryCommit(c: Redis, batch: Pending[]): Promise<StoredAuditEvent[][] | null> {
    const read = await c.pipeline().watch(headKey, streamKey).get(headKey).xinfo("STREAM", streamKey).exec();
    if (!read) throw new Error("pipeline aborted");
    const [watchRes, headRes, infoRes] = read;
    if (watchRes?.[0]) throw watchRes[0];
    if (headRes?.[0]) throw headRes[0];
    const head = (headRes?.[1] as string | null) ?? GENESIS_HASH;
    let last = { ms: 0, seq: 0 };
    if (infoRes?.[0]) {
      if (!/no such key/i.test(infoRes[0].message)) throw infoRes[0];
    } else {
      last = parseId(lastGeneratedId(infoRes?.[1]));
    }

    let prev = head;
    let ms = Math.max(now(), last.ms);
    let seq = ms === last.ms ? last.seq : -1;
    const multi = c.multi();
    const byLease = new Map<string, string[]>();
    const out: StoredAuditEvent[][] = [];
    for (const p of batch) {
      const stored: StoredAuditEvent[] = [];
      for (const ev of p.events) {
        seq += 1;
        if (seq > Number.MAX_SAFE_INTEGER - 1) {
          ms += 1;
          seq = 0;
        }
        const id = `${ms}-${seq}`;
        const hash = auditHash(prev, ev.e);
        if (opts.maxLen !== undefined) multi.xadd(streamKey, "MAXLEN", "~", String(opts.maxLen), id, "e", ev.e, "h", hash, "p", prev);
        else multi.xadd(streamKey, id, "e", ev.e, "h", hash, "p", prev);
        if (ev.leaseId !== undefined) {
          const ids = byLease.get(ev.leaseId) ?? [];
          ids.push(id);
          byLease.set(ev.leaseId, ids);
        }
        stored.push({ ...(JSON.parse(ev.e) as AuditEvent), seq: id, hash, prev });
        prev = hash;
      }
      out.push(stored);
    }
    for (const [leaseId, ids] of byLease) {
      if (opts.leaseIndexField) {
        multi.eval(APPEND_FIELD, 1, opts.leaseIndexField.hashKey(leaseId), opts.leaseIndexField.field, ids.join(" "));
      } else {
        multi.rpush(leaseIndexPrefix + leaseId, ...ids);
        multi.expire(leaseIndexPrefix + leaseId, ttl);
      }
    }
    multi.set(headKey, prev);
    const res = await multi.exec();
    if (res === null) return null;
    const failed = res.find(([err]) => err);
    if (failed?.[0]) {
      // Redis does not roll back a transaction whose commands fail at EXEC time; only a wrongly
      // typed key can cause that here. Make it loud: `audit verify` will show the damage.
      logger?.error({ err: failed[0].message, stream: streamKey }, "audit transaction partly failed");
      throw failed[0];
    }
    return out;
  }

  async function commit(batch: Pending[]): Promise<void> {
    try {
      const c = watchConn();
      await waitReady(c, 5000);
      for (let attempt = 1; ; attempt++) {
        let result: StoredAuditEvent[][] | null;
        try {
          result = await tryCommit(c, batch);
        } catch (e) {
          await c.unwatch().catch(() => undefined);
          throw e;
        }
        if (result) {
          batch.forEach((p, i) => {
            const stored = result[i]!;
            if (logger) for (const s of stored) logger.info({ audit: s }, "audit");
            p.resolve(stored);
          });
          return;
        }
        if (attempt >= MAX_ATTEMPTS) throw new Error(`gave up after ${attempt} conflicting attempts`);
        // Another process committed first; its batch is in, so the system made progress.
        // Back off a little (with jitter) once conflicts repeat, so two busy processes interleave.
        if (attempt > 2) await sleep(Math.random() * Math.min(2 ** (attempt - 2), 20));
      }
    } catch (e) {
      const err = storeError(e, "record the event");
      for (const p of batch) p.reject(err);
    }
  }

  async function flush(): Promise<void> {
    if (flushing) return;
    flushing = true;
    try {
      // Let every append issued in the current tick join the first batch.
      await new Promise<void>((r) => setImmediate(r));
      while (queue.length > 0) {
        const batch: Pending[] = [];
        let n = 0;
        while (queue.length > 0 && (batch.length === 0 || n + queue[0]!.events.length <= maxBatch)) {
          const p = queue.shift()!;
          n += p.events.length;
          batch.push(p);
        }
        await commit(batch);
      }
    } finally {
      flushing = false;
      const waiters = drained;
      drained = [];
      for (const w of waiters) w();
    }
  }

  function enqueue(events: AuditEvent[]): Promise<StoredAuditEvent[]> {
    if (closed) return Promise.reject(new BrokerError("store_unavailable", "the audit ledger is closed", { reason: "closed" }));
    let prepared: Pending["events"];
    try {
      prepared = events.map((ev) => ({ e: prepare(ev), leaseId: ev.lease_id }));
    } catch (e) {
      return Promise.reject(e);
    }
    if (prepared.length === 0) return Promise.resolve([]);
    return new Promise<StoredAuditEvent[]>((resolve, reject) => {
      queue.push({ events: prepared, resolve, reject });
      void flush();
    });
  }

  async function readEntries(ids: string[]): Promise<StoredAuditEvent[]> {
    if (ids.length === 0) return [];
    const p = redis.pipeline();
    for (const id of ids) p.xrange(streamKey, id, id);
    const res = (await p.exec()) ?? [];
    const out: StoredAuditEvent[] = [];
    for (const [err, entries] of res) {
      if (err) throw err;
      for (const [id, fields] of (entries as [string, string[]][]) ?? []) out.push(toStored(id, fields));
    }
    return out;
  }

  return {
    async append(event) {
      const [stored] = await enqueue([event]);
      return stored!;
    },

    appendMany(events) {
      return enqueue(events);
    },

    async byLease(leaseId, limit = 1000) {
      if (!Number.isInteger(limit) || limit < 1) throw new BrokerError("invalid_request", "limit must be a positive integer");
      try {
        const ids = opts.leaseIndexField
          ? ((await redis.hget(opts.leaseIndexField.hashKey(leaseId), opts.leaseIndexField.field)) ?? "").split(" ").filter(Boolean).slice(0, limit)
          : await redis.lrange(leaseIndexPrefix + leaseId, 0, limit - 1);
        // Entries trimmed away (maxLen) are simply absent.
        return await readEntries(ids.filter((id) => STREAM_ID.test(id)));
      } catch (e) {
        throw storeError(e, "read the lease history");
      }
    },

    async range({ from = "-", count = 100 }) {
      if (!RANGE_START.test(from)) throw new BrokerError("invalid_request", "from must be a stream id, optionally prefixed with \"(\"");
      if (!Number.isInteger(count) || count < 1 || count > 10000) throw new BrokerError("invalid_request", "count must be an integer from 1 to 10000");
      try {
        const entries = await redis.xrange(streamKey, from, "+", "COUNT", count);
        return entries.map(([id, fields]) => toStored(id, fields));
      } catch (e) {
        throw storeError(e, "read the audit stream");
      }
    },

    async close() {
      closed = true;
      while (flushing || queue.length > 0) {
        await new Promise<void>((r) => {
          drained.push(r);
          if (!flushing) void flush();
        });
      }
      const c = conn;
      conn = undefined;
      if (c) await c.quit().catch(() => c.disconnect());
    },
  };
}

export interface AuditVerifyResult {
  ok: boolean;
  /** Entries examined (the walk goes on past a break, re-anchoring on the stored hashes). */
  checked: number;
  /** The first problem, at the entry where it shows: for a deleted entry, the one after the gap. */
  firstBreak?: { seq: string; reason: string };
}

/**
 * Walks the whole stream in order (XRANGE pages of 1000) and checks every entry: `h` recomputed
 * from `p` and `e`, `p` equal to the previous entry's `h` ("0" x 64 for the first, unless
 * `allowTrimmedStart`), and the head equal to the last entry's `h`.
 *
 * Safe to run while appends go on: the head is read before and after the walk; if it moved, the
 * head read first must be the hash of an entry that was walked (newer entries are chained anyway).
 */
export async function verifyAuditChain(
  redis: Redis,
  opts: { streamKey: string; headKey: string; allowTrimmedStart?: boolean },
): Promise<AuditVerifyResult> {
  const PAGE = 1000;
  const headBefore = await redis.get(opts.headKey);
  let checked = 0;
  let firstBreak: AuditVerifyResult["firstBreak"];
  const fail = (seq: string, reason: string): void => {
    if (!firstBreak) firstBreak = { seq, reason };
  };
  let prevHash: string | undefined;
  let lastSeq = "";
  let headBeforeSeen = headBefore === null;
  let start = "-";
  for (;;) {
    const page = await redis.xrange(opts.streamKey, start, "+", "COUNT", PAGE);
    for (const [id, fields] of page) {
      checked++;
      const f = fieldsToMap(fields);
      const e = f.get("e");
      const h = f.get("h");
      const p = f.get("p");
      if (e === undefined || h === undefined || p === undefined) {
        fail(id, "entry lacks one of the fields e, h, p");
        prevHash = h;
        lastSeq = id;
        continue;
      }
      if (prevHash === undefined) {
        if (checked === 1 && p !== GENESIS_HASH && !opts.allowTrimmedStart) {
          fail(id, `first entry's prev is not the genesis hash (entries before it are missing)`);
        }
      } else if (p !== prevHash) {
        fail(id, `prev does not match the hash of the preceding entry ${lastSeq} (an entry is missing, inserted or reordered)`);
      }
      if (auditHash(p, e) !== h) fail(id, "hash does not match the entry's content (event or prev altered)");
      else {
        try {
          JSON.parse(e);
        } catch {
          fail(id, "event is not valid JSON");
        }
      }
      if (h === headBefore) headBeforeSeen = true;
      prevHash = h;
      lastSeq = id;
    }
    if (page.length < PAGE) break;
    start = `(${page[page.length - 1]![0]}`;
  }
  const headAfter = await redis.get(opts.headKey);
  if (headAfter === headBefore) {
    if (checked === 0) {
      if (headAfter !== null) fail("", "head is set but the stream is empty");
    } else if (headAfter === null) {
      fail(lastSeq, "head is missing");
    } else if (headAfter !== prevHash) {
      fail(lastSeq, "head does not match the last entry's hash (head altered or entries removed from the end)");
    }
  } else if (!headBeforeSeen) {
    fail(lastSeq, "head does not match any entry's hash (head altered or entries removed from the end)");
  }
  return firstBreak ? { ok: false, checked, firstBreak } : { ok: true, checked };
}
