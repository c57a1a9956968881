/**
 * A lease record in Redis written over by someone with write access to Redis (or damaged): no
 * read of it crashes a request, and none fails open (docs/ARCHITECTURE.md, Lease record: hostile
 * values). GET answers 500 lease_unreadable naming the field, never the value; introspection
 * answers inactive; listings leave it out (a warning names it); revocation, task completion and
 * the expiry walk still end it. Written in the current layout (short field names) and in both
 * layouts before (names in full: test/support/old-layouts.ts).
 */
import type { Redis } from "ioredis";
import { createKeyspace, newShardedId, type ShardKeys } from "../../src/redis/keys";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { writeOldLease } from "../support/old-layouts";

let f: Fixture;
let redis: Redis;
let sk: ShardKeys;
beforeAll(async () => {
  f = await startFixture();
  redis = f.b.broker.redis;
  sk = createKeyspace(f.b.config.redis.prefix).shardKeys[0]!;
});
afterAll(async () => {
  await f.close();
});

const SECRET = "hunter2-do-not-echo";

async function issue(task: string, role = "orders-read"): Promise<{ id: string; token: string }> {
  const r = await f.call("POST", "/v1/credentials", "agent", { role, task: { id: task } });
  expect(r.status).toBe(201);
  return { id: r.body.lease.id as string, token: r.body.credential.token as string };
}

/** A lease of `agent` written by an earlier broker (v1 or v2 layout), active. */
async function oldLease(layout: "v1" | "v2", task: string): Promise<string> {
  const id = newShardedId("l", 0, 1);
  const iat = Date.now();
  const l = { id, role: "orders-read", backend: "jwt" as const, workload: "agent", task, issuer: "idp", subject: "agent-1", iat, exp: iat + 300_000, policy: { ids: ["agents-request-read"], hash: "ab".repeat(32) } };
  expect(await writeOldLease(redis, sk, layout, l, { jti: id })).toEqual(["ok", "active"]);
  return id;
}

/** Writes over (or, with null, deletes) fields of a stored lease, as an attacker with Redis access would. */
async function tamper(id: string, over: Record<string, string | null>): Promise<void> {
  for (const [field, v] of Object.entries(over)) {
    if (v === null) await redis.hdel(sk.lease(id), field);
    else await redis.hset(sk.lease(id), field, v);
  }
}

const introspect = async (token: string) => (await f.call("POST", "/v1/introspect", "agent2", { token })).body;

/** The answer about an unreadable lease: RFC 9457, 500 lease_unreadable, the field named, nothing stored echoed. */
function expectUnreadable(r: { status: number; body: any; headers: Headers }, id: string, field: string) {
  expect(r.status).toBe(500);
  expect(r.headers.get("content-type")).toMatch(/^application\/problem\+json/);
  expect(r.body).toMatchObject({ code: "lease_unreadable", type: "urn:jitbroker:problem:lease_unreadable", lease_id: id, field });
  expect(r.body.detail).toContain(`its stored field ${field} is missing or malformed`);
  expect(JSON.stringify(r.body)).not.toContain(SECRET);
}

describe("a tampered lease record never crashes a read and never fails open", () => {
  it("a tampered claims field in Redis does not crash GET /v1/leases/{id} and introspection answers inactive", async () => {
    const { id, token } = await issue("T-tamper-claims");
    expect(await introspect(token)).toMatchObject({ active: true, lease_id: id });
    await tamper(id, { cl: `{"password":"${SECRET}"` });

    expectUnreadable(await f.call("GET", `/v1/leases/${id}`, "agent"), id, "cl"); // its owner
    expectUnreadable(await f.call("GET", `/v1/leases/${id}`, "alice"), id, "cl"); // an operator
    expect((await f.call("GET", `/v1/leases/${id}`, "agent2")).status).toBe(404); // anyone else learns nothing
    expectUnreadable(await f.call("GET", `/v1/admin/leases/${id}/history`, "alice"), id, "cl");
    expect(await introspect(token)).toEqual({ active: false });

    // Listed nowhere, and the listing itself answers (it used to fail on JSON.parse).
    const list = await f.call("GET", "/v1/admin/leases?workload=agent&limit=200", "alice");
    expect(list.status).toBe(200);
    expect(list.body.leases.map((l: any) => l.id)).not.toContain(id);

    // Said once per read in the log, with the field, never the value; counted.
    const logged = f.b.logs.filter((l) => l.includes(id) && l.includes("unreadable"));
    expect(logged.length).toBeGreaterThan(0);
    expect(logged.join("")).toContain('"field":"cl"');
    expect(f.b.logs.join("")).not.toContain(SECRET);
    const metrics = await fetch(`${f.b.url}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/jitbroker_lease_unreadable_reads_total\{field="cl"\} [1-9]/);
  });

  // [the attack, the layout, the fields written over (null: deleted), the field named]
  const current: [string, Record<string, string | null>, string][] = [
    ["the person's claims not JSON", { obs: "eve", obc: `{"x":"${SECRET}"` }, "obc"],
    ["an issue time that is not a number", { iat: `${SECRET}` }, "iat"],
    ["a trigger time that is not a number", { tat: "later", trig: "owner" }, "tat"],
    ["revoke attempts that are not a number", { att: "many" }, "att"],
    ["an unknown state", { state: "forever" }, "state"],
    ["an unknown backend", { b: "ldap" }, "backend"],
    ["an unknown identity kind", { k: "saml" }, "ikind"],
    ["an unknown trigger", { trig: "magic" }, "trig"],
    ["no role", { r: null }, "role"],
    ["no workload", { w: null }, "workload"],
    ["no task", { t: null }, "task_id"],
    ["no issuer", { i: null }, "issuer"],
    ["no subject", { s: null }, "subject"],
  ];
  it.each(current)("current layout: %s is answered 500 lease_unreadable to an operator, inactive to introspection", async (_attack, over, field) => {
    const { id, token } = await issue(`T-tamper-${field}`);
    await tamper(id, over);
    expectUnreadable(await f.call("GET", `/v1/leases/${id}`, "alice"), id, field);
    expect(await introspect(token)).toEqual({ active: false });
  });

  const before: [string, "v1" | "v2", Record<string, string | null>, string][] = [
    ["policy ids not JSON", "v1", { pids: `["${SECRET}"` }, "pids"],
    ["an expiry that is not a number", "v1", { exp: "NaN" }, "exp"],
    ["an unknown backend", "v2", { backend: "ldap" }, "backend"],
    ["an unknown identity kind", "v2", { ikind: "saml" }, "ikind"],
    ["no role", "v1", { role: null }, "role"],
    ["no workload", "v2", { workload: null }, "workload"],
    ["no task", "v1", { task_id: null }, "task_id"],
    ["no issuer", "v2", { issuer: null }, "issuer"],
    ["no subject", "v1", { subject: null }, "subject"],
    ["claims not JSON", "v2", { cl: `{"${SECRET}"` }, "cl"],
  ];
  it.each(before)("layout before: %s (%s) is answered 500 lease_unreadable and left out of the listing", async (_attack, layout, over, field) => {
    const id = await oldLease(layout, `T-tamper-old-${layout}-${field}`);
    expect((await f.call("GET", `/v1/leases/${id}`, "alice")).status).toBe(200);
    await tamper(id, over);
    expectUnreadable(await f.call("GET", `/v1/leases/${id}`, "alice"), id, field);
    const list = await f.call("GET", "/v1/admin/leases?limit=500", "alice");
    expect(list.status).toBe(200);
    expect(list.body.leases.map((l: any) => l.id)).not.toContain(id);
  });

  it.each([
    ["current", { h: `{"jti":"${SECRET}"` }],
    ["v2", { handle: "{not json", "handle.1": "x" }],
  ] as const)("a tampered handle (%s layout) never crashes a read: the lease is shown (its handle never is) and revoked as usual", async (layout, over) => {
    const id = layout === "current" ? (await issue("T-tamper-handle")).id : await oldLease("v2", "T-tamper-handle-v2");
    await tamper(id, over);
    const shown = await f.call("GET", `/v1/leases/${id}`, "alice");
    expect(shown.status).toBe(200);
    expect(shown.body.lease).toMatchObject({ id, state: "active" });
    expect(JSON.stringify(shown.body)).not.toContain(SECRET);
    expect((await f.call("DELETE", `/v1/leases/${id}`, "alice")).status).toBe(200);
    await waitFor(async () => (await redis.hget(sk.lease(id), "state")) === "revoked", 10_000, "the lease revoked");
  });

  it("an operator revokes a tampered lease: DELETE says it cannot be shown, and the worker ends it all the same", async () => {
    const { id, token } = await issue("T-tamper-revoke");
    await tamper(id, { cl: "{", w: null });
    const r = await f.call("DELETE", `/v1/leases/${id}`, "alice", { reason: "tampered" });
    expectUnreadable(r, id, "workload");
    expect(r.body.detail).toMatch(/revocation was requested/);
    await waitFor(async () => (await redis.hget(sk.lease(id), "state")) === "revoked", 10_000, "the tampered lease revoked");
    expect(await redis.hmget(sk.lease(id), "trig", "by")).toEqual(["operator", "alice"]);
    expect(await redis.zscore(sk.leasesDue, id)).toBeNull();
    // Its events are recorded (a lease without a workload is "(unknown)"'s: an empty one is refused by the ledger).
    await waitFor(async () => (await f.b.broker.audit.byLease(id)).some((e) => e.type === "revoked"), 10_000, "the revoked event");
    expect((await f.b.broker.audit.byLease(id)).map((e) => [e.type, e.workload])).toEqual([
      ["mint", "agent"],
      ["revocation_requested", "(unknown)"],
      ["revoked", "(unknown)"],
    ]);
    expect(f.b.logs.join("")).not.toContain("audit event refused");
    expect(await introspect(token)).toEqual({ active: false });
  });

  it("its owner revokes a tampered lease whose record still names it", async () => {
    const { id } = await issue("T-tamper-owner");
    await tamper(id, { iat: "x" });
    expectUnreadable(await f.call("DELETE", `/v1/leases/${id}`, "agent"), id, "iat");
    await waitFor(async () => (await redis.hget(sk.lease(id), "state")) === "revoked", 10_000, "the tampered lease revoked");
    expect(await redis.hget(sk.lease(id), "trig")).toBe("owner");
  });

  it("task completion revokes a tampered lease of the task with the others (it used to fail on the read)", async () => {
    const a = await issue("T-tamper-task");
    const b = await issue("T-tamper-task");
    await tamper(a.id, { cl: "not json" });
    const done = await f.call("POST", "/v1/tasks/T-tamper-task/complete", "agent");
    expect(done.status).toBe(200);
    expect(done.body).toEqual({ task_id: "T-tamper-task", revoked: 2 });
    for (const id of [a.id, b.id]) await waitFor(async () => (await redis.hget(sk.lease(id), "state")) === "revoked", 10_000, `lease ${id} revoked`);
  });

  it("a state that is none of the broker's is revoked, not left alive out of every path: at its expiry, and by an operator", async () => {
    const expiring = await issue("T-tamper-state-1", "short-read");
    const revoked = await issue("T-tamper-state-2");
    await tamper(expiring.id, { state: "forever" });
    await tamper(revoked.id, { state: "forever" });
    expectUnreadable(await f.call("GET", `/v1/leases/${revoked.id}`, "alice"), revoked.id, "state");
    // The trigger writes the state over (revoking): the answer is the lease again.
    const r = await f.call("DELETE", `/v1/leases/${revoked.id}`, "alice");
    expect(r.status).toBe(200);
    expect(r.body.lease).toMatchObject({ id: revoked.id, revocation: { trigger: "operator", by: "alice" } });
    await waitFor(async () => (await redis.hget(sk.lease(revoked.id), "state")) === "revoked", 10_000, "the operator's revocation");
    await waitFor(async () => (await redis.hget(sk.lease(expiring.id), "state")) === "expired", 15_000, "the expiry");
    for (const { id } of [expiring, revoked]) expect(await redis.zscore(sk.leasesDue, id)).toBeNull();
  });

  it("an expiry that is not a number does not stall the expiry walk: that lease and the others beside it expire", async () => {
    // Before, tonumber(exp) <= now raised a Lua error in EXPIRE_DUE and TRIGGER: every walk of
    // the shard failed from then on, and no lease expired until the record was repaired.
    const tampered = await issue("T-tamper-exp-1", "short-read");
    const other = await issue("T-tamper-exp-2", "short-read");
    await tamper(tampered.id, { exp: "later" });
    for (const id of [tampered.id, other.id]) await waitFor(async () => (await redis.hget(sk.lease(id), "state")) === "expired", 15_000, `lease ${id} expired`);
    expect(await redis.zscore(sk.leasesDue, tampered.id)).toBeNull();
  });
});
