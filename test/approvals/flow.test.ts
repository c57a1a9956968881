/**
 * Human approval end to end (issue 4): a permit with @approval("required") turns a credential
 * request into a pending request; operators approve or deny it; the requester collects the
 * credential (minted then); uncollected or undecided requests expire; every step is audited.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startFixture, waitFor, type Fixture } from "../support/fixture";

const WRITE = { role: "orders-write", task: { id: "refund-42", intent: "refund order 42" }, ttl: "3m" };

async function pending(f: Fixture, body: unknown = WRITE) {
  const r = await f.call("POST", "/v1/credentials", "agent", body);
  expect(r.status).toBe(202);
  return r;
}

describe("approval flow", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture();
  });
  afterAll(() => f.close());

  it("a request needing approval answers 202 with a pending request and mints nothing", async () => {
    const r = await pending(f);
    expect(r.body.request).toMatchObject({ state: "pending_approval", role: "orders-write", task_id: "refund-42", workload: "agent" });
    expect(r.body.request.id).toMatch(/^rq_[A-Za-z0-9_-]{16}$/);
    expect(r.headers.get("location")).toBe(`/v1/requests/${r.body.request.id}`);
    expect(r.body).not.toHaveProperty("credential");
    expect(Date.parse(r.body.request.expires_at) - Date.now()).toBeGreaterThan(50 * 60_000);
    const leases = await f.call("GET", "/v1/admin/leases?workload=agent&role=orders-write", "alice");
    expect(leases.body.leases).toEqual([]);
    // The requester sees it pending; nobody else sees it at all.
    expect((await f.call("GET", `/v1/requests/${r.body.request.id}`, "agent")).body.request.state).toBe("pending_approval");
    expect((await f.call("GET", `/v1/requests/${r.body.request.id}`, "agent2")).status).toBe(404);
    expect((await f.call("GET", `/v1/requests/rq_AAAAAAAAAAAAAAAA`, "agent")).status).toBe(404);
    expect((await f.call("GET", `/v1/requests/../../x`, "agent")).status).toBe(404);
  });

  it("a request without an intent is denied outright (the approval permit needs one)", async () => {
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-write", task: { id: "no-intent" } });
    expect(r.status).toBe(403);
    expect(r.body.code).toBe("policy_denied");
  });

  it("approve → collect: the credential is minted at collection, once, and the lease names the approval", async () => {
    const id = (await pending(f)).body.request.id as string;
    const listed = await f.call("GET", "/v1/admin/requests?state=pending_approval", "bob");
    expect(listed.status).toBe(200);
    expect(listed.body.requests.map((x: { id: string }) => x.id)).toContain(id);

    const approved = await f.call("POST", `/v1/admin/requests/${id}/approve`, "alice", { reason: "ticket OPS-7" });
    expect(approved.status).toBe(200);
    expect(approved.body.request).toMatchObject({ id, state: "approved", decided_by: "alice", reason: "ticket OPS-7" });
    // Approving twice is a conflict, not a second approval.
    const again = await f.call("POST", `/v1/admin/requests/${id}/approve`, "alice");
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ code: "request_not_pending", state: "approved" });

    const before = Date.now();
    const got = await f.call("GET", `/v1/requests/${id}`, "agent");
    expect(got.status).toBe(201);
    expect(got.body.credential.type).toBe("jwt");
    expect(got.body.lease).toMatchObject({ role: "orders-write", workload: "agent", task_id: "refund-42", state: "active", approval: { request_id: id, approved_by: "alice" } });
    // TTL starts at collection (3m asked; @max_ttl 15m of the approval permit does not clamp it).
    expect(Date.parse(got.body.lease.expires_at) - before).toBeGreaterThan(179_000 - 1000);
    expect(got.body.lease.policy.ids).toEqual(["agents-request-write-or-restricted-with-approval"]);
    expect(got.body.request).toMatchObject({ state: "collected", lease_id: got.body.lease.id });

    const second = await f.call("GET", `/v1/requests/${id}`, "agent");
    expect(second.status).toBe(200);
    expect(second.body.request).toMatchObject({ state: "collected", lease_id: got.body.lease.id });
    expect(second.body).not.toHaveProperty("credential");

    // Audited with the approver's identity, and the lease's history shows the approval.
    const h = await f.call("GET", `/v1/admin/leases/${got.body.lease.id}/history`, "alice");
    const mint = h.body.events.find((e: { type: string }) => e.type === "mint");
    expect(mint.approval).toMatchObject({ request_id: id, approved_by: "alice" });
    const all = (await f.b.broker.audit.range({ count: 10_000 })) as unknown as Record<string, any>[];
    const events = all.filter((e) => e.request_id === id).map((e) => e.type);
    expect(events).toEqual(["approval_requested", "approval_approved", "approval_collected"]);
    const approval = all.find((e) => e.type === "approval_approved" && e.request_id === id)!;
    expect(approval.approver).toMatchObject({ workload: "alice", kind: "human", issuer: "idp", subject: "alice" });
  });

  it("deny: the requester sees it denied and can never collect", async () => {
    const id = (await pending(f)).body.request.id as string;
    const denied = await f.call("POST", `/v1/admin/requests/${id}/deny`, "alice", { reason: "not during the freeze" });
    expect(denied.status).toBe(200);
    expect(denied.body.request).toMatchObject({ state: "denied", decided_by: "alice", reason: "not during the freeze" });
    const got = await f.call("GET", `/v1/requests/${id}`, "agent");
    expect(got.status).toBe(200);
    expect(got.body.request.state).toBe("denied");
    expect((await f.call("POST", `/v1/admin/requests/${id}/approve`, "alice")).body).toMatchObject({ code: "request_not_pending", state: "denied" });
  });

  it("only workloads Cedar allows to approve may approve; the requester never may", async () => {
    const id = (await pending(f)).body.request.id as string;
    const self = await f.call("POST", `/v1/admin/requests/${id}/approve`, "agent");
    expect(self.status).toBe(403);
    // A workload that is not human is refused before its request is looked up (issue 13: decide first).
    expect(self.body.detail).toMatch(/^agent may not approve or deny requests$/);
    const ci = await f.call("POST", `/v1/admin/requests/${id}/approve`, "ci");
    expect(ci.status).toBe(403);
    expect((await f.call("GET", "/v1/admin/requests", "ci")).status).toBe(403);
    expect((await f.call("GET", `/v1/requests/${id}`, "agent")).body.request.state).toBe("pending_approval");
  });

  it("races have one winner: approve vs deny, and two collections of one approval", async () => {
    for (let i = 0; i < 5; i++) {
      const id = (await pending(f)).body.request.id as string;
      const [a, d] = await Promise.all([f.call("POST", `/v1/admin/requests/${id}/approve`, "alice"), f.call("POST", `/v1/admin/requests/${id}/deny`, "alice")]);
      expect([a.status, d.status].sort()).toEqual([200, 409]);
    }
    const id = (await pending(f, { ...WRITE, task: { id: "race-collect", intent: "x" } })).body.request.id as string;
    expect((await f.call("POST", `/v1/admin/requests/${id}/approve`, "alice")).status).toBe(200);
    const got = await Promise.all([1, 2, 3].map(() => f.call("GET", `/v1/requests/${id}`, "agent")));
    expect(got.filter((g) => g.status === 201)).toHaveLength(1);
    for (const g of got.filter((x) => x.status !== 201)) expect([200, 409]).toContain(g.status);
    const leases = await f.call("GET", "/v1/admin/leases?task_id=race-collect", "alice");
    expect(leases.body.leases).toHaveLength(1);
  });

  it("refuses bad input with problem+json and changes nothing", async () => {
    const id = (await pending(f)).body.request.id as string;
    const r = await f.call("POST", `/v1/admin/requests/${id}/approve`, "alice", { reason: "", extra: 1 });
    expect(r.status).toBe(400);
    expect(r.headers.get("content-type")).toMatch(/application\/problem\+json/);
    expect((await f.call("GET", "/v1/admin/requests?state=nope", "alice")).status).toBe(400);
    expect((await f.call("POST", "/v1/admin/requests/rq_zzzzzzzzzzzzzzzz/approve", "alice")).status).toBe(404);
    expect((await f.call("GET", `/v1/requests/${id}`, "agent")).body.request.state).toBe("pending_approval");
  });

  it("the example forbid refuses an operator approving a request of a workload they own", async () => {
    // agent2 is owned by a2@example.com; give that owner an operator identity through a new fixture.
    const g = await startFixture({
      extra: {
        workloads: [
          { id: "agent", kind: "agent", owner: "alice@example.com", purpose: "support", issuer: "idp", subject: "agent-1" },
          { id: "alice", kind: "human", owner: "alice@example.com", purpose: "on-call", issuer: "idp", subject: "alice" },
          { id: "bob", kind: "human", owner: "bob@other.org", purpose: "auditor", issuer: "idp", subject: "bob" },
        ],
      },
    });
    try {
      const id = (await pending(g)).body.request.id as string;
      const r = await g.call("POST", `/v1/admin/requests/${id}/approve`, "alice");
      expect(r.status).toBe(403);
      const ok = await g.call("POST", `/v1/admin/requests/${id}/approve`, "bob");
      expect(ok.status).toBe(200);
    } finally {
      await g.close();
    }
  });
});

describe("self-approval is refused even when the policies would allow it", () => {
  it("a human allowed to request and to approve still cannot approve its own request", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "jitbroker-pol-"));
    writeFileSync(
      path.join(dir, "p.cedar"),
      `@id("humans-request-with-approval") @approval("required")
permit (principal, action == Action::"request", resource is Role) when { principal.kind == "human" };
@id("humans-approve") permit (principal, action == Action::"approve", resource) when { principal.kind == "human" };
@id("humans-read") permit (principal, action == Action::"admin_read", resource) when { principal.kind == "human" };`,
    );
    const f = await startFixture({ extra: { policy: { files: [path.join(dir, "*.cedar")] } } });
    try {
      const r = await f.call("POST", "/v1/credentials", "alice", { role: "orders-read", task: { id: "t" } });
      expect(r.status).toBe(202);
      const self = await f.call("POST", `/v1/admin/requests/${r.body.request.id}/approve`, "alice");
      expect(self.status).toBe(403);
      expect(self.body.detail).toMatch(/never approve its own request/);
      // Another operator can.
      expect((await f.call("POST", `/v1/admin/requests/${r.body.request.id}/approve`, "bob")).status).toBe(200);
      expect((await f.call("GET", `/v1/requests/${r.body.request.id}`, "alice")).status).toBe(201);
    } finally {
      await f.close();
    }
  });
});

describe("expiry of requests", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture({ extra: { approvals: { pending_timeout: "1s", collect_timeout: "1s", max_pending_per_workload: 3 } } });
  });
  afterAll(() => f.close());

  it("a pending request nobody decides expires, audited, and cannot be approved afterwards", async () => {
    const id = (await pending(f)).body.request.id as string;
    await waitFor(async () => (await f.call("GET", `/v1/requests/${id}`, "agent")).body.request.state === "expired", 10_000, "expiry");
    const r = await f.call("POST", `/v1/admin/requests/${id}/approve`, "alice");
    expect(r.status).toBe(409);
    expect(r.body.state).toBe("expired");
    await waitFor(async () => ((await f.b.broker.audit.range({ count: 10_000 })) as unknown as Record<string, any>[]).some((e) => e.type === "approval_expired" && e.request_id === id), 10_000, "expiry event");
  });

  it("an approved request not collected within its window expires; no credential is minted", async () => {
    const id = (await pending(f)).body.request.id as string;
    expect((await f.call("POST", `/v1/admin/requests/${id}/approve`, "alice")).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1200));
    const got = await f.call("GET", `/v1/requests/${id}`, "agent");
    expect(got.status).toBe(200);
    expect(got.body.request.state).toBe("expired");
    const leases = await f.call("GET", "/v1/admin/leases?workload=agent&role=orders-write", "alice");
    expect(leases.body.leases).toEqual([]);
  });

  it("caps the pending requests of one workload (429 quota_exceeded)", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await pending(f, { ...WRITE, task: { id: `cap-${i}`, intent: "x" } })).body.request.id);
    const r = await f.call("POST", "/v1/credentials", "agent", { ...WRITE, task: { id: "cap-4", intent: "x" } });
    expect(r.status).toBe(429);
    expect(r.body.code).toBe("quota_exceeded");
    expect(r.headers.get("retry-after")).toBeTruthy();
    // Deciding one frees a slot.
    expect((await f.call("POST", `/v1/admin/requests/${ids[0]}/deny`, "alice")).status).toBe(200);
    expect((await f.call("POST", "/v1/credentials", "agent", { ...WRITE, task: { id: "cap-5", intent: "x" } })).status).toBe(202);
  });
});
