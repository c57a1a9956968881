/**
 * The audit chain's links and its checker: pure functions, shared by the ledger (Redis), by
 * `audit verify` on Redis and by `audit verify --file` on exported sink files.
 *
 * An entry is (seq, e, p, h, m):
 *   seq  the stream id ("<ms>-<n>"), strictly increasing along the chain
 *   e    the canonical JSON of the event (src/audit/ledger.ts canonicalJSON)
 *   p    the previous entry's link (GENESIS for the first entry of a chain)
 *   h    this entry's link
 *   m    "1" for a keyed link: h = HMAC-SHA256(key, p + "\n" + seq + "\n" + e), hex.
 *        absent for a legacy link (chains written before the key existed):
 *        h = sha256(p + "\n" + e), hex.
 * Without the key nobody can compute a keyed link, so an entry cannot be inserted, altered,
 * moved to another seq or deleted (the next entry's p would not match) without `verify`
 * noticing. Legacy entries may only precede the keyed part; the first keyed entry after them
 * must be the switch-over event (`audit_chain_keyed`), whose p is the last legacy link: from
 * then on the legacy part is fixed too (changing it changes the link the MAC covers).
 *
 * A mark ("v1 <seq> <link> <mac>") names one entry under the key: the head (the newest entry)
 * and the trim anchor (the newest entry removed by retention) are marks, each MACed with its own
 * purpose so one cannot stand for the other. A legacy head is the bare 64-hex link.
 * What a mark cannot stop: someone who can write Redis and kept an older head could put it back
 * together with the chain as it was then (a rollback of the newest events). The sinks hold
 * copies outside Redis; `audit verify --file` over them shows events past the Redis head.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { AuditKey } from "./key";

export const GENESIS_HASH = "0".repeat(64);
export const KEYED_MARKER = "1";
export const SWITCH_OVER_TYPE = "audit_chain_keyed";

const HEX64 = /^[0-9a-f]{64}$/;
const SEQ = /^\d+-\d+$/;

export function keyedLink(key: AuditKey, prev: string, seq: string, e: string): string {
  return createHmac("sha256", key.key).update(`${prev}\n${seq}\n${e}`, "utf8").digest("hex");
}

/** The unkeyed link of a legacy entry: sha256hex(prev + "\n" + e). */
export function legacyLink(prev: string, e: string): string {
  return createHash("sha256").update(`${prev}\n${e}`, "utf8").digest("hex");
}

export type MarkPurpose = "head" | "anchor";

export interface Mark {
  seq: string;
  link: string;
}

function markMac(key: AuditKey, purpose: MarkPurpose, seq: string, link: string): string {
  return createHmac("sha256", key.key).update(`jitbroker audit ${purpose}\n${seq}\n${link}`, "utf8").digest("hex");
}

export function formatMark(key: AuditKey, purpose: MarkPurpose, mark: Mark): string {
  return `v1 ${mark.seq} ${mark.link} ${markMac(key, purpose, mark.seq, mark.link)}`;
}

export type ParsedMark = { kind: "keyed"; seq: string; link: string; valid: boolean } | { kind: "legacy"; link: string } | { kind: "invalid" };

export function parseMark(key: AuditKey, purpose: MarkPurpose, text: string): ParsedMark {
  if (HEX64.test(text)) return { kind: "legacy", link: text };
  const parts = text.split(" ");
  if (parts.length !== 4 || parts[0] !== "v1" || !SEQ.test(parts[1]!) || !HEX64.test(parts[2]!) || !HEX64.test(parts[3]!)) return { kind: "invalid" };
  const [, seq, link, mac] = parts as [string, string, string, string];
  const expected = Buffer.from(markMac(key, purpose, seq, link), "hex");
  return { kind: "keyed", seq, link, valid: timingSafeEqual(expected, Buffer.from(mac, "hex")) };
}

/** Compares two stream ids numerically (-1, 0, 1). */
export function compareSeq(a: string, b: string): number {
  const [am, as] = a.split("-").map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split("-").map(BigInt) as [bigint, bigint];
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

export interface ChainEntry {
  seq: string;
  e?: string;
  h?: string;
  p?: string;
  m?: string;
}

export interface ChainBreak {
  /** 1-based position of the entry in the walk (the first entry examined is 1). */
  position: number;
  seq: string;
  reason: string;
}

export interface ChainCheckResult {
  ok: boolean;
  checked: number;
  /** Entries written before the key existed (verified as a plain sha256 chain, fixed by the switch-over). */
  legacy: number;
  firstSeq?: string;
  lastSeq?: string;
  /** Link of the last entry examined. */
  lastLink?: string;
  /** True when the first entry continues from the genesis hash (nothing before it is missing). */
  fromGenesis: boolean;
  firstBreak?: ChainBreak;
}

export interface ChainCheckerOptions {
  /** The first entry must continue from this (the trim anchor) instead of the genesis hash. */
  anchor?: Mark;
  /** Accept any p on the first entry (an export whose older files are gone): reported, not a break. */
  allowAnyStart?: boolean;
  /** Remember the link of the entry with this seq (a head read before a concurrent walk). */
  watchSeq?: string;
}

export interface ChainChecker {
  push(entry: ChainEntry): void;
  /** The link recorded for `watchSeq`, if that entry was walked. */
  watched(): string | undefined;
  /** Records a break found outside the walk (head, anchor) at the last position. */
  fail(reason: string, seq?: string): void;
  result(): ChainCheckResult;
}

export function createChainChecker(key: AuditKey, opts: ChainCheckerOptions = {}): ChainChecker {
  let position = 0;
  let prev: string | undefined;
  let lastSeq: string | undefined;
  let firstSeq: string | undefined;
  let keyedSeen = false;
  let legacy = 0;
  let fromGenesis = true;
  let watchedLink: string | undefined;
  let firstBreak: ChainBreak | undefined;
  const fail = (seq: string, reason: string): void => {
    if (!firstBreak) firstBreak = { position, seq, reason };
  };

  return {
    push({ seq, e, h, p, m }) {
      position += 1;
      firstSeq ??= seq;
      if (seq === opts.watchSeq) watchedLink = h;
      if (lastSeq !== undefined && (!SEQ.test(seq) || compareSeq(seq, lastSeq) <= 0)) fail(seq, `seq does not come after ${lastSeq} (reordered)`);
      if (e === undefined || h === undefined || p === undefined) {
        fail(seq, "entry lacks one of its fields (e, h, p)");
        prev = h;
        lastSeq = seq;
        return;
      }
      if (position === 1) {
        const expected = opts.anchor?.link ?? GENESIS_HASH;
        if (opts.anchor && SEQ.test(seq) && compareSeq(seq, opts.anchor.seq) <= 0) fail(seq, `entry is not after the trim anchor ${opts.anchor.seq}`);
        if (p !== expected) {
          if (opts.allowAnyStart) fromGenesis = false;
          else if (opts.anchor) fail(seq, `prev does not match the trim anchor's link (entries after ${opts.anchor.seq} were deleted, or the anchor altered)`);
          else fail(seq, "the first entry's prev is not the genesis hash (entries before it were deleted)");
        }
      } else if (p !== prev) {
        fail(seq, `prev does not match the link of the preceding entry ${lastSeq} (an entry was deleted, inserted or reordered here)`);
      }
      let parsed: { type?: unknown } | undefined;
      try {
        parsed = JSON.parse(e) as { type?: unknown };
      } catch {
        fail(seq, "event is not valid JSON");
      }
      if (m === KEYED_MARKER) {
        if (keyedLink(key, p, seq, e) !== h) {
          fail(seq, "link does not match the entry (event, seq or prev altered, entry inserted, or another key)");
        } else if (!keyedSeen && legacy > 0 && parsed?.type !== SWITCH_OVER_TYPE) {
          fail(seq, `first keyed entry after unkeyed ones is not the ${SWITCH_OVER_TYPE} switch-over event`);
        }
        keyedSeen = true;
      } else if (m !== undefined) {
        fail(seq, "entry has an unknown link kind");
      } else {
        legacy += 1;
        if (keyedSeen) fail(seq, "unkeyed entry after the chain became keyed (inserted or rewritten without the key)");
        else if (legacyLink(p, e) !== h) fail(seq, "link does not match the entry's content (event or prev altered)");
      }
      prev = h;
      lastSeq = seq;
    },
    watched: () => watchedLink,
    fail(reason, seq) {
      fail(seq ?? lastSeq ?? "", reason);
    },
    result() {
      return {
        ok: !firstBreak,
        checked: position,
        legacy,
        fromGenesis,
        ...(firstSeq !== undefined ? { firstSeq } : {}),
        ...(lastSeq !== undefined ? { lastSeq } : {}),
        ...(prev !== undefined ? { lastLink: prev } : {}),
        ...(firstBreak ? { firstBreak } : {}),
      };
    },
  };
}

/**
 * Checks a head against the walk's end. `head` is the stored value (or null); the walk must be
 * complete. Returns a reason, or undefined when the head is right.
 */
export function headProblem(key: AuditKey, head: string | null, walk: ChainCheckResult, anchor?: Mark): string | undefined {
  if (walk.checked === 0) {
    if (head === null) return undefined;
    const h = parseMark(key, "head", head);
    if (anchor && h.kind === "keyed" && h.valid && h.seq === anchor.seq && h.link === anchor.link) return undefined;
    return "head is set but the stream is empty (entries deleted)";
  }
  if (head === null) return "head is missing (head deleted)";
  const h = parseMark(key, "head", head);
  if (h.kind === "invalid") return "head is not a valid head mark (head altered)";
  if (h.kind === "legacy") {
    if (walk.checked > walk.legacy) return "head is an unkeyed hash but the chain has keyed entries (head altered)";
    return h.link === walk.lastLink ? undefined : "head does not match the last entry's link (entries removed from the end, or head altered)";
  }
  if (!h.valid) return "head mark's MAC does not verify (head altered, or another key)";
  if (h.seq !== walk.lastSeq || h.link !== walk.lastLink) return `head names ${h.seq}, not the last entry ${walk.lastSeq ?? "-"} (entries removed from the end, added after it, or head altered)`;
  return undefined;
}
