/**
 * redis.shards on one redis-server (shards: 4): the whole lifecycle (mint, complete, expire, owner
 * revoke, force-revoke by each selector, approvals, re-authorization, listing page by page across
 * shards, audit verify) with each workload's keys on its own shard, bulk progress summed over
 * shards, and a broker whose shard count does not match the data refused at start.
 */
import { Redis } from "ioredis";
import { createKeyspace } from "../../src/redis/keys";
import { startTestBroker, testRedisUrl, uniquePrefix } from "../support/broker";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { policyDir, type PolicyDir } from "../support/policies";
import { lifecycle } from "./scenarios";
import { readable } from "../../src/leases/store";

jest.setTimeout(120_000);

let f: Fixture;
let conn: Redis;
let dir: PolicyDir;
beforeAll(async () => {
  dir = policyDir();
  f = await startFixture({ extra: { redis: { shards: 4 }, policy: { files: [dir.files] }, limits: { requests_per_minute: 0 }, leases: { quota_per_workload: 0 } } });
  conn = new Redis(testRedisUrl());
});
afterAll(async () => {
  conn?.disconnect();
  await f?.close();
  dir?.close();
});

const scan = async (pattern: string) => {
  const out: string[] = [];
  let cursor = "0";
  do {
    const [next, keys] = await conn.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== "0");
  return out;
};

it("runs the whole lifecycle with 4 shards, each workload's keys on its own shard", async () => {
  const prefix = f.b.config.redis.prefix;
  const keys = createKeyspace(prefix, 4);
  await lifecycle(f, conn, { policyDir: dir });

  expect(await conn.get(`{${prefix}}:shards`)).toBe("4");
  // Nothing of a workload under the base tag; every lease on its workload's shard.
  expect(await scan(`{${prefix}}:lease:*`)).toEqual([]);
  expect(await scan(`{${prefix}}:revocations:*`)).toEqual([]);
  const all = (await f.call("GET", "/v1/admin/leases?limit=500", "alice")).body.leases as { id: string; workload: string }[];
  expect(all.length).toBeGreaterThan(10);
  for (const l of all) expect(await conn.exists(keys.forWorkload(l.workload).lease(l.id))).toBe(1);
  const used = new Set(all.map((l) => keys.forWorkload(l.workload).tag));
  expect(used.size).toBeGreaterThanOrEqual(2); // agent and agent2 are on different shards
  for (const tag of used) expect((await scan(`${tag}:revocations:*`)).length).toBeGreaterThan(0);
  // A lease's history (audit index off the lease hash, on the base tag) still reads.
  const h = await f.call("GET", `/v1/admin/leases/${all[0]!.id}/history`, "alice");
  expect(h.status).toBe(200);
  expect(h.body.events.length).toBeGreaterThan(0);
});

it("a bulk revocation over several shards reports the progress of all of them", async () => {
  const ids: string[] = [];
  for (const who of ["agent", "agent2", "agent", "agent2"] as const) {
    const r = await f.call("POST", "/v1/credentials", who, { role: "orders-read", task: { id: "SH-bulk" } });
    expect(r.status).toBe(201);
    ids.push(r.body.lease.id);
  }
  const op = await f.call("POST", "/v1/admin/revocations", "alice", { task_id: "SH-bulk", reason: "shards" });
  expect(op.status).toBe(202);
  expect(op.body.matched).toBe(4);
  const done = await waitFor(async () => {
    const r = await f.call("GET", `/v1/admin/revocations/${op.body.id}`, "alice");
    return r.body.revoked === 4 ? r.body : null;
  }, 10_000, "all 4 revoked");
  expect(done).toMatchObject({ matched: 4, triggered: 4, revoked: 4, failed: 0 });
  for (const id of ids) expect((await f.call("GET", `/v1/leases/${id}`, "alice")).body.lease.state).toBe("revoked");
});

it("a policy change over several shards (walked side by side) revokes exactly the forbidden leases of every shard and keeps every other", async () => {
  const keys = createKeyspace(f.b.config.redis.prefix, 4);
  expect(keys.forWorkload("agent").tag).not.toBe(keys.forWorkload("agent2").tag);
  const auth = (id: "agent" | "agent2", subject: string) => ({
    identity: { issuer: "idp", kind: "oidc" as const, iss: f.issuer.url, subject, claims: { sub: subject }, jti: undefined, expiresAt: Date.now() + 3_600_000 },
    workload: { id, kind: "agent" as const, owner: id === "agent" ? "a@example.com" : "a2@example.com", purpose: "support", issuer: "idp", subject, claims: {} },
  });
  const agents = [auth("agent", "agent-1"), auth("agent2", "agent-2")] as const;
  // More than one read step (250) on each of the two shards.
  const ids: { id: string; workload: string }[] = [];
  for (let i = 0; i < 640; i += 64) {
    ids.push(
      ...(await Promise.all(
        Array.from({ length: 64 }, async (_, k) => {
          const a = agents[(i + k) % 2]!;
          const out = await f.b.broker.service.issue(a, { role: "orders-read", task: { id: `SH-walk-${i + k}` }, ttlMs: 600_000 });
          if (!("lease" in out)) throw new Error("expected a lease");
          return { id: out.lease.id, workload: a.workload.id };
        }),
      )),
    );
  }
  // Unseen by the file watcher (test/support/policies.ts): the walk is the reload call's own, done when it answers.
  dir.change({ write: { "zz-shards-walk.cedar": '@id("shards-agent2-suspended")\nforbid (principal == Workload::"agent2", action, resource);\n' } });
  try {
    const r = await f.call("POST", "/v1/admin/policy/reload", "alice");
    expect(r.status).toBe(200);
    expect(r.body.reauthorization.state).toBe("completed");
    const after = (await f.b.broker.store.getMany(ids.map((x) => x.id))).map(readable);
    after.forEach((l, i) => {
      if (ids[i]!.workload === "agent2") expect([l?.state, l?.revocation?.trigger, l?.revocation?.reason]).toEqual([expect.stringMatching(/^revok/), "policy_change", expect.stringMatching(/shards-agent2-suspended/)]);
      else expect(l?.state).toBe("active");
    });
  } finally {
    dir.change({ remove: ["zz-shards-walk.cedar"] });
    await f.call("POST", "/v1/admin/policy/reload", "alice");
  }
});

it("a lease id from a request that names no lease of that shard is simply not found", async () => {
  for (const id of ["l_AAAAAAAAAAAAAAAA", "l_BBBBBBBBBBBBBBBB"]) expect((await f.call("GET", `/v1/leases/${id}`, "alice")).status).toBe(404);
});

it("refuses to start with another shard count than the data was written with", async () => {
  const cfg = (shards: number, prefix: string) => ({ ...f.b.config, redis: { ...f.b.config.redis, shards, prefix } });
  await expect(startTestBroker(cfg(2, f.b.config.redis.prefix) as never)).rejects.toThrow(/redis.shards is 2, but the data under redis.prefix ".*" was written with 4 shard\(s\)/);
  // A deployment from before the marker (one shard's keys, no {p}:shards) cannot grow to 4 either.
  const old = uniquePrefix();
  await conn.zadd(`{${old}}:leases:all`, Date.now(), "l_AAAAAAAAAAAAAAAA");
  await expect(startTestBroker(cfg(4, old) as never)).rejects.toThrow(/redis.shards is 4, but .* was written with 1 shard\(s\)/);
  expect(await conn.exists(`{${old}}:shards`)).toBe(0);
});
