/**
 * The audit ledger against the test run's real redis-server: the hash chain, group commit across
 * two processes' worth of connections, tamper detection, the per-lease index and the I6 refusal.
 *
 * The two helpers below mirror test/support/broker.ts (testRedisUrl, uniquePrefix); they are
 * inlined so this suite does not compile the whole broker composition root.
 */
import { createHash, randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { rm } from "node:fs/promises";
import { Redis } from "ioredis";
import pino from "pino";
import {
  auditHash,
  canonicalJSON,
  createAuditLedger,
  GENESIS_HASH,
  verifyAuditChain,
  type AuditLedger as TypedLedger,
  type LedgerEvent,
  type AuditLedgerOptions,
} from "../../src/audit/ledger";
import { BrokerError } from "../../src/core/errors";
import { auditKeyFromBytes, type AuditKey } from "../../src/audit/key";
import { formatMark, keyedLink, legacyLink } from "../../src/audit/chain";
import { createAuditMetrics } from "../../src/audit/metrics";
import { Registry } from "prom-client";
import { startRedisServer } from "../support/redis-server";

async function waitUntil(fn: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!(await fn())) {
    if (Date.now() - start > timeoutMs) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

function testRedisUrl(): string {
  const url = process.env.JITBROKER_TEST_REDIS_URL;
  if (!url) throw new Error("JITBROKER_TEST_REDIS_URL is not set: run the tests with jest (global setup starts Redis)");
  return url;
}
let counter = 0;
function uniquePrefix(): string {
  return `audit${process.pid}x${++counter}`;
}

const newKey = (): AuditKey => auditKeyFromBytes(randomBytes(32));

function keysFor(prefix: string): Pick<AuditLedgerOptions, "streamKey" | "headKey" | "leaseIndexPrefix" | "key"> {
  const tag = `{${prefix}}`;
  return { streamKey: `${tag}:audit`, headKey: `${tag}:audit:head`, leaseIndexPrefix: `${tag}:audit:lease:`, key: newKey() };
}

const at = (): string => new Date().toISOString();
/** The ledger stores any JSON object with the common fields; the broker's own types are in src/audit/events.ts. */
type AuditEvent = LedgerEvent & Record<string, unknown>;
type AuditLedger = TypedLedger<AuditEvent>;
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
    const l = createAuditLedger<AuditEvent>(redis, { ...keys, leaseIndexTtlSeconds: 3600, ...extra });
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
    it("matches a plain recursive sorted-keys serialiser on 2,000 random events (a serialiser that drifts would break every link verify recomputes)", () => {
      const ref = (v: unknown): string => {
        if (v === null || typeof v !== "object") return JSON.stringify(v);
        if (Array.isArray(v)) return `[${v.map(ref).join(",")}]`;
        const o = v as Record<string, unknown>;
        return `{${Object.keys(o).sort().filter((k) => o[k] !== undefined).map((k) => `${JSON.stringify(k)}:${ref(o[k])}`).join(",")}}`;
      };
      let seed = 7;
      const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2147483648) % n);
      const strs = ["", "a", "Zed", "ü\u2028\"\\", "\u0000x", "10", "__proto_x", "a-b", "😀", "B"];
      const gen = (depth: number): unknown => {
        switch (rnd(depth > 3 ? 4 : 7)) {
          case 0: return strs[rnd(strs.length)];
          case 1: return [0, -0, 1.5, -2e21, 1e-7, 42][rnd(6)];
          case 2: return rnd(2) === 0;
          case 3: return null;
          case 4: return Array.from({ length: rnd(4) }, () => gen(depth + 1));
          default: {
            const o: Record<string, unknown> = {};
            for (let i = rnd(6); i > 0; i--) o[strs[rnd(strs.length)]! + String(rnd(3))] = rnd(5) === 0 ? undefined : gen(depth + 1);
            return o;
          }
        }
      };
      for (let i = 0; i < 2000; i++) {
        const v = { type: "t", nested: gen(0) };
        expect(canonicalJSON(v)).toBe(ref(v));
      }
    });
    it("names the path of what it refuses, never the value", () => {
      expect(() => canonicalJSON({ a: [1, { b: NaN }] })).toThrow("audit event refused: $.a[1].b is not a finite number");
      expect(() => canonicalJSON({ a: { client_secret: "s3cr3t" } })).toThrow("audit event refused: field $.a.client_secret names secret material (I6)");
      expect(() => canonicalJSON({ a: [undefined] })).toThrow("$.a[0] is undefined");
      const shared = { x: 1 };
      // The same object twice (not a cycle) is fine.
      expect(canonicalJSON({ a: shared, b: [shared] })).toBe('{"a":{"x":1},"b":[{"x":1}]}');
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
    const f = Object.fromEntries([0, 2, 4, 6].map((i) => [fields[i], fields[i + 1]]));
    expect(Object.keys(f).sort()).toEqual(["e", "h", "m", "p"]);
    expect(f.m).toBe("1");
    expect(f.h).toBe(keyedLink(keys.key, f.p!, id, f.e!));
    expect(JSON.parse(f.e!)).not.toHaveProperty("seq");
    expect(await redis.get(keys.headKey)).toBe(formatMark(keys.key, "head", { seq: d!.seq, link: d!.hash }));

    expect(await l.range({})).toEqual([a, b, c, d]);
    expect(await l.range({ from: `(${b.seq}`, count: 1 })).toEqual([c]);
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 4, legacy: 0 });
  });

  it("an empty ledger verifies; events naming seq/hash/prev are refused (they would be lost on read)", async () => {
    const keys = keysFor(uniquePrefix());
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 0, legacy: 0 });
    const l = ledger(redis, keys);
    for (const field of ["seq", "hash", "prev"]) {
      await expect(l.append({ ...ev(), [field]: "x" })).rejects.toThrow(`field ${field} is reserved for the chain`);
    }
    const s = await l.append(ev());
    expect(s.prev).toBe(GENESIS_HASH);
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 1, legacy: 0 });
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
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 1000, legacy: 0 });
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

  it("a commit never writes half a batch: an entry slipped into the stream behind the ledger's back (head untouched) makes it re-read and append after it, all or nothing", async () => {
    const keys = keysFor(uniquePrefix());
    const l = ledger(client(), keys);
    await l.append(ev({ lease_id: "L1", n: 1 }));
    // A foreign entry with a later id, and the head left as it was: the ledger's view is stale.
    const foreign = (await redis.xadd(keys.streamKey, `${Date.now() + 60_000}-0`, "e", "{}", "h", "x", "p", "y"))!;
    const batch = await l.appendMany([ev({ lease_id: "L1", n: 2 }), ev({ lease_id: "L1", n: 3 }), ev({ lease_id: "L1", n: 4 })]);
    expect(batch.map((b) => b.n)).toEqual([2, 3, 4]);
    const [fms] = foreign.split("-").map(Number);
    for (const b of batch) expect(Number(b.seq.split("-")[0])).toBeGreaterThanOrEqual(fms!);
    const entries = await redis.xrange(keys.streamKey, "-", "+");
    expect(entries.map(([id]) => id)).toEqual([entries[0]![0], foreign, ...batch.map((b) => b.seq)]);
    // The ledger's own events chain on each other, and the foreign entry is the break verify names.
    expect(batch[0]!.prev).toBe(entries.length === 5 ? (await l.range({ count: 1 }))[0]!.hash : "");
    const v = await verifyAuditChain(redis, keys);
    expect(v.ok).toBe(false);
    expect((await l.byLease("L1")).map((e) => e.n)).toEqual([1, 2, 3, 4]);
  });

  describe("tamper detection with the keyed chain (an attacker who can write Redis but has no key)", () => {
    let keys: ReturnType<typeof keysFor>;
    let stored: Awaited<ReturnType<AuditLedger["appendMany"]>>;
    type Entry = [string, string[]];
    const field = (fields: string[], name: string): string => fields[fields.indexOf(name) + 1]!;
    const setField = (fields: string[], name: string, value: string): string[] => {
      const f = [...fields];
      f[f.indexOf(name) + 1] = value;
      return f;
    };
    /** What an attacker does to change a stream: delete it and write it again as they like. */
    const rewrite = async (mutate: (entries: Entry[]) => Entry[]): Promise<void> => {
      const entries = (await redis.xrange(keys.streamKey, "-", "+")) as Entry[];
      await redis.del(keys.streamKey);
      for (const [id, fields] of mutate(entries)) await redis.xadd(keys.streamKey, id, ...fields);
    };
    const brk = async () => (await verifyAuditChain(redis, keys)).firstBreak;

    beforeEach(async () => {
      keys = keysFor(uniquePrefix());
      // one event per millisecond step, so there is room for ids in between
      let t = 1_700_000_000_000;
      const l = ledger(redis, keys, { now: () => (t += 10) });
      stored = [];
      for (let n = 0; n < 10; n++) stored.push(await l.append(ev({ n })));
      expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 10, legacy: 0 });
    });

    it("deletion in the middle: named at the entry after the gap", async () => {
      await redis.xdel(keys.streamKey, stored[4]!.seq);
      const r = await verifyAuditChain(redis, keys);
      expect(r.ok).toBe(false);
      expect(r.checked).toBe(9);
      expect(r.firstBreak).toEqual({ position: 5, seq: stored[5]!.seq, reason: expect.stringContaining(`preceding entry ${stored[3]!.seq}`) });
    });

    it("deletion of the first entry", async () => {
      await redis.xdel(keys.streamKey, stored[0]!.seq);
      expect(await brk()).toEqual({ position: 1, seq: stored[1]!.seq, reason: expect.stringContaining("genesis") });
    });

    it("deletion at the head, with the head left, rewritten unkeyed, forged, or deleted", async () => {
      await redis.xdel(keys.streamKey, stored[9]!.seq);
      expect(await brk()).toEqual({ position: 9, seq: stored[8]!.seq, reason: expect.stringContaining(`head names ${stored[9]!.seq}`) });
      await redis.set(keys.headKey, stored[8]!.hash); // the old unkeyed head format
      expect((await brk())?.reason).toMatch(/unkeyed hash but the chain has keyed entries/);
      await redis.set(keys.headKey, formatMark(newKey(), "head", { seq: stored[8]!.seq, link: stored[8]!.hash }));
      expect((await brk())?.reason).toMatch(/MAC does not verify/);
      await redis.set(keys.headKey, "v1 garbage");
      expect((await brk())?.reason).toMatch(/not a valid head mark/);
      await redis.del(keys.headKey);
      expect(await brk()).toEqual({ position: 9, seq: stored[8]!.seq, reason: expect.stringContaining("head is missing") });
    });

    it("insertion in the middle: an unkeyed entry, or one linked with another key", async () => {
      const between = `${Number(stored[3]!.seq.split("-")[0]) + 5}-0`;
      const forged = (e: string, prev: string): string[] => ["e", e, "h", keyedLink(newKey(), prev, between, e), "p", prev, "m", "1"];
      const e = canonicalJSON(ev({ type: "revoked", lease_id: "L-forged" }));
      await rewrite((entries) => [...entries.slice(0, 4), [between, forged(e, stored[3]!.hash)], ...entries.slice(4)]);
      expect(await brk()).toEqual({ position: 5, seq: between, reason: expect.stringContaining("link does not match") });
      await rewrite((entries) => [...entries.slice(0, 4), [between, ["e", e, "h", legacyLink(stored[3]!.hash, e), "p", stored[3]!.hash]], ...entries.slice(5)]);
      expect(await brk()).toEqual({ position: 5, seq: between, reason: expect.stringContaining("unkeyed entry after the chain became keyed") });
    });

    it("insertion at the head (appended after the last entry, head moved to it)", async () => {
      const id = `${Number(stored[9]!.seq.split("-")[0]) + 5}-0`;
      const e = canonicalJSON(ev({ n: 10 }));
      const other = newKey();
      const h = keyedLink(other, stored[9]!.hash, id, e);
      await redis.xadd(keys.streamKey, id, "e", e, "h", h, "p", stored[9]!.hash, "m", "1");
      await redis.set(keys.headKey, formatMark(other, "head", { seq: id, link: h }));
      expect(await brk()).toEqual({ position: 11, seq: id, reason: expect.stringContaining("link does not match") });
    });

    it("modification of one event (and of its link, recomputed without the key)", async () => {
      await rewrite((entries) => entries.map(([id, f]) => [id, id === stored[6]!.seq ? setField(f, "e", field(f, "e").replace('"n":6', '"n":66')) : f]));
      expect(await brk()).toEqual({ position: 7, seq: stored[6]!.seq, reason: expect.stringContaining("link does not match") });
      await rewrite((entries) =>
        entries.map(([id, f]) => {
          if (id !== stored[6]!.seq) return [id, f];
          const e = field(f, "e");
          return [id, setField(f, "h", createHash("sha256").update(`${field(f, "p")}\n${e}`).digest("hex"))];
        }),
      );
      expect((await brk())?.position).toBe(7);
    });

    it("reordering: two events swapped (ids kept), or one moved to the end under a new id", async () => {
      await rewrite((entries) => {
        const out = [...entries];
        const a = out[2]!;
        const b = out[3]!;
        out[2] = [a[0], b[1]];
        out[3] = [b[0], a[1]];
        return out;
      });
      expect(await brk()).toEqual({ position: 3, seq: stored[2]!.seq, reason: expect.any(String) });

      keys = keysFor(uniquePrefix());
      const l = ledger(redis, keys);
      const s = await l.appendMany(Array.from({ length: 5 }, (_, n) => ev({ n })));
      await rewrite((entries) => {
        const moved = entries[1]!;
        const rest = entries.filter((x) => x !== moved);
        const lastMs = Number(s[4]!.seq.split("-")[0]);
        return [...rest, [`${lastMs + 1}-0`, moved[1]]];
      });
      expect(await brk()).toEqual({ position: 2, seq: s[2]!.seq, reason: expect.stringContaining("preceding entry") });
    });

    it("verifying with another key fails at the first entry", async () => {
      const r = await verifyAuditChain(redis, { ...keys, key: newKey() });
      expect(r.firstBreak).toEqual({ position: 1, seq: stored[0]!.seq, reason: expect.stringContaining("another key") });
    });

    it("a ledger with another key refuses to append on this chain (replicas must share the key)", async () => {
      const l = ledger(redis, { ...keys, key: newKey() });
      await expect(l.append(ev())).rejects.toMatchObject({ code: "store_unavailable", reason: "audit_key_mismatch" });
      expect(await redis.xlen(keys.streamKey)).toBe(10);
    });
  });

  describe("an unkeyed chain written before the key existed", () => {
    it("keeps verifying: the first keyed append writes the switch-over event, and the legacy part is fixed from then on", async () => {
      const keys = keysFor(uniquePrefix());
      // the chain as the previous version wrote it: e, h = sha256(p + \n + e), p; head = bare hash
      let prev = GENESIS_HASH;
      const legacyIds: string[] = [];
      for (let n = 0; n < 3; n++) {
        const e = canonicalJSON(ev({ n }));
        const h = legacyLink(prev, e);
        legacyIds.push((await redis.xadd(keys.streamKey, "*", "e", e, "h", h, "p", prev))!);
        prev = h;
      }
      await redis.set(keys.headKey, prev);
      expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 3, legacy: 3 });

      const l = ledger(redis, keys);
      const s = await l.append(ev({ type: "mint", lease_id: "L" }));
      const all = await l.range({});
      expect(all.map((x) => x.type)).toEqual(["decision", "decision", "decision", "audit_chain_keyed", "mint"]);
      expect(all[3]).toMatchObject({ legacy_head: prev, key_id: keys.key.kid, prev });
      expect(s.prev).toBe(all[3]!.hash);
      expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 5, legacy: 3 });

      // rewriting a legacy event (and recomputing the unkeyed links after it) is now caught
      const entries = (await redis.xrange(keys.streamKey, "-", "+")) as [string, string[]][];
      await redis.del(keys.streamKey);
      let p2 = GENESIS_HASH;
      for (const [id, f] of entries) {
        const fields = [...f];
        if (id === legacyIds[1]) fields[1] = fields[1]!.replace('"n":1', '"n":11');
        if (!fields.includes("m")) {
          fields[3] = legacyLink(p2, fields[1]!);
          fields[5] = p2;
          p2 = fields[3]!;
        }
        await redis.xadd(keys.streamKey, id, ...fields);
      }
      expect((await verifyAuditChain(redis, keys)).firstBreak).toEqual({ position: 4, seq: all[3]!.seq, reason: expect.stringContaining("preceding entry") });
    });

    it("a keyed entry after unkeyed ones must be the switch-over event", async () => {
      const keys = keysFor(uniquePrefix());
      const e0 = canonicalJSON(ev({ n: 0 }));
      const h0 = legacyLink(GENESIS_HASH, e0);
      await redis.xadd(keys.streamKey, "1-0", "e", e0, "h", h0, "p", GENESIS_HASH);
      const e1 = canonicalJSON(ev({ n: 1 }));
      const h1 = keyedLink(keys.key, h0, "2-0", e1);
      await redis.xadd(keys.streamKey, "2-0", "e", e1, "h", h1, "p", h0, "m", "1");
      await redis.set(keys.headKey, formatMark(keys.key, "head", { seq: "2-0", link: h1 }));
      expect((await verifyAuditChain(redis, keys)).firstBreak).toEqual({ position: 2, seq: "2-0", reason: expect.stringContaining("switch-over") });
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
    const l = createAuditLedger<AuditEvent>(redis, { ...keys, leaseIndexTtlSeconds: 60 });
    const pending = Array.from({ length: 20 }, (_, n) => l.append(ev({ n })));
    await l.close();
    expect(await Promise.all(pending)).toHaveLength(20);
    await expect(l.append(ev())).rejects.toMatchObject({ code: "store_unavailable" });
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: 20, legacy: 0 });
  });

  describe("record(): appends that no caller waits for are never silently dropped", () => {
    const setup = () => {
      const lines: any[] = [];
      const logger = pino({ level: "info" }, new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(JSON.parse(chunk.toString())), cb()) }));
      const registry = new Registry();
      const metrics = createAuditMetrics(registry);
      const count = async (outcome: string) => (await registry.getSingleMetric("jitbroker_audit_append_failures_total")!.get()).values.find((v) => v.labels.outcome === outcome)?.value ?? 0;
      return { lines, logger, metrics, count };
    };

    it("retries with backoff while the store fails, counts each retry, and lands the event once it works", async () => {
      const keys = keysFor(uniquePrefix());
      const { logger, metrics, count, lines } = setup();
      await redis.set(keys.streamKey, "not a stream"); // every commit fails (WRONGTYPE)
      const l = ledger(redis, keys, { logger, metrics, recordRetryDelays: [20, 20, 20, 20, 20, 20, 20, 20, 200, 200, 200, 200] });
      l.record(ev({ type: "issue_failed", lease_id: "L1", reason: "mint failed" }));
      await waitUntil(async () => (await count("retried")) >= 2);
      await redis.del(keys.streamKey);
      await waitUntil(async () => (await redis.type(keys.streamKey)) === "stream");
      expect((await l.range({})).map((e) => e.lease_id)).toEqual(["L1"]);
      expect(await count("lost")).toBe(0);
      expect(lines.some((x) => x.msg === "audit append failed; retrying" && x.type === "issue_failed")).toBe(true);
    });

    it("after the last retry, logs the whole event at error level and counts it lost; close() waits for it", async () => {
      const keys = keysFor(uniquePrefix());
      const { logger, metrics, count, lines } = setup();
      await redis.set(keys.streamKey, "not a stream");
      const l = createAuditLedger<AuditEvent>(redis, { ...keys, leaseIndexTtlSeconds: 60, logger, metrics, recordRetryDelays: [5, 5] });
      l.record(ev({ type: "policy_reload", ok: false, marker: "m-123" }));
      await waitUntil(async () => (await count("lost")) === 1);
      expect(await count("retried")).toBe(2);
      expect(await count("lost")).toBe(1);
      const lost = lines.find((x) => x.msg.includes("this log line is its only record"));
      expect(lost).toMatchObject({ level: 50, audit_lost: { type: "policy_reload", marker: "m-123" } });
      // close() gives a pending record one last attempt instead of waiting out its backoff
      const l2 = createAuditLedger<AuditEvent>(redis, { ...keys, leaseIndexTtlSeconds: 60, logger, metrics, recordRetryDelays: [60_000] });
      l2.record(ev({ type: "policy_reload", ok: false }));
      await waitUntil(async () => (await count("retried")) === 3);
      await l2.close();
      expect(await count("lost")).toBe(2);
      await l.close();
    });

    it("an event naming secret material is refused at once, counted, and never logged", async () => {
      const { logger, metrics, count, lines } = setup();
      const l = ledger(redis, keysFor(uniquePrefix()), { logger, metrics });
      l.record(ev({ type: "mint", password: "hunter2-secret" }));
      await waitUntil(async () => (await count("refused")) === 1);
      expect(JSON.stringify(lines)).not.toContain("hunter2-secret");
      await expect(l.append(ev({ type: "mint", token: "x" }))).rejects.toThrow();
      expect(await count("refused")).toBe(2);
    });
  });

  it("answers store_unavailable when Redis is unreachable", async () => {
    const dead = new Redis("redis://127.0.0.1:1", { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    dead.on("error", () => undefined);
    const l = createAuditLedger<AuditEvent>(dead, { ...keysFor(uniquePrefix()), leaseIndexTtlSeconds: 60 });
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
    expect(await verifyAuditChain(redis, keys)).toEqual({ ok: true, checked: total, legacy: 0 });
    expect(await l.byLease("lease-7")).toHaveLength(perAppender);
  });

  it("a commit whose reply is lost (command timeout) is not committed twice: the append resolves and each event is in the chain once", async () => {
    // A private Redis (it will be paused) and a ledger connection that gives up on a reply after 100 ms.
    const server = await startRedisServer({ appendonly: false });
    const admin = new Redis(server.url);
    const main = new Redis(server.url, { maxRetriesPerRequest: 1 });
    try {
      const keys = keysFor(uniquePrefix());
      const l = createAuditLedger<AuditEvent>(main, { ...keys, leaseIndexTtlSeconds: 3600, watchConnection: () => new Redis(server.url, { commandTimeout: 100, maxRetriesPerRequest: 1 }) });
      await l.append(ev({ n: 0 }));
      // Writes held for 600 ms: the commit script runs long after the ledger stopped waiting for it.
      await admin.call("CLIENT", "PAUSE", "600", "WRITE");
      const stored = await l.appendMany([ev({ type: "revoked", lease_id: "L1" }), ev({ type: "revoked", lease_id: "L2" })]);
      expect(stored.map((e) => e.lease_id)).toEqual(["L1", "L2"]);
      await l.append(ev({ n: 3 }));
      expect(await main.xlen(keys.streamKey)).toBe(4);
      expect((await verifyAuditChain(main, { key: keys.key, streamKey: keys.streamKey, headKey: keys.headKey })).ok).toBe(true);
      await l.close();
    } finally {
      main.disconnect();
      admin.disconnect();
      await server.stop();
      await rm(server.dir, { recursive: true, force: true });
    }
  });
});
