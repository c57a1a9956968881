/**
 * Issue 13, finding 1 (I9): revocation outlives memory pressure. A capped Redis (its own
 * redis-server, maxmemory 32 MB, noeviction) is filled past redis.max_memory_use: new issuance is
 * refused with 503 store_full, while force-revocation, task completion and expiry keep working;
 * once memory is freed, issuance resumes.
 */
import { Redis } from "ioredis";
import { startRedisServer, type RedisServerHandle } from "../support/redis-server";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { parseMemoryInfo } from "../../src/limits/memory";

describe("a full Redis cannot stop revocation (finding 1, I9)", () => {
  let redis: RedisServerHandle;
  let f: Fixture;
  let filler: Redis;
  beforeAll(async () => {
    redis = await startRedisServer({ appendonly: false, maxmemory: "32mb" });
    f = await startFixture({ extra: { redis: { url: redis.url, max_memory_use: "90%" } } });
    filler = new Redis(redis.url);
  }, 60_000);
  afterAll(async () => {
    filler?.disconnect();
    await f?.close();
    await redis?.stop();
  });

  const memory = async () => parseMemoryInfo(await filler.info("memory"))!;
  const issue = (task: string, role = "orders-read") => f.call("POST", "/v1/credentials", "agent", { role, task: { id: task } });
  const leaseState = async (id: string) => (await f.call("GET", `/v1/leases/${id}`, "alice")).body.lease;

  it("above redis.max_memory_use: 503 store_full for new credentials; force-revoke, completion and expiry still work", async () => {
    const forced = await issue("full-1");
    const completed = await issue("full-2");
    const expiring = await issue("full-3", "short-read");
    for (const r of [forced, completed, expiring]) expect(r.status).toBe(201);

    // Fill Redis from outside to between 93 % and 99 % of maxmemory.
    let i = 0;
    const chunk = "x".repeat(256 * 1024);
    for (let m = await memory(); m.ratio! < 0.93; m = await memory()) {
      const room = m.max * 0.96 - m.used;
      await filler.set(`filler:${i++}`, room > chunk.length * 2 ? chunk : "x".repeat(Math.max(1024, Math.floor(room / 2))));
    }
    expect((await memory()).ratio).toBeLessThan(1);

    const refused = await waitFor(async () => {
      const r = await issue(`full-new-${Date.now()}`);
      return r.status === 503 ? r : null;
    }, 5000, "store_full");
    expect(refused.body.code).toBe("store_full");
    expect(refused.headers.get("content-type")).toMatch(/problem\+json/);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);

    // Force-revocation by an operator.
    const op = await f.call("POST", "/v1/admin/revocations", "alice", { lease_id: forced.body.lease.id, reason: "stolen" });
    expect(op.status).toBe(202);
    await waitFor(async () => (await leaseState(forced.body.lease.id)).state === "revoked", 10_000, "forced revocation");
    const intro = await f.call("POST", "/v1/introspect", "agent2", { token: forced.body.credential.token });
    expect(intro.body).toEqual({ active: false });

    // Task completion by its owner.
    expect((await f.call("POST", "/v1/tasks/full-2/complete", "agent")).body).toEqual({ task_id: "full-2", revoked: 1 });
    await waitFor(async () => (await leaseState(completed.body.lease.id)).state === "revoked", 10_000, "completion");
    expect((await issue("full-2")).body.code).toMatch(/store_full|task_completed/);

    // Expiry (short-read: 2 s).
    await waitFor(async () => (await leaseState(expiring.body.lease.id)).state === "expired", 15_000, "expiry");

    // Revocation of a whole workload by an operator, too.
    expect((await f.call("POST", "/v1/admin/revocations", "alice", { workload: "agent", reason: "incident" })).status).toBe(202);

    // Memory freed: issuance resumes.
    for (let k = 0; k < i; k++) await filler.del(`filler:${k}`);
    const back = await waitFor(async () => {
      const r = await issue(`full-after-${Date.now()}`);
      return r.status === 201 ? r : null;
    }, 5000, "issuance to resume");
    expect(back.body.lease.state).toBe("active");
  }, 90_000);
});
