/**
 * The bounded audit store (docs/ARCHITECTURE.md, I9): events leave Redis after
 * `audit.retention`, never before every configured sink confirmed them, and new issuance stops
 * while the events some sink has not confirmed reach `audit.max_backlog`.
 *
 * Trimming (`createAuditTrimmer`, worker processes): every few seconds (a quarter of the
 * retention, between 250 ms and 10 s, so an event leaves within a minute of its age), the
 * trimmer finds L, the newest entry that is both older than the retention and at or before the
 * position of every sink (src/audit/sinks.ts; a sink with no position yet holds everything),
 * at most `batch` entries from the oldest, and runs TRIM: it writes the trim anchor (the mark of
 * L under the audit key, src/audit/chain.ts) and removes every entry up to L (exact XTRIM MINID),
 * in one script, so `audit verify` always finds the oldest remaining entry chained to the anchor.
 * Several workers may trim at once: TRIM only moves the anchor it read, so one of them wins and
 * the others try again on their next pass.
 *
 * Backlog (`createAuditBacklog`, API processes): every second it reads the stream's
 * entries-added counter and each sink's position; a position's entry carries its ordinal `n`
 * (src/audit/ledger.ts), so the events after it are `entries-added - n`: exact, two round trips
 * whatever the size. The backlog is the largest over the sinks. At `max_backlog`, `assertRoom()`
 * refuses new issuance with 503 `audit_backlog_full` (the token endpoint answers RFC 6749
 * `temporarily_unavailable`) until it is below 90 % of it again; revocation, task completion and
 * operator actions never ask. Without sinks there is no backlog (retention alone bounds the
 * stream). Shown as `audit_backlog` in `/readyz` (the broker stays ready: it can still revoke)
 * and as the metrics jitbroker_audit_backlog_events and jitbroker_audit_backlog_full (the alert).
 *
 * Keys: {p}:audit (trims it), {p}:audit:anchor (writes it), {p}:audit:sink:<name> (reads them).
 */
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { Counter, Gauge, type Registry } from "prom-client";
import { BrokerError } from "../core/errors";
import { repeat, type Repeating } from "../core/repeat";
import type { Keyspace } from "../redis/keys";
import { luaScript, registerScripts, runScript } from "../redis/scripts";
import { compareSeq, formatMark } from "./chain";
import type { AuditKey } from "./key";
import { infoField } from "./ledger";

/** Trims the stream up to L, an event every sink confirmed, and writes the anchor (its mark) in the same step. */
const TRIM = luaScript<number>("jitAuditTrim", `
-- KEYS: 1 stream, 2 anchor, 3.. every sink's position
-- ARGV: 1 the anchor as read ("" when absent), 2 L's seq, 3 L's link, 4 the new anchor (mark of
--       L), 5 the XTRIM MINID threshold (the id right after L)
-- Output: entries removed (>= 0); -1 anchor moved meanwhile, -2 L is gone or not the entry
-- read, -3 a sink's position is missing or before L (it has not confirmed L).
local function ge(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then return false end
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am > bm end
  return as >= bs
end
local cur = redis.call('GET', KEYS[2])
if (cur or '') ~= ARGV[1] then return -1 end
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #e ~= 1 then return -2 end
local f = e[1][2]
local h = nil
for i = 1, #f, 2 do if f[i] == 'h' then h = f[i + 1] end end
if h ~= ARGV[3] then return -2 end
for i = 3, #KEYS do
  local p = redis.call('GET', KEYS[i])
  if not p or not ge(p, ARGV[2]) then return -3 end
end
redis.call('SET', KEYS[2], ARGV[4])
return redis.call('XTRIM', KEYS[1], 'MINID', ARGV[5])
`);

/** The stream id right after `seq` ("<ms>-<n+1>"), exact for any size. */
export function nextSeq(seq: string): string {
  const [ms, n] = seq.split("-");
  return `${ms}-${(BigInt(n ?? "0") + 1n).toString()}`;
}

/** The smallest of some stream ids (null if the list is empty or any is null: a sink with nothing confirmed). */
function minPosition(positions: (string | null)[]): string | null {
  let min: string | null = null;
  for (const p of positions) {
    if (p === null || !/^\d+-\d+$/.test(p)) return null;
    if (min === null || compareSeq(p, min) < 0) min = p;
  }
  return min;
}

export interface AuditTrimmer {
  /** One pass now (tests; the periodic pass does the same): entries removed. */
  trimOnce(): Promise<number>;
  stop(): void;
}

export interface AuditTrimmerOptions {
  key: AuditKey;
  retentionMs: number;
  /** Names of every configured sink (their positions hold trimming back). */
  sinks: string[];
  logger?: Logger;
  registry?: Registry;
  now?: () => number;
  /** Most entries removed by one TRIM (default 10,000); a pass runs up to 20 of them. */
  batch?: number;
  /** Pass interval (default a quarter of the retention, 250 ms to 10 s). 0: no periodic pass. */
  intervalMs?: number;
}

export function createAuditTrimmer(redis: Redis, keys: Pick<Keyspace, "audit" | "auditAnchor" | "auditSinkPosition">, opts: AuditTrimmerOptions): AuditTrimmer {
  registerScripts(redis, [TRIM]);
  const now = opts.now ?? Date.now;
  const batch = opts.batch ?? 10_000;
  const positionKeys = opts.sinks.map((s) => keys.auditSinkPosition(s));
  const trimmedTotal = opts.registry
    ? new Counter({ name: "jitbroker_audit_trimmed_total", help: "Audit events removed from Redis by audit.retention (after every sink confirmed them)", registers: [opts.registry] })
    : null;

  /** One TRIM: null when there is nothing to trim, else the entries removed (0 when it lost a race). */
  async function trimBatch(): Promise<number | null> {
    const ageBound = now() - opts.retentionMs;
    if (ageBound <= 0) return null;
    const [anchorText, positions] = await Promise.all([redis.get(keys.auditAnchor), positionKeys.length ? redis.mget(...positionKeys) : Promise.resolve([])]);
    let bound = `${ageBound - 1}-${"18446744073709551615"}`; // every entry written before ageBound ms
    if (positionKeys.length > 0) {
      const min = minPosition(positions);
      if (min === null) return null; // a sink has confirmed nothing yet
      if (compareSeq(min, bound) < 0) bound = min;
    }
    const page = await redis.xrange(keys.audit, "-", bound, "COUNT", batch);
    const last = page[page.length - 1];
    if (!last) return null;
    const [seq, fields] = last;
    const hi = fields.indexOf("h");
    const link = hi >= 0 && hi % 2 === 0 ? fields[hi + 1] : undefined;
    if (!link) throw new Error(`audit entry ${seq} has no link`);
    const mark = formatMark(opts.key, "anchor", { seq, link });
    const r = Number(await runScript(redis, TRIM, [keys.audit, keys.auditAnchor, ...positionKeys], [anchorText ?? "", seq, link, mark, nextSeq(seq)]));
    if (r < 0) return 0;
    trimmedTotal?.inc(r);
    return r;
  }

  async function trimOnce(): Promise<number> {
    let removed = 0;
    for (let i = 0; i < 20; i++) {
      const r = await trimBatch();
      if (r === null) break;
      removed += r;
      if (r < batch) break;
    }
    if (removed > 0) opts.logger?.debug({ removed }, "audit events past audit.retention removed from Redis");
    return removed;
  }

  const interval = opts.intervalMs ?? Math.min(10_000, Math.max(250, Math.floor(opts.retentionMs / 4)));
  const job: Repeating | null =
    interval > 0
      ? repeat(trimOnce, () => interval, (e) => opts.logger?.warn({ err: { message: e.message } }, "audit retention pass failed; retrying"))
      : null;
  return { trimOnce, stop: () => job?.stop() };
}

export interface BacklogStatus {
  /** Events the slowest sink has not confirmed (null until first measured). */
  events: number | null;
  max: number;
  /** True while new issuance is refused. */
  full: boolean;
  /** The sink furthest behind. */
  slowest?: string;
}

export interface AuditBacklog {
  /** Throws 503 audit_backlog_full while the backlog is at the hard bound. */
  assertRoom(): void;
  /** Measures now (also done every second). */
  check(): Promise<BacklogStatus>;
  status(): BacklogStatus;
  stop(): void;
}

const entryField = (fields: string[] | undefined, name: string): string | undefined => {
  if (!fields) return undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
};

/** Events after `pos` in the stream (exact when `pos`'s entry carries its ordinal or was trimmed). */
async function eventsAfter(redis: Redis, stream: string, pos: string | null, added: number, length: number, firstSeq: string | undefined): Promise<number> {
  if (pos === null) return length; // a new sink starts with the oldest event still in Redis
  if (firstSeq === undefined || compareSeq(pos, firstSeq) < 0) return length; // all after it
  const [entry] = await redis.xrange(stream, pos, pos);
  const n = entryField(entry?.[1], "n");
  if (n !== undefined && /^\d+$/.test(n)) return Math.max(0, added - Number(n));
  // Written before ordinals existed (or deleted): count up to the first entry with an ordinal.
  const page = await redis.xrange(stream, `(${pos}`, "+", "COUNT", 1000);
  const i = page.findIndex(([, f]) => /^\d+$/.test(entryField(f, "n") ?? ""));
  if (i < 0) return page.length; // a lower bound
  return i + Math.max(0, added - Number(entryField(page[i]![1], "n")) + 1);
}

export function createAuditBacklog(
  redis: Redis,
  keys: Pick<Keyspace, "audit" | "auditSinkPosition">,
  opts: { sinks: string[]; max: number; logger?: Logger; registry?: Registry; intervalMs?: number; start?: boolean },
): AuditBacklog {
  const state: BacklogStatus = { events: null, max: opts.max, full: false };
  const resumeBelow = Math.floor(opts.max * 0.9);
  const eventsGauge = opts.registry
    ? new Gauge({ name: "jitbroker_audit_backlog_events", help: "Audit events the slowest sink has not confirmed (held in Redis); issuance stops at audit.max_backlog", registers: [opts.registry] })
    : null;
  const fullGauge = opts.registry
    ? new Gauge({ name: "jitbroker_audit_backlog_full", help: "1 while new issuance is refused because the audit backlog reached audit.max_backlog (alert on this)", registers: [opts.registry] })
    : null;
  const refusedTotal = opts.registry
    ? new Counter({ name: "jitbroker_audit_backlog_refusals_total", help: "Credential requests refused with audit_backlog_full", registers: [opts.registry] })
    : null;

  async function check(): Promise<BacklogStatus> {
    if (opts.sinks.length === 0) {
      state.events = 0;
      return { ...state };
    }
    const [info, positions] = await Promise.all([
      redis.xinfo("STREAM", keys.audit).catch((e: Error) => {
        if (/no such key/i.test(e.message)) return null;
        throw e;
      }),
      redis.mget(...opts.sinks.map((s) => keys.auditSinkPosition(s))),
    ]);
    const added = Number(infoField(info, "entries-added") ?? 0);
    const length = Number(infoField(info, "length") ?? 0);
    const first = Array.isArray(info) ? info[info.indexOf("first-entry") + 1] : undefined;
    const firstSeq = Array.isArray(first) && typeof first[0] === "string" ? first[0] : undefined;
    let worst = 0;
    let slowest: string | undefined;
    for (let i = 0; i < opts.sinks.length; i++) {
      const n = info === null ? 0 : await eventsAfter(redis, keys.audit, positions[i] ?? null, added, length, firstSeq);
      if (slowest === undefined || n > worst) {
        worst = n;
        slowest = opts.sinks[i];
      }
    }
    const was = state.full;
    state.events = worst;
    state.slowest = slowest;
    state.full = was ? worst >= resumeBelow : worst >= opts.max;
    eventsGauge?.set(worst);
    fullGauge?.set(state.full ? 1 : 0);
    if (state.full !== was) {
      if (state.full) opts.logger?.error({ backlog: worst, max_backlog: opts.max, sink: slowest }, "audit backlog reached audit.max_backlog: new issuance refused (audit_backlog_full) until the sink catches up; revocation goes on");
      else opts.logger?.info({ backlog: worst, sink: slowest }, "audit backlog below audit.max_backlog again: issuance resumes");
    }
    return { ...state };
  }

  const job: Repeating | null =
    opts.start === false || opts.sinks.length === 0 ? null : repeat(check, () => opts.intervalMs ?? 1000, (e) => opts.logger?.debug({ err: { message: e.message } }, "audit backlog check failed"));
  if (opts.start !== false) void check().catch(() => undefined);

  return {
    assertRoom() {
      if (state.full) {
        refusedTotal?.inc();
        throw new BrokerError(
          "audit_backlog_full",
          `the audit store holds ${state.events ?? "?"} events an audit sink has not confirmed (audit.max_backlog ${opts.max}); new credentials are refused until the sinks catch up (revocation goes on)`,
          { headers: { "Retry-After": "30" }, reason: "audit_backlog" },
        );
      }
    },
    check,
    status: () => ({ ...state }),
    stop: () => job?.stop(),
  };
}
