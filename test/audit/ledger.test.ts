/**
 * The audit ledger against the test run's real redis-server: the hash chain, group commit across
 * two processes' worth of connections, tamper detection, the per-lease index and the I6 refusal.
 *
 * The two helpers below mirror test/support/broker.ts (testRedisUrl, uniquePrefix); they are
 * inlined so this suite does not compile the whole broker composition root.
 */
import { createHash } from "node:crypto";
import { Writable } from "node:stream";
import { Redis } from "ioredis";
import pino from "pino";
import {
  auditHash,
  canonicalJSON,
  createAuditLedger,
  GENESIS_HASH,
  verifyAuditChain,
  type AuditEvent,
  type AuditLedger,
  type AuditLedgerOptions,
} from "../../src/audit/ledger";
import { BrokerError } from "../../src/core/errors";

function testRedisUrl(): string {
  const url = process.env.JITBROKER_TEST_REDIS_URL;
  if (!url) throw new Error("JITBROKER_TEST_REDIS_URL is not set: run the tests with jest (global setup starts Redis)");
  return url;
}
let counter = 0;
function uniquePrefix(): string {
  return `audit${process.pid}x${++counter}`;
}

function keysFor(prefix: string): Pick<AuditLedgerOptions, "streamKey" | "headKey" | "leaseIndexPrefix"> {
  const tag = `{${prefix}}`;
  return { streamKey: `${tag}:audit`, headKey: `${tag}:audit:head`, leaseIndexPrefix: `${tag}:audit:lease:` };
}

const at = (): string => new Date().toISOString();
const ev = (extra: Partial<AuditEvent> & Record<string, unknown> = {}): AuditEvent => ({ type: "decision", at: at(), actor: "system", ...extra });

describe("audit ledger", () => {
  const clients: Redis[] = [];
  const ledgers: AuditLedger[] = [];
  const client = (): Redis => {
    const c = new Redis(testRedisUrl(), { maxRetriesPerRequest: 1 });
    clients.push(c);
    return c;
  };
  const ledger = (redis: Redis, keys: ReturnType<typeof keysFor>, extra: Partial<AuditLedgerOptions> = {}): AuditLedger => {
    const l = createAuditLedger(redis, { ...keys, leaseIndexTtlSeconds: 3600, ...extra });
    ledgers.push(l);
    return l;
  };
  let redis: Redis;

  beforeAll(() => {
    redis = client();
  });
  afterAll(async () => {
    await Promise.all(ledgers.map((l) => l.close()));
    await Promise.all(clients.map((c) => c.quit()));
  });

  describe("canonical JSON and hash", () => {
    it("sorts keys recursively, drops undefined members, keeps array order", () => {
      expect(canonicalJSON({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: undefined }, "1": true })).toBe('{"1":true,"a":{"d":[3,{"y":2,"z":1}]},"b":1}');
      expect(canonicalJSON({ when: new Date(0) })).toBe('{"when":"1970-01-01T00:00:00.000Z"}');
    });
    it("refuses what JSON cannot carry faithfully", () => {
      expect(() => canonicalJSON({ n: NaN })).toThrow(BrokerError);
      expect(() => canonicalJSON({ n: 1n })).toThrow(/bigint/);
      expect(() => canonicalJSON({ m: new Map() })).toThrow(/plain object/);
      const loop: Record<string, unknown> = {};
      loop.self = loop;
      expect(() => canonicalJSON(loop)).toThrow(/circular/);
    });
    it("hash = sha256hex(prev + \\n + canonical event)", () => {
      const e = canonicalJSON({ type: "mint", at: "2025-01-01T00:00:00Z" });
      expect(auditHash(GENESIS_HASH, e)).toBe(createHash("sha256").update(`${"0".repeat(64)}\n${e}`).digest("hex"));
    });
  });

  it("appends, chains and verifies (round trip)", async () => {
    const keys = keysFor(uniquePrefix());
    const l = ledger(redis, keys);
    const a = await l.append(ev({ type: "decision", lease_id: "L1", workload: "w", policy: { ids: ["p1"], hash: "abc" } }));
    const b = await l.append(ev({ type: "mint", lease_id: "L1", b_field: undefined }));
    const [c, d] = await l.appendMany([ev({ type: "revocation_requested", lease_id: "L1" }), ev({ type: "revoked", lease_id: "L1" })]);

    expect(a.prev).toBe(GENESIS_HASH);
    expect(b.prev).toBe(a.hash);
    expect(c!.prev).toBe(b.hash);
    expect(d!.prev).toBe(c!.hash);
    expect(a.policy).toEqual({ ids: ["p1"], hash: "abc" });
    expect("b_field" in b).toBe(false);
    // The stored entry carries exactly the documented fields, and h recomputes from p and e.
    const [[id, fields]] = (await redis.xrange(keys.streamKey, a.seq, a.seq)) as [[string, string[]]];
    expect(id).toBe(a.seq);
    const f = Object.fromEntries([0, 2, 4].map((i) => [fields[i], fields[i + 1]]));
    expect(Object.keys(f).sort()).toEqual(["e", "h", "p"]);
    expect(f.h).toBe(auditHash(f.p!, f.e!));
    expect(JSON.parse(f.e!)).not.toHaveProperty("seq");
    expect(await redis.get(keys.headKey)).toBe(d!.hash);

    expect(await l.range({})).toEqual([a, b, c, d]);
    expect(await l.range({ from: `(${b.seq}`, count: 1 })).toEqual([c]);
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 4 });
  });

  it("an empty ledger verifies; events naming seq/hash/prev are refused (they would be lost on read)", async () => {
    const keys = keysFor(uniquePrefix());
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 0 });
    const l = ledger(redis, keys);
    for (const field of ["seq", "hash", "prev"]) {
      await expect(l.append({ ...ev(), [field]: "x" })).rejects.toThrow(`field ${field} is reserved for the chain`);
    }
    const s = await l.append(ev());
    expect(s.prev).toBe(GENESIS_HASH);
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 1 });
  });

  it("keeps one chain when two ledgers on two connections append 500 events each concurrently", async () => {
    const keys = keysFor(uniquePrefix());
    const l1 = ledger(client(), keys, { maxBatch: 64 });
    const l2 = ledger(client(), keys, { maxBatch: 64 });
    const jobs: Promise<{ n: number; seq: string; hash: string; prev: string }>[] = [];
    for (let i = 0; i < 500; i++) {
      for (const [l, n] of [
        [l1, i],
        [l2, 500 + i],
      ] as const) {
        jobs.push(l.append(ev({ type: "mint", lease_id: `lease-${n % 7}`, n })).then((s) => ({ n: s.n as number, seq: s.seq, hash: s.hash, prev: s.prev })));
      }
    }
    const results = await Promise.all(jobs);

    // every append resolved with its own event and its own seq
    results.forEach((r, i) => expect(r.n).toBe(i % 2 === 0 ? i / 2 : 500 + (i - 1) / 2));
    expect(new Set(results.map((r) => r.seq)).size).toBe(1000);

    // one valid chain of 1000, no duplicates, each seq holds the event its appender was given
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 1000 });
    const all = await l1.range({ count: 10000 });
    expect(all).toHaveLength(1000);
    expect(new Set(all.map((s) => s.n)).size).toBe(1000);
    const bySeq = new Map(all.map((s) => [s.seq, s]));
    for (const r of results) {
      const s = bySeq.get(r.seq)!;
      expect(s.n).toBe(r.n);
      expect(s.hash).toBe(r.hash);
      expect(s.prev).toBe(r.prev);
    }
    // the lease index agrees with the stream
    const idx = await l2.byLease("lease-3");
    expect(idx.map((s) => s.seq)).toEqual(all.filter((s) => s.lease_id === "lease-3").map((s) => s.seq));
  });

  describe("tamper detection", () => {
    let keys: ReturnType<typeof keysFor>;
    let stored: Awaited<ReturnType<AuditLedger["appendMany"]>>;
    beforeEach(async () => {
      keys = keysFor(uniquePrefix());
      stored = await ledger(redis, keys).appendMany(Array.from({ length: 10 }, (_, n) => ev({ n })));
      expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 10 });
    });

    it("detects a deleted middle entry, at the entry after the gap", async () => {
      await redis.xdel(keys.streamKey, stored[4]!.seq);
      const r = await verifyAuditChain(redis, keys);
      expect(r.ok).toBe(false);
      expect(r.checked).toBe(9);
      expect(r.firstBreak).toEqual({ seq: stored[5]!.seq, reason: expect.stringContaining(`preceding entry ${stored[3]!.seq}`) });
    });

    it("detects a deleted first entry and a deleted last entry", async () => {
      await redis.xdel(keys.streamKey, stored[0]!.seq);
      expect((await verifyAuditChain(redis, keys)).firstBreak).toEqual({ seq: stored[1]!.seq, reason: expect.stringContaining("genesis") });
      // allowTrimmedStart (for maxLen ledgers) accepts a missing start
      expect(await verifyAuditChain(redis, { ...keys, allowTrimmedStart: true })).toEqual({ ok: true, checked: 9 });
      await redis.xdel(keys.streamKey, stored[9]!.seq);
      expect((await verifyAuditChain(redis, { ...keys, allowTrimmedStart: true })).firstBreak).toEqual({
        seq: stored[8]!.seq,
        reason: expect.stringContaining("head does not match"),
      });
    });

    it("detects a changed head", async () => {
      await redis.set(keys.headKey, "f".repeat(64));
      const r = await verifyAuditChain(redis, keys);
      expect(r.ok).toBe(false);
      expect(r.firstBreak).toEqual({ seq: stored[9]!.seq, reason: expect.stringContaining("head") });
      await redis.del(keys.headKey);
      expect((await verifyAuditChain(redis, keys)).firstBreak?.reason).toMatch(/head is missing/);
    });

    it("detects an altered event (a copy of the stream with one e rewritten)", async () => {
      const copy = { streamKey: `${keys.streamKey}:copy`, headKey: keys.headKey };
      const entries = await redis.xrange(keys.streamKey, "-", "+");
      for (const [id, fields] of entries) {
        const f = [...fields];
        if (id === stored[6]!.seq) f[1] = f[1]!.replace('"n":6', '"n":66');
        await redis.xadd(copy.streamKey, id, ...f);
      }
      const r = await verifyAuditChain(redis, copy);
      expect(r).toEqual({ ok: false, checked: 10, firstBreak: { seq: stored[6]!.seq, reason: expect.stringContaining("hash does not match") } });
    });
  });

  it("byLease returns a lease's events in order, honours limit, and the index expires with the lease", async () => {
    const keys = keysFor(uniquePrefix());
    const l = ledger(redis, keys, { leaseIndexTtlSeconds: 120 });
    const types = ["decision", "mint", "revocation_requested", "revoked"];
    for (const t of types) {
      await l.append(ev({ type: t, lease_id: "A" }));
      await l.append(ev({ type: t, lease_id: "B" }));
    }
    await l.append(ev({ type: "policy_reload" }));
    const a = await l.byLease("A");
    expect(a.map((s) => s.type)).toEqual(types);
    expect(a.every((s) => s.lease_id === "A")).toBe(true);
    const chainOrder = (await l.range({ count: 100 })).filter((s) => s.lease_id === "A").map((s) => s.seq);
    expect(a.map((s) => s.seq)).toEqual(chainOrder);
    expect((await l.byLease("A", 2)).map((s) => s.type)).toEqual(["decision", "mint"]);
    expect(await l.byLease("nope")).toEqual([]);
    const ttl = await redis.ttl(`${keys.leaseIndexPrefix}A`);
    expect(ttl).toBeGreaterThan(100);
    expect(ttl).toBeLessThanOrEqual(120);
  });

  it("with leaseIndexField, keeps a lease's event ids in its existing record and never creates one", async () => {
    const keys = keysFor(uniquePrefix());
    const hashKey = (id: string) => `${keys.streamKey}:rec:${id}`;
    const l = ledger(redis, keys, { leaseIndexField: { hashKey, field: "ev" } });
    await redis.hset(hashKey("A"), "state", "active");
    await redis.expire(hashKey("A"), 300);
    const sent = await l.appendMany([ev({ type: "mint", lease_id: "A" }), ev({ type: "mint", lease_id: "B" })]);
    const revoked = await l.append(ev({ type: "revoked", lease_id: "A" }));
    expect(await redis.hget(hashKey("A"), "ev")).toBe(`${sent[0]!.seq} ${revoked.seq}`);
    expect((await l.byLease("A")).map((e) => e.type)).toEqual(["mint", "revoked"]);
    expect((await l.byLease("A", 1)).map((e) => e.type)).toEqual(["mint"]);
    // No record for B: the event is in the chain, but no index key appears out of nowhere.
    expect(await redis.exists(hashKey("B"))).toBe(0);
    expect(await l.byLease("B")).toEqual([]);
    expect(await redis.exists(`${keys.leaseIndexPrefix}A`)).toBe(0);
    // The record keeps its own expiry.
    expect(await redis.ttl(hashKey("A"))).toBeGreaterThan(250);
    expect((await verifyAuditChain(redis, keys)).ok).toBe(true);
  });

  it("refuses events carrying secret material, at any depth, and writes nothing", async () => {
    const keys = keysFor(uniquePrefix());
    const l = ledger(redis, keys);
    const secret = "s3cr3t-VALUE-never-shown";
    const bad: Record<string, unknown>[] = [
      { token: secret },
      { secret: secret },
      { password: secret },
      { secret_access_key: secret },
      { session_token: secret },
      { credential: { type: "jwt", expires_at: at() } },
      { client_secret: secret },
      { detail: { backend: { Session_Token: secret } } },
      { list: [{ ok: 1 }, { nested: [{ password: secret }] }] },
      { "client-secret": secret },
    ];
    for (const extra of bad) {
      const p = l.append(ev({ type: "mint", lease_id: "L", ...extra }));
      await expect(p).rejects.toThrow(BrokerError);
      await expect(p).rejects.toMatchObject({ code: "internal", reason: "audit_secret_field" });
      await p.catch((e: Error) => expect(e.message).not.toContain(secret));
    }
    // one bad event refuses the whole appendMany
    await expect(l.appendMany([ev({ n: 1 }), ev({ n: 2, creds: { token: secret } })])).rejects.toThrow(/\$\.creds\.token/);
    // neighbouring names that are not secret are fine
    await l.append(ev({ token_id: "jti-1", credential_type: "jwt", secret_ref: "vault:path" }));
    expect(await redis.xlen(keys.streamKey)).toBe(1);
    expect(await redis.exists(`${keys.leaseIndexPrefix}L`)).toBe(0);
    const raw = JSON.stringify(await redis.xrange(keys.streamKey, "-", "+"));
    expect(raw).not.toContain(secret);
  });

  it("refuses malformed events", async () => {
    const l = ledger(redis, keysFor(uniquePrefix()));
    await expect(l.append({ type: "", at: at() })).rejects.toThrow(/type/);
    await expect(l.append({ type: "mint", at: "yesterday" })).rejects.toThrow(/RFC 3339/);
    await expect(l.append({ type: "mint", at: at(), lease_id: 5 as unknown as string })).rejects.toThrow(/lease_id/);
  });

  it("writes each committed event to the logger (info, msg audit)", async () => {
    const lines: string[] = [];
    const logger = pino({ level: "info" }, new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(chunk.toString()), cb()) }));
    const l = ledger(redis, keysFor(uniquePrefix()), { logger });
    const s = await l.append(ev({ type: "revoked", lease_id: "L9" }));
    await new Promise((r) => setImmediate(r));
    const line = lines.map((x) => JSON.parse(x)).find((x) => x.msg === "audit");
    expect(line).toMatchObject({ level: 30, msg: "audit", audit: { type: "revoked", lease_id: "L9", seq: s.seq, hash: s.hash } });
  });

  it("trims with maxLen and the remaining chain still verifies from its first prev", async () => {
    const keys = keysFor(uniquePrefix());
    const l = ledger(redis, keys, { maxLen: 100, maxBatch: 50 });
    for (let i = 0; i < 20; i++) await l.appendMany(Array.from({ length: 50 }, (_, n) => ev({ n: i * 50 + n })));
    const len = await redis.xlen(keys.streamKey);
    expect(len).toBeLessThan(1000);
    expect(len).toBeGreaterThanOrEqual(100);
    expect(await verifyAuditChain(redis, { ...keys, allowTrimmedStart: true })).toEqual({ ok: true, checked: len });
    expect((await verifyAuditChain(redis, keys)).ok).toBe(false);
  });

  it("verifies while another ledger keeps appending", async () => {
    const keys = keysFor(uniquePrefix());
    const l = ledger(client(), keys);
    await l.appendMany(Array.from({ length: 2500 }, (_, n) => ev({ n })));
    let stop = false;
    const writer = (async () => {
      while (!stop) await l.append(ev());
    })();
    const r = await verifyAuditChain(redis, keys);
    stop = true;
    await writer;
    expect(r.ok).toBe(true);
    expect(r.checked).toBeGreaterThanOrEqual(2500);
  });

  it("flushes pending appends on close and refuses appends afterwards", async () => {
    const keys = keysFor(uniquePrefix());
    const l = createAuditLedger(redis, { ...keys, leaseIndexTtlSeconds: 60 });
    const pending = Array.from({ length: 20 }, (_, n) => l.append(ev({ n })));
    await l.close();
    expect(await Promise.all(pending)).toHaveLength(20);
    await expect(l.append(ev())).rejects.toMatchObject({ code: "store_unavailable" });
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 20 });
  });

  it("answers store_unavailable when Redis is unreachable", async () => {
    const dead = new Redis("redis://127.0.0.1:1", { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    dead.on("error", () => undefined);
    const l = createAuditLedger(dead, { ...keysFor(uniquePrefix()), leaseIndexTtlSeconds: 60 });
    await expect(l.append(ev())).rejects.toMatchObject({ code: "store_unavailable" });
    await l.close();
    dead.disconnect();
  });

  it("sustains throughput with 50 concurrent appenders in one process (measured, not asserted)", async () => {
    const keys = keysFor(uniquePrefix());
    const l = ledger(client(), keys);
    const perAppender = 100;
    const started = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: 50 }, async (_, a) => {
        for (let i = 0; i < perAppender; i++) await l.append(ev({ type: "mint", lease_id: `lease-${a}`, workload: `w${a}`, n: i }));
      }),
    );
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const total = 50 * perAppender;
    if (process.env.JITBROKER_BENCH) {
      console.log(`audit ledger: ${total} appends by 50 concurrent appenders in ${seconds.toFixed(2)} s = ${Math.round(total / seconds)} appends/s`);
    }
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: total });
    expect(await l.byLease("lease-7")).toHaveLength(perAppender);
  });
});
