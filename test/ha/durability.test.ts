/**
 * redis.durability (I1): a credential is answered only after the lease record, its schedule and
 * the mint event reached the configured number of replicas. Without them the credential is
 * revoked and the answer is 503 store_unavailable; /readyz says durability is not met.
 */
import { startRedisServer, rawCommand, type RedisServerHandle } from "../../src/redis/server";
import { startFixture, waitFor, type Fixture } from "../support/fixture";

jest.setTimeout(60_000);

let primary: RedisServerHandle;
let replica: RedisServerHandle | null = null;
let f: Fixture;
beforeAll(async () => {
  primary = await startRedisServer({ appendonly: false });
  f = await startFixture({ extra: { redis: { url: primary.url, durability: { replicas: 1, timeout: "300ms" } }, limits: { requests_per_minute: 0 } } });
});
afterAll(async () => {
  await f?.close();
  await replica?.stop();
  await primary?.stop();
});

it("a primary without a replica: /readyz 503 naming durability, and no credential is handed out (it is revoked)", async () => {
  const ready = await f.call("GET", "/readyz", null);
  expect(ready.status).toBe(503);
  expect(ready.body).toMatchObject({ status: "unavailable", redis: "durability", redis_error: "durability: 0 of 1 replica(s) acknowledged within 300 ms" });

  const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "D-1" } });
  expect(r.status).toBe(503);
  expect(r.body.code).toBe("store_unavailable");
  expect(r.body.detail).toMatch(/not acknowledged by 1 Redis replica/);
  expect(JSON.stringify(r.body)).not.toMatch(/eyJ/); // no token in the refusal
  // The lease written for it was ended: the credential minted for it is revoked, not tracked as live.
  const list = await f.call("GET", "/v1/admin/leases?task_id=D-1", "alice");
  expect(list.body.leases).toHaveLength(1);
  const lease = await waitFor(async () => {
    const l = (await f.call("GET", `/v1/leases/${list.body.leases[0].id}`, "alice")).body.lease;
    return l.state === "revoked" ? l : null;
  });
  expect(lease.revocation).toMatchObject({ trigger: "issue_failed" });
});

it("once a replica acknowledges: /readyz 200 and credentials are answered", async () => {
  replica = await startRedisServer({ appendonly: false });
  expect(await rawCommand(replica.port, ["REPLICAOF", "127.0.0.1", String(primary.port)])).toBe("OK");
  await waitFor(async () => (await f.call("GET", "/readyz", null)).status === 200, 15_000, "/readyz 200 with a replica");
  const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "D-2" } });
  expect(r.status).toBe(201);
  // The lease record is on the replica when the answer comes (WAIT acknowledged it).
  expect(await rawCommand(replica.port, ["HGET", `{${f.b.config.redis.prefix}}:lease:${r.body.lease.id}`, "state"])).toBe("active");
});
