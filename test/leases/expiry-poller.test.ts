/**
 * The expiry schedule's walk (src/leases/queue.ts walkExpiries over the store's EXPIRE_DUE) on a
 * real Redis: what it must trigger, what it must leave, and that revocations in flight at the
 * head of the due set cannot hide an expired lease behind them.
 */
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { walkExpiries } from "../../src/leases/queue";
import { createLeaseStore, type LeaseStore, type NewLease, type RevokingLease, readable } from "../../src/leases/store";
import { createKeyspace } from "../../src/redis/keys";

let redis: Redis;
beforeAll(() => {
  redis = new Redis(process.env.JITBROKER_TEST_REDIS_URL!);
});
afterAll(() => redis.disconnect());

const T0 = 1_900_000_000_000;

function setup() {
  let clock = T0;
  const keys = createKeyspace(`poll${randomBytes(4).toString("hex")}`);
  const store = createLeaseStore(redis, keys, { retentionSeconds: 60, taskRetentionSeconds: 60, now: () => clock });
  let n = 0;
  const lease = async (expiresAt: number): Promise<string> => {
    const id = `l_${String(n++).padStart(6, "0")}`;
    const l: NewLease = {
      id,
      role: "orders-read",
      backend: "jwt",
      workload: "agent",
      task: { id: `t-${id}`, intent: "", tool: "", destination: "", sensitivity: "" },
      issuedAt: T0 - 60_000,
      expiresAt,
      identity: { kind: "oidc", issuer: "idp", subject: "agent" },
      policy: { ids: ["p"], hash: "00".repeat(32) },
    };
    expect(await store.create(l, 0)).toBe("ok");
    return id;
  };
  return { store, keys, lease, setClock: (t: number) => (clock = t) };
}

async function walk(store: LeaseStore, at: number, opts: { scan: number; batch: number }) {
  const batches: string[][] = [];
  const handed: RevokingLease[] = [];
  const moved = await walkExpiries(
    store,
    at,
    async (ids, leases) => {
      batches.push(ids);
      handed.push(...leases);
    },
    opts,
  );
  return { moved, batches, ids: batches.flat().sort(), handed };
}

describe("expiry poller", () => {
  it("triggers exactly the expired live leases, in bounded batches, and leaves the rest", async () => {
    const { store, lease } = setup();
    const expired = await Promise.all(Array.from({ length: 23 }, () => lease(T0 - 1000)));
    const later = await Promise.all(Array.from({ length: 5 }, () => lease(T0 + 60_000)));
    const r = await walk(store, T0, { scan: 7, batch: 4 });
    expect(r.ids).toEqual([...expired].sort());
    expect(Math.max(...r.batches.map((b) => b.length))).toBeLessThanOrEqual(4);
    // Each moved lease is handed over as revocation reads it, from the same script: no second read.
    expect(r.handed.map((l) => l.id)).toEqual(r.batches.flat());
    expect(r.handed).toEqual(await store.forRevocation(r.batches.flat()));
    expect(r.handed.every((l) => l.state === "revoking" && l.revocation?.trigger === "expiry" && l.trigger_at === T0)).toBe(true);
    for (const l of (await store.getMany(expired)).map(readable)) expect(l).toMatchObject({ state: "revoking", revocation: { trigger: "expiry" } });
    for (const l of (await store.getMany(later)).map(readable)) expect(l?.state).toBe("issuing");
    // A second walk moves nothing: they are in flight now, not untriggered.
    expect((await walk(store, T0, { scan: 7, batch: 4 })).moved).toBe(0);
  });

  it("is not stalled by revocations in flight at the head of the due set (more of them than one step scans)", async () => {
    const { store, lease, setClock } = setup();
    // 30 leases triggered early (operator revocations still in flight, due since T0 - 5 s)...
    const inFlight = await Promise.all(Array.from({ length: 30 }, () => lease(T0 + 60_000)));
    setClock(T0 - 5000);
    expect((await store.trigger(inFlight, { trigger: "operator", by: "ops" })).length).toBe(30);
    setClock(T0);
    // ...and, behind them in the set, leases that expired at T0 - 1 s.
    const expired = await Promise.all(Array.from({ length: 9 }, () => lease(T0 - 1000)));
    const due = await store.due(T0, 100);
    expect(due.slice(0, 30).sort()).toEqual([...inFlight].sort()); // the head is all in flight
    const r = await walk(store, T0, { scan: 10, batch: 4 });
    expect(r.ids).toEqual([...expired].sort());
    // The ones in flight keep their trigger (first trigger wins).
    for (const l of (await store.getMany(inFlight)).map(readable)) expect(l?.revocation?.trigger).toBe("operator");
  });

  it("drops a due entry whose lease record is gone instead of walking over it forever", async () => {
    const { store, keys, lease } = setup();
    const id = await lease(T0 - 1000);
    await redis.del(`${keys.tag}:lease:${id}`);
    expect((await walk(store, T0, { scan: 10, batch: 10 })).moved).toBe(0);
    expect(await redis.zscore(`${keys.tag}:leases:due`, id)).toBeNull();
  });
});
