/**
 * The lease layout of issue 17 (docs/ARCHITECTURE.md, Redis key layout and Lease record): a
 * task's first live lease is a field of `{p}:live:tasks` (no key per task id), its others are in
 * `{p}:live:task:<t>`; a lease names its policy decision by a ref into `{p}:leases:policies`.
 *
 * Values over 64 bytes (Redis's default hash-max-listpack-value) are stored in pieces, so one
 * long value (a Vault or AWS handle, a long task intent) does not turn the lease into a hashtable.
 *
 * Upgrades: leases written by the layout before (every lease in its task's set, policy ids and
 * set hash inline) must still be found by task completion and bulk revocation, revoked, expired
 * and shown; a deployment upgraded with live leases in Redis must not leave them behind.
 */
import { Redis } from "ioredis";
import { createKeyspace, newShardedId, type ShardKeys } from "../../src/redis/keys";
import { createLeaseStore, joinPieces, pieces, type NewLease, type StoredLease, readable } from "../../src/leases/store";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { writeOldLease } from "../support/old-layouts";

const OLD_POLICY_HASH = "ab".repeat(32);

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

const leaseOf = async (id: string) => (await f.call("GET", `/v1/leases/${id}`, "alice")).body.lease;
const issue = async (who: "agent" | "agent2", task: string) => {
  const r = await f.call("POST", "/v1/credentials", who, { role: "orders-read", task: { id: task } });
  expect(r.status).toBe(201);
  return r.body.lease.id as string;
};

/** A lease of `agent` written as an earlier broker wrote it (its CREATE, then its ACTIVATE with the JSON handle). */
async function previousLayoutLease(task: string, ttlMs = 300_000, layout: "v1" | "v2" = "v1"): Promise<string> {
  const id = newShardedId("l", 0, 1);
  const iat = Date.now();
  const l = { id, role: "orders-read", backend: "jwt" as const, workload: "agent", task, issuer: "idp", subject: "agent-1", iat, exp: iat + ttlMs, policy: { ids: ["agents-request-read"], hash: OLD_POLICY_HASH } };
  expect(await writeOldLease(redis, sk, layout, l, { jti: id })).toEqual(["ok", "active"]);
  return id;
}

/** No index of any kind still names the lease. */
async function expectUnindexed(id: string, task: string) {
  expect(await redis.sismember(sk.live.task(task), id)).toBe(0);
  expect(await redis.hget(sk.liveTasks, task)).not.toBe(id);
  for (const set of [sk.live.workload("agent"), sk.live.workload("agent2"), sk.live.role("orders-read"), sk.live.issuer("idp")]) expect(await redis.sismember(set, id)).toBe(0);
  expect(await redis.zscore(sk.leasesDue, id)).toBeNull();
}

describe.each(["v1", "v2"] as const)("upgrade: leases written by an earlier layout (%s)", (layout) => {
  it("task completion finds an old lease in its task's set beside a new one, the worker revokes both, and no index keeps them", async () => {
    const old = await previousLayoutLease(`T-up-complete-${layout}`, 300_000, layout);
    const fresh = await issue("agent", `T-up-complete-${layout}`);
    // v1: the new lease took the task's live:tasks field, the old one is only in the set; v2: the
    // old one holds the field and the new one is in the set.
    expect(await redis.hget(sk.liveTasks, `T-up-complete-${layout}`)).toBe(layout === "v1" ? fresh : old);
    const done = await f.call("POST", `/v1/tasks/T-up-complete-${layout}/complete`, "agent");
    expect(done.body).toEqual({ task_id: `T-up-complete-${layout}`, revoked: 2 });
    for (const id of [old, fresh]) {
      const l = await waitFor(async () => {
        const x = await leaseOf(id);
        return x.state === "revoked" ? x : null;
      });
      expect(l.revocation).toMatchObject({ trigger: "task_completed", by: "agent" });
      await expectUnindexed(id, `T-up-complete-${layout}`);
    }
    expect(await redis.exists(sk.live.task(`T-up-complete-${layout}`))).toBe(0);
    expect(await redis.hexists(sk.liveTasks, `T-up-complete-${layout}`)).toBe(0);
  });

  it("an old lease still shows its fields named in full, its policy ids and set hash, and its JSON handle", async () => {
    const old = await previousLayoutLease(`T-up-show-${layout}`, 300_000, layout);
    const shown = await leaseOf(old);
    expect(shown.policy).toEqual({ ids: ["agents-request-read"], hash: OLD_POLICY_HASH });
    expect(shown).toMatchObject({ role: "orders-read", backend: "jwt", workload: "agent", task_id: `T-up-show-${layout}`, state: "active", identity: { kind: "oidc", issuer: "idp", subject: "agent-1" } });
    expect(shown.task.id).toBe(`T-up-show-${layout}`);
    expect((readable(await f.b.broker.store.get(old)))?.handle).toEqual({ jti: old });
    await f.b.broker.store.trigger([old], { trigger: "operator", by: "test" });
  });

  it("an operator's revocation by task id matches old and new leases of every workload (the task index is any workload)", async () => {
    const old = await previousLayoutLease(`T-up-op-${layout}`, 300_000, layout);
    const a = await issue("agent2", `T-up-op-${layout}`);
    const b = await issue("agent", `T-up-op-${layout}`);
    expect(await f.b.broker.store.countLive("task", `T-up-op-${layout}`)).toBe(3);
    const op = await f.call("POST", "/v1/admin/revocations", "alice", { task_id: `T-up-op-${layout}`, reason: "upgrade test" });
    expect(op.status).toBe(202);
    expect(op.body.matched).toBe(3);
    const progress = await waitFor(async () => {
      const p = (await f.call("GET", `/v1/admin/revocations/${op.body.id}`, "alice")).body;
      return p.state === "completed" ? p : null;
    });
    expect(progress).toMatchObject({ triggered: 3, revoked: 3, failed: 0 });
    for (const id of [old, a, b]) {
      expect((await leaseOf(id)).state).toBe("revoked");
      await expectUnindexed(id, `T-up-op-${layout}`);
    }
  });

  it("an old lease expires on schedule (its due entry) and leaves its task's set", async () => {
    const old = await previousLayoutLease(`T-up-expire-${layout}`, 1200, layout);
    const l = await waitFor(async () => {
      const x = await leaseOf(old);
      return x.state === "expired" ? x : null;
    });
    expect(l.revocation).toMatchObject({ trigger: "expiry" });
    await expectUnindexed(old, `T-up-expire-${layout}`);
    expect(await redis.exists(sk.live.task(`T-up-expire-${layout}`))).toBe(0);
  });
});

describe("task index: an entry per task, not a key", () => {
  it("a task's first live lease is its live:tasks field; the next ones go to its set; finishing the first frees the field for the next lease", async () => {
    const first = await issue("agent", "T-idx");
    expect(await redis.hget(sk.liveTasks, "T-idx")).toBe(first);
    expect(await redis.exists(sk.live.task("T-idx"))).toBe(0);
    const second = await issue("agent2", "T-idx");
    expect(await redis.smembers(sk.live.task("T-idx"))).toEqual([second]);
    const store = f.b.broker.store;
    expect(await store.countLive("task", "T-idx")).toBe(2);
    const seen: string[] = [];
    for await (const ids of store.liveIds("task", "T-idx")) seen.push(...ids);
    expect(seen.sort()).toEqual([first, second].sort());

    // agent revokes its own lease: the field is freed, agent2's stays in the set.
    expect((await f.call("DELETE", `/v1/leases/${first}`, "agent", { reason: "done" })).status).toBe(200);
    await waitFor(async () => (await leaseOf(first)).state === "revoked");
    expect(await redis.hexists(sk.liveTasks, "T-idx")).toBe(0);
    expect(await store.countLive("task", "T-idx")).toBe(1);
    const third = await issue("agent", "T-idx");
    expect(await redis.hget(sk.liveTasks, "T-idx")).toBe(third);
    expect(await store.countLive("task", "T-idx")).toBe(2);

    // Completing the task for agent revokes only agent's lease; agent2's is its own.
    expect((await f.call("POST", "/v1/tasks/T-idx/complete", "agent")).body).toEqual({ task_id: "T-idx", revoked: 1 });
    await waitFor(async () => (await leaseOf(third)).state === "revoked");
    expect((await leaseOf(second)).state).toBe("active");
    expect(await store.countLive("task", "T-idx")).toBe(1);
  });
});

describe("policy ref", () => {
  const base = (id: string, policy: NewLease["policy"]): NewLease => ({
    id,
    role: "orders-read",
    backend: "jwt",
    workload: "agent",
    task: { id: `T-ref-${id}`, intent: "", tool: "", destination: "", sensitivity: "" },
    issuedAt: Date.now(),
    expiresAt: Date.now() + 60_000,
    identity: { kind: "oidc", issuer: "idp", subject: "agent-1" },
    policy,
  });

  it("leases of one decision share one entry; a process that never saw it reads it from Redis", async () => {
    const keys = createKeyspace(`${f.b.config.redis.prefix}ref`);
    const writer = createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 });
    const p1 = { ids: ["permit-a", "permit-b"], hash: "cd".repeat(32) };
    const p2 = { ids: ["permit-a"], hash: "cd".repeat(32) };
    for (const [id, p] of [["l_ref1", p1], ["l_ref2", p1], ["l_ref3", p2]] as const) expect(await writer.create(base(id, p), 0)).toBe("ok");
    const sk2 = keys.shardKeys[0]!;
    expect(await redis.hlen(sk2.leasesPolicies)).toBe(2);
    expect(await redis.hexists(sk2.lease("l_ref1"), "phash")).toBe(0);
    // A fresh store (another process, or after a restart) has nothing cached.
    const reader = createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 });
    const got = (await reader.getMany(["l_ref1", "l_ref2", "l_ref3"])).map(readable);
    expect(got.map((l) => l?.policy)).toEqual([p1, p1, p2]);
    expect(readable(await createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 }).get("l_ref3"))?.policy).toEqual(p2);
  });

  it("a damaged policies entry reads as an unknown policy, not a crash (a hostile or broken Redis)", async () => {
    const keys = createKeyspace(`${f.b.config.redis.prefix}bad`);
    const writer = createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 });
    expect(await writer.create(base("l_bad1", { ids: ["x"], hash: "ef".repeat(32) }), 0)).toBe("ok");
    const sk2 = keys.shardKeys[0]!;
    const ref = await redis.hget(sk2.lease("l_bad1"), "pr");
    await redis.hset(sk2.leasesPolicies, ref!, "garbage-without-a-space");
    const l = readable(await createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 }).get("l_bad1"));
    expect(l?.policy).toEqual({ ids: [], hash: "" });
    await redis.hset(sk2.leasesPolicies, ref!, 'AAAA {"not":"a list"}');
    expect(readable(await createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 }).get("l_bad1"))?.policy).toEqual({ ids: [], hash: "" });
  });
});

describe("values over 64 bytes are stored in pieces (the lease stays a listpack)", () => {
  it("cuts at character boundaries into pieces of at most 64 UTF-8 bytes that join back to the value", () => {
    for (const v of ["", "short", "a".repeat(64), "a".repeat(65), "é".repeat(100), "x🙂".repeat(40), "😀".repeat(17) + "a".repeat(200)]) {
      const ps = pieces(v);
      expect(ps.join("")).toBe(v);
      for (const p of ps) expect(Buffer.byteLength(p)).toBeLessThanOrEqual(64);
      // No piece starts or ends inside a character (a lone surrogate would not survive UTF-8).
      for (const p of ps) expect(Buffer.from(p, "utf8").toString("utf8")).toBe(p);
      if (Buffer.byteLength(v) <= 64) expect(ps).toEqual([v]);
    }
    expect(joinPieces({ a: "x", b: "y" })).toEqual({ a: "x", b: "y" });
    expect(joinPieces({ handle: "ab", "handle.1": "cd", "handle.2": "ef", state: "active" })).toEqual({ handle: "abcdef", state: "active" });
  });

  it("an AWS-sized handle and a long non-ASCII task intent keep the lease in listpack encoding and read back whole; a new handle leaves no old piece behind", async () => {
    const keys = createKeyspace(`${f.b.config.redis.prefix}long`);
    const store = createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 });
    const intent = `refund ticket ${"é".repeat(60)} ${"🙂".repeat(20)} done`;
    const l: NewLease = {
      id: "l_long1",
      role: "orders-read",
      backend: "aws_sts",
      workload: "agent",
      task: { id: "T-long", intent, tool: "", destination: "s3://bucket/with/a/rather/long/path/that/goes/past/sixty-four/bytes", sensitivity: "" },
      issuedAt: Date.now(),
      expiresAt: Date.now() + 60_000,
      identity: { kind: "spiffe", issuer: "mesh", subject: "spiffe://example.org/ns/production/sa/orders-refund-agent-with-a-long-name" },
      policy: { ids: ["p"], hash: "12".repeat(32) },
    };
    expect(await store.create(l, 0)).toBe("ok");
    const handle = {
      role_arn: "arn:aws:iam::123456789012:role/jitbroker/orders-read-with-a-long-path",
      session_name: "jit-l_long1",
      user_id: "AROAEXAMPLEID1234567:jit-l_long1",
      issued_at: "2026-12-05T23:00:00.000Z",
      expires_at: "2026-12-05T23:15:00.000Z",
    };
    expect(await store.activate(l.id, handle)).toBe("active");
    const key = keys.shardKeys[0]!.lease(l.id);
    expect(await redis.object("ENCODING", key)).toBe("listpack");
    for (const v of Object.values(await redis.hgetall(key))) expect(Buffer.byteLength(v)).toBeLessThanOrEqual(64);
    const got = readable(await store.get(l.id));
    expect(got?.handle).toEqual(handle);
    expect(got?.task).toEqual(l.task);
    expect(got?.identity.subject).toBe(l.identity.subject);
    expect(got).toEqual(store.activated(l, handle));
    // The revocation finds its keys from the joined record (the task id, the live sets).
    expect(await store.activate(l.id, { user_id: "short" })).toBe("active");
    expect((readable(await store.get(l.id)))?.handle).toEqual({ user_id: "short" });
    expect(Object.keys(await redis.hgetall(key)).filter((f) => f.startsWith("h.") || f.startsWith("handle"))).toEqual([]);
  });
});

describe("compact handles (src/leases/handle.ts): Vault and AWS leases fit in 1 KB", () => {
  const prefix = () => `${f.b.config.redis.prefix}hd`;
  const lease = (id: string, backend: NewLease["backend"]): NewLease => {
    const issuedAt = Date.now();
    return {
      id,
      role: "orders-read",
      backend,
      workload: "agent",
      task: { id: `T-${id}`, intent: "", tool: "", destination: "", sensitivity: "" },
      issuedAt,
      expiresAt: issuedAt + 3_600_000,
      identity: { kind: "oidc", issuer: "idp", subject: "agent-1" },
      policy: { ids: ["p"], hash: "34".repeat(32) },
    };
  };
  const awsHandle = (l: NewLease) => ({
    role_arn: "arn:aws:iam::123456789012:role/jitbroker/orders-read",
    session_name: l.id,
    user_id: `AROA3XFRBF535PLBIFPI4:${l.id}`,
    issued_at: new Date(l.issuedAt + 1040).toISOString(),
    expires_at: new Date(l.expiresAt + 90).toISOString(),
  });

  it("an AWS session is stored as a ref and two offsets: no piece, no ARN in the lease, read back whole by a process that never saw it", async () => {
    const keys = createKeyspace(prefix());
    const sk2 = keys.shardKeys[0]!;
    const store = createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 });
    const l = lease("l_aws1", "aws_sts");
    const handle = awsHandle(l);
    expect(await store.create(l, 0)).toBe("ok");
    expect(await store.activate(l.id, handle, undefined, { issuedAt: l.issuedAt, expiresAt: l.expiresAt })).toBe("active");
    const stored = await redis.hgetall(sk2.lease(l.id));
    expect(stored.h).toMatch(/^a[A-Za-z0-9_-]{12}1040 90$/);
    expect(Object.keys(stored).filter((k) => k.includes(".") || k === "handle")).toEqual([]);
    expect(JSON.stringify(stored)).not.toContain("arn:aws");
    expect(await redis.hgetall(sk2.leasesHandles)).toEqual({ [stored.h!.slice(1, 13)]: `AROA3XFRBF535PLBIFPI4 ${handle.role_arn}` });
    expect(await redis.object("ENCODING", sk2.lease(l.id))).toBe("listpack");
    const fresh = createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 });
    const got = readable(await fresh.get(l.id));
    expect(got?.handle).toEqual(handle);
    expect(got).toEqual(store.activated(l, handle));
    expect(readable((await fresh.getMany([l.id]))[0]!)?.handle).toEqual(handle);
    // Revocation's own reads (REVOCATION_VIEW, and TRIGGER's answer) resolve the ref too.
    expect((await createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 }).forRevocation([l.id]))[0]?.handle).toEqual(handle);
    const [moved] = await createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 }).triggerForRevocation([l.id], { trigger: "operator", by: "test" });
    expect(moved).toMatchObject({ id: l.id, backend: "aws_sts", role: "orders-read", workload: "agent", task_id: `T-${l.id}`, identity: { issuer: "idp" }, handle });
    // Field names: short, and no field of the layout before.
    for (const old of ["role", "backend", "workload", "task_id", "ikind", "issuer", "subject", "handle"]) expect(stored[old]).toBeUndefined();
    expect(stored).toMatchObject({ r: "orders-read", b: "aws_sts", w: "agent", t: `T-${l.id}`, i: "idp", s: "agent-1" });
    expect(stored.k).toBeUndefined();
  });

  it("Vault: a lease id shares its path through a ref, a token is its accessor; a SPIFFE identity keeps its kind", async () => {
    const keys = createKeyspace(prefix());
    const sk2 = keys.shardKeys[0]!;
    const store = createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 });
    const a = lease("l_vault1", "vault");
    const b = { ...lease("l_vault2", "vault"), identity: { kind: "spiffe" as const, issuer: "mesh", subject: "spiffe://example.org/agent" } };
    for (const l of [a, b]) expect(await store.create(l, 0)).toBe("ok");
    expect(await store.activate(a.id, { lease_id: "database/creds/orders-read/Hr0Hpa3ZBmAsNYHSsE9qSxUa" }, undefined, { issuedAt: a.issuedAt, expiresAt: a.expiresAt })).toBe("active");
    expect(await store.activate(b.id, { accessor: "Vhu5sjGK0dOTbNtkqQ4kF0YA" })).toBe("active");
    expect(await redis.hget(sk2.lease(a.id), "h")).toMatch(/^v[A-Za-z0-9_-]{12}Hr0Hpa3ZBmAsNYHSsE9qSxUa$/);
    expect(await redis.hget(sk2.lease(b.id), "h")).toBe("tVhu5sjGK0dOTbNtkqQ4kF0YA");
    expect(await redis.hget(sk2.lease(b.id), "k")).toBe("spiffe");
    const fresh = createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 });
    const [ga, gb] = (await fresh.getMany([a.id, b.id])).map(readable);
    expect(ga?.handle).toEqual({ lease_id: "database/creds/orders-read/Hr0Hpa3ZBmAsNYHSsE9qSxUa" });
    expect(gb?.handle).toEqual({ accessor: "Vhu5sjGK0dOTbNtkqQ4kF0YA" });
    expect(ga?.identity.kind).toBe("oidc");
    expect(gb?.identity).toEqual(b.identity);
  });

  it("a v2 lease's pieced JSON handle reads back whole; activating it again replaces every piece of it", async () => {
    const keys = createKeyspace(prefix());
    const sk2 = keys.shardKeys[0]!;
    const store = createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 });
    const l = lease("l_awsold", "aws_sts");
    const handle = awsHandle(l);
    const old = { id: l.id, role: l.role, backend: "aws_sts" as const, workload: l.workload, task: l.task.id, issuer: "idp", subject: "agent-1", iat: l.issuedAt, exp: l.expiresAt, policy: l.policy };
    expect(await writeOldLease(redis, sk2, "v2", old, handle)).toEqual(["ok", "active"]);
    expect(await redis.hexists(sk2.lease(l.id), "handle.3")).toBe(1);
    const got = readable(await store.get(l.id));
    expect(got?.handle).toEqual(handle);
    expect(got).toMatchObject({ role: l.role, backend: "aws_sts", workload: "agent", task_id: l.task.id, revocation_kind: "deny_by_session" });
    expect((await store.forRevocation([l.id]))[0]).toMatchObject({ role: l.role, backend: "aws_sts", workload: "agent", task_id: l.task.id, identity: { issuer: "idp" }, handle });
    expect(await store.activate(l.id, handle, undefined, { issuedAt: l.issuedAt, expiresAt: l.expiresAt })).toBe("active");
    expect(Object.keys(await redis.hgetall(sk2.lease(l.id))).filter((k) => k.startsWith("handle"))).toEqual([]);
    expect((readable(await store.get(l.id)))?.handle).toEqual(handle);
  });

  it("a handle whose shared part is gone or damaged reads as a handle without it (the backend refuses it: never taken for 'never minted')", async () => {
    const keys = createKeyspace(`${prefix()}bad`);
    const sk2 = keys.shardKeys[0]!;
    const store = createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 });
    const l = lease("l_awsbad", "aws_sts");
    expect(await store.create(l, 0)).toBe("ok");
    expect(await store.activate(l.id, awsHandle(l), undefined, { issuedAt: l.issuedAt, expiresAt: l.expiresAt })).toBe("active");
    await redis.del(sk2.leasesHandles);
    const got = readable(await createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 }).get(l.id));
    expect(got?.handle).not.toBeNull();
    expect(got?.handle?.role_arn).toBeUndefined();
    await redis.hset(sk2.lease(l.id), "h", "{not json");
    expect(readable(await createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60 }).get(l.id))?.handle).toEqual({});
  });
});

describe("the re-authorization walk's read (decisionInputs) agrees with get() on every decision input, in every layout", () => {
  /** What recheckLease reads of a lease, taken from a whole lease. */
  const inputsOf = (l: StoredLease) => ({
    id: l.id,
    workload: l.workload,
    role: l.role,
    backend: l.backend,
    task_id: l.task_id,
    task: l.task,
    identity: l.identity,
    claims: l.claims,
    ttl_seconds: l.ttl_seconds,
    asked_ttl_seconds: l.asked_ttl_seconds,
    issued_ms: l.issued_ms,
    ...(l.approval ? { approval: l.approval } : {}),
    delegation: l.delegation,
    obo: l.obo,
  });

  it("reads active leases of this layout (every optional field, values in pieces) and of the layout before; leases in other states come as skipped ids", async () => {
    const store = f.b.broker.store;
    const now = Date.now();
    const full: NewLease = {
      id: newShardedId("l", 0, 1),
      role: "orders-read",
      backend: "jwt",
      workload: "agent",
      task: { id: "T-walk-full", intent: `export ${"é".repeat(50)}`, tool: "psql", destination: "db://orders/a/rather/long/destination/name/past/sixty-four/bytes", sensitivity: "high" },
      issuedAt: now,
      expiresAt: now + 300_000,
      identity: { kind: "spiffe", issuer: "idp", subject: "spiffe://example.org/ns/production/sa/orders-agent-with-a-long-name" },
      policy: { ids: ["p"], hash: "34".repeat(32) },
      askedTtlSeconds: 900,
      claims: { ref: "refs/heads/main", repository_id: 912345 },
      approval: { request_id: "rq_walk", approved_by: "alice" },
      delegation: { parent: "l_parent", depth: 2, ancestors: ["l_root", "l_parent"], chain: ["ci", "agent2"] },
      onBehalfOf: { issuer: "idp", subject: "eve", claims: { groups: ["ops", "oncall"] } },
    };
    expect(await store.create(full, 0, { handle: { jti: full.id, note: "x".repeat(120) } })).toBe("ok");
    const plain: NewLease = { ...full, id: newShardedId("l", 0, 1), task: { id: "T-walk-plain", intent: "", tool: "", destination: "", sensitivity: "" } };
    delete plain.askedTtlSeconds;
    delete plain.claims;
    delete plain.approval;
    delete plain.delegation;
    delete plain.onBehalfOf;
    expect(await store.create(plain, 0, { handle: { jti: plain.id } })).toBe("ok");
    const old = await previousLayoutLease("T-walk-old");
    const issuing: NewLease = { ...plain, id: newShardedId("l", 0, 1), task: { ...plain.task, id: "T-walk-issuing" } };
    expect(await store.create(issuing, 0)).toBe("ok");
    const revoked = await issue("agent", "T-walk-revoked");
    expect((await f.call("DELETE", `/v1/leases/${revoked}`, "agent")).status).toBe(200);

    const shard = store.shardStores[0]!;
    const read = new Map<string, unknown>();
    const skipped = new Set<string>();
    for await (const ids of shard.allLiveIds(50)) {
      const batch = await shard.decisionInputs(ids);
      for (const l of batch.leases) read.set(l.id, l);
      for (const id of batch.skipped) skipped.add(id);
    }
    for (const id of [full.id, plain.id, old]) {
      const whole = (readable(await store.get(id)))!;
      expect(whole.state).toBe("active");
      expect(read.get(id)).toEqual(inputsOf(whole));
    }
    expect(read.get(full.id)).toMatchObject({ task: full.task, identity: full.identity, asked_ttl_seconds: 900, delegation: { depth: 2, chain: ["ci", "agent2"] } });
    // Being issued: its own request decides it again. Being revoked: not re-evaluated.
    expect(skipped.has(issuing.id)).toBe(true);
    expect(read.has(issuing.id)).toBe(false);
    const revokedState = (readable(await store.get(revoked)))!.state;
    if (revokedState === "revoking") expect(skipped.has(revoked)).toBe(true);
    expect(read.has(revoked)).toBe(false);
  });
});
