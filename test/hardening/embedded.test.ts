/**
 * Issue 13, finding 3: the embedded Redis is private (unix socket in a 0700 directory, no TCP)
 * and one data directory serves one broker at a time.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { EmbeddedRedisError, lockDataDir, startEmbeddedRedis, type EmbeddedRedis } from "../../src/redis/embedded";
import { rawCommand } from "../support/redis-server";

describe("embedded Redis without authentication (finding 3)", () => {
  let dir: string;
  let first: EmbeddedRedis | undefined;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "jit-emb-"));
  });
  afterAll(async () => {
    await first?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("listens on a 0700 unix socket in the 0700 data directory and on no TCP port", async () => {
    const data = path.join(dir, "redis");
    first = await startEmbeddedRedis(data);
    expect(first.url).toBe(path.join(data, "redis.sock"));
    expect(statSync(data).mode & 0o777).toBe(0o700);
    expect(statSync(first.url).mode & 0o077).toBe(0);
    expect(await rawCommand(first.url, ["INFO", "server"])).toMatch(/^tcp_port:0\r?$/m);
    const client = new Redis(first.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await client.connect();
    expect(await client.set("k", "v")).toBe("OK");
    client.disconnect();
  });

  it("has a maxmemory with noeviction, so the memory watch (store_full) protects revocation here too", async () => {
    const info = await rawCommand(first!.url, ["INFO", "memory"]);
    expect(info).toMatch(new RegExp(`^maxmemory:${512 * 1024 * 1024}\\r?$`, "m"));
    expect(info).toMatch(/^maxmemory_policy:noeviction\r?$/m);
  });

  it("a second broker on the same data directory is refused, and the first one's files are untouched", async () => {
    const data = path.join(dir, "redis");
    const url = readFileSync(path.join(data, "redis.url"), "utf8");
    await expect(startEmbeddedRedis(data)).rejects.toThrow(EmbeddedRedisError);
    await expect(startEmbeddedRedis(data)).rejects.toThrow(/is in use by another jitbroker \(pid \d+\)/);
    expect(readFileSync(path.join(data, "redis.url"), "utf8")).toBe(url);
    expect(await rawCommand(first!.url, ["PING"])).toBe("PONG");
  });

  it("after a stop, the lock is released; a lock left by a process that is gone is taken over", async () => {
    const data = path.join(dir, "redis");
    await first!.stop();
    first = undefined;
    expect(existsSync(path.join(data, "jitbroker.lock"))).toBe(false);
    writeFileSync(path.join(data, "jitbroker.lock"), "2147483646 1 not-this-boot\n");
    first = await startEmbeddedRedis(data);
    expect(await rawCommand(first.url, ["GET", "k"])).toBe("v"); // same AOF, data kept
  });

  it("a directory whose existing mode was open is closed to 0700 first", async () => {
    const data = path.join(dir, "open");
    const { mkdirSync, chmodSync } = await import("node:fs");
    mkdirSync(data);
    chmodSync(data, 0o755);
    const release = lockDataDir(data);
    release();
    const e = await startEmbeddedRedis(data);
    try {
      expect(statSync(data).mode & 0o777).toBe(0o700);
    } finally {
      await e.stop();
    }
  });
});
