/**
 * `redis.shards` cannot change under existing data: a lease, request or queue job is found on
 * the shard its id and workload hash to (src/redis/keys.ts), so another shard count would lose
 * track of everything already written. The count is recorded in `{p}:shards` (base tag) by the
 * first broker to start; a broker configured with another count is refused, naming both counts
 * and the procedure (README, "Operations: high availability", Shards). Data from before the
 * marker existed was written with one shard.
 */
import type { Redis } from "ioredis";
import { createKeyspace, type Keyspace } from "./keys";

export class ShardCountError extends Error {
  constructor(
    readonly configured: number,
    readonly stored: number,
    prefix: string,
  ) {
    super(
      `redis.shards is ${configured}, but the data under redis.prefix "${prefix}" was written with ${stored} shard(s); ` +
        `a broker cannot change redis.shards over existing data (set it back to ${stored}, or follow "Changing redis.shards" in the README, Operations: high availability)`,
    );
    this.name = "ShardCountError";
  }
}

/**
 * Records the shard count, or checks it against the one recorded. Rejects with ShardCountError
 * on a mismatch, with the Redis error when Redis cannot be asked.
 */
export async function checkShardCount(redis: Redis, keys: Keyspace, prefix: string): Promise<void> {
  const stored = await redis.get(keys.shardCount);
  if (stored !== null) {
    const n = Number(stored);
    if (n !== keys.shards) throw new ShardCountError(keys.shards, Number.isInteger(n) && n > 0 ? n : NaN, prefix);
    return;
  }
  if (keys.shards > 1) {
    // No marker: a deployment from before it existed has one shard's keys under the base tag.
    const one = createKeyspace(prefix, 1).shardKeys[0]!;
    const old = await Promise.all([one.leasesAll, one.leasesDue, one.reqs].map((k) => redis.exists(k)));
    if (old.some((n) => n > 0)) throw new ShardCountError(keys.shards, 1, prefix);
  }
  if ((await redis.set(keys.shardCount, String(keys.shards), "NX")) !== "OK") return checkShardCount(redis, keys, prefix);
}
