/**
 * Shard selection (src/redis/keys.ts): stable, in range, ids on their workload's shard, one
 * shard keeps the key names of deployments from before shards; `redis.shards` is validated.
 */
import { crc32 } from "node:zlib";
import { MINIMAL_CONFIG } from "../../test/support/configs";
import { ConfigError, parseConfig } from "../config/load";
import { checkShards, createKeyspace, MAX_SHARDS, newShardedId, shardIndex } from "./keys";

describe("shards", () => {
  it("one shard keeps today's key names: every shard key is under the base tag", () => {
    const k = createKeyspace("jit");
    expect(k.shards).toBe(1);
    expect(k.shardKeys.map((s) => s.tag)).toEqual(["{jit}"]);
    expect(k.forWorkload("anyone").lease("l_x")).toBe("{jit}:lease:l_x");
    expect(k.forId("l_x").leasesDue).toBe("{jit}:leases:due");
    expect(k.taskMarker("ci", "t:1")).toBe("{jit}:task:ci:t%3A1");
    expect(k.forWorkload("ci").rateLimitPrefix("60")).toBe("{jit}:rl:60:");
    expect(k.shardCount).toBe("{jit}:shards");
    expect(k.sweeper).toBe("{jit}:sweeper");
  });

  it("several shards: one tag each, global keys on the base tag, a workload's keys on its shard", () => {
    const k = createKeyspace("jit", 4);
    expect(k.shardKeys.map((s) => s.tag)).toEqual(["{jit:0}", "{jit:1}", "{jit:2}", "{jit:3}"]);
    expect(k.audit).toBe("{jit}:audit");
    expect(k.sweeper).toBe("{jit}:sweeper");
    const w = "payments-deployer";
    const i = crc32(Buffer.from(w)) % 4;
    expect(k.forWorkload(w).tag).toBe(`{jit:${i}}`);
    expect(k.taskMarker(w, "t")).toBe(`{jit:${i}}:task:${w}:t`);
    expect(k.refusalSample("request", w)).toBe(`{jit:${i}}:refused:request:${w}`);
  });

  it("shard selection is stable (crc32 mod N) and always in range", () => {
    expect(shardIndex("agent", 4)).toBe(crc32(Buffer.from("agent")) % 4);
    expect(shardIndex("agent", 1)).toBe(0);
    for (const n of [2, 3, 7, 16, MAX_SHARDS]) {
      for (const id of ["", "a", "ci:team", "ü", "x".repeat(300)]) {
        const s = shardIndex(id, n);
        expect(s).toBeGreaterThanOrEqual(0);
        expect(s).toBeLessThan(n);
        expect(shardIndex(id, n)).toBe(s);
      }
    }
  });

  it("a new id falls on the shard asked for, keeps the id format, and is found there without a lookup", () => {
    const k = createKeyspace("jit", 8);
    for (let shard = 0; shard < 8; shard++) {
      const id = newShardedId("l", shard, 8);
      expect(id).toMatch(/^l_[A-Za-z0-9_-]{16}$/);
      expect(k.forId(id)).toBe(k.shardKeys[shard]);
    }
    expect(newShardedId("rq", 0, 1)).toMatch(/^rq_[A-Za-z0-9_-]{16}$/);
  });

  it("an id made up by a caller can only name an existing shard", () => {
    const k = createKeyspace("jit", 5);
    for (const id of ["l_AAAAAAAAAAAAAAAA", "../../x", "{jit}:audit", "l_\u0000", "9".repeat(1000)]) expect(k.shardKeys).toContain(k.forId(id));
  });

  it("refuses a shard count outside 1..MAX_SHARDS", () => {
    for (const bad of [0, -1, 1.5, MAX_SHARDS + 1, Number.NaN, "4"]) expect(() => checkShards(bad)).toThrow(/redis.shards must be an integer from 1 to/);
    expect(() => createKeyspace("jit", 0)).toThrow(/redis.shards/);
    expect(checkShards(MAX_SHARDS)).toBe(MAX_SHARDS);
  });

  it("config: redis.shards defaults to 1; a bad value is a clear problem with its path", () => {
    expect(parseConfig(MINIMAL_CONFIG, "/etc/b.yaml", {}).redis.shards).toBe(1);
    expect(parseConfig(`${MINIMAL_CONFIG}redis:\n  shards: 16\n`, "/etc/b.yaml", {}).redis.shards).toBe(16);
    for (const [v, msg] of [["0", /at least 1/], ["65", /at most 64/], ["2.5", /whole number/], ['"4"', /number/]] as const) {
      let problems: string[] = [];
      try {
        parseConfig(`${MINIMAL_CONFIG}redis:\n  shards: ${v}\n`, "/etc/b.yaml", {});
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        problems = e.problems;
      }
      expect(problems.join("\n")).toMatch(/redis\.shards/);
      expect(problems.join("\n")).toMatch(msg);
    }
  });
});
