import { Redis } from "ioredis";
import { BrokerError } from "../core/errors";
import { createKeyspace } from "../redis/keys";
import { createRateLimiter } from "./ratelimit";

let redis: Redis;
let n = 0;
beforeAll(async () => {
  redis = new Redis(process.env.JITBROKER_TEST_REDIS_URL!, { lazyConnect: false, enableAutoPipelining: true });
  await redis.ping();
});
afterAll(() => redis.disconnect());

/** A fresh keyspace per test, so counters never carry over. */
const setup = () => {
  const keys = createKeyspace(`rl${++n}${Date.now()}`);
  return { keys, limiter: createRateLimiter(redis, keys), key: (limit: number, w: string) => keys.forWorkload(w).rateLimitPrefix(String(limit)) + w };
};

const codeOf = async (p: Promise<unknown>) => p.then(() => "ok", (e: unknown) => (e instanceof BrokerError ? `${e.code}:${e.headers?.["Retry-After"] ?? ""}` : String(e)));

describe("per-workload rate limit (one registered script)", () => {
  it("counts to the limit, then refuses with 429 and a Retry-After within the window", async () => {
    const { limiter, key } = setup();
    const got = await Promise.all([1, 2, 3].map(() => codeOf(limiter.consume("w", 3))));
    expect(got).toEqual(["ok", "ok", "ok"]);
    const refused = await codeOf(limiter.consume("w", 3));
    expect(refused).toMatch(/^rate_limited:(60|59)$/);
    expect(Number(await redis.pttl(key(3, "w")))).toBeGreaterThan(58_000);
  });

  it("the first request of a window gives the counter its expiry (a counter without one would limit the workload forever)", async () => {
    const { limiter, key } = setup();
    expect(await codeOf(limiter.consume("first", 5))).toBe("ok");
    expect(await redis.get(key(5, "first"))).toBe("1");
    const ttl = Number(await redis.pttl(key(5, "first")));
    expect(ttl).toBeGreaterThan(58_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  it("a counter left without an expiry (written by hand) does not limit a workload forever", async () => {
    const { limiter, key } = setup();
    await redis.set(key(2, "stuck"), "99");
    expect(await codeOf(limiter.consume("stuck", 2))).toMatch(/^rate_limited:/);
    expect(await redis.pttl(key(2, "stuck"))).toBeGreaterThan(0);
  });

  it("a changed limit starts its own window instead of inheriting the old count", async () => {
    const { limiter } = setup();
    expect(await codeOf(limiter.consume("w", 1))).toBe("ok");
    expect(await codeOf(limiter.consume("w", 1))).toMatch(/^rate_limited:/);
    expect(await codeOf(limiter.consume("w", 5))).toBe("ok");
  });

  it("one workload's requests never count against another's (ids that only differ after a colon)", async () => {
    const { limiter } = setup();
    expect(await codeOf(limiter.consume("team:a", 1))).toBe("ok");
    expect(await codeOf(limiter.consume("team", 1))).toBe("ok");
    expect(await codeOf(limiter.consume("team:a", 1))).toMatch(/^rate_limited:/);
  });

  it("fails closed with store_unavailable when Redis cannot count (nothing is issued)", async () => {
    const keys = createKeyspace("rldown");
    const down = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => null });
    const limiter = createRateLimiter(down, keys);
    expect(await codeOf(limiter.consume("w", 5))).toBe("store_unavailable:");
    down.disconnect();
  });

  it("limit 0 means no limit and touches no key", async () => {
    const { limiter, key } = setup();
    for (let i = 0; i < 5; i++) expect(await codeOf(limiter.consume("w", 0))).toBe("ok");
    expect(await redis.exists(key(0, "w"))).toBe(0);
  });
});
