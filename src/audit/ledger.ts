/**
 * The audit ledger: an append-only, hash-chained Redis stream of everything that happens to a
 * lease (I8 in docs/ARCHITECTURE.md), written without secret material (I6).
 *
 * Redis keys (all under the keyspace's hash tag `{p}`; passed in as options until the integrator
 * moves them into src/redis/keys.ts):
 *
 *   {p}:audit              stream (`opts.streamKey`). One entry per event, fields:
 *                            e = canonical JSON of the event (keys sorted recursively; no seq/hash/prev)
 *                            h = the entry's link: HMAC-SHA256(audit key, p + "\n" + seq + "\n" + e)
 *                            p = h of the previous entry ("0" x 64 for the first event)
 *                            m = "1" (a keyed link; entries written before the key have no m and
 *                                h = sha256hex(p + "\n" + e): see src/audit/chain.ts)
 *                            n = the entry's ordinal: the stream's entries-added counter (XINFO
 *                                STREAM, Redis 7) once it is in. Bookkeeping only, outside the
 *                                link: events some sink has not confirmed = entries-added - n of
 *                                its position (src/audit/retention.ts). Absent on older entries.
 *                          Entry ids are assigned by the ledger (see "ids" below). No TTL:
 *                          retention trims the oldest entries (src/audit/retention.ts).
 *   {p}:audit:anchor       string (`opts.anchorKey`): the trim anchor, the mark "v1 <seq> <link>
 *                          <mac>" of the newest entry retention removed (written by retention).
 *   {p}:audit:head         string (`opts.headKey`): the head mark "v1 <seq> <link> <mac>" of the
 *                          last entry (a bare 64-hex hash on a chain not yet keyed). No TTL.
 *   {p}:audit:lease:<id>   list (`opts.leaseIndexPrefix` + lease id, so the prefix includes the
 *                          trailing colon): the stream ids of that lease's events, in chain order.
 *                          EXPIRE `leaseIndexTtlSeconds`, refreshed on every append for the lease.
 *
 * One linear chain across processes (group commit): appends queue up inside a process and are
 * flushed one batch at a time through an optimistic commit on a dedicated connection
 * (`opts.watchConnection()`, default `redis.duplicate()`, closed by `close()`), one round trip:
 *   compute the batch's ids and hashes in order from where this process last saw the chain
 *   (head mark, the stream's last-generated-id and entries-added: known from its own commits
 *   and the script's answers; an empty chain until the first)
 *   COMMIT script: if head and last-generated-id are still as seen: XADD stream <id> e .. h ..
 *   p .. (each), SET head, append to the lease indexes; else write nothing and answer them
 * A process that lost the race (another committed in between) learns the new state from that
 * answer and recomputes and retries the whole batch. Until issue 17 this was WATCH/MULTI/EXEC
 * with a read round trip per batch; the script checks the same two values atomically.
 *
 * Ids: the ledger assigns explicit stream ids (`max(now, last-generated ms)`-`seq`), strictly
 * greater than the stream's last-generated-id the script checked, instead of `XADD *`. That way
 * the ids are known before the commit and the per-lease index is written in the same script as
 * the events (a crash cannot leave an event out of its lease's history), and no id can collide.
 *
 * Keyed chain: the MAC key (`opts.key`, src/audit/key.ts) never reaches Redis. The first batch a
 * keyed ledger commits on top of an unkeyed head starts with the switch-over event
 * `audit_chain_keyed` {legacy_head, key_id}; a head marked with another key is refused
 * (store_unavailable, reason audit_key_mismatch): every replica must share one key file.
 *
 * Secrets (I6): an event containing, at any depth, a key named token, secret, password,
 * secret_access_key, session_token, credential(s), client_secret, access_token, id_token,
 * refresh_token, secret_id, private_key or authorization (case-insensitive, `-`/`_` ignored) is
 * refused with an error naming the field path only, never the value; nothing of it is written.
 *
 */
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { BrokerError } from "../core/errors";
import { withoutRedaction } from "../core/logger";
import { luaScript, registerScripts, runScript } from "../redis/scripts";
import {
  compareSeq,
  createChainChecker,
  formatMark,
  GENESIS_HASH,
  headProblem,
  KEYED_MARKER,
  legacyLink,
  keyedLink,
  parseMark,
  SWITCH_OVER_TYPE,
  type ChainBreak,
  type Mark,
} from "./chain";
import type { AuditKey } from "./key";
import type { AuditEvent } from "./events";
import type { AuditMetrics } from "./metrics";

export { GENESIS_HASH } from "./chain";

export type { AuditEvent, AuditEventType } from "./events";

/**
 * What the ledger itself needs of an event (the broker's events are typed in ./events; the
 * ledger checks the common fields at run time and stores any JSON object).
 */
export interface LedgerEvent {
  type: string;
  /** RFC 3339. */
  at: string;
  lease_id?: string;
  task_id?: string;
  workload?: string;
  /** Who caused it: a workload id or "system". */
  actor?: string;
}

/** An event read back, with its place in the chain. */
export interface StoredAuditEvent extends LedgerEvent {
  [k: string]: unknown;
  /** Stream entry id. */
  seq: string;
  hash: string;
  prev: string;
}

/** An event as exported to a sink: the stored event plus how its link was made. */
export type ExportedAuditEvent = StoredAuditEvent & { link_kind: "hmac-sha256" | "sha256" };

export interface AuditLedger<E extends LedgerEvent = AuditEvent> {
  /** Resolves once the event is committed (durable as far as Redis is) with its place in the chain. */
  append(event: E): Promise<StoredAuditEvent>;
  /** Commits the events atomically and contiguously, in order (all or none). */
  appendMany(events: E[]): Promise<StoredAuditEvent[]>;
  /**
   * For events whose caller cannot wait or fail (error paths, background work): appends in the
   * background and never throws. A failed append is retried with backoff (`retried`), and after
   * the last attempt logged at error level with the whole event (`lost`: the log is then the
   * evidence); each counted in jitbroker_audit_append_failures_total. `close()` waits for these.
   */
  record(event: E): void;
  /** The lease's events in chain order, the first `limit` (default 1000). */
  byLease(leaseId: string, limit?: number): Promise<StoredAuditEvent[]>;
  /**
   * Like `byLease`, and how many of the lease's events retention removed (their seq is at or
   * before the trim anchor), and how many are gone without retention (deleted: tampering).
   */
  leaseHistory(leaseId: string, limit?: number): Promise<LeaseEvents>;
  /**
   * Events in chain order from `from` (a stream id, inclusive; prefix it with "(" to make it
   * exclusive, as when paging on from the last seq seen; default "-"), at most `count` (default 100,
   * max 10000).
   */
  range(opts: { from?: string; count?: number }): Promise<StoredAuditEvent[]>;
  /** Like `range`, in the form sinks export (with `link_kind`, src/audit/files.ts). */
  exportRange(opts: { from?: string; count?: number }): Promise<ExportedAuditEvent[]>;
  /** Flushes what is queued, then closes the ledger's own connection. Later appends reject. */
  close(): Promise<void>;
}

export interface LeaseEvents {
  events: StoredAuditEvent[];
  /** Events of the lease that retention removed from Redis (they are in the sinks). */
  trimmed: number;
  /** The trim anchor's seq (the newest event removed), when any of the lease's events were trimmed. */
  trimmedThrough?: string;
  /** Events of the lease the index names that are neither in the stream nor trimmed (deleted). */
  missing: number;
}

export interface AuditLedgerOptions {
  /** The chain's MAC key (kept outside Redis). */
  key: AuditKey;
  streamKey: string;
  headKey: string;
  /** Lease index key = leaseIndexPrefix + lease id (e.g. `{jit}:audit:lease:`). */
  leaseIndexPrefix: string;
  /** The trim anchor (src/audit/retention.ts); lets `leaseHistory` tell trimmed events from deleted ones. */
  anchorKey?: string;
  /** TTL of a lease's index; should match the lease record's retention. */
  leaseIndexTtlSeconds: number;
  logger?: Logger;
  /** Creates the ledger's dedicated connection (its commits, one at a time). Default: `redis.duplicate()`. The ledger closes it. */
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
  metrics?: AuditMetrics;
  /**
   * The current trace id (src/telemetry), if any: written into each event appended without one
   * (field `trace_id`, part of the event and so of its link).
   */
  traceId?: () => string | undefined;
  /** Delays between the attempts of `record` (ms). Default 100, 250, 500, then 1000 sixty times (about a minute). */
  recordRetryDelays?: number[];
}

/**
 * Commits one batch: checks that the chain is where this process last saw it (head mark and the
 * stream's last-generated-id, both unchanged: nobody appended since), then adds the entries,
 * moves the head and appends each lease's new ids to its index. A script is one atomic step, so
 * a check that fails writes nothing and answers the current state for a retry (optimistic, like
 * WATCH/MULTI was, in one round trip instead of two). Everything that can fail comes first or
 * cannot fail the rest: XADD on ids the check proved new, SET, then the index writes with pcall.
 */
const COMMIT = luaScript<[0, string | null, string, number | null] | [1, number]>(
  "jitAuditCommit",
  `
-- KEYS: 1 stream, 2 head, 3.. lease index keys (one per lease of the batch, in ARGV order)
-- ARGV: 1 expected head ('' = none), 2 expected last-generated-id ('0-0' = no stream),
--       3 index mode ('f' = append to field ARGV[4] of an existing hash, 'l' = RPUSH to a list
--       with EXPIRE ARGV[4] seconds), 4 field name or TTL, 5 new head, 6 entries N,
--       7 the link the first entry continues (its p), 8.. N entries of 4 values (id e h n; n ''
--       when unknown; each later entry's p is the h before it), then one value per index key:
--       its new ids, space-separated
-- Output: {1, index writes that failed} committed | {0, head, last-generated-id, entries-added}
--       nothing written: the chain moved (or is not as expected) since the caller read it
local head = redis.call('GET', KEYS[2])
local last, added = '0-0', 0
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
if ok then
  added = false
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
    if info[i] == 'entries-added' then added = info[i + 1] end
  end
end
if (head or '') ~= ARGV[1] or last ~= ARGV[2] then return {0, head, last, added} end
local n = tonumber(ARGV[6])
local prev = ARGV[7]
local at = 8
for _ = 1, n do
  if ARGV[at + 3] == '' then
    redis.call('XADD', KEYS[1], ARGV[at], 'e', ARGV[at + 1], 'h', ARGV[at + 2], 'p', prev, 'm', '1')
  else
    redis.call('XADD', KEYS[1], ARGV[at], 'e', ARGV[at + 1], 'h', ARGV[at + 2], 'p', prev, 'm', '1', 'n', ARGV[at + 3])
  end
  prev = ARGV[at + 2]
  at = at + 4
end
redis.call('SET', KEYS[2], ARGV[5])
local failed = 0
for k = 3, #KEYS do
  local ids = ARGV[at]
  at = at + 1
  local r
  if ARGV[3] == 'f' then
    -- Only into a hash that exists (a field read proves it; else EXISTS): never re-creates a lease.
    local v = redis.pcall('HGET', KEYS[k], ARGV[4])
    if type(v) == 'string' then
      r = redis.pcall('HSET', KEYS[k], ARGV[4], v .. ' ' .. ids)
    elseif type(v) == 'table' and v.err then
      r = v
    else
      r = redis.pcall('EXISTS', KEYS[k])
      if r == 1 then r = redis.pcall('HSET', KEYS[k], ARGV[4], ids) end
    end
  else
    local list = {}
    for id in string.gmatch(ids, '%S+') do list[#list + 1] = id end
    r = redis.pcall('RPUSH', KEYS[k], unpack(list))
    if type(r) == 'number' then r = redis.pcall('EXPIRE', KEYS[k], ARGV[4]) end
  end
  if type(r) == 'table' and r.err then failed = failed + 1 end
end
return {1, failed}
`,
);

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
  return canon(value, [], []);
}

/** Whether a key names secret material; memoised, as events reuse a handful of keys (bounded: hostile events may not). */
const secretKeyMemo = new Map<string, boolean>();
function namesSecret(k: string): boolean {
  let r = secretKeyMemo.get(k);
  if (r === undefined) {
    r = SECRET_KEYS.has(normalizeKey(k));
    if (secretKeyMemo.size < 4096) secretKeyMemo.set(k, r);
  }
  return r;
}

/** The JSON path of an error (`$.a[2].b`): built only when a refusal needs it. */
function pathOf(path: (string | number)[]): string {
  let s = "$";
  for (const p of path) s += typeof p === "number" ? `[${p}]` : `.${p}`;
  return s;
}

// `path` and `stack` (the objects being serialised, for cycles) are pushed and popped as the
// walk goes: no path string per member on the way (the hot path of every audit append).
function canon(value: unknown, path: (string | number)[], stack: object[]): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isFinite(value)) throw refuse(`${pathOf(path)} is not a finite number`, "audit_invalid_event");
      return JSON.stringify(value);
    case "object": {
      if (typeof (value as { toJSON?: unknown }).toJSON === "function") return canon((value as { toJSON: () => unknown }).toJSON(), path, stack);
      if (stack.includes(value)) throw refuse(`${pathOf(path)} is circular`, "audit_invalid_event");
      stack.push(value);
      let out: string;
      if (Array.isArray(value)) {
        out = "[";
        for (let i = 0; i < value.length; i++) {
          const v: unknown = value[i];
          path.push(i);
          if (v === undefined) throw refuse(`${pathOf(path)} is undefined`, "audit_invalid_event");
          out += (i === 0 ? "" : ",") + canon(v, path, stack);
          path.pop();
        }
        out += "]";
      } else {
        const proto = Object.getPrototypeOf(value);
        if (proto !== Object.prototype && proto !== null) throw refuse(`${pathOf(path)} is not a plain object`, "audit_invalid_event");
        const rec = value as Record<string, unknown>;
        out = "{";
        let first = true;
        for (const k of Object.keys(rec).sort()) {
          path.push(k);
          if (namesSecret(k)) throw refuse(`field ${pathOf(path)} names secret material (I6)`, "audit_secret_field");
          const v = rec[k];
          if (v !== undefined) {
            out += (first ? "" : ",") + JSON.stringify(k) + ":" + canon(v, path, stack);
            first = false;
          }
          path.pop();
        }
        out += "}";
      }
      stack.pop();
      return out;
    }
    default:
      throw refuse(`${pathOf(path)} has type ${typeof value}, which JSON cannot carry`, "audit_invalid_event");
  }
}

/** The legacy (unkeyed) link of one entry: sha256hex(prev + "\n" + canonical event JSON). */
export const auditHash = legacyLink;

/** Validates an event and returns its canonical JSON (without seq/hash/prev). Throws on refusal. */
function prepare(event: LedgerEvent): string {
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
  for (const k of ["seq", "hash", "prev", "link_kind"] as const) {
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
  return { ...(parsed as unknown as LedgerEvent), seq: id, hash: f.get("h") ?? "", prev: f.get("p") ?? "" };
}

function toExported(id: string, fields: string[]): ExportedAuditEvent {
  const m = fields.indexOf("m");
  return { ...toStored(id, fields), link_kind: m >= 0 && m % 2 === 0 && fields[m + 1] === KEYED_MARKER ? "hmac-sha256" : "sha256" };
}

function parseId(id: string): { ms: number; seq: number } {
  const [ms, seq] = id.split("-");
  return { ms: Number(ms ?? 0), seq: Number(seq ?? 0) };
}

/** One field of an XINFO STREAM reply, as a string (undefined when absent). */
export function infoField(info: unknown, name: string): string | undefined {
  if (!Array.isArray(info)) return undefined;
  for (let i = 0; i + 1 < info.length; i += 2) {
    if (info[i] === name) return info[i + 1] === null || info[i + 1] === undefined ? undefined : String(info[i + 1]);
  }
  return undefined;
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

/** Where the next append chains from; refuses a head that is not ours (I7: fail closed). */
function parseHeadForAppend(key: AuditKey, head: string | null): { link: string; legacy: boolean } {
  if (head === null) return { link: GENESIS_HASH, legacy: false };
  const m = parseMark(key, "head", head);
  if (m.kind === "legacy") return { link: m.link, legacy: true };
  if (m.kind === "keyed" && m.valid) return { link: m.link, legacy: false };
  throw new BrokerError(
    "store_unavailable",
    "the audit chain's head was not written with this broker's audit key (every replica must use the same audit.key_file; run `jitbroker audit verify`)",
    { reason: "audit_key_mismatch" },
  );
}

export function createAuditLedger<E extends LedgerEvent = AuditEvent>(redis: Redis, opts: AuditLedgerOptions): AuditLedger<E> {
  const { streamKey, headKey, leaseIndexPrefix, logger } = opts;
  // The echo of stored events: they passed prepare()'s secret-key refusal, so redaction is moot.
  const echo = logger ? withoutRedaction(logger) : undefined;
  const ttl = Math.floor(opts.leaseIndexTtlSeconds);
  if (!(ttl > 0)) throw new Error("leaseIndexTtlSeconds must be a positive number");
  const maxBatch = opts.maxBatch ?? 512;
  const now = opts.now ?? Date.now;

  const queue: Pending[] = [];
  let flushing = false;
  let closed = false;
  let drained: (() => void)[] = [];
  let conn: Redis | undefined;

  function watchConn(): Redis {
    if (!conn) {
      conn = opts.watchConnection ? opts.watchConnection() : redis.duplicate({ connectionName: "jitbroker-audit", enableAutoPipelining: false });
      conn.on("error", () => undefined); // failures surface on the commands; avoid unhandled 'error'
      registerScripts(conn, [COMMIT]);
    }
    return conn;
  }

  /**
   * Where the chain stood after this process's last commit, or as the commit script last
   * answered it: the head mark, the stream's last-generated-id and its entries-added counter.
   * The script checks it, so a stale value only costs a retry. Until the first answer (and after
   * an error) the guess is an empty chain: right for a new one, and otherwise refused by the
   * script with the real state, one round trip, as a separate read would have cost.
   */
  const EMPTY_CHAIN = { head: null, last: "0-0", added: 0 } as const;

  /** The last head mark parsed (or written) and what it says: a mark's MAC is checked once, not per batch. */
  let parsedHead: { text: string | null; link: string; legacy: boolean } | undefined;
  function headOf(text: string | null): { link: string; legacy: boolean } {
    if (parsedHead !== undefined && parsedHead.text === text) return parsedHead;
    const r = parseHeadForAppend(opts.key, text);
    parsedHead = { text, ...r };
    return r;
  }
  let seen: { head: string | null; last: string; added: number | undefined } = EMPTY_CHAIN;

  /** One optimistic attempt: null when the chain moved since `seen` (then `seen` is updated), else the stored events in order. */
  async function tryCommit(c: Redis, batch: Pending[]): Promise<StoredAuditEvent[][] | null> {
    const state = seen;
    const prevHead = headOf(state.head);
    const last = state.last === "0-0" ? { ms: 0, seq: 0 } : parseId(state.last);
    // The stream's entries-added counter (Redis 7): each entry's ordinal `n` continues it.
    let ordinal: number | undefined = state.added;

    let prev = prevHead.link;
    let ms = Math.max(now(), last.ms);
    let seq = ms === last.ms ? last.seq : -1;
    const entries: string[] = [];
    const byLease = new Map<string, string[]>();
    const out: StoredAuditEvent[][] = [];
    const nextId = (): string => {
      seq += 1;
      if (seq > Number.MAX_SAFE_INTEGER - 1) {
        ms += 1;
        seq = 0;
      }
      return `${ms}-${seq}`;
    };
    // The script chains the entries itself (each p is the h before it): only the first p is sent.
    const firstPrev = prev;
    const add = (id: string, e: string): string => {
      const hash = keyedLink(opts.key, prev, id, e);
      entries.push(id, e, hash, ordinal === undefined ? "" : String((ordinal += 1)));
      return hash;
    };
    if (prevHead.legacy) {
      // The first keyed entry on an unkeyed chain: marks the switch-over (src/audit/chain.ts).
      const id = nextId();
      const e = canonicalJSON({ type: SWITCH_OVER_TYPE, at: new Date(ms).toISOString(), actor: "system", legacy_head: prev, key_id: opts.key.kid });
      logger?.warn({ legacy_head: prev, key_id: opts.key.kid }, "audit chain switched to keyed links (audit_chain_keyed)");
      prev = add(id, e);
    }
    let lastId = "";
    for (const p of batch) {
      const stored: StoredAuditEvent[] = [];
      for (const ev of p.events) {
        const id = nextId();
        const hash = add(id, ev.e);
        if (ev.leaseId !== undefined) {
          const ids = byLease.get(ev.leaseId) ?? [];
          ids.push(id);
          byLease.set(ev.leaseId, ids);
        }
        stored.push({ ...(JSON.parse(ev.e) as LedgerEvent), seq: id, hash, prev });
        prev = hash;
        lastId = id;
      }
      out.push(stored);
    }
    const indexKeys: string[] = [];
    const indexIds: string[] = [];
    for (const [leaseId, ids] of byLease) {
      indexKeys.push(opts.leaseIndexField ? opts.leaseIndexField.hashKey(leaseId) : leaseIndexPrefix + leaseId);
      indexIds.push(ids.join(" "));
    }
    const newHead = formatMark(opts.key, "head", { seq: lastId, link: prev });
    const mode = opts.leaseIndexField ? ["f", opts.leaseIndexField.field] : ["l", String(ttl)];
    let res: NonNullable<(typeof COMMIT)["reply"]>;
    try {
      res = await runScript(c, COMMIT, [streamKey, headKey, ...indexKeys], [state.head ?? "", state.last, ...mode, newHead, String(entries.length / 4), firstPrev, ...entries, ...indexIds]);
    } catch (e) {
      // No answer is not "not committed": a reply lost to a command timeout may follow a script
      // that ran. Committed again, the batch would be in the chain twice (a revocation's event
      // recorded twice). The script writes all or nothing, so the batch is in exactly when its
      // last entry is, with this attempt's link; read on the same connection, behind the script.
      // (Only a timeout: a command refused or never sent, Redis being away, wrote nothing.)
      if (!(e instanceof Error && /timed out/i.test(e.message)) || !(await landed(c, lastId, prev))) throw e;
      res = [1, 0];
    }
    if (res[0] === 0) {
      const added = res[3];
      // entries-added is an integer (0 without a stream), or nil before Redis 7.
      seen = { head: res[1] ?? null, last: res[2], added: typeof added === "number" ? added : undefined };
      return null;
    }
    if (res[1] > 0) {
      // Only a key of the wrong type at a lease index can cause this; the events are in.
      logger?.error({ failed: res[1], stream: streamKey }, "audit lease index not written for some leases (a key of another type is in the way)");
    }
    seen = { head: newHead, last: lastId, added: ordinal };
    // This process wrote that mark: its link is known without verifying the mark's MAC again.
    parsedHead = { text: newHead, link: prev, legacy: false };
    return out;
  }

  /**
   * Whether the entry `id` is in the stream with link `link` (then the attempt that computed them
   * committed), asked a few times over a few seconds: what delayed the reply may delay this too.
   * False when the stream answers without it (the script did not write), or never answers.
   */
  async function landed(c: Redis, id: string, link: string): Promise<boolean> {
    for (const wait of [0, 200, 500, 1000, 2000]) {
      if (wait > 0) await sleep(wait);
      try {
        const got = await c.xrange(streamKey, id, id);
        return got.length === 1 && fieldsToMap(got[0]![1]).get("h") === link;
      } catch {
        // no answer again: ask again
      }
    }
    return false;
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
          // Ask the script again next time: an error says nothing about where the chain stands.
          seen = EMPTY_CHAIN;
          throw e;
        }
        if (result) {
          batch.forEach((p, i) => {
            const stored = result[i]!;
            if (echo) for (const s of stored) echo.info({ audit: s }, "audit");
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

  // Retried about once a second for a minute (a Redis failover or restart), so an event lands
  // within a second of Redis's return instead of after a long backoff step; then logged as lost.
  const recordDelays = opts.recordRetryDelays ?? [100, 250, 500, ...Array.from({ length: 60 }, () => 1000)];
  const recording = new Set<Promise<void>>();
  let closing = false;
  let wakeClosing: () => void = () => undefined;
  const closingSignal = new Promise<void>((r) => (wakeClosing = r));
  const typeLabel = (ev: LedgerEvent): string => (typeof ev?.type === "string" && /^[a-z_]{1,40}$/.test(ev.type) ? ev.type : "invalid");

  async function recordLoop(event: LedgerEvent): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await enqueue([event]);
        return;
      } catch (e) {
        const err = e as BrokerError;
        if (err instanceof BrokerError && err.code === "internal") {
          // Refused (secret-named field, malformed): retrying cannot help, and the event must not be logged.
          opts.metrics?.appendFailures.inc({ type: typeLabel(event), outcome: "refused" });
          logger?.error({ type: typeLabel(event), reason: err.reason, err: err.message }, "audit event refused; not recorded");
          return;
        }
        if (attempt >= recordDelays.length || closing) {
          opts.metrics?.appendFailures.inc({ type: typeLabel(event), outcome: "lost" });
          logger?.error({ audit_lost: event, err: err.message }, "audit event could not be written to the ledger; this log line is its only record");
          return;
        }
        opts.metrics?.appendFailures.inc({ type: typeLabel(event), outcome: "retried" });
        logger?.warn({ type: typeLabel(event), attempt: attempt + 1, err: err.message }, "audit append failed; retrying");
        await Promise.race([sleep(recordDelays[attempt]!), closingSignal]);
      }
    }
  }

  /** Counts an awaited append that failed (the caller sees the error). */
  function countFailure(events: LedgerEvent[], e: unknown): never {
    const refused = e instanceof BrokerError && e.code === "internal";
    for (const ev of events) opts.metrics?.appendFailures.inc({ type: typeLabel(ev), outcome: refused ? "refused" : "failed" });
    throw e;
  }

  function enqueue(events: LedgerEvent[]): Promise<StoredAuditEvent[]> {
    if (closed) return Promise.reject(new BrokerError("store_unavailable", "the audit ledger is closed", { reason: "closed" }));
    let prepared: Pending["events"];
    try {
      const traceId = opts.traceId?.();
      prepared = events.map((ev) => ({ e: prepare(traceId && (ev as { trace_id?: unknown }).trace_id === undefined ? ({ ...ev, trace_id: traceId } as LedgerEvent) : ev), leaseId: ev.lease_id }));
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

  async function rawRange({ from = "-", count = 100 }: { from?: string; count?: number }): Promise<[string, string[]][]> {
    if (!RANGE_START.test(from)) throw new BrokerError("invalid_request", "from must be a stream id, optionally prefixed with \"(\"");
    if (!Number.isInteger(count) || count < 1 || count > 10000) throw new BrokerError("invalid_request", "count must be an integer from 1 to 10000");
    try {
      return await redis.xrange(streamKey, from, "+", "COUNT", count);
    } catch (e) {
      throw storeError(e, "read the audit stream");
    }
  }

  return {
    async append(event) {
      const [stored] = await enqueue([event]).catch((e: unknown) => countFailure([event], e));
      return stored!;
    },

    appendMany(events) {
      return enqueue(events).catch((e: unknown) => countFailure(events, e));
    },

    record(event) {
      const p = recordLoop(event);
      recording.add(p);
      void p.finally(() => recording.delete(p));
    },

    async byLease(leaseId, limit = 1000) {
      if (!Number.isInteger(limit) || limit < 1) throw new BrokerError("invalid_request", "limit must be a positive integer");
      try {
        const ids = opts.leaseIndexField
          ? ((await redis.hget(opts.leaseIndexField.hashKey(leaseId), opts.leaseIndexField.field)) ?? "").split(" ").filter(Boolean).slice(0, limit)
          : await redis.lrange(leaseIndexPrefix + leaseId, 0, limit - 1);
        // Entries removed by retention are simply absent.
        return await readEntries(ids.filter((id) => STREAM_ID.test(id)));
      } catch (e) {
        throw storeError(e, "read the lease history");
      }
    },

    async leaseHistory(leaseId, limit = 1000) {
      if (!Number.isInteger(limit) || limit < 1) throw new BrokerError("invalid_request", "limit must be a positive integer");
      try {
        const [idsRaw, anchorText] = await Promise.all([
          opts.leaseIndexField
            ? redis.hget(opts.leaseIndexField.hashKey(leaseId), opts.leaseIndexField.field).then((v) => (v ?? "").split(" ").filter(Boolean).slice(0, limit))
            : redis.lrange(leaseIndexPrefix + leaseId, 0, limit - 1),
          opts.anchorKey ? redis.get(opts.anchorKey) : Promise.resolve(null),
        ]);
        const ids = idsRaw.filter((id) => STREAM_ID.test(id));
        const events = await readEntries(ids);
        const anchor = anchorText === null ? undefined : parseMark(opts.key, "anchor", anchorText);
        const anchorSeq = anchor?.kind === "keyed" ? anchor.seq : undefined;
        const found = new Set(events.map((e) => e.seq));
        let trimmed = 0;
        let missing = 0;
        for (const id of ids) {
          if (found.has(id)) continue;
          if (anchorSeq !== undefined && compareSeq(id, anchorSeq) <= 0) trimmed += 1;
          else missing += 1;
        }
        return { events, trimmed, ...(trimmed > 0 && anchorSeq !== undefined ? { trimmedThrough: anchorSeq } : {}), missing };
      } catch (e) {
        throw storeError(e, "read the lease history");
      }
    },

    async range(o) {
      return (await rawRange(o)).map(([id, fields]) => toStored(id, fields));
    },

    async exportRange(o) {
      return (await rawRange(o)).map(([id, fields]) => toExported(id, fields));
    },

    async close() {
      // Background records get one last attempt (no more waiting), then the queue is flushed.
      closing = true;
      wakeClosing();
      while (recording.size > 0) await Promise.all([...recording]);
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
  /** Entries examined (the walk goes on past a break). */
  checked: number;
  /** Of those, entries written before the chain was keyed. */
  legacy: number;
  /** The first problem, where it shows (for a deleted entry: the one after the gap). */
  firstBreak?: ChainBreak;
}

export interface AuditVerifyOptions {
  key: AuditKey;
  streamKey: string;
  headKey: string;
  /** Trim anchor (a mark of the newest entry removed by retention); absent: chain from genesis. */
  anchorKey?: string;
}

/**
 * Walks the whole stream in order (XRANGE pages of 1000) and checks every link with the key
 * (src/audit/chain.ts), the first entry against the genesis hash or the trim anchor, and the
 * head mark against the last entry.
 *
 * Safe to run while appends go on: the head is read before and after the walk; if it moved, the
 * head read first must be a valid mark of an entry that was walked (newer entries are chained).
 */
export async function verifyAuditChain(redis: Redis, opts: AuditVerifyOptions): Promise<AuditVerifyResult> {
  // Retention may trim the oldest entries (and move the anchor) during the walk; the walk then
  // started from entries the new anchor no longer leads to. Walk again from the new anchor.
  for (let attempt = 1; ; attempt++) {
    const { result, anchorText } = await verifyOnce(redis, opts);
    if (result.ok || !opts.anchorKey || attempt >= 5) return result;
    if ((await redis.get(opts.anchorKey)) === anchorText) return result;
  }
}

async function verifyOnce(redis: Redis, opts: AuditVerifyOptions): Promise<{ result: AuditVerifyResult; anchorText: string | null }> {
  const PAGE = 1000;
  const [headBefore, anchorText] = await Promise.all([redis.get(opts.headKey), opts.anchorKey ? redis.get(opts.anchorKey) : Promise.resolve(null)]);
  let anchor: Mark | undefined;
  let anchorProblem: string | undefined;
  if (anchorText !== null) {
    const a = parseMark(opts.key, "anchor", anchorText);
    if (a.kind === "keyed" && a.valid) anchor = { seq: a.seq, link: a.link };
    else anchorProblem = "trim anchor does not verify (anchor altered, or another key)";
  }
  const before = headBefore === null ? undefined : parseMark(opts.key, "head", headBefore);
  const checker = createChainChecker(opts.key, {
    ...(anchor ? { anchor } : {}),
    ...(before?.kind === "keyed" ? { watchSeq: before.seq } : {}),
  });
  if (anchorProblem) checker.fail(anchorProblem, "");
  let start = "-";
  for (;;) {
    const page = await redis.xrange(opts.streamKey, start, "+", "COUNT", PAGE);
    for (const [id, fields] of page) {
      const f = fieldsToMap(fields);
      checker.push({ seq: id, e: f.get("e"), h: f.get("h"), p: f.get("p"), m: f.get("m") });
    }
    if (page.length < PAGE) break;
    start = `(${page[page.length - 1]![0]}`;
  }
  const headAfter = await redis.get(opts.headKey);
  const walk = checker.result();
  if (headAfter === headBefore) {
    const problem = headProblem(opts.key, headAfter, walk, anchor);
    if (problem) checker.fail(problem);
  } else if (!(before?.kind === "keyed" && before.valid && checker.watched() === before.link)) {
    checker.fail("head does not name an entry of the chain (head altered or entries removed from the end)");
  }
  const r = checker.result();
  return { result: { ok: r.ok, checked: r.checked, legacy: r.legacy, ...(r.firstBreak ? { firstBreak: r.firstBreak } : {}) }, anchorText };
}
