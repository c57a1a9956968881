/**
 * Fault injection against a real Redis, a real BullMQ worker and the real composition root:
 * workers that die or hang mid-batch, a Redis restart (AOF), a backend whose revocation fails,
 * a bulk revocation with one poisoned lease, revocations racing issuances, quotas, and a scan
 * of everything written for secret material. Each test asserts the invariants I1-I7
 * (docs/ARCHITECTURE.md, Invariants) rather than timings; time only appears as upper bounds for eventual
 * consistency.
 */
import { randomBytes } from "node:crypto";
import { readFile, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { BackendError, type Backend } from "../../src/backends/types";
import type { Lease } from "../../src/leases/types";
import { getJson, startTestBroker, type TestBroker } from "../support/broker";
import { redisContents } from "../support/secrets";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { startRedisServer, type RedisServerHandle } from "../support/redis-server";
import { readable } from "../../src/leases/store";

jest.setTimeout(60_000);

type Who = "agent" | "agent2" | "ci" | "alice" | "bob";
type Res = { status: number; body: any; headers: Headers };

// ---------------------------------------------------------------------------------------------
// Helpers

/** Every workload token and credential token this file handled: none may be stored or logged (I6). */
const workloadTokens = new Set<string>();
const credentialTokens = new Set<string>();

/** Like Fixture.call, but remembers the workload token it used (for the secret scan). */
async function call(fx: Fixture, method: string, p: string, who: Who | null, body?: unknown): Promise<Res> {
  const t = who ? await fx.token(who) : undefined;
  if (t) workloadTokens.add(t);
  const res = await getJson(`${fx.b.url}${p}`, t, {
    method,
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
  });
  const token = res.body?.credential?.token;
  if (typeof token === "string") credentialTokens.add(token);
  return res;
}

const issue = (fx: Fixture, who: Who, role: string, task: string, ttl?: number | string) =>
  call(fx, "POST", "/v1/credentials", who, { role, task: { id: task }, ...(ttl === undefined ? {} : { ttl }) });

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Deterministic PRNG (mulberry32), so a failing interleaving can be replayed from its seed. */
function prng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A jwt backend that delegates to the broker's real one (so tokens verify and introspect) and
 * lets a test inject faults: failing revocations per lease, slow or hung revocations, and a
 * hook that runs (and may block) inside `mint`.
 */
function controllableJwt() {
  let real: Backend | null = null;
  const ctl = {
    /** Mint calls that reached the backend. */
    mints: 0,
    /** Lease id → failures still to inject (Infinity: always fail). */
    failRevoke: new Map<string, number>(),
    /** Lease id → the typed error its revocations throw while set (after failRevoke's). */
    revokeError: new Map<string, BackendError>(),
    revokeCalls: new Map<string, number>(),
    revokeDelayMs: 0,
    /** While set, every revoke waits for it (a hung backend call). */
    hold: null as Promise<void> | null,
    inFlight: 0,
    onMint: null as ((lease: Lease) => Promise<void>) | null,
    use(b: Backend) {
      real = b;
    },
    backend: {
      kind: "jwt",
      revocation: "revocable",
      async mint(lease, role) {
        ctl.mints++;
        if (ctl.onMint) await ctl.onMint(lease);
        return real!.mint(lease, role);
      },
      async revoke(lease, handle) {
        ctl.revokeCalls.set(lease.id, (ctl.revokeCalls.get(lease.id) ?? 0) + 1);
        ctl.inFlight++;
        try {
          if (ctl.hold) await ctl.hold;
          if (ctl.revokeDelayMs) await sleep(ctl.revokeDelayMs);
          const left = ctl.failRevoke.get(lease.id) ?? 0;
          if (left > 0) {
            ctl.failRevoke.set(lease.id, left - 1);
            throw new BackendError(`test backend refused to revoke ${lease.id}`, "unavailable");
          }
          const typed = ctl.revokeError.get(lease.id);
          if (typed) throw typed;
          await real!.revoke(lease, handle);
        } finally {
          ctl.inFlight--;
        }
      },
    } as Backend,
  };
  return ctl;
}
type Ctl = ReturnType<typeof controllableJwt>;

/**
 * A fixture whose jwt backend is controllable. Its Redis prefix is random rather than
 * uniquePrefix()'s per-module counter (which restarts for every test file a Jest worker runs,
 * so two files in one worker would share keys); its keys are deleted when it closes.
 */
async function startWithCtl(opts: { extra?: Record<string, unknown>; worker?: boolean } = {}): Promise<{ f: Fixture; ctl: Ctl }> {
  const ctl = controllableJwt();
  const prefix = `flt${randomBytes(6).toString("hex")}`;
  const redisCfg = { prefix, ...((opts.extra?.redis as object | undefined) ?? {}) };
  const f = await startFixture({ ...opts, extra: { ...opts.extra, redis: redisCfg }, backends: { jwt: ctl.backend } });
  ctl.use(f.b.broker.jwt);
  const close = f.close;
  f.close = async () => {
    const url = f.b.broker.redisUrl;
    await close();
    await dropKeys(url, prefix).catch(() => undefined); // best effort (a private Redis may be gone)
  };
  return { f, ctl };
}

async function dropKeys(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => null, lazyConnect: true });
  redis.on("error", () => undefined);
  try {
    await redis.connect();
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `{${prefix}}*`, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== "0");
  } finally {
    redis.disconnect();
  }
}

/** A second broker process on the same Redis and prefix (as `serve --only worker` would be). */
function sameStore(b: TestBroker, worker: Partial<TestBroker["config"]["worker"]> = {}) {
  return { ...b.config, worker: { ...b.config.worker, ...worker } };
}

async function states(b: TestBroker, ids: string[]) {
  return (await b.broker.store.getMany(ids)).map((l) => l?.state ?? "missing");
}

async function eventTypes(b: TestBroker, leaseId: string): Promise<string[]> {
  return (await b.broker.audit.byLease(leaseId)).map((e) => e.type);
}

/** Every lease reaches `want`; each has exactly one audit event of that type (no double finish). */
async function expectAllEnd(b: TestBroker, ids: string[], want: "expired" | "revoked", timeoutMs: number) {
  await waitFor(async () => (await states(b, ids)).every((s) => s === want), timeoutMs, `${ids.length} leases ${want}`);
  await waitFor(async () => {
    for (const id of ids) if (!(await eventTypes(b, id)).includes(want)) return false;
    return true;
  }, 5000, `an ${want} audit event for each lease`);
}

async function metric(fx: Fixture, name: string, labels: string): Promise<number> {
  const text = (await getJson(`${fx.b.url}/metrics`)).body as string;
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line ? Number(line.split(" ")[1]) : 0;
}


/** Full token strings and their signature parts. */
function secretNeedles(tokens: Iterable<string>): string[] {
  const out = new Set<string>();
  for (const t of tokens) {
    out.add(t);
    const sig = t.split(".")[2];
    if (sig && sig.length >= 16) out.add(sig);
  }
  return [...out];
}

function expectNoNeedles(where: string, haystack: string | Buffer, needles: string[]) {
  const leaked = needles.filter((n) => haystack.includes(n));
  expect({ where, leaked: leaked.map((n) => `${n.slice(0, 12)}…(${n.length} chars)`) }).toEqual({ where, leaked: [] });
}

// ---------------------------------------------------------------------------------------------
// 1. Workers that die, stop or hang mid-run (I3)

describe("worker killed, stopped or hung mid-run", () => {
  it("leases issued while no worker runs are all expired by a worker started later", async () => {
    // Broker A: the API only (`serve --only api`); nothing revokes while it runs alone.
    const { f } = await startWithCtl({ worker: false });
    let worker: TestBroker | null = null;
    try {
      expect(f.b.broker.worker).toBeNull();
      const who: Who[] = ["agent", "agent2", "ci"];
      const ids: string[] = [];
      let maxExp = 0;
      for (let batch = 0; batch < 5; batch++) {
        const rs = await Promise.all(Array.from({ length: 10 }, (_, i) => issue(f, who[(batch * 10 + i) % 3]!, "short-read", `W-${batch}-${i}`, 2)));
        for (const r of rs) {
          expect(r.status).toBe(201);
          ids.push(r.body.lease.id);
          maxExp = Math.max(maxExp, Date.parse(r.body.lease.expires_at));
        }
      }
      expect(ids).toHaveLength(50);
      // Past every expiry, with no worker: all still active, all still live.
      await sleep(Math.max(0, maxExp + 300 - Date.now()));
      expect(new Set(await states(f.b, ids))).toEqual(new Set(["active"]));
      expect((await f.b.broker.store.counts()).live).toBe(50);

      // Broker B: a worker on the same Redis and prefix.
      worker = await startTestBroker(sameStore(f.b), { worker: true });
      await expectAllEnd(worker, ids, "expired", 15_000);
      expect((await f.b.broker.store.counts()).live).toBe(0);
      for (const l of (await f.b.broker.store.getMany(ids)).map(readable)) {
        expect(l!.revocation?.trigger).toBe("expiry");
        expect(Date.parse(l!.revoked_at!)).toBeGreaterThanOrEqual(l!.expires_ms);
      }
      // Exactly one terminal event per lease, although BullMQ's overdue jobs and the sweeper
      // both went for the same leases at once.
      for (const id of ids) expect((await eventTypes(f.b, id)).filter((t) => t === "expired")).toHaveLength(1);
    } finally {
      await worker?.close();
      await f.close();
    }
  });

  it("a worker closed in the middle of a batch leaves the rest to the next worker", async () => {
    // A slow backend (100 ms per revocation) and 2 concurrent jobs. Half the leases expire 3 s
    // later than the others, so closing A after the first expiries leaves work for the next
    // worker however A batches them. The sweeper's grace is long so that BullMQ is A's only path.
    const { f, ctl } = await startWithCtl({ extra: { worker: { concurrency: 2, sweep_interval: "200ms", sweep_grace: "30s", fail_after: 2 } } });
    ctl.revokeDelayMs = 100;
    let next: TestBroker | null = null;
    try {
      const ids: string[] = [];
      const rs = await Promise.all(Array.from({ length: 40 }, (_, i) => issue(f, i % 2 ? "agent" : "ci", "short-read", `C-${i}`, i < 20 ? 2 : 5)));
      for (const r of rs) {
        expect(r.status).toBe(201);
        ids.push(r.body.lease.id);
      }
      await waitFor(async () => (await states(f.b, ids)).filter((s) => s === "expired").length >= 4, 10_000, "the batch to be under way");
      await f.b.broker.worker!.close(); // graceful: the jobs in hand finish, the rest wait
      const after = await states(f.b, ids);
      expect(after.filter((s) => s === "expired").length).toBeGreaterThanOrEqual(4);
      expect(after.filter((s) => s !== "expired").length).toBeGreaterThan(0); // really mid-batch
      expect(after.every((s) => s === "expired" || s === "active" || s === "revoking")).toBe(true);

      next = await startTestBroker(sameStore(f.b, { concurrency: 50, sweep_grace: 1000 }), { worker: true });
      await expectAllEnd(next, ids, "expired", 15_000);
      expect((await next.broker.store.counts()).live).toBe(0);
      for (const id of ids) expect((await eventTypes(next, id)).filter((t) => t === "expired")).toHaveLength(1);
    } finally {
      await next?.close();
      await f.close();
    }
  });

  it("a worker hung inside the backend call (as good as dead) is covered by another worker's sweeper", async () => {
    const { f, ctl } = await startWithCtl({ extra: { worker: { sweep_interval: "200ms", sweep_grace: "30s", fail_after: 2 } } });
    const release = deferred();
    ctl.hold = release.promise;
    let next: TestBroker | null = null;
    let closing: Promise<void> | null = null;
    try {
      const ids: string[] = [];
      for (const r of await Promise.all(Array.from({ length: 10 }, (_, i) => issue(f, "agent", "short-read", `H-${i}`, 2)))) {
        expect(r.status).toBe(201);
        ids.push(r.body.lease.id);
      }
      // A's jobs fire, trigger expiry and block in the backend; BullMQ keeps them active.
      await waitFor(async () => ctl.inFlight === ids.length, 10_000, "every revocation to hang");
      closing = f.b.broker.worker!.close(); // stops A's sweeper; the hung jobs stay in flight
      expect(new Set(await states(f.b, ids))).toEqual(new Set(["revoking"]));

      next = await startTestBroker(sameStore(f.b, { sweep_grace: 1000 }), { worker: true });
      await expectAllEnd(next, ids, "expired", 15_000);
      expect((await next.broker.store.counts()).live).toBe(0);

      // The hung calls return at last: A finishes nothing twice (I4: revoking twice is harmless).
      release.resolve();
      await closing;
      closing = null;
      for (const id of ids) {
        expect((await eventTypes(f.b, id)).filter((t) => t === "expired")).toHaveLength(1);
        expect((readable(await f.b.broker.store.get(id)))!.state).toBe("expired");
      }
    } finally {
      release.resolve();
      await closing;
      await next?.close();
      await f.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Redis restarted mid-run (I3, I7)

describe("Redis restarted mid-run (AOF)", () => {
  let redis: RedisServerHandle;
  afterAll(async () => {
    await redis?.stop();
    if (redis) await rm(redis.dir, { recursive: true, force: true });
  });

  it("loses no lease, fails closed while down, and catches up on everything that came due", async () => {
    redis = await startRedisServer({ appendonly: true });
    const { f, ctl } = await startWithCtl({ extra: { redis: { url: redis.url } } });
    try {
      const prefix = f.b.config.redis.prefix;
      const short: string[] = [];
      const long: string[] = [];
      const completed: string[] = [];
      for (let i = 0; i < 12; i++) {
        const r = await issue(f, i % 2 ? "agent" : "ci", "short-read", `R-s${i}`, i < 6 ? 2 : 3);
        expect(r.status).toBe(201);
        short.push(r.body.lease.id);
      }
      for (let i = 0; i < 4; i++) {
        const r = await issue(f, "agent", "orders-read", `R-l${i}`);
        expect(r.status).toBe(201);
        long.push(r.body.lease.id);
      }
      for (let i = 0; i < 2; i++) {
        const r = await issue(f, "agent2", "orders-read", "R-pre");
        expect(r.status).toBe(201);
        completed.push(r.body.lease.id);
      }
      const all = [...short, ...long, ...completed];
      const maxExp = Math.max(...((await f.b.broker.store.getMany(short)).map(readable)).map((l) => l!.expires_ms));

      // Lose the delayed BullMQ jobs of half the short leases (earlier versions kept one per lease;
      // now there are none, the due set is the schedule, and BullMQ answers 1 for an absent job):
      // their expiry must not depend on a job.
      const conn = new Redis(redis.url, { maxRetriesPerRequest: null });
      const q = new Queue("revocations", { connection: conn, prefix: `{${prefix}}` });
      for (const id of short.filter((_, i) => i % 2 === 0)) expect(await q.remove(`x-${id}`)).toBe(1);
      await q.close();
      conn.disconnect();

      // Complete a task and take Redis down at once: its revocation may be half done.
      expect((await call(f, "POST", "/v1/tasks/R-pre/complete", "agent2")).body).toEqual({ task_id: "R-pre", revoked: 2 });
      await redis.stop();

      // The outage: fail closed, 503 store_unavailable, nothing minted (I7).
      const mintsBefore = ctl.mints;
      for (const [who, role, task] of [
        ["agent", "orders-read", "R-down-1"],
        ["ci", "short-read", "R-down-2"],
        ["agent2", "orders-read", "R-down-3"],
      ] as const) {
        const r = await issue(f, who, role, task);
        expect(r.status).toBe(503);
        expect(r.body.code).toBe("store_unavailable");
        expect(r.body.credential).toBeUndefined();
      }
      expect((await call(f, "POST", "/v1/tasks/R-l0/complete", "agent")).status).toBe(503);
      expect((await call(f, "GET", `/v1/leases/${long[0]}`, "agent")).status).toBe(503);
      expect(ctl.mints).toBe(mintsBefore);
      // Stay down until every short lease is overdue.
      await sleep(Math.max(0, maxExp + 500 - Date.now()));

      redis = await startRedisServer({ port: redis.port, dir: redis.dir, appendonly: true });
      await waitFor(async () => (await getJson(`${f.b.url}/readyz`)).status === 200, 10_000, "readiness after the restart");

      // No lease lost: every id is still readable, and nothing from the outage exists.
      const back = (await f.b.broker.store.getMany(all)).map(readable);
      expect(back.filter((l) => l === null)).toHaveLength(0);
      expect(await f.b.broker.redis.zcard(f.b.broker.store.keys.all)).toBe(all.length);
      expect(ctl.mints).toBe(mintsBefore);

      await expectAllEnd(f.b, short, "expired", 15_000);
      await expectAllEnd(f.b, completed, "revoked", 15_000);
      expect(new Set(await states(f.b, long))).toEqual(new Set(["active"]));
      expect((await f.b.broker.store.counts()).live).toBe(long.length);
      for (const l of ((await f.b.broker.store.getMany(completed)).map(readable))!) expect(l!.revocation).toMatchObject({ trigger: "task_completed", by: "agent2" });
      // I5 survived the restart: the completed task stays completed.
      expect((await issue(f, "agent2", "orders-read", "R-pre")).body.code).toBe("task_completed");
      // The API works again.
      expect((await issue(f, "agent", "orders-read", "R-after")).status).toBe(201);

      // I6 on disk too: the AOF holds every write ever made, deleted keys included.
      const needles = secretNeedles([...credentialTokens, ...workloadTokens]);
      const aofDir = path.join(redis.dir, "appendonlydir");
      const files = await readdir(aofDir);
      expect(files.length).toBeGreaterThan(0);
      for (const file of files) expectNoNeedles(`AOF ${file}`, await readFile(path.join(aofDir, file)), needles);
    } finally {
      await f.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// 3-6. Failing revocations, bulk revocations, races, secrets: one broker with a controllable backend

describe("revocation faults", () => {
  let f: Fixture;
  let ctl: Ctl;
  beforeAll(async () => {
    ({ f, ctl } = await startWithCtl());
  });
  afterAll(async () => {
    await f.close();
  });
  const leaseAs = async (id: string, who: Who = "alice") => (await call(f, "GET", `/v1/leases/${id}`, who)).body.lease;
  const introspect = async (token: string) => (await call(f, "POST", "/v1/introspect", "ci", { token })).body;

  it("a revocation that fails 4 times shows revoke_failed, is counted and listed, and still ends revoked (I3)", async () => {
    const failuresBefore = await metric(f, "jitbroker_revocation_failures_total", 'backend="jwt"');
    const r = await issue(f, "agent", "orders-read", "F-1");
    expect(r.status).toBe(201);
    const id: string = r.body.lease.id;
    ctl.failRevoke.set(id, 4);

    const del = await call(f, "DELETE", `/v1/leases/${id}`, "agent", { reason: "finished early" });
    expect(del.status).toBe(200);
    expect(await introspect(r.body.credential.token)).toEqual({ active: false });

    // worker.fail_after = 2: after the second failed attempt the lease says so.
    const failed = await waitFor(async () => {
      const l = await leaseAs(id, "agent");
      return l.state === "revoke_failed" ? l : null;
    }, 10_000, "revoke_failed");
    expect(failed.last_error).toContain("test backend refused to revoke");
    expect(failed.revoke_attempts).toBeGreaterThanOrEqual(2);
    expect(failed.revocation).toMatchObject({ trigger: "owner", by: "agent", reason: "finished early" });
    const listed = await call(f, "GET", "/v1/admin/leases?state=revoke_failed", "alice");
    expect(listed.status).toBe(200);
    expect(listed.body.leases.map((l: Lease) => l.id)).toContain(id);
    expect((await f.b.broker.store.counts()).revoke_failed).toBeGreaterThanOrEqual(1);
    // The revoker counts a failure after store.fail's answer comes back, which is after the state
    // read above may already show revoke_failed: wait for the counter itself.
    await waitFor(async () => (await metric(f, "jitbroker_revocation_failures_total", 'backend="jwt"')) >= failuresBefore + 2, 10_000, "two failures counted");

    // Retried with capped exponential backoff (0.5+1+2+4 s at worst), never dropped.
    const done = await waitFor(async () => {
      const l = await leaseAs(id);
      return l.state === "revoked" ? l : null;
    }, 20_000, "revoked");
    expect(done.last_error).toBeUndefined();
    expect(done.revoke_attempts).toBe(4);
    expect(ctl.failRevoke.get(id)).toBe(0);
    expect(await metric(f, "jitbroker_revocation_failures_total", 'backend="jwt"')).toBe(failuresBefore + 4);
    expect((await call(f, "GET", "/v1/admin/leases?state=revoke_failed", "alice")).body.leases.map((l: Lease) => l.id)).not.toContain(id);
    await waitFor(async () => (await eventTypes(f.b, id)).includes("revoked"), 5000, "the revoked event");
    const h = await call(f, "GET", `/v1/admin/leases/${id}/history`, "bob");
    expect(h.body.events.map((e: { type: string }) => e.type)).toEqual(["mint", "revocation_requested", "revoke_failed", "revoked"]);
    expect(h.body.events[2]).toMatchObject({ type: "revoke_failed", attempts: 2 });
  });

  it("a bulk revocation with one lease that cannot be revoked finishes the others (I4)", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await issue(f, "ci", "orders-read", `B-${i}`);
      expect(r.status).toBe(201);
      ids.push(r.body.lease.id);
    }
    const poison = ids[2]!;
    const others = ids.filter((id) => id !== poison);
    ctl.failRevoke.set(poison, Infinity);

    const op = await call(f, "POST", "/v1/admin/revocations", "alice", { workload: "ci", reason: "incident 9" });
    expect(op.status).toBe(202);
    expect(op.body.matched).toBe(5);
    const progress = await waitFor(async () => {
      const p = (await call(f, "GET", `/v1/admin/revocations/${op.body.id}`, "bob")).body;
      return p.state !== "running" ? p : null;
    }, 15_000, "the bulk revocation to finish");
    expect(progress).toMatchObject({ matched: 5, triggered: 5, revoked: 4, failed: 1, state: "completed_with_failures" });
    expect(await states(f.b, others)).toEqual(["revoked", "revoked", "revoked", "revoked"]);
    const bad = await leaseAs(poison);
    expect(bad.state).toBe("revoke_failed");
    expect(bad.last_error).toContain("test backend refused to revoke");
    expect(bad.revocation).toMatchObject({ trigger: "operator", by: "alice", reason: "incident 9" });

    // The poisoned lease is still retried: once the backend recovers, it ends revoked too.
    ctl.failRevoke.delete(poison);
    await expectAllEnd(f.b, [poison], "revoked", 20_000);
    const final = (await call(f, "GET", `/v1/admin/revocations/${op.body.id}`, "bob")).body;
    expect(final).toMatchObject({ matched: 5, triggered: 5, revoked: 5, failed: 0, state: "completed" });
    for (const id of ids) expect((await eventTypes(f.b, id)).filter((t) => t === "revoked")).toHaveLength(1);
  });

  it("revocations racing issuances never leave a returned credential on a live lease (I1, I5)", async () => {
    const seed = 20240607;
    const rand = prng(seed);
    const kinds = ["complete_before", "complete_during_mint", "complete_after_mint", "complete_racing_release", "operator_workload_during_mint", "operator_lease_during_mint", "owner_during_mint"] as const;
    type Kind = (typeof kinds)[number];
    const outcomes: { i: number; kind: Kind; leaseId: string | null; status: number; token: string | null }[] = [];
    const mintsAtStart = ctl.mints;
    const leasesAtStart = await f.b.broker.redis.zcard(f.b.broker.store.keys.all);

    // Every kind 3 times, in a seeded random order, with random choices and delays inside.
    const schedule: Kind[] = [...kinds, ...kinds, ...kinds];
    for (let i = schedule.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [schedule[i], schedule[j]] = [schedule[j]!, schedule[i]!];
    }
    for (let i = 0; i < schedule.length; i++) {
      const kind = schedule[i]!;
      const who: Who = kind === "operator_workload_during_mint" ? "agent2" : "agent";
      const task = `race-${i}`;
      const ctx = `iteration ${i} (${kind}, seed ${seed})`;
      const entered = deferred<string>();
      const gate = deferred();
      ctl.onMint = async (lease) => {
        entered.resolve(lease.id);
        await gate.promise;
      };
      try {
        if (kind === "complete_before") {
          const mints = ctl.mints;
          expect((await call(f, "POST", `/v1/tasks/${task}/complete`, who)).body).toEqual({ task_id: task, revoked: 0 });
          const r = await issue(f, who, "orders-read", task);
          expect([ctx, r.status, r.body.code, r.body.credential]).toEqual([ctx, 409, "task_completed", undefined]);
          expect(ctl.mints).toBe(mints);
          outcomes.push({ i, kind, leaseId: null, status: r.status, token: null });
          continue;
        }
        const pending = issue(f, who, "orders-read", task);
        const leaseId = await entered.promise; // the lease exists (issuing) and the mint is blocked
        expect([ctx, (readable(await f.b.broker.store.get(leaseId)))!.state]).toEqual([ctx, "issuing"]);
        let r: Res;
        if (kind === "complete_during_mint") {
          expect((await call(f, "POST", `/v1/tasks/${task}/complete`, who)).body).toEqual({ task_id: task, revoked: 1 });
          if (rand() < 0.5) await sleep(Math.floor(rand() * 30));
          gate.resolve();
          r = await pending;
          expect([ctx, r.status, r.body.code]).toEqual([ctx, 409, "task_completed"]);
        } else if (kind === "complete_after_mint") {
          gate.resolve();
          r = await pending;
          expect([ctx, r.status, r.body.lease?.state]).toEqual([ctx, 201, "active"]);
          expect(await introspect(r.body.credential.token)).toMatchObject({ active: true, jti: leaseId });
          if (rand() < 0.5) await sleep(Math.floor(rand() * 30));
          expect((await call(f, "POST", `/v1/tasks/${task}/complete`, who)).body).toEqual({ task_id: task, revoked: 1 });
        } else if (kind === "complete_racing_release") {
          // Release the mint somewhere around the completion's arrival: either may win.
          const d1 = Math.floor(rand() * 20);
          const d2 = Math.floor(rand() * 3);
          const [, done] = await Promise.all([
            sleep(d1).then(() => gate.resolve()),
            sleep(d2).then(() => call(f, "POST", `/v1/tasks/${task}/complete`, who)),
          ]);
          expect(done.body).toEqual({ task_id: task, revoked: 1 });
          r = await pending;
          expect([ctx, [201, 409].includes(r.status)]).toEqual([ctx, true]);
          if (r.status === 409) expect(r.body.code).toBe("task_completed");
        } else if (kind === "operator_workload_during_mint") {
          const op = await call(f, "POST", "/v1/admin/revocations", "alice", { workload: "agent2", reason: `race ${i}` });
          expect(op.status).toBe(202);
          // Sometimes let the bulk job reach the lease first, sometimes release at once.
          if (rand() < 0.5) await waitFor(async () => (readable(await f.b.broker.store.get(leaseId)))!.state !== "issuing", 5000, "the bulk job");
          gate.resolve();
          r = await pending;
          await waitFor(async () => (await call(f, "GET", `/v1/admin/revocations/${op.body.id}`, "bob")).body.state !== "running", 10_000, "the bulk op");
        } else {
          const del = await call(f, "DELETE", `/v1/leases/${leaseId}`, kind === "owner_during_mint" ? "agent" : "alice", { reason: `race ${i}` });
          expect([ctx, del.status, del.body.lease.state]).toEqual([ctx, 200, "revoking"]);
          gate.resolve();
          r = await pending;
          expect([ctx, r.status, r.body.code]).toEqual([ctx, 403, "policy_denied"]);
        }
        // The invariant, checked right away: a response carries a credential only for a lease
        // that was active when answered; otherwise it carries none. Either way, once the
        // revocation trigger has been answered the lease is no longer active.
        if (r.status === 201) {
          expect([ctx, r.body.lease.id, ["active", "revoking"].includes(r.body.lease.state)]).toEqual([ctx, leaseId, true]);
          expect(typeof r.body.credential.token).toBe("string");
        } else {
          expect([ctx, r.body.credential, r.body.lease]).toEqual([ctx, undefined, undefined]);
        }
        const now = (readable(await f.b.broker.store.get(leaseId)))!;
        expect([ctx, now.state]).not.toEqual([ctx, "active"]);
        expect([ctx, now.state]).not.toEqual([ctx, "issuing"]);
        outcomes.push({ i, kind, leaseId, status: r.status, token: r.status === 201 ? r.body.credential.token : null });
      } finally {
        gate.resolve();
        ctl.onMint = null;
      }
    }

    // Eventually: every lease that was created is revoked, exactly once; nothing is live; no
    // returned credential introspects active.
    const created = outcomes.filter((o) => o.leaseId !== null).map((o) => o.leaseId!);
    expect(created).toHaveLength(schedule.length - 3); // all but complete_before created a lease
    await expectAllEnd(f.b, created, "revoked", 20_000);
    await waitFor(async () => (await f.b.broker.store.counts()).live === 0, 10_000, "no live lease");
    for (const o of outcomes) {
      if (o.token) expect([o.i, await introspect(o.token)]).toEqual([o.i, { active: false }]);
      if (!o.leaseId) continue;
      const events = await eventTypes(f.b, o.leaseId);
      expect([o.i, events.filter((t) => t === "revoked").length]).toEqual([o.i, 1]);
      // I8: a refused issuance shows why (issue_failed) and never a mint event.
      expect([o.i, events.includes("mint")]).toEqual([o.i, o.status === 201]);
      if (o.status !== 201) expect([o.i, events.includes("issue_failed")]).toEqual([o.i, true]);
    }
    // Nothing was minted or stored beyond the leases accounted for.
    expect(await f.b.broker.redis.zcard(f.b.broker.store.keys.all)).toBe(leasesAtStart + created.length);
    expect(ctl.mints - mintsAtStart).toBe(created.length);
  });

  it("no secret material in Redis, logs or metrics (I6)", async () => {
    // A few more flows: issue, introspect, complete, revoke, fail to issue.
    const a = await issue(f, "agent", "orders-read", "S-1");
    const b = await issue(f, "ci", "short-read", "S-2", 2);
    const c = await issue(f, "agent2", "orders-read", "S-3");
    expect([a.status, b.status, c.status]).toEqual([201, 201, 201]);
    expect((await introspect(a.body.credential.token)).active).toBe(true);
    await call(f, "POST", "/v1/tasks/S-1/complete", "agent");
    ctl.failRevoke.set(c.body.lease.id, 1); // one failed attempt: an error message on the lease and in the logs
    await call(f, "DELETE", `/v1/leases/${c.body.lease.id}`, "alice", { reason: "scan" });
    expect((await issue(f, "agent", "orders-read", "S-1")).status).toBe(409);
    await expectAllEnd(f.b, [a.body.lease.id, c.body.lease.id], "revoked", 10_000);
    await expectAllEnd(f.b, [b.body.lease.id], "expired", 10_000);

    expect(credentialTokens.size).toBeGreaterThanOrEqual(3);
    expect(workloadTokens.size).toBeGreaterThanOrEqual(3);
    const keyFile = JSON.parse(await readFile(f.b.config.backends.jwt.signing_key_file, "utf8")) as { current: { d: string } };
    const needles = [...secretNeedles([...credentialTokens, ...workloadTokens]), keyFile.current.d];

    const { keys, text, dumps } = await redisContents(f.b.broker.redis, f.b.config.redis.prefix);
    expect(keys).toBeGreaterThan(20);
    // The scan really read the data: lease ids, audit events and BullMQ's keys are in it.
    expect(text).toContain(a.body.lease.id);
    expect(text).toMatch(/type[^a-z]+mint/);
    expect(text).toContain(":revocations:");
    expectNoNeedles("redis (by type)", text, needles);
    for (const d of dumps) expectNoNeedles("redis (DUMP)", d, needles);

    const logs = f.b.logs.join("");
    expect(logs.length).toBeGreaterThan(1000);
    expect(logs).toContain("revocation failed");
    expectNoNeedles("logs", logs, needles);
    expectNoNeedles("metrics", (await getJson(`${f.b.url}/metrics`)).body as string, needles);
  });
});

// ---------------------------------------------------------------------------------------------
// 7. Quota

describe("typed backend errors: the revoker branches on the code (src/backends/types.ts)", () => {
  let f: Fixture;
  let ctl: Ctl;
  beforeAll(async () => {
    ({ f, ctl } = await startWithCtl());
  });
  afterAll(async () => {
    await f.close();
  });
  const revokeNow = async (task: string, code: BackendError["code"], message: string) => {
    const r = await issue(f, "agent", "orders-read", task);
    expect(r.status).toBe(201);
    const id: string = r.body.lease.id;
    ctl.revokeError.set(id, new BackendError(message, code));
    expect((await call(f, "DELETE", `/v1/leases/${id}`, "agent", { reason: "done" })).status).toBe(200);
    return id;
  };

  it("a misconfigured role does not retry forever at the usual pace: revoke_failed at once, an alert metric, the next attempt an hour later", async () => {
    const before = await metric(f, "jitbroker_revocation_errors_total", 'backend="jwt",code="misconfigured"');
    const id = await revokeNow("TE-1", "misconfigured", "role orders-read points at a path without leases");
    const failed = await waitFor(async () => {
      const [l] = (await f.b.broker.store.getMany([id])).map(readable);
      return l?.state === "revoke_failed" ? l : null;
    }, 10_000, "revoke_failed");
    expect(failed.revoke_attempts).toBe(1); // worker.fail_after is 2: misconfigured does not wait for it
    expect(failed.last_error).toBe("role orders-read points at a path without leases");
    // Counted after store.fail's answer comes back (the state read above may come first): wait for
    // the counter, then check it counted this failure once.
    await waitFor(async () => (await metric(f, "jitbroker_revocation_errors_total", 'backend="jwt",code="misconfigured"')) >= before + 1, 10_000, "the failure counted");
    expect(await metric(f, "jitbroker_revocation_errors_total", 'backend="jwt",code="misconfigured"')).toBe(before + 1);
    await waitFor(async () => (await eventTypes(f.b, id)).includes("revoke_failed"), 5000, "the revoke_failed event");
    // Not due again within the usual backoff (0.5-60 s), but within the hour after (the sweeper's).
    const t = Date.now();
    expect(await f.b.broker.store.due(t + 30 * 60_000, 10_000)).not.toContain(id);
    expect(await f.b.broker.store.due(t + 61 * 60_000, 10_000)).toContain(id);
    // No retry job either: a usual failure is retried within ~1 s (first backoff step).
    await sleep(2500);
    expect(ctl.revokeCalls.get(id)).toBe(1);
  });

  it("gone at the backend is the revocation's success (I4): revoked, no failure counted", async () => {
    const before = await metric(f, "jitbroker_revocation_failures_total", 'backend="jwt"');
    const id = await revokeNow("TE-2", "gone", "the credential no longer exists");
    const done = await waitFor(async () => {
      const [l] = (await f.b.broker.store.getMany([id])).map(readable);
      return l?.state === "revoked" ? l : null;
    }, 10_000, "revoked");
    expect(done.revoke_attempts ?? 0).toBe(0);
    expect(await metric(f, "jitbroker_revocation_failures_total", 'backend="jwt"')).toBe(before);
    await waitFor(async () => (await eventTypes(f.b, id)).includes("revoked"), 5000, "the revoked event");
  });

  it("a denied revocation (the broker's own access) keeps retrying with backoff, so the operator's fix ends it", async () => {
    const before = await metric(f, "jitbroker_revocation_errors_total", 'backend="jwt",code="denied"');
    const id = await revokeNow("TE-3", "denied", "403 permission denied");
    // revokeCalls counts an attempt when it starts; its error is counted after it failed and
    // store.fail answered: wait for the counter itself.
    await waitFor(async () => (ctl.revokeCalls.get(id) ?? 0) >= 2, 10_000, "a second attempt");
    await waitFor(async () => (await metric(f, "jitbroker_revocation_errors_total", 'backend="jwt",code="denied"')) >= before + 2, 10_000, "both denied attempts counted");
    ctl.revokeError.delete(id); // the operator fixed the broker's permissions
    await waitFor(async () => (await f.b.broker.store.getMany([id]))[0]?.state === "revoked", 15_000, "revoked after the fix");
  });
});

describe("a mint that outlives worker.mint_timeout", () => {
  it("the lease the worker ended as never minted is reopened and the late credential revoked (I1)", async () => {
    const { f, ctl } = await startWithCtl({ extra: { worker: { sweep_interval: "100ms", sweep_grace: "100ms", fail_after: 2, mint_timeout: "1s" } } });
    try {
      let leaseId = "";
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      ctl.onMint = async (lease) => {
        leaseId = lease.id;
        await held;
      };
      // The task completes while the mint hangs; after mint_timeout (1 s) the worker ends the lease as never minted.
      const pending = f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "slow-mint" } });
      await waitFor(async () => leaseId !== "", 10_000, "the mint to start");
      expect((await f.call("POST", "/v1/tasks/slow-mint/complete", "agent")).status).toBe(200);
      await waitFor(async () => (readable(await f.b.broker.store.get(leaseId)))?.state === "revoked", 15_000, "the lease to end as never minted");
      expect((readable(await f.b.broker.store.get(leaseId)))?.handle).toBeNull();
      ctl.onMint = null;
      release();
      const r = await pending;
      expect(r.status).toBe(503);
      expect(r.body.code).toBe("backend_unavailable");
      expect(r.body.detail).toMatch(/took longer than the mint timeout/);
      expect(r.body).not.toHaveProperty("credential");
      // The late credential is revoked at the backend with its handle, and the lease ends with it.
      await waitFor(async () => (ctl.revokeCalls.get(leaseId) ?? 0) > 0, 10_000, "the late credential to be revoked");
      const l = await waitFor(async () => {
        const x = readable(await f.b.broker.store.get(leaseId));
        return x && x.state === "revoked" && x.handle !== null ? x : null;
      }, 10_000, "the reopened lease to end");
      expect(l.handle).not.toBeNull();
      // Audited twice: ended as never minted, then revoked with the late credential's handle.
      const events = await waitFor(async () => {
        const types = (await f.b.broker.audit.byLease(leaseId)).map((e) => e.type);
        return types.filter((t) => t === "revoked").length >= 2 ? types : null;
      }, 10_000, "both revocation events");
      expect(events).toContain("issue_failed");
    } finally {
      await f.close();
    }
  });
});

describe("quota per workload", () => {
  let f: Fixture;
  let ctl: Ctl;
  beforeAll(async () => {
    ({ f, ctl } = await startWithCtl({ extra: { leases: { quota_per_workload: 3 } } }));
  });
  afterAll(async () => {
    await f.close();
  });

  it("refuses a 4th concurrent lease with 429 and Retry-After, mints nothing, and frees a slot once a task completes", async () => {
    const first: string[] = [];
    for (let i = 1; i <= 3; i++) {
      const r = await issue(f, "agent", "orders-read", `Q-${i}`);
      expect(r.status).toBe(201);
      first.push(r.body.lease.id);
    }
    const mints = ctl.mints;
    const stored = await f.b.broker.redis.zcard(f.b.broker.store.keys.all);
    const over = await issue(f, "agent", "orders-read", "Q-4");
    expect(over.status).toBe(429);
    expect(over.body.code).toBe("quota_exceeded");
    expect(over.body.credential).toBeUndefined();
    expect(Number(over.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(ctl.mints).toBe(mints);
    expect(await f.b.broker.redis.zcard(f.b.broker.store.keys.all)).toBe(stored);
    expect((await f.b.broker.store.counts()).live).toBe(3);
    // The quota is per workload.
    expect((await issue(f, "agent2", "orders-read", "Q-other")).status).toBe(201);

    expect((await call(f, "POST", "/v1/tasks/Q-1/complete", "agent")).body).toEqual({ task_id: "Q-1", revoked: 1 });
    await expectAllEnd(f.b, [first[0]!], "revoked", 10_000);
    const again = await issue(f, "agent", "orders-read", "Q-4");
    expect(again.status).toBe(201);
    expect(again.body.lease.state).toBe("active");
    expect((await issue(f, "agent", "orders-read", "Q-5")).status).toBe(429);
  });
});
