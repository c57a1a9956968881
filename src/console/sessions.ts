/**
 * Console sessions and sign-in transactions, kept server side in Redis
 * (docs/ARCHITECTURE.md, Console). The browser holds only an opaque random session id in an HttpOnly cookie; Redis
 * holds its SHA-256, so a dump of Redis cannot be replayed as a cookie. No token of the identity
 * provider is ever stored: only the operator's workload id, issuer, subject and the values of
 * the claims its inventory entry names (what Cedar sees as principal.claims).
 *
 * Keys (built by the keyspace, src/redis/keys.ts; docs/ARCHITECTURE.md, Redis key layout):
 *   {p}:console:s:<sha256(sid)>    hash   w (workload id) iss (issuer name) sub (subject)
 *                                         cl (JSON claims) csrf (token) c (created ms) l (last use ms)
 *                                         PEXPIRE = min(last use + idle, created + max)
 *   {p}:console:op:<sha256(w)>     set    sha256(sid) of the operator's sessions (sign-out ends
 *                                         them all); PEXPIRE = the longest session's max
 *   {p}:console:login:<sha256(st)> string JSON {v: PKCE verifier, n: nonce, b: sha256(binding)},
 *                                         PX 10 min, read once (GETDEL)
 *   {p}:console:logins:<minute>    string sign-ins started in that minute (a budget), EX 120 s
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Redis } from "ioredis";
import { BrokerError } from "../core/errors";
import type { Keyspace } from "../redis/keys";

const sha = (s: string) => createHash("sha256").update(s).digest("base64url");
export const randomToken = () => randomBytes(32).toString("base64url");
/** Session ids, CSRF tokens and login bindings are 43 characters of base64url (256 bits). */
export const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/;

export interface ConsoleSession {
  workload: string;
  issuer: string;
  subject: string;
  claims: Record<string, string | number | boolean>;
  csrf: string;
  createdMs: number;
  lastMs: number;
}

/**
 * Pure: whether a session created at `createdMs` and last used at `lastMs` is still alive at
 * `nowMs`, and for how long it may live from now on if it is used now.
 */
export function sessionWindow(createdMs: number, lastMs: number, nowMs: number, idleMs: number, maxMs: number): { alive: boolean; ttlMs: number } {
  const alive = nowMs < lastMs + idleMs && nowMs < createdMs + maxMs && nowMs >= createdMs - 60_000;
  return { alive, ttlMs: Math.max(0, Math.min(idleMs, createdMs + maxMs - nowMs)) };
}

/** Constant-time comparison of two tokens (false for any shape mismatch). */
export function sameToken(a: unknown, b: string): boolean {
  if (typeof a !== "string" || !TOKEN_SHAPE.test(a) || !TOKEN_SHAPE.test(b)) return false;
  return timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

export interface SessionStoreOptions {
  idleMs: number;
  maxMs: number;
  now?: () => number;
}

export interface LoginTransaction {
  verifier: string;
  nonce: string;
}

export function createConsoleSessions(redis: Redis, keys: Keyspace, opts: SessionStoreOptions) {
  const now = opts.now ?? Date.now;
  const k = {
    session: keys.consoleSession,
    operator: keys.consoleOperator,
    login: keys.consoleLogin,
    logins: (minute: number) => keys.consoleLogins(String(minute)),
  };
  const store = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (e) {
      throw new BrokerError("store_unavailable", "the session store (Redis) is unavailable", { cause: e });
    }
  };

  return {
    keys: k,

    /** A new session for a signed-in operator; returns the cookie value (never stored as is). */
    async create(s: Omit<ConsoleSession, "csrf" | "createdMs" | "lastMs">): Promise<{ sid: string; session: ConsoleSession }> {
      const sid = randomToken();
      const t = now();
      const session: ConsoleSession = { ...s, csrf: randomToken(), createdMs: t, lastMs: t };
      const hash = sha(sid);
      const ttl = sessionWindow(t, t, t, opts.idleMs, opts.maxMs).ttlMs;
      await store(() =>
        redis
          .multi()
          .hset(k.session(hash), { w: s.workload, iss: s.issuer, sub: s.subject, cl: JSON.stringify(s.claims), csrf: session.csrf, c: String(t), l: String(t) })
          .pexpire(k.session(hash), ttl)
          .sadd(k.operator(s.workload), hash)
          .pexpire(k.operator(s.workload), opts.maxMs)
          .exec(),
      );
      return { sid, session };
    },

    /**
     * The live session of a cookie value, or null. `touch` counts this as use (the idle clock
     * restarts); background refreshes of the console do not touch, so an open tab nobody looks
     * at still times out.
     */
    async get(sid: string | undefined, touch: boolean): Promise<ConsoleSession | null> {
      if (sid === undefined || !TOKEN_SHAPE.test(sid)) return null;
      const hash = sha(sid);
      const h = await store(() => redis.hgetall(k.session(hash)));
      if (!h.w || !h.csrf || !h.c || !h.l) return null;
      const createdMs = Number(h.c);
      const lastMs = Number(h.l);
      const t = now();
      const w = sessionWindow(createdMs, lastMs, t, opts.idleMs, opts.maxMs);
      if (!w.alive) {
        await store(() => redis.multi().del(k.session(hash)).srem(k.operator(h.w!), hash).exec());
        return null;
      }
      let claims: ConsoleSession["claims"] = {};
      try {
        const parsed = JSON.parse(h.cl ?? "{}") as unknown;
        if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) claims = parsed as ConsoleSession["claims"];
      } catch {
        /* a damaged record carries no claims; a workload that needs some then does not match */
      }
      if (touch) await store(() => redis.multi().hset(k.session(hash), "l", String(t)).pexpire(k.session(hash), w.ttlMs).exec());
      return { workload: h.w, issuer: h.iss ?? "", subject: h.sub ?? "", claims, csrf: h.csrf, createdMs, lastMs: touch ? t : lastMs };
    },

    /** Ends every session of the operator who owns `sid` (sign-out ends the session everywhere). */
    async endAll(workload: string): Promise<number> {
      const hashes = await store(() => redis.smembers(k.operator(workload)));
      const m = redis.multi().del(k.operator(workload));
      for (const h of hashes) m.del(k.session(h));
      await store(() => m.exec());
      return hashes.length;
    },

    /** Ends one session. */
    async end(sid: string, workload: string): Promise<void> {
      if (!TOKEN_SHAPE.test(sid)) return;
      const hash = sha(sid);
      await store(() => redis.multi().del(k.session(hash)).srem(k.operator(workload), hash).exec());
    },

    /** Takes one sign-in from this minute's budget; false when it is spent. */
    async loginBudget(perMinute: number): Promise<boolean> {
      const key = k.logins(Math.floor(now() / 60_000));
      const [[, n]] = (await store(() => redis.multi().incr(key).expire(key, 120).exec())) as [[Error | null, number]];
      return n <= perMinute;
    },

    /** Stores a sign-in transaction under its `state` for 10 minutes, bound to the browser's binding value. */
    async beginLogin(state: string, binding: string, tx: LoginTransaction): Promise<void> {
      await store(() => redis.set(k.login(state), JSON.stringify({ v: tx.verifier, n: tx.nonce, b: sha(binding) }), "PX", 600_000));
    },

    /** The transaction of `state`, once (a replayed callback finds nothing), if `binding` matches. */
    async finishLogin(state: string, binding: string | undefined): Promise<LoginTransaction | null> {
      if (state.length === 0 || state.length > 512) return null;
      const raw = await store(() => redis.getdel(k.login(state)));
      if (!raw) return null;
      const tx = JSON.parse(raw) as { v: string; n: string; b: string };
      if (binding === undefined || !TOKEN_SHAPE.test(binding) || !timingSafeEqual(Buffer.from(sha(binding)), Buffer.from(tx.b))) return null;
      return { verifier: tx.v, nonce: tx.n };
    },
  };
}

export type ConsoleSessions = ReturnType<typeof createConsoleSessions>;
