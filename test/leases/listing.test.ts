/**
 * The operators' listing (GET /v1/admin/leases; src/leases/store.ts `list`): newest first by
 * (issued ms, id), a cursor per page, over one shard or several. Leases issued in the same
 * millisecond share their listing score, and a bulk load makes thousands of them: each step of
 * the scan reads at most one page of leases, however many share the cursor's millisecond (it once
 * read every lease of that millisecond at every step, a pipeline of 10,000 HGETALLs that ran past
 * the command timeout on a loaded machine).
 */
import { Redis } from "ioredis";
import { createLeaseStore, type NewLease } from "../../src/leases/store";
import { createKeyspace } from "../../src/redis/keys";
import { startRedisServer, type RedisServerHandle } from "../support/redis-server";

jest.setTimeout(60_000);

let server: RedisServerHandle;
let redis: Redis;
beforeAll(async () => {
  // Its own server: the HGETALL count of INFO commandstats must be this file's alone.
  server = await startRedisServer({ appendonly: false });
  redis = new Redis(server.url);
});
afterAll(async () => {
  redis.disconnect();
  await server.stop();
});

function lease(id: string, workload: string, issuedAt: number): NewLease {
  return {
    id,
    role: "orders-read",
    backend: "jwt",
    workload,
    task: { id: `t-${id}`, intent: "", tool: "", destination: "", sensitivity: "" },
    issuedAt,
    expiresAt: issuedAt + 3_600_000,
    identity: { kind: "oidc", issuer: "idp", subject: "s" },
    policy: { ids: ["p"], hash: "00".repeat(32) },
  };
}

async function hgetalls(): Promise<number> {
  const m = /^cmdstat_hgetall:calls=(\d+)/m.exec(await redis.info("commandstats"));
  return m ? Number(m[1]) : 0;
}

type Store = ReturnType<typeof createLeaseStore>;

/** Every page of a listing, following the cursor to its end. */
async function walk(store: Store, filter: Parameters<Store["list"]>[0], limit: number): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let cursor: string | undefined;
  let pages = 0;
  for (;;) {
    const page = await store.list(filter, limit, cursor);
    pages++;
    ids.push(...page.leases.map((l) => l.id));
    if (page.next === null) return { ids, pages };
    cursor = page.next;
  }
}

/** Listing order: issued ms descending, then id descending (byte order). */
const listingOrder = (ls: NewLease[]) => [...ls].sort((a, b) => b.issuedAt - a.issuedAt || (a.id < b.id ? 1 : -1)).map((l) => l.id);

describe("listing leases issued in the same millisecond", () => {
  it("3,000 leases of one millisecond (a bulk load) are listed each once, in order, reading at most one page of leases per step", async () => {
    const keys = createKeyspace("tieone");
    const store = createLeaseStore(redis, keys, { retentionSeconds: 3600, taskRetentionSeconds: 60 });
    const t = Date.now() - 1000;
    const all = [
      ...Array.from({ length: 3000 }, () => lease(store.newId("w"), "w", t)),
      ...Array.from({ length: 40 }, (_, i) => lease(store.newId("w"), "w", t - 1 - i)), // older
      ...Array.from({ length: 10 }, (_, i) => lease(store.newId("w"), "w", t + 1 + i)), // newer
    ];
    for (let i = 0; i < all.length; i += 500) await Promise.all(all.slice(i, i + 500).map(async (l) => expect(await store.create(l, 0)).toBe("ok")));

    // Every lease once, in listing order, page by page.
    const { ids } = await walk(store, {}, 97);
    expect(ids).toEqual(listingOrder(all));

    // One page of 10 from a cursor in the middle of the millisecond: one step after the cursor,
    // so at most one page of leases read (200), not the ~1,500 of that millisecond after it.
    const first = await store.list({}, 1500, undefined);
    expect(first.leases).toHaveLength(1500);
    const before = await hgetalls();
    const page = await store.list({}, 10, first.next!);
    expect(page.leases.map((l) => l.id)).toEqual(listingOrder(all).slice(1500, 1510));
    expect((await hgetalls()) - before).toBeLessThanOrEqual(200);

    // A filter that matches nothing: 3,050 leases are under the 5,000 one request scans, so one
    // empty page with no cursor.
    expect(await walk(store, { workload: "nobody" }, 1)).toEqual({ ids: [], pages: 1 });
  });

  it("a cursor whose lease is not listed here (another shard's, deleted, or made up) continues after its position", async () => {
    const keys = createKeyspace("tiegone");
    const store = createLeaseStore(redis, keys, { retentionSeconds: 3600, taskRetentionSeconds: 60 });
    const t = Date.now() - 1000;
    const ids = ["l_a000", "l_b000", "l_c000", "l_d000", "l_e000"];
    for (const id of ids) expect(await store.create(lease(id, "w", t), 0)).toBe("ok");
    expect(await store.create(lease("l_old0", "w", t - 5), 0)).toBe("ok");
    // Position (t, "l_c500"): between l_d000 and l_c000 in listing order; no such lease.
    const cursor = Buffer.from(`${t}|l_c500`).toString("base64url");
    expect((await store.list({}, 10, cursor)).leases.map((l) => l.id)).toEqual(["l_c000", "l_b000", "l_a000", "l_old0"]);
    // A listed id with another score in the cursor: the cursor's position counts, not the id's.
    // (l_a000 is last of its millisecond; at t + 5 it is before all of them.)
    const shifted = Buffer.from(`${t + 5}|l_a000`).toString("base64url");
    expect((await store.list({}, 10, shifted)).leases.map((l) => l.id)).toEqual(["l_e000", "l_d000", "l_c000", "l_b000", "l_a000", "l_old0"]);
  });

  it("over four shards, 2,000 leases of one millisecond are listed each once, in the one order", async () => {
    const keys = createKeyspace("tieshards", 4);
    const store = createLeaseStore(redis, keys, { retentionSeconds: 3600, taskRetentionSeconds: 60 });
    const t = Date.now() - 1000;
    const all = Array.from({ length: 2000 }, (_, i) => {
      const w = `w${i % 7}`;
      return lease(store.newId(w), w, i % 10 === 0 ? t - 1 : t);
    });
    for (let i = 0; i < all.length; i += 500) await Promise.all(all.slice(i, i + 500).map(async (l) => expect(await store.create(l, 0)).toBe("ok")));
    expect((await walk(store, {}, 150)).ids).toEqual(listingOrder(all));
    expect((await walk(store, { workload: "w3" }, 40)).ids).toEqual(listingOrder(all.filter((l) => l.workload === "w3")));
  });
});

describe("a listing whose Redis does not answer in time", () => {
  it("is store_unavailable (503), as a single read is, not a plain error answered 500", async () => {
    const impatient = new Redis(server.url, { commandTimeout: 200, maxRetriesPerRequest: 1 });
    const admin = new Redis(server.url);
    try {
      const store = createLeaseStore(impatient, createKeyspace("tiepause"), { retentionSeconds: 3600, taskRetentionSeconds: 60 });
      const t = Date.now() - 1000;
      for (const id of ["l_p000", "l_p001"]) expect(await store.create(lease(id, "w", t), 0)).toBe("ok");
      // The pipelined reads of getMany (what a listing reads its leases with) time out.
      await admin.call("CLIENT", "PAUSE", "1000", "ALL");
      const many = await store.getMany(["l_p000", "l_p001"]).then(() => null, (e: unknown) => e);
      expect(many).toMatchObject({ code: "store_unavailable" });
      await new Promise((r) => setTimeout(r, 1100));
      await admin.call("CLIENT", "PAUSE", "1000", "ALL");
      const one = await store.get("l_p000").then(() => null, (e: unknown) => e);
      expect(one).toMatchObject({ code: "store_unavailable" });
    } finally {
      impatient.disconnect();
      admin.disconnect();
    }
  });
});
