/**
 * The bounded audit store against the test run's real redis-server (src/audit/retention.ts):
 * events leave Redis after the retention and never before every sink confirmed them, the trim
 * anchor keeps the chain verifiable, deletion next to the anchor (or of the anchor) is still
 * detected, and the backlog (events a sink has not confirmed) is counted exactly.
 */
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { createAuditLedger, verifyAuditChain, type AuditLedger as TypedLedger, type LedgerEvent } from "../../src/audit/ledger";
import { auditKeyFromBytes, type AuditKey } from "../../src/audit/key";
import { formatMark } from "../../src/audit/chain";
import { createAuditBacklog, createAuditTrimmer, nextSeq } from "../../src/audit/retention";
import { createKeyspace, type Keyspace } from "../../src/redis/keys";
import { BrokerError } from "../../src/core/errors";

type AuditEvent = LedgerEvent & Record<string, unknown>;

let counter = 0;
const clients: Redis[] = [];
const ledgers: TypedLedger<AuditEvent>[] = [];

function redis(): Redis {
  const url = process.env.JITBROKER_TEST_REDIS_URL;
  if (!url) throw new Error("JITBROKER_TEST_REDIS_URL is not set: run the tests with jest");
  const c = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 1 });
  clients.push(c);
  return c;
}

function setup(): { r: Redis; keys: Keyspace; key: AuditKey; ledger: TypedLedger<AuditEvent>; clock: { t: number }; verify: () => ReturnType<typeof verifyAuditChain> } {
  const r = redis();
  const keys = createKeyspace(`ret${process.pid}x${++counter}`);
  const key = auditKeyFromBytes(randomBytes(32));
  const clock = { t: Date.now() };
  const ledger = createAuditLedger<AuditEvent>(r, {
    key,
    streamKey: keys.audit,
    headKey: keys.auditHead,
    anchorKey: keys.auditAnchor,
    leaseIndexPrefix: keys.auditLeasePrefix,
    leaseIndexTtlSeconds: 3600,
    now: () => clock.t,
  });
  ledgers.push(ledger);
  const verify = () => verifyAuditChain(r, { key, streamKey: keys.audit, headKey: keys.auditHead, anchorKey: keys.auditAnchor });
  return { r, keys, key, ledger, clock, verify };
}

const ev = (n: number, extra: Record<string, unknown> = {}): AuditEvent => ({ type: "decision", at: new Date().toISOString(), actor: "system", n_test: n, ...extra });

async function appendAt(s: ReturnType<typeof setup>, t: number, count: number, extra: Record<string, unknown> = {}) {
  s.clock.t = t;
  const out = [];
  for (let i = 0; i < count; i++) out.push(await s.ledger.append(ev(i, extra)));
  return out;
}

afterAll(async () => {
  await Promise.all(ledgers.map((l) => l.close().catch(() => undefined)));
  for (const c of clients) c.disconnect();
});

describe("audit retention", () => {
  it("removes events older than the retention, writes the anchor, and the chain still verifies", async () => {
    const s = setup();
    const t0 = Date.now() - 60_000;
    const old = await appendAt(s, t0, 5);
    const fresh = await appendAt(s, t0 + 50_000, 3);
    const trimmer = createAuditTrimmer(s.r, s.keys, { key: s.key, retentionMs: 30_000, sinks: [], intervalMs: 0, now: () => t0 + 60_000 });
    expect(await trimmer.trimOnce()).toBe(5);
    const left = await s.ledger.range({ count: 100 });
    expect(left.map((e) => e.seq)).toEqual(fresh.map((e) => e.seq));
    // The anchor is the mark of the newest removed entry.
    expect(await s.r.get(s.keys.auditAnchor)).toBe(formatMark(s.key, "anchor", { seq: old[4]!.seq, link: old[4]!.hash }));
    expect(await s.verify()).toMatchObject({ ok: true, checked: 3 });
    // Nothing more is due: a second pass removes nothing and the chain goes on.
    expect(await trimmer.trimOnce()).toBe(0);
    await appendAt(s, t0 + 55_000, 2);
    expect(await s.verify()).toMatchObject({ ok: true, checked: 5 });
  });

  it("trims everything when everything is old: the empty stream verifies against the anchor, and appends continue", async () => {
    const s = setup();
    const t0 = Date.now() - 60_000;
    await appendAt(s, t0, 4);
    const trimmer = createAuditTrimmer(s.r, s.keys, { key: s.key, retentionMs: 1_000, sinks: [], intervalMs: 0 });
    expect(await trimmer.trimOnce()).toBe(4);
    expect(await s.r.xlen(s.keys.audit)).toBe(0);
    expect(await s.verify()).toMatchObject({ ok: true, checked: 0 });
    await appendAt(s, Date.now(), 2);
    expect(await s.verify()).toMatchObject({ ok: true, checked: 2 });
  });

  it("never removes an event a sink has not confirmed (the slowest sink's position holds trimming back)", async () => {
    const s = setup();
    const t0 = Date.now() - 60_000;
    const evs = await appendAt(s, t0, 10);
    const trimmer = createAuditTrimmer(s.r, s.keys, { key: s.key, retentionMs: 1_000, sinks: ["fast", "slow"], intervalMs: 0 });
    // "slow" has confirmed nothing yet: nothing goes.
    await s.r.set(s.keys.auditSinkPosition("fast"), evs[9]!.seq);
    expect(await trimmer.trimOnce()).toBe(0);
    expect(await s.r.xlen(s.keys.audit)).toBe(10);
    // "slow" confirmed the fourth event: exactly the first four go.
    await s.r.set(s.keys.auditSinkPosition("slow"), evs[3]!.seq);
    expect(await trimmer.trimOnce()).toBe(4);
    expect((await s.ledger.range({ count: 100 }))[0]!.seq).toBe(evs[4]!.seq);
    expect(await s.verify()).toMatchObject({ ok: true, checked: 6 });
    await s.r.set(s.keys.auditSinkPosition("slow"), evs[9]!.seq);
    expect(await trimmer.trimOnce()).toBe(6);
    expect(await s.verify()).toMatchObject({ ok: true, checked: 0 });
  });

  it("removes a big backlog in batches, each with its own anchor", async () => {
    const s = setup();
    const t0 = Date.now() - 60_000;
    s.clock.t = t0;
    await s.ledger.appendMany(Array.from({ length: 250 }, (_, i) => ev(i)));
    await appendAt(s, Date.now(), 1);
    const trimmer = createAuditTrimmer(s.r, s.keys, { key: s.key, retentionMs: 10_000, sinks: [], intervalMs: 0, batch: 40 });
    expect(await trimmer.trimOnce()).toBe(250);
    expect(await s.verify()).toMatchObject({ ok: true, checked: 1 });
  });

  it("two trimmers at once remove each event once and leave one consistent anchor", async () => {
    const s = setup();
    const t0 = Date.now() - 60_000;
    s.clock.t = t0;
    await s.ledger.appendMany(Array.from({ length: 120 }, (_, i) => ev(i)));
    await appendAt(s, Date.now(), 3);
    const r2 = redis();
    const a = createAuditTrimmer(s.r, s.keys, { key: s.key, retentionMs: 10_000, sinks: [], intervalMs: 0, batch: 7 });
    const b = createAuditTrimmer(r2, s.keys, { key: s.key, retentionMs: 10_000, sinks: [], intervalMs: 0, batch: 7 });
    let removed = 0;
    while ((await s.r.xlen(s.keys.audit)) > 3) removed += (await Promise.all([a.trimOnce(), b.trimOnce()])).reduce((x, y) => x + y, 0);
    expect(removed).toBe(120);
    expect(await s.verify()).toMatchObject({ ok: true, checked: 3 });
  });

  describe("tampering after trimming is still detected", () => {
    async function trimmed() {
      const s = setup();
      const t0 = Date.now() - 60_000;
      await appendAt(s, t0, 5);
      const kept = await appendAt(s, Date.now(), 4);
      await createAuditTrimmer(s.r, s.keys, { key: s.key, retentionMs: 30_000, sinks: [], intervalMs: 0 }).trimOnce();
      expect(await s.verify()).toMatchObject({ ok: true, checked: 4 });
      return { s, kept };
    }

    it("deleting the oldest remaining entries (next to the anchor) is named at the first entry", async () => {
      const { s, kept } = await trimmed();
      await s.r.xdel(s.keys.audit, kept[0]!.seq, kept[1]!.seq);
      const r = await s.verify();
      expect(r.ok).toBe(false);
      expect(r.firstBreak).toMatchObject({ position: 1, seq: kept[2]!.seq });
      expect(r.firstBreak!.reason).toMatch(/trim anchor/);
    });

    it("moving the anchor forward over kept events (to hide their deletion) fails: a forged anchor does not verify", async () => {
      const { s, kept } = await trimmed();
      await s.r.xdel(s.keys.audit, kept[0]!.seq);
      const forged = formatMark(auditKeyFromBytes(randomBytes(32)), "anchor", { seq: kept[0]!.seq, link: kept[0]!.hash });
      await s.r.set(s.keys.auditAnchor, forged);
      const r = await s.verify();
      expect(r.ok).toBe(false);
      expect(r.firstBreak!.reason).toMatch(/anchor does not verify/);
    });

    it("deleting the anchor is detected (the first entry no longer continues from the genesis)", async () => {
      const { s } = await trimmed();
      await s.r.del(s.keys.auditAnchor);
      const r = await s.verify();
      expect(r.ok).toBe(false);
      expect(r.firstBreak).toMatchObject({ position: 1 });
      expect(r.firstBreak!.reason).toMatch(/genesis/);
    });
  });

  it("a lease's history tells trimmed events (in the sinks) from deleted ones", async () => {
    const s = setup();
    const t0 = Date.now() - 60_000;
    await appendAt(s, t0, 2, { lease_id: "l_aaaaaaaaaaaaaaaa" });
    const kept = await appendAt(s, Date.now(), 2, { lease_id: "l_aaaaaaaaaaaaaaaa" });
    await createAuditTrimmer(s.r, s.keys, { key: s.key, retentionMs: 30_000, sinks: [], intervalMs: 0 }).trimOnce();
    let h = await s.ledger.leaseHistory("l_aaaaaaaaaaaaaaaa");
    expect(h.events.map((e) => e.seq)).toEqual(kept.map((e) => e.seq));
    expect(h).toMatchObject({ trimmed: 2, missing: 0 });
    expect(h.trimmedThrough).toBeDefined();
    await s.r.xdel(s.keys.audit, kept[1]!.seq);
    h = await s.ledger.leaseHistory("l_aaaaaaaaaaaaaaaa");
    expect(h).toMatchObject({ trimmed: 2, missing: 1 });
  });
});

describe("audit backlog (the hard bound)", () => {
  it("counts exactly the events the slowest sink has not confirmed, and refuses at the bound until below 90 %", async () => {
    const s = setup();
    const evs = await appendAt(s, Date.now(), 30);
    const backlog = createAuditBacklog(s.r, s.keys, { sinks: ["a", "b"], max: 20, start: false });
    // No position yet: every event in Redis is owed.
    expect(await backlog.check()).toMatchObject({ events: 30, full: true });
    expect(() => backlog.assertRoom()).toThrow(BrokerError);
    try {
      backlog.assertRoom();
    } catch (e) {
      expect((e as BrokerError).code).toBe("audit_backlog_full");
      expect((e as BrokerError).status).toBe(503);
    }
    await s.r.set(s.keys.auditSinkPosition("a"), evs[29]!.seq);
    await s.r.set(s.keys.auditSinkPosition("b"), evs[9]!.seq);
    expect(await backlog.check()).toMatchObject({ events: 20, full: true, slowest: "b" });
    // 19 is below the bound but not below 90 % of it (18): still refused.
    await s.r.set(s.keys.auditSinkPosition("b"), evs[10]!.seq);
    expect(await backlog.check()).toMatchObject({ events: 19, full: true });
    await s.r.set(s.keys.auditSinkPosition("b"), evs[12]!.seq);
    expect(await backlog.check()).toMatchObject({ events: 17, full: false });
    expect(() => backlog.assertRoom()).not.toThrow();
    // Trimmed up to a position: the count stays exact.
    await createAuditTrimmer(s.r, s.keys, { key: s.key, retentionMs: 1_000, sinks: ["a", "b"], intervalMs: 0, now: () => Date.now() + 5_000 }).trimOnce();
    expect(await s.r.xlen(s.keys.audit)).toBe(17);
    expect(await backlog.check()).toMatchObject({ events: 17 });
    await s.r.set(s.keys.auditSinkPosition("b"), evs[29]!.seq);
    expect(await backlog.check()).toMatchObject({ events: 0, full: false });
  });

  it("counts events written before ordinals existed (no n field) up to the first with one", async () => {
    const s = setup();
    // Entries without n, as an older broker wrote them (the ledger only reads fields e, h, p, m).
    await s.r.xadd(s.keys.audit, "1-1", "e", "{}", "h", "x", "p", "y");
    await s.r.xadd(s.keys.audit, "1-2", "e", "{}", "h", "x", "p", "y");
    await s.r.xadd(s.keys.audit, "1-3", "e", "{}", "h", "x", "p", "y");
    await s.r.xadd(s.keys.audit, "2-1", "e", "{}", "h", "x", "p", "y", "n", "4");
    await s.r.xadd(s.keys.audit, "2-2", "e", "{}", "h", "x", "p", "y", "n", "5");
    await s.r.set(s.keys.auditSinkPosition("a"), "1-1");
    const backlog = createAuditBacklog(s.r, s.keys, { sinks: ["a"], max: 100, start: false });
    expect(await backlog.check()).toMatchObject({ events: 4 });
  });

  it("nextSeq is exact for any size", () => {
    expect(nextSeq("5-0")).toBe("5-1");
    expect(nextSeq("1733400000000-9007199254740993")).toBe("1733400000000-9007199254740994");
  });
});
