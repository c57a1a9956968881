/** Jest globalTeardown: stop the redis-server started by global-setup.ts and remove its dir. */
import { rm } from 'node:fs/promises';
import type { RedisServerHandle } from './redis-server'; // also declares globalThis.__JIT_REDIS__

export default async function globalTeardown(): Promise<void> {
  const redis: RedisServerHandle | undefined = globalThis.__JIT_REDIS__;
  if (!redis) return;
  globalThis.__JIT_REDIS__ = undefined;
  await redis.stop();
  await rm(redis.dir, { recursive: true, force: true });
}
