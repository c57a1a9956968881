/**
 * Jest globalSetup: one redis-server for the whole run.
 *
 * Its URL goes to JITBROKER_TEST_REDIS_URL; Jest starts its workers after this
 * runs, so they inherit the variable. The handle stays on globalThis for
 * global-teardown.ts (which runs in this same process).
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startRedisServer } from './redis-server';

function redisServerOnPath(): boolean {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export default async function globalSetup(): Promise<void> {
  if (!redisServerOnPath()) {
    throw new Error('redis-server not found: run ./scripts/test, or apt-get install redis-server');
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'jitbroker-test-redis-'));
  const redis = await startRedisServer({ dir, appendonly: false });
  globalThis.__JIT_REDIS__ = redis;
  process.env.JITBROKER_TEST_REDIS_URL = redis.url;
}
