/**
 * Turning Redis failures into the broker's one error type. Connections themselves are built by
 * src/redis/connect.ts (the only place that opens them).
 */
import { BrokerError } from "../core/errors";
import { describeRedisError } from "./health";

/** Runs a Redis operation, turning any Redis failure into 503 store_unavailable naming its kind. */
export async function storeCall<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (e) {
    if (e instanceof BrokerError) throw e;
    // Redis at maxmemory (noeviction) refuses writes with an OOM error (docs/ARCHITECTURE.md, I9).
    if (e instanceof Error && /^OOM\b/.test(e.message)) throw new BrokerError("store_full", "the lease store (Redis) is out of memory; nothing was issued", { cause: e, reason: "redis_oom" });
    throw new BrokerError("store_unavailable", `the lease store (Redis) cannot be used (${describeRedisError(e)}); nothing was issued`, { cause: e, reason: "redis" });
  }
}
