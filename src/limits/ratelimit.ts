/**
 * Per-workload rate limit of credential requests (`limits.requests_per_minute`, overridable per
 * workload), counted in Redis so that every broker replica shares one budget. Fixed one-minute
 * windows (rate-limiter-flexible's RateLimiterRedis: one INCRBY + EXPIRE NX script per request).
 *
 * Keys (under the hash tag `{p}`, see src/redis/keys.ts):
 *   {p}:rl:<points>:<workload id>   string  requests counted in the current window; EX = window
 *
 * Fails closed (I7): if Redis cannot count, the request is refused with 503 store_unavailable.
 */
import type { Redis } from "ioredis";
import { RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { BrokerError } from "../core/errors";
import { describeRedisError } from "../redis/health";

export interface RateLimiter {
  /** Counts one request of `workload`; throws 429 rate_limited (with Retry-After) over the limit. */
  consume(workload: string, perMinute: number): Promise<void>;
}

export function createRateLimiter(redis: Redis, tag: string): RateLimiter {
  // One limiter per distinct limit (workloads may override the default); the limit is part of
  // the key so a changed limit starts a fresh window instead of inheriting a foreign count.
  const limiters = new Map<number, RateLimiterRedis>();
  const limiterFor = (points: number) => {
    let l = limiters.get(points);
    if (!l) {
      l = new RateLimiterRedis({ storeClient: redis, keyPrefix: `${tag}:rl:${points}`, points, duration: 60, rejectIfRedisNotReady: true });
      limiters.set(points, l);
    }
    return l;
  };

  return {
    async consume(workload, perMinute) {
      if (perMinute <= 0) return;
      try {
        await limiterFor(perMinute).consume(workload, 1);
      } catch (e) {
        if (e instanceof RateLimiterRes) {
          const retryAfter = Math.max(1, Math.ceil(e.msBeforeNext / 1000));
          throw new BrokerError("rate_limited", `workload ${workload} exceeded ${perMinute} credential requests per minute; retry in ${retryAfter}s`, {
            headers: { "Retry-After": String(retryAfter) },
          });
        }
        throw new BrokerError("store_unavailable", `the rate limit cannot be checked (${describeRedisError(e)}); nothing was issued`, { cause: e, reason: "redis" });
      }
    },
  };
}
