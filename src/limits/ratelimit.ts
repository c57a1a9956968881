/**
 * Per-workload rate limit of writes (`limits.requests_per_minute`, overridable per workload),
 * counted in Redis so that every broker replica shares one budget. One budget covers every call a
 * workload makes that can write: credential requests (counted by the lease service), and every
 * other non-GET call under /v1 plus the collection of an approved request (`limitWrites`), so no
 * route lets one workload write without bound (docs/ARCHITECTURE.md, I9). Fixed one-minute windows
 * (one script per request: SET NX with the window as expiry, INCR, PTTL; see CONSUME below).
 *
 * Keys (under the hash tag `{p}`, see src/redis/keys.ts):
 *   {p}:rl:<points>:<workload id>   string  requests counted in the current window; EX = window
 *
 * Fails closed (I7): if Redis cannot count, the request is refused with 503 store_unavailable.
 *
 * The counter is one registered script (src/redis/scripts.ts), defined when the limiter is
 * created, before any traffic: a command defined while ioredis has an auto-pipeline open is
 * missing from that pipeline (the hazard rate-limiter-flexible, which this replaced, hit by
 * defining its command on the first request of each new limit). Same key and window semantics.
 */
import type { NextFunction, Request, RequestHandler, Response } from "express";
import type { Redis } from "ioredis";
import { BrokerError } from "../core/errors";
import { describeRedisError } from "../redis/health";
import type { Keyspace } from "../redis/keys";
import { luaScript, registerScripts, runScript } from "../redis/scripts";

/** Length of one counting window. */
export const WINDOW_SECONDS = 60;

const CONSUME = luaScript<[number, number]>(
  "jitRateLimitConsume",
  `
-- KEYS: 1 the counter {p}:rl:<limit>:<workload>.  ARGV: 1 window seconds
-- Output: {count in this window including this request, ms until the window ends}
-- A fixed window: the first request of a window creates the counter with its expiry; a counter
-- that lost its expiry (written by hand) gets one, so no workload is limited forever.
-- Two calls a request: INCR, then PTTL, or EXPIRE when INCR just created the counter.
local n = redis.call('INCR', KEYS[1])
local ttl = -1
if n > 1 then ttl = redis.call('PTTL', KEYS[1]) end
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = 1000 * tonumber(ARGV[1])
end
return {n, ttl}
`,
);

export interface RateLimiter {
  /** Counts one write of `workload`; throws 429 rate_limited (with Retry-After) over the limit. */
  consume(workload: string, perMinute: number): Promise<void>;
}

export function createRateLimiter(redis: Redis, keys: Keyspace): RateLimiter {
  registerScripts(redis, [CONSUME]);
  const window = String(WINDOW_SECONDS);
  return {
    async consume(workload, perMinute) {
      if (perMinute <= 0) return;
      // The limit is part of the key, so a changed limit starts a fresh window instead of
      // inheriting a foreign count; a workload's counter is on its shard (src/redis/keys.ts).
      const key = keys.forWorkload(workload).rateLimitPrefix(String(perMinute)) + workload;
      let reply: [number, number];
      try {
        // Not connected (reconnecting after a failover): refuse at once rather than queue.
        if (redis.status !== "ready") throw new Error("Redis connection is not ready");
        reply = await runScript(redis, CONSUME, [key], [window]);
      } catch (e) {
        throw new BrokerError("store_unavailable", `the rate limit cannot be checked (${describeRedisError(e)}); nothing was issued`, { cause: e, reason: "redis" });
      }
      const [count, ttl] = reply;
      if (!(typeof count === "number" && typeof ttl === "number")) {
        throw new BrokerError("store_unavailable", "the rate limit cannot be checked (unexpected reply from Redis); nothing was issued", { reason: "redis" });
      }
      if (count > perMinute) {
        const retryAfter = Math.max(1, Math.ceil(ttl / 1000));
        throw new BrokerError("rate_limited", `workload ${workload} exceeded ${perMinute} requests per minute; retry in ${retryAfter}s`, {
          headers: { "Retry-After": String(retryAfter) },
        });
      }
    },
  };
}

/** Paths whose writes are counted elsewhere or that write nothing (POST for a body only). */
const NOT_COUNTED = new Set(["/v1/credentials", "/v1/introspect"]);

/**
 * Counts every authenticated call that can write (any method but GET, HEAD, OPTIONS) against the
 * caller's budget, before its handler runs. Credential requests are counted by the lease
 * service (an approved request's collection, a GET, by its route), against the same budget.
 */
export function limitWrites(limiter: RateLimiter, defaultPerMinute: number): RequestHandler {
  return async (req: Request, _res: Response, next: NextFunction) => {
    const auth = req.auth;
    if (!auth || req.method === "GET" || req.method === "HEAD" || req.method === "OPTIONS" || NOT_COUNTED.has(req.path)) {
      next();
      return;
    }
    await limiter.consume(auth.workload.id, auth.workload.limits?.requests_per_minute ?? defaultPerMinute);
    next();
  };
}
