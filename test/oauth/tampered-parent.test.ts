/**
 * Delegation (RFC 8693) over a lease record someone with write access to Redis made malformed
 * (docs/ARCHITECTURE.md, Lease record: hostile values): nothing is delegated from it, a chain
 * under it introspects inactive, and revoking it still ends the chain.
 */
import type { Redis } from "ioredis";
import { createKeyspace, type ShardKeys } from "../../src/redis/keys";
import { waitFor } from "../support/fixture";
import { delegation, startDelegationFixture, type DelegationFixture } from "./support";

let f: DelegationFixture;
let redis: Redis;
let sk: ShardKeys;
beforeAll(async () => {
  f = await startDelegationFixture({ maxDepth: 3 });
  redis = f.b.broker.redis;
  sk = createKeyspace(f.b.config.redis.prefix).shardKeys[0]!;
});
afterAll(async () => {
  await f.close();
});

const SECRET = "s3cr3t-claim-value";

describe("delegation from a tampered lease record", () => {
  it("a delegation whose parent lease record is tampered is refused with invalid_request (lease_unreadable), and nothing is minted", async () => {
    const root = await f.credential("orchestrator", "orders-read", "T-tamper-parent");
    await redis.hset(sk.lease(root.lease.id), "cl", `{"token":"${SECRET}"`);
    const before = await redis.zcard(sk.leasesAll);
    const r = await f.exchange(await delegation(f, root.credential.token, "subagent"));
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: "invalid_request", code: "lease_unreadable" });
    expect(r.body.error_description).toMatch(/its stored field cl is missing or malformed/);
    expect(JSON.stringify(r.body)).not.toContain(SECRET);
    expect(await redis.zcard(sk.leasesAll)).toBe(before);
    expect(f.b.logs.join("")).not.toContain(SECRET);
  });

  it("a token whose ancestor record is tampered introspects inactive; the history shows the ancestor unreadable; listings leave out a tampered child", async () => {
    const root = await f.credential("orchestrator", "orders-read", "T-tamper-chain");
    const one = await f.exchange(await delegation(f, root.credential.token, "subagent"));
    expect(one.status).toBe(200);
    const two = await f.exchange(await delegation(f, one.body.access_token, "tool"));
    expect(two.status).toBe(200);
    expect(await f.introspect(two.body.access_token)).toMatchObject({ active: true });

    await redis.hset(sk.lease(root.lease.id), "iat", "not-a-time");
    expect(await f.introspect(two.body.access_token)).toEqual({ active: false });
    expect(await f.introspect(one.body.access_token)).toEqual({ active: false });
    // An operator sees which ancestor and which field, never the value.
    const history = await f.call("GET", `/v1/admin/leases/${two.body.lease_id}/history`, "alice");
    expect(history.status).toBe(200);
    expect(history.body.delegation.ancestors).toEqual([
      { id: root.lease.id, state: "unreadable", unreadable_field: "iat" },
      expect.objectContaining({ id: one.body.lease_id, state: "active" }),
    ]);

    await redis.hset(sk.lease(two.body.lease_id), "cl", "[");
    const kids = await f.call("GET", `/v1/admin/leases?parent=${one.body.lease_id}`, "alice");
    expect(kids.status).toBe(200);
    expect(kids.body.leases).toEqual([]);
  });

  it("revoking a tampered root still ends the whole chain (the cascade reads what revocation needs, not the record)", async () => {
    const root = await f.credential("orchestrator", "orders-read", "T-tamper-cascade");
    const one = await f.exchange(await delegation(f, root.credential.token, "subagent"));
    expect(one.status).toBe(200);
    await redis.hset(sk.lease(root.lease.id), "k", "saml");
    const r = await f.call("DELETE", `/v1/leases/${root.lease.id}`, "alice");
    expect(r.status).toBe(500);
    expect(r.body).toMatchObject({ code: "lease_unreadable", field: "ikind" });
    for (const id of [root.lease.id, one.body.lease_id]) await waitFor(async () => (await redis.hget(sk.lease(id), "state")) === "revoked", 10_000, `lease ${id} revoked`);
    expect(await redis.hget(sk.lease(one.body.lease_id), "trig")).toBe("parent_revoked");
  });
});
