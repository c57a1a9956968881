/**
 * `redis.url: embedded`: a local redis-server child for development and single-node use.
 * Loopback only, on a free port, AOF on, data under `redis.data_dir`; stopped with the broker.
 */
import { mkdirSync } from "node:fs";
import { startRedisServer } from "./server";

export interface EmbeddedRedis {
  url: string;
  stop(): Promise<void>;
}

export async function startEmbeddedRedis(dataDir: string): Promise<EmbeddedRedis> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  try {
    const server = await startRedisServer({ dir: dataDir, appendonly: true });
    return { url: server.url, stop: server.stop };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || /ENOENT/.test((e as Error).message)) {
      throw new Error("redis.url is embedded but redis-server is not installed (apt-get install redis-server)");
    }
    throw e;
  }
}
