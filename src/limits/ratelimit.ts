/**
 * Per-workload rate limit of writes (`limits.requests_per_minute`, overridable per workload),
 * counted in Redis so that every broker replica shares one budget. One budget covers every call a
 * workload makes that can write: credential requests (counted by the lease service), and every
 * other non-GET call under /v1 plus the collection of an approved request (`limitWrites`), so no
 * route lets one workload write without bound (docs/ARCHITECTURE.md, I9). Fixed one-minute windows
 * (rate-limiter-flexible's RateLimiterRedis: one INCRBY + EXPIRE NX script per request).
 *
 * Keys (under the hash tag `{p}`, see src/redis/keys.ts):
 *   {p}:rl:<points>:<workload id>   string  requests counted in the current window; EX = window
 *
 * Fails closed (I7): if Redis cannot count, the request is refused with 503 store_unavailable.
 */
import type { NextFunction, Request, RequestHandler, Response } from "express";
import type { Redis } from "ioredis";
import { RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { BrokerError } from "../core/errors";
import { describeRedisError } from "../redis/health";
import type { Keyspace } from "../redis/keys";

export interface RateLimiter {
  /** Counts one write of `workload`; throws 429 rate_limited (with Retry-After) over the limit. */
  consume(workload: string, perMinute: number): Promise<void>;
}

export function createRateLimiter(redis: Redis, keys: Keyspace): RateLimiter {
  // One limiter per shard and distinct limit (workloads may override the default); the limit is
  // part of the key so a changed limit starts a fresh window instead of inheriting a foreign
  // count. A workload's counter is on its shard (src/redis/keys.ts).
  const limiters = new Map<string, RateLimiterRedis>();
  const limiterFor = (workload: string, points: number) => {
    const prefix = keys.forWorkload(workload).rateLimitPrefix(String(points));
    let l = limiters.get(prefix);
    if (!l) {
      // rate-limiter-flexible adds ":<workload>" itself.
      l = new RateLimiterRedis({ storeClient: redis, keyPrefix: prefix.slice(0, -1), points, duration: 60, rejectIfRedisNotReady: true });
      limiters.set(prefix, l);
    }
    return l;
  };

  return {
    async consume(workload, perMinute) {
      if (perMinute <= 0) return;
      try {
        await limiterFor(workload, perMinute).consume(workload, 1);
      } catch (e) {
        if (e instanceof RateLimiterRes) {
          const retryAfter = Math.max(1, Math.ceil(e.msBeforeNext / 1000));
          throw new BrokerError("rate_limited", `workload ${workload} exceeded ${perMinute} requests per minute; retry in ${retryAfter}s`, {
            headers: { "Retry-After": String(retryAfter) },
          });
        }
        throw new BrokerError("store_unavailable", `the rate limit cannot be checked (${describeRedisError(e)}); nothing was issued`, { cause: e, reason: "redis" });
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
