/**
 * Rate limits and quotas per workload (issue 4): counted in Redis, so that two broker processes
 * sharing one Redis share one budget; answered with 429 and Retry-After; nothing is minted.
 * The second broker is a real `jitbroker serve` child process (run `npm run build` first when
 * calling jest directly; scripts/test builds).
 */
import { startServeProcess } from "../support/cli";
import { getJson } from "../support/broker";
import { startFixture, waitFor, type Fixture } from "../support/fixture";



describe("rate limit across two broker processes sharing one Redis", () => {
  let f: Fixture;
  let second: Awaited<ReturnType<typeof startServeProcess>>;
  beforeAll(async () => {
    f = await startFixture({
      extra: {
        limits: { requests_per_minute: 6 },
        workloads: [
          { id: "agent", kind: "agent", owner: "a@example.com", purpose: "support", issuer: "idp", subject: "agent-1" },
          { id: "agent2", kind: "agent", owner: "a2@example.com", purpose: "support", issuer: "idp", subject: "agent-2", limits: { requests_per_minute: 1 } },
          { id: "alice", kind: "human", owner: "alice@example.com", purpose: "on-call", issuer: "idp", subject: "alice" },
        ],
      },
    });
    second = await startServeProcess(["serve", "--config", f.b.config.file]);
  }, 60_000);
  afterAll(async () => {
    await second?.stop();
    await f?.close();
  });

  const ask = async (url: string, who: "agent" | "agent2", task: string) =>
    getJson(`${url}/v1/credentials`, await f.token(who), { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ role: "orders-read", task: { id: task } }) });

  it("one budget for both processes: 6 per minute in total, then 429 with Retry-After on either", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await ask(i % 2 === 0 ? f.b.url : second.url, "agent", `rl-${i}`)).status);
    expect(statuses).toEqual([201, 201, 201, 201, 201, 201]);
    for (const url of [f.b.url, second.url]) {
      const r = await ask(url, "agent", `rl-over-${url === f.b.url ? "a" : "b"}`);
      expect(r.status).toBe(429);
      expect(r.headers.get("content-type")).toMatch(/application\/problem\+json/);
      expect(r.body.code).toBe("rate_limited");
      const retry = Number(r.headers.get("retry-after"));
      expect(retry).toBeGreaterThanOrEqual(1);
      expect(retry).toBeLessThanOrEqual(60);
    }
    // Nothing was minted for the refused requests.
    const leases = await f.call("GET", "/v1/admin/leases?workload=agent", "alice");
    expect(leases.body.leases.map((l: { task_id: string }) => l.task_id).sort()).toEqual(["rl-0", "rl-1", "rl-2", "rl-3", "rl-4", "rl-5"]);
  });

  it("a workload's own limit overrides the default, and other workloads are unaffected", async () => {
    expect((await ask(second.url, "agent2", "own-1")).status).toBe(201);
    const r = await ask(f.b.url, "agent2", "own-2");
    expect(r.status).toBe(429);
    expect(r.body.detail).toMatch(/1 requests per minute/);
  });
});

describe("active-lease quota per workload", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture({
      extra: {
        leases: { quota_per_workload: 3 },
        workloads: [
          { id: "agent", kind: "agent", owner: "a@example.com", purpose: "support", issuer: "idp", subject: "agent-1", limits: { active_leases: 1 } },
          { id: "agent2", kind: "agent", owner: "a2@example.com", purpose: "support", issuer: "idp", subject: "agent-2" },
          { id: "alice", kind: "human", owner: "alice@example.com", purpose: "on-call", issuer: "idp", subject: "alice" },
        ],
      },
    });
  });
  afterAll(() => f.close());

  it("429 quota_exceeded with Retry-After until the soonest lease ends; completing frees the slot", async () => {
    const first = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "q-1" }, ttl: "90s" });
    expect(first.status).toBe(201);
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "q-2" } });
    expect(r.status).toBe(429);
    expect(r.body.code).toBe("quota_exceeded");
    const retry = Number(r.headers.get("retry-after"));
    expect(retry).toBeGreaterThan(60);
    expect(retry).toBeLessThanOrEqual(90);
    // The default quota (3) still applies to the others.
    for (let i = 0; i < 3; i++) expect((await f.call("POST", "/v1/credentials", "agent2", { role: "orders-read", task: { id: `q2-${i}` } })).status).toBe(201);
    expect((await f.call("POST", "/v1/credentials", "agent2", { role: "orders-read", task: { id: "q2-4" } })).status).toBe(429);

    expect((await f.call("POST", "/v1/tasks/q-1/complete", "agent")).status).toBe(200);
    await waitFor(async () => (await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: `q-3-${Date.now()}` } })).status === 201, 10_000, "the slot to free");
  });
});

describe("active-lease quota under concurrency", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture({
      extra: {
        workloads: [
          { id: "agent", kind: "agent", owner: "a@example.com", purpose: "support", issuer: "idp", subject: "agent-1", limits: { active_leases: 2 } },
          { id: "bob", kind: "human", owner: "bob@other.org", purpose: "auditor", issuer: "idp", subject: "bob" },
        ],
      },
    });
  });
  afterAll(() => f.close());

  it("a quota race cannot be won: of 8 concurrent requests with a quota of 2, 2 get a credential and the refused ones leave no lease (the broker's JWTs are minted before the write that refuses them)", async () => {
    const all = await Promise.all(Array.from({ length: 8 }, (_, i) => f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: `race-${i}` } })));
    const granted = all.filter((r) => r.status === 201);
    expect(granted.length).toBe(2);
    for (const r of all.filter((x) => x.status !== 201)) {
      expect(r.status).toBe(429);
      expect(r.body.code).toBe("quota_exceeded");
      expect(JSON.stringify(r.body)).not.toMatch(/eyJ/);
    }
    const live = await f.call("GET", "/v1/admin/leases?workload=agent", "bob");
    expect(live.status).toBe(200);
    const ids = (live.body.leases as { id: string; state: string }[]).map((l) => `${l.id} ${l.state}`).sort();
    expect(ids).toEqual(granted.map((r) => `${r.body.lease.id as string} active`).sort());
  });
});
