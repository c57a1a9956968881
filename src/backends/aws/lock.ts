/**
 * A small Redis lock that serializes the read-modify-write of one role's revocation policy
 * across broker replicas (within one process, revocations of a role are already queued and
 * batched by the backend).
 *
 * Keys (under the keyspace's hash tag `{p}`, see src/redis/keys.ts):
 *   {p}:aws:lock:<sha256(role ARN) base64url>   string: a random owner token; PX = the lock's
 *                                               ttl. Set with SET NX PX; extended and released
 *                                               only by its owner (compare-and-PEXPIRE /
 *                                               compare-and-DEL scripts below).
 *
 * The owner refreshes the lock right before each write to IAM (`guard.refresh()`), and gives up
 * (an `unavailable` error) if the lock was lost. The ttl bounds how long a crashed holder blocks the role.
 *
 * Deadline: the locked section gets `sectionMs` (default half the ttl) from the moment the lock
 * is taken. Then `guard.signal` aborts: the backend passes it to every IAM call of the section
 * and stops waiting for them (SDK retries and backoff included), and `refresh()` refuses to
 * start a write. So the holder stops well before its lock can expire under it. A request
 * already on the wire may still be applied by IAM after that; what protects other replicas'
 * updates from such a late write is not this lock but the Redis record of revoked sessions and
 * the check that rewrites the policy when IAM's copy misses some of them (revoked.ts).
 */
import { luaScript, registerScripts, runScript } from "../../redis/scripts";
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import type { Keyspace } from "../../redis/keys";
import { BackendError } from "../types";
import { redisCall } from "./redis-call";

const RELEASE = luaScript<number>("jitAwsLockRelease", `
-- KEYS: 1 lock.  ARGV: 1 token
-- Output: 1 released, 0 held by another (or expired)
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

const EXTEND = luaScript<number>("jitAwsLockExtend", `
-- KEYS: 1 lock.  ARGV: 1 token, 2 ttl ms
-- Output: 1 extended, 0 no longer held by this token
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`);

export interface LockGuard {
  /** Extends the lock; throws an `unavailable` BackendError when it was lost or the deadline passed. */
  refresh(): Promise<void>;
  /** Aborted (reason: an `unavailable` BackendError) when the section reaches its deadline. */
  signal: AbortSignal;
  /** The section's time budget, ms. */
  sectionMs: number;
}

export interface RoleLock {
  /** Runs `fn` holding the role's lock; waits at most `waitMs` for it. */
  withLock<T>(roleArn: string, fn: (guard: LockGuard) => Promise<T>): Promise<T>;
}

export function createRoleLock(redis: Redis, keys: Pick<Keyspace, "awsLock">, opts: { ttlMs: number; waitMs: number; sectionMs?: number; sleep?: (ms: number) => Promise<void> }): RoleLock {
  const sectionMs = opts.sectionMs ?? Math.floor(opts.ttlMs / 2);
  if (!(sectionMs > 0 && sectionMs < opts.ttlMs)) throw new Error(`the locked section (${sectionMs} ms) must be shorter than the lock's ttl (${opts.ttlMs} ms)`);
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  registerScripts(redis, [RELEASE, EXTEND]);

  return {
    async withLock(roleArn, fn) {
      const k = keys.awsLock(roleArn);
      const token = randomBytes(16).toString("base64url");
      const start = Date.now();
      for (;;) {
        const ok = await redisCall("take the revocation lock", () => redis.set(k, token, "PX", opts.ttlMs, "NX"));
        if (ok === "OK") break;
        if (Date.now() - start >= opts.waitMs) {
          throw new BackendError(`the revocation policy of ${roleArn} is being updated by another broker (lock held for more than ${opts.waitMs} ms); will retry`, "unavailable");
        }
        await sleep(25 + Math.floor(Math.random() * 75));
      }
      const ac = new AbortController();
      const deadline = setTimeout(() => {
        ac.abort(new BackendError(`the revocation policy update of ${roleArn} ran past its ${sectionMs} ms deadline (the role's lock lasts ${opts.ttlMs} ms); will retry`, "unavailable"));
      }, sectionMs);
      deadline.unref?.();
      const guard: LockGuard = {
        signal: ac.signal,
        sectionMs,
        async refresh() {
          if (ac.signal.aborted) throw ac.signal.reason as Error;
          const extended = await redisCall("extend the revocation lock", () => runScript(redis, EXTEND, [k], [token, String(opts.ttlMs)]));
          if (Number(extended) !== 1) throw new BackendError(`lost the revocation lock of ${roleArn} (held longer than ${opts.ttlMs} ms); nothing was written, will retry`, "unavailable");
          if (ac.signal.aborted) throw ac.signal.reason as Error;
        },
      };
      try {
        return await fn(guard);
      } finally {
        clearTimeout(deadline);
        await runScript(redis, RELEASE, [k], [token]).catch(() => undefined);
      }
    },
  };
}
