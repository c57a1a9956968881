/**
 * Redis Sentinel (primary, replica, three sentinels, started here): the broker in
 * `redis.sentinel` mode runs the whole lifecycle and follows SENTINEL FAILOVER and a kill -9 of
 * the primary under load, with durability.replicas 1: no 201 without a lease record, leases due
 * during the failover revoked within 5 s of recovery, /readyz 503 while it cannot serve.
 */
import type { Redis } from "ioredis";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { policyDir } from "../support/policies";
import { redisCli, startSentinel, type Sentinel } from "../support/topology";
import { failoverUnderLoad, lifecycle } from "./scenarios";

jest.setTimeout(180_000);

let s: Sentinel;
let f: Fixture;
let conn: Redis;
/** A copy of the example policies: the lifecycle's re-authorization step edits it. */
const policies = policyDir();
const policy = { files: [policies.files] };
beforeAll(async () => {
  s = await startSentinel();
  f = await startFixture({ extra: { redis: { sentinel: { master: s.master, nodes: s.seeds }, durability: { replicas: 1, timeout: "1s" } }, limits: { requests_per_minute: 0 }, policy } });
  conn = f.b.broker.redisFactory.connect("test", "request");
  conn.on("error", () => undefined);
});
afterAll(async () => {
  policies.close();
  conn?.disconnect();
  const t0 = Date.now();
  await f?.close();
  if (Date.now() - t0 > 5000) console.log(`broker close took ${Date.now() - t0} ms`);
  await s?.stop();
});

/**
 * Waits until the sentinels name another primary than `old` and that node says it is one. A
 * sentinel that did not answer used to read as "another primary" (NaN !== old): after a kill -9
 * the crashed node could then be restarted before the promotion, come back as an empty primary
 * within down-after-milliseconds, and stall the failover (the likely cause of the one flake).
 */
async function promotedFrom(old: number, timeoutMs: number): Promise<void> {
  await waitFor(
    async () => {
      const now = await s.currentPrimaryPort().catch(() => NaN);
      if (!Number.isInteger(now) || now === old) return false;
      return /role:master/.test(await redisCli(now, "INFO", "replication").catch(() => ""));
    },
    timeoutMs,
    "sentinels promoted the replica",
  );
}

it("runs the whole lifecycle through the sentinels' primary", async () => {
  expect(f.b.broker.redisFactory.mode).toBe("sentinel");
  await lifecycle(f, conn, { policyDir: policies });
});

it("a plain url at the replica is reported as READONLY (503), not 'unreachable'", async () => {
  const g = await startFixture({ extra: { redis: { url: `redis://127.0.0.1:${s.replica.port}` } }, worker: false });
  try {
    const r = await g.call("GET", "/readyz", null);
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ redis: "readonly", redis_error: expect.stringMatching(/^READONLY/) });
  } finally {
    await g.close();
  }
});

it("SENTINEL FAILOVER under load: no credential without its lease record, due leases revoked within 5 s", async () => {
  const before = await s.currentPrimaryPort();
  const report = await failoverUnderLoad(f, async () => {
    expect(await redisCli(s.sentinels[0]!.port, "SENTINEL", "FAILOVER", s.master)).toBe("OK");
    await promotedFrom(before, 20_000);
  });
  console.log("sentinel failover", JSON.stringify(report));
  expect(report.ok201).toBeGreaterThan(10);
  expect(report.lost).toEqual([]);
  expect(report.late).toEqual([]);
  // The demoted primary becomes a replica only at a sentinel's next poll (up to 10 s): until then
  // the new primary has no replica, WAIT 1 fails, and /readyz must say so.
  expect(report.readyz).toContain(503);
  expect(report.readyz[report.readyz.length - 1]).toBe(200);
});

it("kill -9 of the primary under load: /readyz 503 then 200, nothing lost, due leases revoked within 5 s", async () => {
  const port = await s.currentPrimaryPort();
  const primary = [s.primary, s.replica].find((n) => n.port === port)!;
  const report = await failoverUnderLoad(
    f,
    async () => {
      await primary.kill9();
      await promotedFrom(port, 30_000);
    },
    // durability 1 needs a replica again: the crashed node comes back and the sentinels make it one.
    { restore: () => primary.restart() },
  );
  console.log("sentinel kill -9", JSON.stringify(report));
  expect(report.ok201).toBeGreaterThan(10);
  expect(report.lost).toEqual([]);
  expect(report.late).toEqual([]);
  expect(report.readyz).toContain(503);
  expect(report.readyz[report.readyz.length - 1]).toBe(200);
});
