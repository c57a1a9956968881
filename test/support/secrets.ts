/** Secret scans for I6: everything under a Redis prefix, as text and as DUMP payloads. */
import type { Redis } from "ioredis";

/** The text of every key under a prefix (read by type) and its DUMP payloads. */
export async function redisContents(redis: Redis, prefix: string): Promise<{ keys: number; text: string; dumps: Buffer[] }> {
  const parts: string[] = [];
  const dumps: Buffer[] = [];
  let keys = 0;
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", `{${prefix}}*`, "COUNT", 1000);
    cursor = next;
    for (const key of batch) {
      keys++;
      parts.push(key);
      const type = await redis.type(key);
      if (type === "string") parts.push((await redis.get(key)) ?? "");
      else if (type === "hash") parts.push(JSON.stringify(await redis.hgetall(key)));
      else if (type === "list") parts.push(JSON.stringify(await redis.lrange(key, 0, -1)));
      else if (type === "set") parts.push(JSON.stringify(await redis.smembers(key)));
      else if (type === "zset") parts.push(JSON.stringify(await redis.zrange(key, 0, -1, "WITHSCORES")));
      else if (type === "stream") parts.push(JSON.stringify(await redis.xrange(key, "-", "+")));
      else if (type !== "none") throw new Error(`unexpected key type ${type} for ${key}`);
      const d = await redis.dumpBuffer(key);
      if (d) dumps.push(d);
    }
  } while (cursor !== "0");
  return { keys, text: parts.join("\n"), dumps };
}

/** Fails naming where and which secrets (shortened) were found; an empty secret list is a test bug. */
export function expectNoSecrets(where: string, haystack: string | Buffer, secrets: string[]) {
  expect(secrets.length).toBeGreaterThan(0);
  const leaked = secrets.filter((s) => haystack.includes(s));
  expect({ where, leaked: leaked.map((s) => `${s.slice(0, 6)}…(${s.length} chars)`) }).toEqual({ where, leaked: [] });
}
