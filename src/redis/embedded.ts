/**
 * `redis.url: embedded`: a local redis-server child for development and single-node use, private
 * to the user running the broker (issue 13, finding 3):
 * - it listens on a unix socket inside the data directory only, never on TCP; the directory is
 *   0700 and the socket 0700, so no other local user can reach it (a loopback TCP port without
 *   a password let any local user revive a revoked lease or delete due entries);
 * - one broker at a time per data directory: a lock file (`jitbroker.lock`, created exclusively,
 *   holding the owner's pid) refuses a second `dev` or `serve` on the same directory with a clear
 *   message, instead of a second redis-server on the same AOF; a lock whose process is gone is
 *   taken over;
 * - AOF on, `maxmemory` from `redis.embedded_maxmemory` (default 512mb) with `maxmemory-policy
 *   noeviction`, so the broker's memory watch (store_full) works here too; stopped with the broker.
 * `redis.url` in the data directory (0600) tells CLI commands on the same machine (audit verify)
 * where the socket is.
 */
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import path from "node:path";
import { startRedisServer } from "./server";

export interface EmbeddedRedis {
  url: string;
  stop(): Promise<void>;
}

const URL_FILE = "redis.url";
const LOCK_FILE = "jitbroker.lock";
const SOCKET = "redis.sock";
/** sun_path is 108 bytes on Linux (104 on macOS), including the terminating NUL. */
const MAX_SOCKET_PATH = 103;

export class EmbeddedRedisError extends Error {}

/** The URL of the embedded Redis running on `dataDir`, or null when none is running. */
export function embeddedRedisUrl(dataDir: string): string | null {
  try {
    return readFileSync(path.join(dataDir, URL_FILE), "utf8").trim() || null;
  } catch {
    return null;
  }
}

/**
 * Who holds a lock: the pid, and on Linux the process's start time and the boot id, so that a
 * pid reused by another process (a container's pid 1 after a restart) is not taken for the owner.
 */
function identityOf(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const start = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
    const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    return `${pid} ${start} ${boot}`;
  } catch {
    return String(pid);
  }
}

/** Is the process that wrote `holder` (see identityOf) still running? */
function holderAlive(holder: string): boolean {
  const pid = Number(holder.split(" ")[0]);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  const now = identityOf(pid);
  // Without /proc on either side, the pid is all there is to compare.
  return !holder.includes(" ") || !now.includes(" ") || now === holder;
}

/**
 * Takes the data directory's lock (an exclusively created file holding our pid); a lock left by
 * a process that no longer runs is replaced. Returns its release function.
 */
export function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, LOCK_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const me = identityOf(process.pid);
      const fd = openSync(file, "wx", 0o600);
      writeSync(fd, `${me}\n`);
      closeSync(fd);
      return () => {
        try {
          if (readFileSync(file, "utf8").trim() === me) rmSync(file, { force: true });
        } catch {
          /* already gone */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      let holder: string;
      try {
        holder = readFileSync(file, "utf8").trim();
      } catch {
        continue; // removed meanwhile: try again
      }
      if (holderAlive(holder)) {
        throw new EmbeddedRedisError(
          `the embedded Redis data directory ${dataDir} is in use by another jitbroker (pid ${holder.split(" ")[0]}); stop it, or give this one another redis.data_dir (or JITBROKER_HOME for dev)`,
        );
      }
      rmSync(file, { force: true }); // stale: its process is gone
    }
  }
  throw new EmbeddedRedisError(`cannot take the lock ${file}`);
}

export async function startEmbeddedRedis(dataDir: string, maxmemory = "512mb"): Promise<EmbeddedRedis> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chmodSync(dataDir, 0o700); // mkdirSync's mode does not apply to a directory that already existed
  const socket = path.join(path.resolve(dataDir), SOCKET);
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    throw new EmbeddedRedisError(`redis.data_dir ${dataDir} is too long for the embedded Redis's unix socket (${socket}); use a shorter path`);
  }
  const unlock = lockDataDir(dataDir);
  try {
    rmSync(socket, { force: true }); // left by a crashed run; the lock says no one uses it
    const server = await startRedisServer({ dir: dataDir, appendonly: true, unixSocket: socket, maxmemory });
    // Lets CLI commands on the same machine (audit verify) find the running embedded Redis.
    const urlFile = path.join(dataDir, URL_FILE);
    writeFileSync(urlFile, `${server.url}\n`, { mode: 0o600 });
    return {
      url: server.url,
      stop: async () => {
        rmSync(urlFile, { force: true });
        await server.stop();
        unlock();
      },
    };
  } catch (e) {
    unlock();
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || /ENOENT/.test((e as Error).message)) {
      throw new Error("redis.url is embedded but redis-server is not installed (apt-get install redis-server)");
    }
    throw e;
  }
}
