/**
 * `redis.url: embedded`: a local redis-server child for development and single-node use.
 * Loopback only, on a free port, AOF on, data under `redis.data_dir`; stopped with the broker.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { startRedisServer } from "./server";

export interface EmbeddedRedis {
  url: string;
  stop(): Promise<void>;
}

const URL_FILE = "redis.url";

/** The URL of the embedded Redis running on `dataDir`, or null when none is running. */
export function embeddedRedisUrl(dataDir: string): string | null {
  try {
    return readFileSync(path.join(dataDir, URL_FILE), "utf8").trim() || null;
  } catch {
    return null;
  }
}

export async function startEmbeddedRedis(dataDir: string): Promise<EmbeddedRedis> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  try {
    const server = await startRedisServer({ dir: dataDir, appendonly: true });
    // Lets CLI commands on the same machine (audit verify) find the running embedded Redis.
    const urlFile = path.join(dataDir, URL_FILE);
    writeFileSync(urlFile, `${server.url}\n`, { mode: 0o600 });
    return {
      url: server.url,
      stop: async () => {
        rmSync(urlFile, { force: true });
        await server.stop();
      },
    };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || /ENOENT/.test((e as Error).message)) {
      throw new Error("redis.url is embedded but redis-server is not installed (apt-get install redis-server)");
    }
    throw e;
  }
}
