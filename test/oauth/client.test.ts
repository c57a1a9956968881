/**
 * The TypeScript client's side of delegation: delegate(), onBehalfOf(), and verifyCredential()
 * at a resource server (RFC 8707 binding, JWKS, expiry, introspection of a revoked chain).
 */
import { BrokerClient, CredentialRejectedError, createCredentialVerifier, verifyCredential } from "../../src/client";
import { startDelegationFixture, type DelegationFixture } from "./support";

jest.setTimeout(120_000);

let f: DelegationFixture;
beforeAll(async () => {
  f = await startDelegationFixture();
});
afterAll(async () => {
  await f.close();
});

const client = (who: "orchestrator" | "subagent" | "tool" | "alice") => new BrokerClient({ url: f.b.url, token: () => f.token(who), retry: false });
const A = "https://orders.internal";
const B = "https://mcp.orders.internal";

it("agent -> sub-agent -> tool: delegate(), then the tool's resource server verifies the credential", async () => {
  const orchestrator = client("orchestrator");
  const root = await orchestrator.requestCredential({ role: "orders-read", task: "T-client" });
  const sub = await client("subagent").delegate((root.credential as { token: string }).token, { scope: "orders:read", resource: B, ttl: 120 });
  expect(sub).toMatchObject({ token_type: "Bearer", scope: "orders:read" });
  const tool = await client("tool").delegate(sub.access_token);

  // The MCP server at B accepts it; the API at A refuses it: the credential is bound to B.
  const cred = await verifyCredential(tool.access_token, { broker: f.b.url, resource: B });
  expect(cred).toMatchObject({ sub: "orchestrator", act: { sub: "tool", act: { sub: "subagent" } }, scope: "orders:read", task_id: "T-client", jti: tool.lease_id });
  await expect(verifyCredential(tool.access_token, { broker: f.b.url, resource: A })).rejects.toMatchObject({ reason: "wrong_resource" });

  // With introspection, revoking the root makes the tool's credential fail at once.
  const introspecting = createCredentialVerifier({ broker: f.b.url, resource: B, introspect: client("alice"), introspectionCacheMs: 0 });
  expect((await introspecting.verify(tool.access_token)).jti).toBe(tool.lease_id);
  await orchestrator.revoke(root.lease.id, "done");
  await expect(introspecting.verify(tool.access_token)).rejects.toMatchObject({ reason: "inactive" });
  // Without it, the signature alone still verifies until exp (documented trade-off).
  expect((await verifyCredential(tool.access_token, { broker: f.b.url, resource: B })).jti).toBe(tool.lease_id);
});

it("verifyCredential refuses tampered, foreign, expired and non-broker tokens", async () => {
  const root = await client("orchestrator").requestCredential({ role: "orders-read", task: "T-client-bad" });
  const token = (root.credential as { token: string }).token;
  const [h, p, s] = token.split(".") as [string, string, string];
  const payload = JSON.parse(Buffer.from(p, "base64url").toString());
  const forged = `${h}.${Buffer.from(JSON.stringify({ ...payload, scope: "orders:admin" })).toString("base64url")}.${s}`;
  await expect(verifyCredential(forged, { broker: f.b.url, resource: A })).rejects.toMatchObject({ reason: "bad_signature" });
  const workloadToken = await f.token("tool");
  await expect(verifyCredential(workloadToken, { broker: f.b.url, resource: A })).rejects.toBeInstanceOf(CredentialRejectedError);
  const later = createCredentialVerifier({ broker: f.b.url, resource: A, now: () => Date.now() + 3600_000 });
  await expect(later.verify(token)).rejects.toMatchObject({ reason: "expired" });
  const otherIssuer = createCredentialVerifier({ broker: f.b.url, resource: A, issuer: "https://elsewhere.example" });
  await expect(otherIssuer.verify(token)).rejects.toMatchObject({ reason: "bad_issuer" });
});

it("onBehalfOf() acts for a person in the support group; errors carry the RFC 6749 description", async () => {
  const orchestrator = client("orchestrator");
  const ok = await orchestrator.onBehalfOf(await f.person("pat", { groups: ["support"] }), { role: "orders-write", task: "T-client-obo" });
  const cred = await verifyCredential(ok.access_token, { broker: f.b.url, resource: A });
  expect(cred).toMatchObject({ sub: "pat", act: { sub: "orchestrator" }, scope: "orders:write" });
  await expect(orchestrator.onBehalfOf(await f.person("sam", { groups: ["sales"] }), { role: "orders-write", task: "T-client-obo" })).rejects.toMatchObject({
    code: "policy_denied",
    status: 400,
    detail: expect.stringContaining("policy does not allow orchestrator"),
  });
});
