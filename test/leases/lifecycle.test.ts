import { createLocalJWKSet, decodeJwt, jwtVerify } from "jose";
import { verifyAuditChain } from "../../src/audit/ledger";
import { readAuditKey } from "../../src/audit/key";
import { startFixture, waitFor, type Fixture } from "../support/fixture";

let f: Fixture;
beforeAll(async () => {
  f = await startFixture();
});
afterAll(async () => {
  await f.close();
});

const leaseOf = async (id: string, who: "agent" | "alice" = "agent") => (await f.call("GET", `/v1/leases/${id}`, who)).body.lease;
const introspect = async (token: string) => (await f.call("POST", "/v1/introspect", "ci", { token })).body;

describe("issuance", () => {
  it("issues a task-scoped JWT that verifies against the broker's JWKS and introspects active", async () => {
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "T-1", intent: "answer ticket 42" }, ttl: "20m".replace("20", "10") });
    expect(r.status).toBe(201);
    const { lease, credential } = r.body;
    expect(lease).toMatchObject({ role: "orders-read", backend: "jwt", workload: "agent", task_id: "T-1", state: "active", revocation_kind: "revocable" });
    expect(lease.identity).toEqual({ kind: "oidc", issuer: "idp", subject: "agent-1" });
    expect(lease.policy.ids).toEqual(["agents-request-read"]);
    expect(lease.policy.hash).toMatch(/^[0-9a-f]{64}$/);
    // @max_ttl("10m") of agents-request-read: the 10m request stands; the lease says so.
    expect(Date.parse(lease.expires_at) - Date.parse(lease.issued_at)).toBeLessThanOrEqual(600_000);
    expect(credential.type).toBe("jwt");
    const jwks = (await f.call("GET", "/.well-known/jwks.json", null)).body;
    const { payload, protectedHeader } = await jwtVerify(credential.token, createLocalJWKSet(jwks), { issuer: "http://127.0.0.1:8080", audience: "https://orders.internal" });
    expect(protectedHeader).toMatchObject({ alg: "ES256", typ: "at+jwt" });
    expect(payload).toMatchObject({ sub: "agent", jti: lease.id, task_id: "T-1", scope: "orders:read" });
    expect(payload.exp).toBe(Date.parse(lease.expires_at) / 1000);
    expect(await introspect(credential.token)).toMatchObject({ active: true, sub: "agent", jti: lease.id, task_id: "T-1" });
    const oidc = (await f.call("GET", "/.well-known/openid-configuration", null)).body;
    expect(oidc).toMatchObject({ issuer: "http://127.0.0.1:8080", jwks_uri: "http://127.0.0.1:8080/.well-known/jwks.json" });
  });

  it("clamps the TTL to the policy's @max_ttl", async () => {
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "T-clamp" }, ttl: "15m" });
    expect(r.status).toBe(201);
    expect(r.body.lease.ttl_seconds).toBeLessThanOrEqual(600);
    expect(r.body.lease.ttl_seconds).toBeGreaterThan(590);
  });
});

describe("revocation triggers", () => {
  it("task completion revokes the task's leases, makes introspection inactive, and is final (I5)", async () => {
    const a = (await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "T-done" } })).body;
    const other = (await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "T-other" } })).body;
    const done = await f.call("POST", "/v1/tasks/T-done/complete", "agent");
    expect(done.status).toBe(200);
    expect(done.body).toEqual({ task_id: "T-done", revoked: 1 });
    expect(await introspect(a.credential.token)).toEqual({ active: false });
    const revoked = await waitFor(async () => {
      const l = await leaseOf(a.lease.id);
      return l.state === "revoked" ? l : null;
    });
    expect(revoked.revocation).toMatchObject({ trigger: "task_completed", by: "agent" });
    expect(revoked.revoked_at).toBeDefined();
    // The other task is untouched.
    expect((await leaseOf(other.lease.id)).state).toBe("active");
    // I5: nothing more for that task.
    const again = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "T-done" } });
    expect(again.status).toBe(409);
    expect(again.body.code).toBe("task_completed");
    // Completing again is harmless.
    expect((await f.call("POST", "/v1/tasks/T-done/complete", "agent")).body).toEqual({ task_id: "T-done", revoked: 0 });
  });

  it("a task id is per workload: another workload's completion does not touch mine", async () => {
    const mine = (await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "T-shared" } })).body;
    expect((await f.call("POST", "/v1/tasks/T-shared/complete", "agent2")).body).toEqual({ task_id: "T-shared", revoked: 0 });
    expect((await leaseOf(mine.lease.id)).state).toBe("active");
  });

  it("expiry: the delayed job revokes the lease at its expiry", async () => {
    const r = (await f.call("POST", "/v1/credentials", "agent", { role: "short-read", task: { id: "T-exp" }, ttl: 2 })).body;
    const expired = await waitFor(async () => {
      const l = await leaseOf(r.lease.id);
      return l.state === "expired" ? l : null;
    }, 8000);
    expect(expired.revocation.trigger).toBe("expiry");
    expect(Date.parse(expired.revoked_at)).toBeGreaterThanOrEqual(Date.parse(expired.expires_at));
    expect(await introspect(r.credential.token)).toEqual({ active: false });
  });

  it("the owner revokes one lease", async () => {
    const r = (await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "T-own" } })).body;
    const del = await f.call("DELETE", `/v1/leases/${r.lease.id}`, "agent", { reason: "done early" });
    expect(del.status).toBe(200);
    expect(del.body.lease.revocation).toMatchObject({ trigger: "owner", by: "agent", reason: "done early" });
    await waitFor(async () => (await leaseOf(r.lease.id)).state === "revoked");
    // Revoking twice is harmless (I4).
    expect((await f.call("DELETE", `/v1/leases/${r.lease.id}`, "agent")).status).toBe(200);
  });

  it.each([
    ["workload", (l: any) => ({ workload: "agent2" }), "agent2"],
    ["task_id", (l: any) => ({ task_id: "T-op-task" }), "agent2"],
    ["lease_id", (l: any) => ({ lease_id: l.id }), "agent2"],
    ["role", (l: any) => ({ role: "short-read" }), "agent2"],
  ])("an operator revokes by %s", async (_sel, selector, _w) => {
    const role = _sel === "role" ? "short-read" : "orders-read";
    const r = (await f.call("POST", "/v1/credentials", "agent2", { role, task: { id: "T-op-task" }, ttl: role === "short-read" ? 10 : undefined })).body;
    expect(r.lease.state).toBe("active");
    const op = await f.call("POST", "/v1/admin/revocations", "alice", { ...selector(r.lease), reason: "incident 7" });
    expect(op.status).toBe(202);
    expect(op.body.matched).toBeGreaterThanOrEqual(1);
    const progress = await waitFor(async () => {
      const p = (await f.call("GET", `/v1/admin/revocations/${op.body.id}`, "alice")).body;
      return p.state === "completed" ? p : null;
    });
    expect(progress.revoked).toBe(progress.triggered);
    expect(progress.failed).toBe(0);
    const l = await leaseOf(r.lease.id, "alice");
    expect(l.state).toBe("revoked");
    expect(l.revocation).toMatchObject({ trigger: "operator", by: "alice", reason: "incident 7" });
  });
});

describe("operators and history", () => {
  it("lists leases with filters and a cursor", async () => {
    for (let i = 0; i < 5; i++) await f.call("POST", "/v1/credentials", "ci", { role: "orders-read", task: { id: `T-list-${i}` } });
    const seen = new Set<string>();
    let cursor: string | null = null;
    do {
      const q: string = `/v1/admin/leases?workload=ci&limit=2${cursor ? `&cursor=${cursor}` : ""}`;
      const page = await f.call("GET", q, "bob");
      expect(page.status).toBe(200);
      for (const l of page.body.leases) {
        expect(l.workload).toBe("ci");
        expect(seen.has(l.id)).toBe(false);
        seen.add(l.id);
      }
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(seen.size).toBe(5);
    const active = await f.call("GET", "/v1/admin/leases?workload=ci&state=active", "bob");
    expect(active.body.leases).toHaveLength(5);
  });

  it("answers the four questions of I8 from the history", async () => {
    const r = (await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "T-hist", tool: "crm" } })).body;
    await f.call("POST", "/v1/tasks/T-hist/complete", "agent");
    await waitFor(async () => (await leaseOf(r.lease.id)).state === "revoked");
    // The `revoked` event is appended after the lease is revoked (after FINISH): wait for it.
    const h = await waitFor(async () => {
      const body = (await f.call("GET", `/v1/admin/leases/${r.lease.id}/history`, "bob")).body;
      return body.events?.some((e: any) => e.type === "revoked") ? body : null;
    }, 10_000, "the revoked event in the lease's history");
    expect(h.requested_by).toMatchObject({ workload: "agent", task: { id: "T-hist", tool: "crm" } });
    expect(h.identity).toEqual({ kind: "oidc", issuer: "idp", subject: "agent-1" });
    expect(h.allowed_by.ids).toEqual(["agents-request-read"]);
    expect(h.ended).toMatchObject({ state: "revoked", trigger: "task_completed", by: "agent" });
    expect(h.events.map((e: any) => e.type)).toEqual(["mint", "revoked"]);
    for (const e of h.events) expect(e.hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it("keeps a verifiable audit chain", async () => {
    const key = await readAuditKey(f.b.config.audit.key_file);
    const res = await verifyAuditChain(f.b.broker.redis, { key, streamKey: `{${f.b.config.redis.prefix}}:audit`, headKey: `{${f.b.config.redis.prefix}}:audit:head` });
    expect(res.ok).toBe(true);
    expect(res.checked).toBeGreaterThan(10);
  });
});

describe("bad input: refused, and nothing minted", () => {
  it.each([
    // Decided before the role is looked up: no permit covers "nope" for this agent (issue 13, finding 7).
    ["unknown role", { role: "nope", task: { id: "T" } }, 403, "policy_denied"],
    ["ttl over the role's max", { role: "orders-read", task: { id: "T" }, ttl: "16m" }, 422, "ttl_too_long"],
    ["malformed task id", { role: "orders-read", task: { id: "bad id!" } }, 400, "invalid_request"],
    ["task id too long", { role: "orders-read", task: { id: "x".repeat(129) } }, 400, "invalid_request"],
    ["missing task", { role: "orders-read" }, 400, "invalid_request"],
    ["unknown field", { role: "orders-read", task: { id: "T" }, admin: true }, 400, "invalid_request"],
    ["bad ttl", { role: "orders-read", task: { id: "T" }, ttl: "soon" }, 400, "invalid_request"],
    ["ttl below 2s", { role: "orders-read", task: { id: "T" }, ttl: "1s" }, 400, "invalid_request"],
    ["ttl of 1 second", { role: "orders-read", task: { id: "T" }, ttl: 1 }, 400, "invalid_request"],
    ["array body", [1, 2], 400, "invalid_request"],
    ["not JSON", "{role:", 400, "invalid_request"],
    ["denied by policy (restricted write)", { role: "orders-write", task: { id: "T" } }, 403, "policy_denied"],
  ])("%s", async (_name, body, status, code) => {
    const before = await f.b.broker.store.counts();
    const r = await f.call("POST", "/v1/credentials", "agent", body);
    expect(r.status).toBe(status);
    expect(r.body.code).toBe(code);
    expect(r.body.credential).toBeUndefined();
    expect((await f.b.broker.store.counts()).live).toBe(before.live);
  });

  it("another workload's lease is 404 (nothing revealed), to read and to revoke", async () => {
    const r = (await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "T-priv" } })).body;
    for (const method of ["GET", "DELETE"]) {
      const x = await f.call(method, `/v1/leases/${r.lease.id}`, "agent2");
      expect(x.status).toBe(404);
      expect(x.body.code).toBe("not_found");
    }
    expect((await f.call("GET", `/v1/leases/l_doesnotexist000000000`, "agent2")).status).toBe(404);
    expect((await leaseOf(r.lease.id)).state).toBe("active");
  });

  it("non-operators get 403 on admin endpoints; a read-only operator cannot revoke", async () => {
    for (const who of ["agent", "ci"] as const) {
      expect((await f.call("GET", "/v1/admin/leases", who)).body.code).toBe("policy_denied");
      expect((await f.call("POST", "/v1/admin/revocations", who, { workload: "agent", reason: "x" })).status).toBe(403);
    }
    const bob = await f.call("POST", "/v1/admin/revocations", "bob", { workload: "agent", reason: "x" });
    expect(bob.status).toBe(403);
    expect(bob.body.code).toBe("policy_denied");
    expect((await f.call("POST", "/v1/admin/revocations", "alice", { workload: "agent", role: "x", reason: "x" })).status).toBe(400);
  });

  it("tokens minted by the broker are not accepted as workload tokens", async () => {
    const r = (await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "T-confuse" } })).body;
    expect(decodeJwt(r.credential.token).iss).toBe("http://127.0.0.1:8080");
    const x = await f.call("GET", "/v1/whoami", null);
    expect(x.status).toBe(401);
    const y = await fetch(`${f.b.url}/v1/whoami`, { headers: { authorization: `Bearer ${r.credential.token}` } });
    expect(y.status).toBe(401);
  });
});
