/**
 * Issue 13: what a workload can make the broker write (finding 1, write floods), how ids become
 * keys (finding 4, key collisions), and a failed mint's lease (issue_failed at once).
 */
import type { Backend } from "../../src/backends/types";
import { createKeyspace, keyPart } from "../../src/redis/keys";
import { startFixture, waitFor, type Fixture } from "../support/fixture";

const LIMIT = 8;

describe("write floods (finding 1)", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture({ extra: { limits: { requests_per_minute: LIMIT } } });
  });
  afterAll(() => f.close());

  const auditCount = async () => (await f.b.broker.audit.range({ count: 10_000 })).length;

  it("completion flood: POST /v1/tasks/<new id>/complete is rate limited per workload, and a completion that revoked nothing leaves no audit event", async () => {
    const before = await auditCount();
    const statuses: number[] = [];
    for (let i = 0; i < LIMIT + 3; i++) statuses.push((await f.call("POST", `/v1/tasks/flood-${i}/complete`, "agent2")).status);
    expect(statuses.slice(0, LIMIT)).toEqual(Array(LIMIT).fill(200));
    expect(statuses.slice(LIMIT)).toEqual([429, 429, 429]);
    expect(await auditCount()).toBe(before);
    // What is kept: the marker that refuses new leases for the task (I5), nothing more.
    const keys = createKeyspace(f.b.config.redis.prefix);
    const marker = keys.taskMarker("agent2", "flood-0");
    expect(await f.b.broker.redis.get(marker)).toMatch(/^\d{13}$/);
    expect(await f.b.broker.redis.ttl(marker)).toBeGreaterThan(0);
    const again = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "flood-0" } });
    expect(again.status).toBe(201); // another workload's task of the same id is not completed
  });

  it("a completion that revoked leases is audited", async () => {
    const l = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "done-1" } });
    expect(l.status).toBe(201);
    expect((await f.call("POST", "/v1/tasks/done-1/complete", "agent")).body).toEqual({ task_id: "done-1", revoked: 1 });
    const events = await f.b.broker.audit.range({ count: 10_000 });
    expect(events.filter((e) => e.type === "task_completed" && e.task_id === "done-1")).toHaveLength(1);
    expect((await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "done-1" } })).body.code).toBe("task_completed");
    // The worker revokes the lease after the completion answered; its `revoked` event is the last
    // thing recorded for it. Wait for it here, or it could land inside the next test's audit count.
    await waitFor(async () => (await f.b.broker.audit.byLease(l.body.lease.id)).some((e) => e.type === "revoked"), 10_000, "the completed task's revoked event");
  });

  it("refused approvals flood: a non-operator calling deny/approve writes one sampled audit event per interval, not one per attempt", async () => {
    const before = await auditCount();
    const pending = await f.call("POST", "/v1/credentials", "agent", { role: "orders-write", task: { id: "w-1", intent: "fix an order" } });
    expect(pending.status).toBe(202);
    const id = pending.body.request.id as string;
    const afterRequest = await auditCount();
    expect(afterRequest).toBeGreaterThan(before);
    for (let i = 0; i < 5; i++) {
      const r = await f.call("POST", `/v1/admin/requests/${id}/deny`, "ci");
      expect([r.status, r.body.code]).toEqual([403, "policy_denied"]);
    }
    const events = (await f.b.broker.audit.range({ count: 10_000 })).filter((e) => e.type === "approval_refused");
    expect(events).toEqual([expect.objectContaining({ actor: "ci", sampled: true, request_id: id })]);
    expect(await auditCount()).toBe(afterRequest + 1);
    const metrics = await (await fetch(`${f.b.url}/metrics`)).text();
    expect(metrics).toMatch(/^jitbroker_refusals_total\{kind="approve"\} 5$/m);
  });

  it("every write route shares the one budget: owner revocations and operator calls count too", async () => {
    // agent2 used its budget on completions above; its owner revocation is refused too.
    const r = await f.call("DELETE", "/v1/leases/l_doesnotexist000000000", "agent2");
    expect([r.status, r.body.code]).toEqual([429, "rate_limited"]);
    expect(Number(r.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    // ci used 5 on deny calls; 3 more and it is out.
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await f.call("POST", "/v1/admin/revocations", "ci", { workload: "x", reason: "r" })).status);
    expect(codes).toEqual([403, 403, 403, 429]);
    // Reads are not counted.
    expect((await f.call("GET", "/v1/whoami", "agent2")).status).toBe(200);
  });
});

describe("task marker key collision (finding 4)", () => {
  let f: Fixture;
  const extraWorkloads = [
    { id: "ci", kind: "agent", owner: "o@example.com", purpose: "p", issuer: "idp", subject: "sub-ci" },
    { id: "ci:team", kind: "agent", owner: "o@example.com", purpose: "p", issuer: "idp", subject: "sub-ci-team" },
    { id: "alice", kind: "human", owner: "alice@example.com", purpose: "on-call", issuer: "idp", subject: "alice" },
  ];
  beforeAll(async () => {
    f = await startFixture({ extra: { workloads: extraWorkloads } });
  });
  afterAll(() => f.close());

  const as = async (sub: string, method: string, p: string, body?: unknown) => {
    const token = await f.issuer.token({ sub });
    const res = await fetch(`${f.b.url}${p}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
    return { status: res.status, body: (await res.json()) as any };
  };

  it("workload ci completing task team:x does not complete task x of workload ci:team", async () => {
    expect((await as("sub-ci", "POST", "/v1/tasks/team:x/complete")).status).toBe(200);
    const r = await as("sub-ci-team", "POST", "/v1/credentials", { role: "orders-read", task: { id: "x" } });
    expect([r.status, r.body.code]).toEqual([201, undefined]);
    // and the other way round
    expect((await as("sub-ci-team", "POST", "/v1/tasks/y/complete")).status).toBe(200);
    expect((await as("sub-ci", "POST", "/v1/credentials", { role: "orders-read", task: { id: "team:y" } })).status).toBe(201);
    // while each workload's own completion holds (I5)
    expect((await as("sub-ci", "POST", "/v1/credentials", { role: "orders-read", task: { id: "team:x" } })).body.code).toBe("task_completed");
  });

  it("keys built from two ids are distinct for every split of the same characters", () => {
    const k = createKeyspace("p");
    const ids = ["a", "a:", ":a", "a:b", "a%3Ab", "a%b", "%", ":", "a::b", "b"];
    const seen = new Map<string, string>();
    for (const w of ids)
      for (const t of ids) {
        for (const [name, key] of [
          ["task", k.taskMarker(w, t)],
          ["refused", k.refusalSample(w, t)],
        ] as const) {
          const prev = seen.get(key);
          expect(prev).toBeUndefined();
          seen.set(key, `${name} ${w} ${t}`);
        }
      }
    // ids without ':' or '%' keep the key they always had
    expect(k.taskMarker("ci", "ticket-42")).toBe("{p}:task:ci:ticket-42");
    expect(keyPart("a:b%c")).toBe("a%3Ab%25c");
  });
});

describe("a failed mint ends revoked with issue_failed at once", () => {
  let f: Fixture;
  let mints = 0;
  const failing: Backend = {
    kind: "jwt",
    revocation: "revocable",
    async mint() {
      mints++;
      throw new Error("backend down (test)");
    },
    async revoke() {
      throw new Error("nothing to revoke was ever minted (test)");
    },
  };
  beforeAll(async () => {
    // fail_after 2 and a 30 s mint timeout: before the fix the lease was revoke_failed ("mint
    // still in progress") within a second and stayed so for 30 s.
    f = await startFixture({ backends: { jwt: failing }, extra: { worker: { sweep_interval: "200ms", sweep_grace: "1s", fail_after: 2, mint_timeout: "30s" } } });
  });
  afterAll(() => f.close());

  it("the answer is 503 and the lease is already revoked (issue_failed), never revoke_failed", async () => {
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "mint-fails" } });
    expect([r.status, r.body.code]).toEqual([503, "backend_unavailable"]);
    expect(mints).toBe(1);
    const leases = (await f.call("GET", "/v1/admin/leases?task_id=mint-fails", "alice")).body.leases;
    expect(leases).toHaveLength(1);
    expect(leases[0]).toMatchObject({ state: "revoked", revocation: { trigger: "issue_failed" } });
    expect(leases[0].last_error).toBeUndefined();
    // and it stays so (no retry loop turns it into revoke_failed)
    await new Promise((res) => setTimeout(res, 1500));
    const again = (await f.call("GET", `/v1/leases/${leases[0].id}`, "agent")).body.lease;
    expect(again.state).toBe("revoked");
    const counts = await f.b.broker.store.counts();
    expect(counts.revoke_failed).toBe(0);
    await waitFor(async () => (await f.b.broker.audit.byLease(leases[0].id)).some((e) => e.type === "revoked" && e.note === "never minted"), 5000, "revoked event");
  });
});
