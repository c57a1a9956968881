/** The test suite runs its Redis servers with the same code as `redis.url: embedded`. */
import type { RedisServerHandle } from "../../src/redis/server";

export { startRedisServer, rawCommand, pingRaw, findFreePort, type RedisServerHandle, type RedisServerOptions } from "../../src/redis/server";

declare global {
  // Set by test/support/global-setup.ts, read by global-teardown.ts (same process).
  var __JIT_REDIS__: RedisServerHandle | undefined;
}
