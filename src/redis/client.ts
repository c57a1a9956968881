/**
 * Redis connections. Request-path connections fail fast while Redis is unreachable (no offline
 * queue, one retry) so the broker answers 503 `store_unavailable` instead of hanging (I7), and
 * reconnect on their own so `/readyz` recovers when Redis comes back.
 */
import { Redis, type RedisOptions } from "ioredis";
import { BrokerError } from "../core/errors";

/**
 * Reconnect delay after the `times`-th failed attempt: 200 ms doubling to at most 2 s. Every
 * connection the broker opens uses it, so all of them are back within ~2 s of Redis returning
 * (ioredis 6's own default backs off to 5 s, which delays revocation after an outage).
 */
export const reconnectDelay = (times: number): number => Math.min(100 * 2 ** Math.min(times, 5), 2000);

export function createRedisClient(url: string, name: string, extra: RedisOptions = {}): Redis {
  return new Redis(url, {
    connectionName: name,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    commandTimeout: 2000,
    retryStrategy: reconnectDelay,
    lazyConnect: false,
    ...extra,
  });
}

/** Runs a Redis operation, turning any connection failure into 503 store_unavailable. */
export async function storeCall<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (e) {
    if (e instanceof BrokerError) throw e;
    throw new BrokerError("store_unavailable", "the lease store (Redis) is unreachable; nothing was issued", { cause: e, reason: "redis" });
  }
}

export async function pingRedis(redis: Redis, timeoutMs = 1000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const pong = await Promise.race([
      redis.ping(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("timeout")), timeoutMs);
      }),
    ]);
    return pong === "PONG";
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}
