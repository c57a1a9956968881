import { createLocalJWKSet, decodeJwt, jwtVerify } from "jose";
import { waitFor } from "../support/fixture";
import { AT_TYPE, delegation, EXCHANGE, ID_TYPE, JWT_TYPE, startDelegationFixture, type DelegationFixture } from "./support";

let f: DelegationFixture;
beforeAll(async () => {
  f = await startDelegationFixture({ maxDepth: 2 });
});
afterAll(async () => {
  await f.close();
});

describe("delegation (RFC 8693)", () => {
  it("two levels deep: same role and task, sub of the root, nested act with the current actor outermost", async () => {
    const root = await f.credential("orchestrator", "orders-read", "T-chain");
    const one = await f.exchange(await delegation(f, root.credential.token, "subagent", { scope: "orders:read", resource: "https://mcp.orders.internal" }));
    expect(one.status).toBe(200);
    expect(one.headers.get("cache-control")).toBe("no-store");
    expect(one.body).toMatchObject({ issued_token_type: AT_TYPE, token_type: "Bearer", scope: "orders:read" });
    expect(one.body.expires_in).toBeGreaterThan(0);
    const jwks = (await f.call("GET", "/.well-known/jwks.json", null)).body;
    const { payload: p1 } = await jwtVerify(one.body.access_token, createLocalJWKSet(jwks), { issuer: "http://127.0.0.1:8080", audience: "https://mcp.orders.internal" });
    expect(p1).toMatchObject({ sub: "orchestrator", act: { sub: "subagent" }, scope: "orders:read", task_id: "T-chain", jti: one.body.lease_id });
    expect(p1.aud).toBe("https://mcp.orders.internal");
    expect(p1.exp!).toBeLessThanOrEqual(Date.parse(root.lease.expires_at) / 1000);

    const two = await f.exchange(await delegation(f, one.body.access_token, "tool", { ttl: 60 }), { json: true });
    expect(two.status).toBe(200);
    const p2 = decodeJwt(two.body.access_token);
    expect(p2).toMatchObject({ sub: "orchestrator", act: { sub: "tool", act: { sub: "subagent" } }, aud: "https://mcp.orders.internal", scope: "orders:read" });
    expect(two.body.expires_in).toBeLessThanOrEqual(60);

    const lease = (await f.call("GET", `/v1/leases/${two.body.lease_id}`, "tool")).body.lease;
    expect(lease).toMatchObject({ workload: "tool", role: "orders-read", task_id: "T-chain", parent_lease_id: one.body.lease_id, state: "active" });
    expect(lease.policy.ids).toEqual(["agents-delegate-read"]);
    const intro = await f.introspect(two.body.access_token);
    expect(intro).toMatchObject({ active: true, sub: "orchestrator", act: { sub: "tool", act: { sub: "subagent" } }, parent_lease_id: one.body.lease_id, depth: 2 });

    // The depth limit: delegation.max_depth is 2, so a third hop is refused.
    const three = await f.exchange(await delegation(f, two.body.access_token, "subagent"));
    expect(three.status).toBe(400);
    expect(three.body).toMatchObject({ error: "invalid_request", code: "invalid_request" });
    expect(three.body.error_description).toMatch(/max_depth is 2/);

    // Children of a lease are listed for operators.
    const kids = await f.call("GET", `/v1/admin/leases?parent=${root.lease.id}`, "alice");
    expect(kids.status).toBe(200);
    expect(kids.body.leases.map((l: any) => l.id)).toEqual([one.body.lease_id]);
  });

  describe("every widening is refused with the RFC 6749 error that fits", () => {
    let subject: string;
    beforeAll(async () => {
      const root = await f.credential("orchestrator", "orders-read", "T-widen");
      subject = (await f.exchange(await delegation(f, root.credential.token, "subagent", { scope: "orders:read", resource: "https://orders.internal", ttl: 120 }))).body.access_token;
    });

    it.each([
      ["a scope the parent lacks", { scope: "orders:read orders:list" }, "invalid_scope", "invalid_request"],
      ["a scope the role lacks", { scope: "orders:write" }, "invalid_scope", "invalid_request"],
      ["an audience the parent is not bound to", { resource: "https://mcp.orders.internal" }, "invalid_target", "invalid_request"],
      ["an audience the role does not allow", { audience: "https://payments.internal" }, "invalid_target", "invalid_request"],
      ["two resources at once", { resource: ["https://orders.internal", "https://mcp.orders.internal"] }, "invalid_target", "invalid_request"],
      ["a resource with a fragment", { resource: "https://orders.internal#x" }, "invalid_target", "invalid_request"],
      ["a longer TTL than the parent has left", { ttl: "10m" }, "invalid_request", "ttl_too_long"],
      ["another task", { task_id: "T-other" }, "invalid_request", "invalid_request"],
      ["another role", { role: "orders-write" }, "invalid_request", "invalid_request"],
    ])("%s", async (_what, extra, error, code) => {
      const r = await f.exchange(await delegation(f, subject, "tool", extra as Record<string, string>));
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject({ error, code });
      expect(typeof r.body.error_description).toBe("string");
    });

    it("a workload the policy does not allow to delegate: unauthorized_client", async () => {
      const r = await f.exchange(await delegation(f, subject, "ci"));
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject({ error: "unauthorized_client", code: "policy_denied" });
    });
  });

  it("a revoked or expired parent is refused as subject_token", async () => {
    const root = await f.credential("orchestrator", "orders-read", "T-dead");
    await f.call("DELETE", `/v1/leases/${root.lease.id}`, "orchestrator");
    const r = await f.exchange(await delegation(f, root.credential.token, "subagent"));
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: "invalid_request", code: "invalid_request" });
    expect(r.body.error_description).toMatch(/subject_token/);

    const short = await f.credential("orchestrator", "orders-read", "T-short", { ttl: 2 });
    await new Promise((res) => setTimeout(res, 2100));
    const late = await f.exchange(await delegation(f, short.credential.token, "subagent"));
    expect(late.status).toBe(400);
    expect(late.body).toMatchObject({ error: "invalid_request", code: "invalid_token" });
  });

  it("a token that is not the broker's is refused as subject_token (forged with the agent issuer's key)", async () => {
    const forged = await f.agents.token({ sub: "orchestrator", jti: "l_AAAAAAAAAAAAAAAA" }, { iss: "http://127.0.0.1:8080" });
    const r = await f.exchange(await delegation(f, forged, "subagent"));
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: "invalid_request", code: "invalid_token" });
  });

  it("a bearer token must belong to the actor; a users token as bearer is 401 invalid_token", async () => {
    const root = await f.credential("orchestrator", "orders-read", "T-bearer");
    const other = await f.exchange(await delegation(f, root.credential.token, "subagent"), { bearer: await f.token("tool") });
    expect(other.status).toBe(400);
    expect(other.body.error_description).toMatch(/different workloads/);
    const person = await f.person("p-1", { groups: ["support"] });
    const asBearer = await f.exchange(await delegation(f, root.credential.token, "subagent"), { bearer: person });
    expect(asBearer.status).toBe(401);
    expect(asBearer.body).toMatchObject({ error: "invalid_client", code: "invalid_token" });
    const same = await f.exchange(await delegation(f, root.credential.token, "subagent"), { bearer: await f.token("subagent") });
    expect(same.status).toBe(200);
  });

  it("a request that is not a token exchange gets the RFC 6749 answers", async () => {
    const bad = await f.exchange({ grant_type: "client_credentials", subject_token: "x", subject_token_type: AT_TYPE });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ error: "unsupported_grant_type" });
    const noActor = await f.exchange({ grant_type: EXCHANGE, subject_token: "x", subject_token_type: AT_TYPE });
    expect(noActor.body).toMatchObject({ error: "invalid_request", code: "invalid_request" });
    const twice = await f.exchange({ grant_type: EXCHANGE, subject_token: ["a", "b"], subject_token_type: AT_TYPE, actor_token: "x", actor_token_type: JWT_TYPE });
    expect(twice.body.error_description).toMatch(/more than once/);
    const notJson = await fetch(`${f.b.url}/v1/oauth/token`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" });
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toMatchObject({ error: "invalid_request" });
    const text = await fetch(`${f.b.url}/v1/oauth/token`, { method: "POST", headers: { "content-type": "text/plain" }, body: "grant_type=x" });
    expect(text.status).toBe(415);
    expect(await text.json()).toMatchObject({ error: "invalid_request", code: "unsupported_media_type" });
  });
});

describe("users tokens (use: users)", () => {
  it("are refused as workload tokens anywhere: bearer on the REST API and actor_token", async () => {
    const person = await f.person("alice-person", { groups: ["support"] });
    const r = await fetch(`${f.b.url}/v1/whoami`, { headers: { authorization: `Bearer ${person}` } });
    expect(r.status).toBe(401);
    expect(((await r.json()) as any).code).toBe("invalid_token");
    const root = await f.credential("orchestrator", "orders-read", "T-users");
    const asActor = await f.exchange({ grant_type: EXCHANGE, subject_token: root.credential.token, subject_token_type: AT_TYPE, actor_token: person, actor_token_type: JWT_TYPE });
    expect(asActor.status).toBe(400);
    expect(asActor.body).toMatchObject({ error: "invalid_request", code: "invalid_token" });
    expect(asActor.body.error_description).toMatch(/actor_token/);
  });

  it("a workload token is not a person's ID token", async () => {
    const r = await f.exchange({ grant_type: EXCHANGE, subject_token: await f.token("subagent"), subject_token_type: ID_TYPE, actor_token: await f.token("orchestrator"), actor_token_type: JWT_TYPE, role: "orders-write", task_id: "T-x" });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: "invalid_request", code: "invalid_token" });
  });
});

describe("on behalf of a person", () => {
  const obo = async (person: string, extra: Record<string, string> = {}) => ({
    grant_type: EXCHANGE,
    subject_token: person,
    subject_token_type: ID_TYPE,
    actor_token: await f.token("orchestrator"),
    actor_token_type: JWT_TYPE,
    role: "orders-write",
    task_id: "T-obo",
    ...extra,
  });

  it("is decided by the person's group claims: support people yes, others no", async () => {
    const ok = await f.exchange(await obo(await f.person("pat", { groups: ["support", "emea"], email: "pat@example.com" })));
    expect(ok.status).toBe(200);
    const p = decodeJwt(ok.body.access_token);
    expect(p).toMatchObject({ sub: "pat", act: { sub: "orchestrator" }, aud: "https://orders.internal", scope: "orders:write", task_id: "T-obo" });
    const lease = (await f.call("GET", `/v1/leases/${ok.body.lease_id}`, "orchestrator")).body.lease;
    expect(lease).toMatchObject({ workload: "orchestrator", on_behalf_of: { issuer: "people", subject: "pat" } });
    expect(lease.parent_lease_id).toBeUndefined();
    expect(await f.introspect(ok.body.access_token)).toMatchObject({ active: true, sub: "pat", act: { sub: "orchestrator" }, on_behalf_of: { issuer: "people", subject: "pat" } });

    const no = await f.exchange(await obo(await f.person("sam", { groups: ["sales"] })));
    expect(no.status).toBe(400);
    expect(no.body).toMatchObject({ error: "unauthorized_client", code: "policy_denied" });
    const none = await f.exchange(await obo(await f.person("kim")));
    expect(none.body).toMatchObject({ error: "unauthorized_client" });
  });

  it("verifies the ID token like a workload token: audience, expiry, lifetime", async () => {
    const wrongAud = await f.people.token({ sub: "pat", groups: ["support"] }, { aud: "jitbroker" });
    expect((await f.exchange(await obo(wrongAud))).body).toMatchObject({ error: "invalid_request", code: "invalid_token" });
    const expired = await f.people.token({ sub: "pat", groups: ["support"] }, { exp: Math.floor(Date.now() / 1000) - 120, iat: Math.floor(Date.now() / 1000) - 400 });
    expect((await f.exchange(await obo(expired))).body).toMatchObject({ error: "invalid_request", code: "token_expired" });
    const long = await f.people.token({ sub: "pat", groups: ["support"] }, { exp: Math.floor(Date.now() / 1000) + 7200 });
    expect((await f.exchange(await obo(long))).body).toMatchObject({ error: "invalid_request", code: "invalid_token" });
  });

  it("needs role and task_id, and stays within the role's scope and audience", async () => {
    const person = await f.person("pat", { groups: ["support"] });
    const noRole = await obo(person);
    delete (noRole as Record<string, string>).role;
    expect((await f.exchange(noRole)).body.error_description).toMatch(/role: required/);
    expect((await f.exchange(await obo(person, { scope: "orders:admin" }))).body).toMatchObject({ error: "invalid_scope" });
    expect((await f.exchange(await obo(person, { resource: "https://mcp.orders.internal" }))).body).toMatchObject({ error: "invalid_target" });
  });

  it("a delegated copy of an on-behalf-of credential keeps the person as sub, nests act, and carries context.on_behalf_of", async () => {
    const ok = await f.exchange(await obo(await f.person("pat", { groups: ["support"] })));
    const sub = await f.exchange(await delegation(f, ok.body.access_token, "subagent"));
    expect(sub.status).toBe(200);
    expect(decodeJwt(sub.body.access_token)).toMatchObject({ sub: "pat", act: { sub: "subagent", act: { sub: "orchestrator" } }, scope: "orders:write" });
    const lease = (await f.call("GET", `/v1/leases/${sub.body.lease_id}`, "subagent")).body.lease;
    expect(lease).toMatchObject({ parent_lease_id: ok.body.lease_id, on_behalf_of: { issuer: "people", subject: "pat" } });
    expect(lease.policy.ids).toEqual(["subagent-continues-writes-for-support"]);
    // The policy lets only the orchestrator hand it on (context.delegation.from).
    const again = await f.exchange(await delegation(f, sub.body.access_token, "tool"));
    expect(again.body).toMatchObject({ error: "unauthorized_client", code: "policy_denied" });
  });
});

describe("RFC 8414 metadata", () => {
  it("names the token, introspection and JWKS endpoints and the token-exchange grant", async () => {
    const r = await f.call("GET", "/.well-known/oauth-authorization-server", null);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      issuer: "http://127.0.0.1:8080",
      token_endpoint: "http://127.0.0.1:8080/v1/oauth/token",
      introspection_endpoint: "http://127.0.0.1:8080/v1/introspect",
      jwks_uri: "http://127.0.0.1:8080/.well-known/jwks.json",
      grant_types_supported: [EXCHANGE],
    });
  });
});

describe("resource-bound credentials (RFC 8707)", () => {
  it("introspection with another resource says inactive", async () => {
    const root = await f.credential("orchestrator", "orders-read", "T-bound");
    const bound = await f.exchange(await delegation(f, root.credential.token, "tool", { resource: "https://mcp.orders.internal" }));
    expect(await f.introspect(bound.body.access_token, "https://mcp.orders.internal")).toMatchObject({ active: true });
    expect(await f.introspect(bound.body.access_token, "https://orders.internal")).toEqual({ active: false });
  });
});

it("keeps no secret in logs (no subject, actor or issued token)", async () => {
  const root = await f.credential("orchestrator", "orders-read", "T-logs");
  const actor = await f.token("subagent");
  const r = await f.exchange({ grant_type: EXCHANGE, subject_token: root.credential.token, subject_token_type: AT_TYPE, actor_token: actor, actor_token_type: JWT_TYPE });
  expect(r.status).toBe(200);
  await waitFor(async () => true);
  const logs = f.b.logs.join("");
  for (const secret of [root.credential.token, actor, r.body.access_token]) expect(logs).not.toContain(secret.split(".")[2]);
});
