import type { Redis } from "ioredis";
import type { Keyspace } from "../redis/keys";
import { storeCall } from "../redis/client";
import type { ReplayGuard } from "./verify";

/** Single-use token ids in Redis: `SET NX PXAT exp` so a jti is remembered until its token dies. */
export function createRedisReplayGuard(redis: Redis, keys: Keyspace): ReplayGuard {
  return {
    claim: (issuer, jti, expiresAtMs) =>
      storeCall(async () => (await redis.set(keys.seenJti(issuer, jti), "1", "PXAT", Math.ceil(expiresAtMs), "NX")) === "OK"),
  };
}
