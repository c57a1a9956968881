/**
 * The revocation policy (pure): the inline policy the broker keeps on each target role to cut
 * off revoked STS sessions, which cannot be revoked one by one.
 *
 * Format (everything needed to merge and garbage-collect it is in the policy itself, because
 * other brokers may share the role and there is no other shared record):
 *
 *   { "Version": "2012-10-17", "Statement": [
 *     { "Sid": "JitbrokerDenyE<until>I<issued>", "Effect": "Deny", "Action": "*", "Resource": "*",
 *       "Condition": { "StringEquals": { "aws:userid": ["AROA...:l_abc", ...] } } },
 *     { "Sid": "JitbrokerDenyBeforeE<until>", "Effect": "Deny", "Action": "*", "Resource": "*",
 *       "Condition": { "DateLessThan": { "aws:TokenIssueTime": "2025-01-01T12:00:00Z" } } } ] }
 *
 * - An exact statement denies everything to the listed sessions: `aws:userid` of an assumed-role
 *   session is `<RoleId>:<RoleSessionName>`. `until` (epoch seconds) is no earlier than the
 *   expiry of every listed session; `issued` no earlier than their issue time. Sessions are
 *   grouped by expiry bucket, so statements age out whole.
 * - The cut-off statement (at most one) is the size-limit fallback: it denies every session of
 *   the role issued before the given time, revoked or not, until `until`.
 * - Garbage collection: a statement whose `until` is more than `GC_GRACE_MS` plus the clock
 *   skew margin in the past only names dead sessions and is dropped (`until` was computed on
 *   another broker's clock and AWS's; the grace and the margin absorb the differences). The
 *   Redis record of revoked sessions (revoked.ts) is collected by the same rule (`isDead`).
 * - Statements this module did not write (other Sids or shapes) are kept verbatim.
 *
 * Size: IAM allows 10,240 characters (whitespace not counted) for all inline policies of a role
 * together. `fit` keeps the document under a budget: first by coarser expiry buckets (merging two
 * buckets only lengthens a deny), then by the fallback, moving the oldest-issued sessions under
 * one cut-off so that the fewest non-revoked sessions are caught by it.
 */

export const GC_GRACE_MS = 5 * 60_000;
const EXACT_SID = /^JitbrokerDenyE(\d{1,12})I(\d{1,12})$/;
const CUTOFF_SID = /^JitbrokerDenyBeforeE(\d{1,12})$/;
/** Expiry buckets tried in turn, in seconds (Infinity: one statement for all sessions). */
const BUCKETS = [300, 900, 3600, 4 * 3600, 12 * 3600, Infinity];

export interface RevokedSession {
  /** `aws:userid` of the session: `<RoleId>:<RoleSessionName>`. */
  userId: string;
  /** Upper bound of the session's `aws:TokenIssueTime`, ms (AWS clock). */
  issuedAt: number;
  /** Upper bound of the session's expiry, ms. */
  expiresAt: number;
}

export interface Cutoff {
  /** Sessions with `aws:TokenIssueTime` strictly before this (ms) are denied. */
  before: number;
  /** ...until this time (ms); then the statement is garbage. */
  until: number;
}

export interface DenyState {
  sessions: RevokedSession[];
  cutoff: Cutoff | null;
  /** Statements this module did not write, kept as they are. */
  foreign: unknown[];
}

export interface FitResult {
  /** The document to put (minified JSON), or null when nothing is left (delete the policy). */
  document: string | null;
  /** Characters IAM counts for it (whitespace outside strings is not counted; there is none). */
  size: number;
  /** Set when this fit had to add or move the cut-off. */
  fallback: null | { cutoff: Cutoff; sessions: string[] };
  /** Exact statements written. */
  statements: number;
  state: DenyState;
}

const secondsCeil = (ms: number) => Math.ceil(ms / 1000);
const isoSeconds = (ms: number) => new Date(Math.ceil(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/** Reads a revocation policy document (as returned by GetRolePolicy, URL-decoded). */
export function parseDenyPolicy(text: string | null): DenyState {
  const state: DenyState = { sessions: [], cutoff: null, foreign: [] };
  if (text === null || text.trim() === "") return state;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error("the revocation policy on the role is not JSON; refusing to overwrite it");
  }
  if (!isObject(doc)) throw new Error("the revocation policy on the role is not a policy document; refusing to overwrite it");
  const list = Array.isArray(doc.Statement) ? doc.Statement : doc.Statement === undefined ? [] : [doc.Statement];
  for (const s of list as unknown[]) {
    if (!isObject(s) || typeof s.Sid !== "string" || s.Effect !== "Deny" || s.Action !== "*" || s.Resource !== "*" || !isObject(s.Condition)) {
      state.foreign.push(s);
      continue;
    }
    const exact = EXACT_SID.exec(s.Sid);
    const cut = CUTOFF_SID.exec(s.Sid);
    const cond = s.Condition;
    if (exact && Object.keys(cond).length === 1 && isObject(cond.StringEquals) && Object.keys(cond.StringEquals).length === 1) {
      const ids = cond.StringEquals["aws:userid"];
      const list = typeof ids === "string" ? [ids] : Array.isArray(ids) && ids.every((x) => typeof x === "string") ? (ids as string[]) : null;
      if (list) {
        for (const userId of list) state.sessions.push({ userId, issuedAt: Number(exact[2]) * 1000, expiresAt: Number(exact[1]) * 1000 });
        continue;
      }
    }
    if (cut && Object.keys(cond).length === 1 && isObject(cond.DateLessThan) && Object.keys(cond.DateLessThan).length === 1) {
      const before = Date.parse(String(cond.DateLessThan["aws:TokenIssueTime"]));
      if (Number.isFinite(before)) {
        const c = { before, until: Number(cut[1]) * 1000 };
        state.cutoff = state.cutoff ? { before: Math.max(state.cutoff.before, c.before), until: Math.max(state.cutoff.until, c.until) } : c;
        continue;
      }
    }
    state.foreign.push(s);
  }
  state.sessions = dedupe(state.sessions);
  return state;
}

function dedupe(sessions: RevokedSession[]): RevokedSession[] {
  const by = new Map<string, RevokedSession>();
  for (const s of sessions) {
    const prev = by.get(s.userId);
    by.set(s.userId, prev ? { userId: s.userId, issuedAt: Math.max(prev.issuedAt, s.issuedAt), expiresAt: Math.max(prev.expiresAt, s.expiresAt) } : s);
  }
  return [...by.values()];
}

/**
 * Whether something that lives until `until` (ms, written by any broker) is garbage at `now`
 * (this broker's clock): more than the grace plus the clock skew margin in the past.
 */
export function isDead(until: number, now: number, skewMarginMs = 0): boolean {
  return until + GC_GRACE_MS + skewMarginMs <= now;
}

/** Drops what only names sessions dead for more than the grace (plus the margin), and adds `added`. */
export function mergeDenyState(state: DenyState, added: RevokedSession[], now: number, skewMarginMs = 0): DenyState {
  const alive = (until: number) => !isDead(until, now, skewMarginMs);
  const cutoff = state.cutoff && alive(state.cutoff.until) ? state.cutoff : null;
  const sessions = dedupe([...state.sessions, ...added]).filter((s) => alive(s.expiresAt) && !coveredBy(cutoff, s));
  return { sessions, cutoff, foreign: state.foreign };
}

const coveredBy = (c: Cutoff | null, s: RevokedSession) => c !== null && s.issuedAt < c.before && s.expiresAt <= c.until;

function exactStatements(sessions: RevokedSession[], bucketSeconds: number): Record<string, unknown>[] {
  const groups = new Map<number, RevokedSession[]>();
  for (const s of sessions) {
    const key = bucketSeconds === Infinity ? 0 : Math.ceil(secondsCeil(s.expiresAt) / bucketSeconds);
    const g = groups.get(key);
    if (g) g.push(s);
    else groups.set(key, [s]);
  }
  return [...groups.entries()]
    .sort(([a], [b]) => a - b)
    .map(([, g]) => {
      const until = Math.max(...g.map((s) => secondsCeil(s.expiresAt)));
      const issued = Math.max(...g.map((s) => secondsCeil(s.issuedAt)));
      const ids = g.map((s) => s.userId).sort();
      return {
        Sid: `JitbrokerDenyE${until}I${issued}`,
        Effect: "Deny",
        Action: "*",
        Resource: "*",
        Condition: { StringEquals: { "aws:userid": ids.length === 1 ? ids[0] : ids } },
      };
    });
}

function cutoffStatement(c: Cutoff): Record<string, unknown> {
  return {
    Sid: `JitbrokerDenyBeforeE${secondsCeil(c.until)}`,
    Effect: "Deny",
    Action: "*",
    Resource: "*",
    Condition: { DateLessThan: { "aws:TokenIssueTime": isoSeconds(c.before) } },
  };
}

function render(state: DenyState, bucketSeconds: number): { document: string | null; size: number; statements: number } {
  const exact = exactStatements(state.sessions, bucketSeconds);
  const statements = [...state.foreign, ...(state.cutoff ? [cutoffStatement(state.cutoff)] : []), ...exact];
  if (statements.length === 0) return { document: null, size: 0, statements: 0 };
  const document = JSON.stringify({ Version: "2012-10-17", Statement: statements });
  return { document, size: document.length, statements: exact.length };
}

/**
 * The smallest-impact document of at most `budget` characters that denies every session in
 * `state`: exact statements with the finest expiry buckets that fit, else a cut-off covering the
 * oldest-issued sessions (as few as possible) plus exact statements for the rest.
 * Throws when even a cut-off covering every session does not fit (foreign statements too big).
 */
export function fitDenyPolicy(state: DenyState, budget: number): FitResult {
  const tryExact = (s: DenyState) => {
    for (const b of BUCKETS) {
      const r = render(s, b);
      if (r.size <= budget) return r;
    }
    return null;
  };
  const plain = tryExact(state);
  if (plain) return { ...plain, fallback: null, state };

  // Fallback: sessions sorted by issue time; the first k go under the cut-off.
  const sorted = [...state.sessions].sort((a, b) => a.issuedAt - b.issuedAt || a.expiresAt - b.expiresAt);
  const attempt = (k: number) => {
    const covered = sorted.slice(0, k);
    const before = Math.max(state.cutoff?.before ?? 0, secondsCeil(covered[k - 1]!.issuedAt) * 1000 + 1000);
    const until = Math.max(state.cutoff?.until ?? 0, ...covered.map((s) => s.expiresAt));
    const cutoff = { before, until };
    const rest = sorted.slice(k).filter((s) => !coveredBy(cutoff, s));
    const next: DenyState = { sessions: rest, cutoff, foreign: state.foreign };
    const r = tryExact(next);
    return r ? { r, next, covered: sorted.slice(0, k).concat(sorted.slice(k).filter((s) => coveredBy(cutoff, s))) } : null;
  };
  // The size shrinks as k grows (fewer exact entries, one cut-off): binary search the smallest k.
  let lo = 1;
  let hi = sorted.length;
  let best = hi >= 1 ? attempt(hi) : null;
  if (!best) throw new Error(`the revocation policy cannot be made to fit ${budget} characters, even with a single cut-off statement`);
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const a = attempt(mid);
    if (a) {
      best = a;
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return { ...best.r, fallback: { cutoff: best.next.cutoff!, sessions: best.covered.map((s) => s.userId) }, state: best.next };
}

/** Whether `state` denies the session (used by tests and by the revoke path to skip no-op writes). */
export function stateDenies(state: DenyState, s: RevokedSession): boolean {
  return coveredBy(state.cutoff, s) || state.sessions.some((x) => x.userId === s.userId && x.expiresAt >= s.expiresAt);
}
