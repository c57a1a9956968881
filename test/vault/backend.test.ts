/**
 * The vault backend through node-vault (and the broker's own HTTP transport) against the Vault test server: both role kinds, TTLs,
 * revocation semantics, failures, the broker's own token (login, renewal, re-login), namespace
 * and TLS options. Nothing here waits on a timer except token renewal, which is real time by
 * nature (short TTLs, waited for by condition).
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { BackendError } from "../../src/backends/types";
import { waitFor } from "../support/fixture";
import { startVaultServer, type VaultServerOptions, type VaultTestServer } from "../support/vault-server";
import { expectNoSecrets, startBackend, tempFile, type Harness } from "./helpers";

jest.setTimeout(30_000);

const ENGINES: VaultServerOptions["engines"] = {
  "database/creds/payments-ro": { ttlParam: false, defaultTtl: 3600 },
  "aws/creds/deploy": { ttlParam: true, defaultTtl: 3600, maxTtl: 7200 },
  "secret/static": { ttlParam: false, defaultTtl: 0, leased: false },
};
const TOKEN_ROLES = { "agent-readonly": { allowedPolicies: ["kv-read", "kv-list"], orphan: true } };
const APPROLE = { roleId: "jitbroker-role-id", secretId: "3f1d5c3a-approle-secret-id-value", ttl: 3600, maxTtl: 7200 };

/** Every secret of the harnesses built below, for the final scan of their logs. */
const allLogs: string[] = [];
const allSecrets = new Set<string>();
const harnesses: Harness[] = [];
const servers: VaultTestServer[] = [];

async function setup(serverOpts: VaultServerOptions, vault: Record<string, unknown>, opts: Parameters<typeof startBackend>[2] = {}) {
  const server = await startVaultServer({ engines: ENGINES, tokenRoles: TOKEN_ROLES, ...serverOpts });
  servers.push(server);
  const h = await startBackend(server, vault, opts);
  harnesses.push(h);
  return { server, h };
}

const approleAuth = () => ({ method: "approle", role_id: APPROLE.roleId, secret_id_file: tempFile("secret-id", `${APPROLE.secretId}\n`) });

afterAll(async () => {
  for (const h of harnesses) {
    allLogs.push(...h.logs);
    await h.close();
  }
  for (const s of servers) {
    for (const x of s.secrets()) allSecrets.add(x);
    await s.close();
  }
  // I6: no Vault secret (root token, broker tokens, child tokens, passwords, secret id, login
  // JWTs) in any log line written by any backend of this file.
  const text = allLogs.join("");
  expect(text).toContain("logged in to vault"); // the scan read real log lines
  expect(text).toContain("vault lease already gone");
  expectNoSecrets("backend logs", text, [...allSecrets]);
});

function expectBackendError(e: unknown, retryable: boolean, text: RegExp) {
  expect(e).toBeInstanceOf(BackendError);
  expect((e as BackendError).retryable).toBe(retryable);
  expect((e as BackendError).message).toMatch(text);
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("expected a rejection");
}

describe("path roles (dynamic secrets)", () => {
  let server: VaultTestServer;
  let h: Harness;
  beforeAll(async () => {
    ({ server, h } = await setup({ approle: APPROLE }, { auth: approleAuth() }));
  });

  it("pushes the lease TTL to an engine that takes it, and revokes by lease id", async () => {
    const lease = h.lease("deploy-aws", 600);
    const role = h.cfg.roles.find((r) => r.name === "deploy-aws")!;
    const minted = await h.backend.mint(lease, role);

    const [req] = server.hits("POST", "aws/creds/deploy");
    expect(req!.body).toEqual({ ttl: expect.stringMatching(/^(599|600)s$/) });
    expect(req!.token).toBe(server.loginTokens()[0]);
    const leaseId = minted.handle.lease_id!;
    expect(minted.handle).toEqual({ lease_id: leaseId });
    expect(leaseId.startsWith("aws/creds/deploy/")).toBe(true);
    expect(minted.credential).toEqual({ type: "vault", lease_id: leaseId, lease_duration: Number(String(req!.body.ttl).slice(0, -1)), data: { username: expect.any(String), password: expect.any(String) } });
    // I2: Vault expires it no later than the lease.
    expect(server.leaseInfo(leaseId)!.expiresAt).toBeLessThanOrEqual(Date.parse(lease.expires_at) + 1000);
    expect(minted.backendExpiresAt).toBeUndefined();

    await h.backend.revoke(lease, minted.handle);
    const [rev] = server.hits("PUT", "sys/leases/revoke");
    expect(rev!.body).toEqual({ lease_id: leaseId });
    expect(server.leases()).not.toContain(leaseId);
  });

  it("reads with GET where the engine refuses a ttl (405), and records backend_expires_at when Vault keeps the secret longer (I2)", async () => {
    const role = h.cfg.roles.find((r) => r.name === "payments-db")!;
    const lease = h.lease("payments-db", 600);
    const before = Date.now();
    const minted = await h.backend.mint(lease, role);
    expect(server.hits("POST", "database/creds/payments-ro").map((r) => r.status)).toEqual([405]);
    expect(server.hits("GET", "database/creds/payments-ro").map((r) => r.status)).toEqual([200]);
    // Vault's lease is 3600 s, the broker's 600 s: the lease says so, revocation covers the gap.
    expect(minted.backendExpiresAt!.getTime()).toBeGreaterThanOrEqual(before + 3600_000);
    expect(minted.backendExpiresAt!.getTime()).toBeLessThanOrEqual(Date.now() + 3600_000);
    expect(minted.credential.lease_duration).toBeLessThanOrEqual(600);

    // The engine's answer is remembered: the next mint goes straight to GET.
    await h.backend.mint(h.lease("payments-db", 300), role);
    expect(server.hits("POST", "database/creds/payments-ro")).toHaveLength(1);
    expect(server.hits("GET", "database/creds/payments-ro")).toHaveLength(2);
  });

  it("ttl_param: false reads with GET only; ttl_param: true does not fall back", async () => {
    const getOnly = { name: "db-get", backend: "vault" as const, ttl: { default: 60_000, max: 60_000 }, labels: {}, vault: { path: "database/creds/payments-ro", ttl_param: false } };
    const posts = server.hits("POST", "database/creds/payments-ro").length;
    await h.backend.mint(h.lease("db-get", 60), getOnly);
    expect(server.hits("POST", "database/creds/payments-ro")).toHaveLength(posts);

    const postOnly = { ...getOnly, name: "db-post", vault: { path: "database/creds/payments-ro", ttl_param: true } };
    const e = await rejection(h.backend.mint(h.lease("db-post", 60), postOnly));
    expectBackendError(e, false, /minting db-post: .*vault answered 405 \(unsupported operation\)/);
  });

  it("refuses a path that answers without a lease (a static secret could never be revoked)", async () => {
    const kv = { name: "kv", backend: "vault" as const, ttl: { default: 60_000, max: 60_000 }, labels: {}, vault: { path: "secret/static", ttl_param: false } };
    expectBackendError(await rejection(h.backend.mint(h.lease("kv", 60), kv)), false, /answered without a lease/);
  });

  it("revoking a lease Vault no longer has is success (I4): 204, 400 or 404", async () => {
    const role = h.cfg.roles.find((r) => r.name === "deploy-aws")!;
    for (const status of [204, 400, 404]) {
      const lease = h.lease("deploy-aws", 60);
      const minted = await h.backend.mint(lease, role);
      server.dropLease(minted.handle.lease_id!);
      if (status !== 204) server.fail(status, { match: "sys/leases/revoke", times: 1, errors: status === 400 ? ["invalid lease ID"] : [] });
      await expect(h.backend.revoke(lease, minted.handle)).resolves.toBeUndefined();
      expect(server.hits("PUT", "sys/leases/revoke").at(-1)!.status).toBe(status);
    }
    expect(h.backend.status!().state).toBe("ok");
  });

  it("a lease without a vault handle cannot be revoked", async () => {
    expectBackendError(await rejection(h.backend.revoke(h.lease("deploy-aws"), { jti: "x" })), false, /has no vault handle/);
  });
});

describe("token roles (child tokens)", () => {
  let server: VaultTestServer;
  let h: Harness;
  beforeAll(async () => {
    ({ server, h } = await setup({ approle: APPROLE }, { auth: approleAuth() }));
  });

  it("creates a non-renewable child token that lives exactly as long as the lease, with metadata and policies, and revokes it by accessor", async () => {
    const role = h.cfg.roles.find((r) => r.name === "kv-reader")!;
    const lease = h.lease("kv-reader", 300);
    const minted = await h.backend.mint(lease, role);

    const [req] = server.hits("POST", "auth/token/create/agent-readonly");
    const ttl = req!.body.ttl as string;
    expect(ttl).toMatch(/^(299|300)s$/);
    expect(req!.body).toEqual({
      ttl,
      explicit_max_ttl: ttl,
      renewable: false,
      policies: ["kv-read"],
      meta: { workload: "agent", task: lease.task_id, lease_id: lease.id },
      display_name: "jitbroker-agent",
    });
    const accessor = minted.handle.accessor!;
    expect(minted.handle).toEqual({ accessor }); // never the token (I6)
    const token = server.token(accessor)!;
    expect(minted.credential).toEqual({ type: "vault", data: { token: token.token, accessor, policies: ["default", "kv-read"] }, lease_duration: Number(ttl.slice(0, -1)) });
    expect(token).toMatchObject({ renewable: false, meta: { workload: "agent", task: lease.task_id, lease_id: lease.id }, displayName: "token-jitbroker-agent" });
    expect(token.expiresAt!).toBeLessThanOrEqual(Date.parse(lease.expires_at) + 1000); // I2
    expect(minted.backendExpiresAt).toBeUndefined();

    await h.backend.revoke(lease, minted.handle);
    expect(server.hits("POST", "auth/token/revoke-accessor").map((r) => [r.body, r.status])).toEqual([[{ accessor }, 204]]);
    expect(server.token(accessor)).toBeUndefined();
    // Again: Vault answers 400 "invalid accessor", which is "already gone" (I4).
    await expect(h.backend.revoke(lease, minted.handle)).resolves.toBeUndefined();
    expect(server.hits("POST", "auth/token/revoke-accessor").map((r) => r.status)).toEqual([204, 400]);
  });

  it("a policy the token role does not allow is refused without retry", async () => {
    const role = { ...h.cfg.roles.find((r) => r.name === "kv-reader")!, name: "kv-admin", vault: { token_role: "agent-readonly", policies: ["kv-admin"] } };
    const e = await rejection(h.backend.mint(h.lease("kv-admin", 60), role));
    expectBackendError(e, false, /vault answered 400 \(token policies \(kv-admin\) must be subset/);
  });

  it("a lease that has already expired gets nothing", async () => {
    const role = h.cfg.roles.find((r) => r.name === "kv-reader")!;
    const creates = server.hits("POST", "auth/token/create/agent-readonly").length;
    expectBackendError(await rejection(h.backend.mint(h.lease("kv-reader", 0), role)), false, /expires before a credential could be valid/);
    expect(server.hits("POST", "auth/token/create/agent-readonly")).toHaveLength(creates);
  });
});

describe("failures: retryable errors, sealed and slow Vault", () => {
  let server: VaultTestServer;
  let h: Harness;
  beforeAll(async () => {
    // 1 s per request: every call of these tests but the slow one (answered 5 s later) must fit in
    // it, which 300 ms did not always on a loaded 2-core CI machine (the set-up mint timed out).
    ({ server, h } = await setup({ approle: APPROLE }, { auth: approleAuth(), request_timeout: "1s" }));
  });
  afterEach(() => {
    server.clearFailures();
    server.unseal();
    server.setDelay(0);
  });

  const mintOne = async () => {
    const lease = h.lease("kv-reader", 60);
    return { lease, minted: await h.backend.mint(lease, h.cfg.roles.find((r) => r.name === "kv-reader")!) };
  };

  it("500 and 429 are retryable and leave the credential in place; the backend shows degraded", async () => {
    const { lease, minted } = await mintOne();
    for (const status of [500, 502, 429]) {
      server.fail(status, { match: "auth/token/revoke-accessor", times: 1 });
      expectBackendError(await rejection(h.backend.revoke(lease, minted.handle)), true, new RegExp(`revoking lease ${lease.id}: .*vault answered ${status}`));
      expect(h.backend.status!()).toEqual({ state: "degraded", detail: `vault answered ${status}` });
      expect(await h.metric("jitbroker_vault_up")).toBe(1); // degraded, not down
      expect(server.token(minted.handle.accessor!)).toBeDefined();
    }
    await h.backend.revoke(lease, minted.handle);
    expect(server.token(minted.handle.accessor!)).toBeUndefined();
    expect(h.backend.status!()).toEqual({ state: "ok" });
  });

  it("a Vault that does not answer in time: retryable, and the backend is unavailable until it answers again", async () => {
    const { lease, minted } = await mintOne();
    server.setDelay(5000);
    expectBackendError(await rejection(h.backend.revoke(lease, minted.handle)), true, /did not answer in time/);
    expect(h.backend.status!()).toEqual({ state: "unavailable", detail: "vault does not answer in time" });
    expect(await h.metric("jitbroker_vault_up")).toBe(0);
    server.setDelay(0);
    await h.backend.probe();
    expect(h.backend.status!()).toEqual({ state: "ok" });
    expect(await h.metric("jitbroker_vault_up")).toBe(1);
  });

  it("a sealed Vault: mint and revoke fail retryably, status and jitbroker_vault_up say so; unsealed, the probe restores it", async () => {
    const { lease, minted } = await mintOne();
    server.seal();
    expectBackendError(await rejection(mintOne()), true, /vault is sealed/);
    expectBackendError(await rejection(h.backend.revoke(lease, minted.handle)), true, /vault is sealed/);
    expect(h.backend.status!()).toEqual({ state: "unavailable", detail: "vault is sealed" });
    expect(await h.metric("jitbroker_vault_up")).toBe(0);
    await h.backend.probe(); // sys/health: 503 sealed
    expect(h.backend.status!()).toEqual({ state: "unavailable", detail: "vault is sealed" });
    server.unseal();
    await h.backend.probe();
    expect(h.backend.status!()).toEqual({ state: "ok" });
    await h.backend.revoke(lease, minted.handle);
    expect(server.token(minted.handle.accessor!)).toBeUndefined();
  });

  it("an unreachable Vault is retryable and unavailable", async () => {
    const down = await startVaultServer({ approle: APPROLE });
    const url = down.url;
    await down.close();
    const { h: h2 } = await setup({ approle: APPROLE }, { address: url, auth: approleAuth() });
    expect(h2.backend.status!()).toEqual({ state: "unavailable", detail: expect.stringMatching(/^vault is unreachable \(ECONNREFUSED\)$/) });
    expectBackendError(await rejection(h2.backend.mint(h2.lease("kv-reader", 60), h2.cfg.roles.find((r) => r.name === "kv-reader")!)), true, /vault is unreachable \(ECONNREFUSED\)/);
  });
});

describe("the broker's own token", () => {
  it("approle: logs in with role_id and the secret_id from its file, renews at 2/3 of the TTL, logs in again when Vault says the token is gone", async () => {
    const { server, h } = await setup({ approle: { ...APPROLE, ttl: 6, maxTtl: 600 } }, { auth: approleAuth() });
    const [login] = server.hits("POST", "auth/approle/login");
    expect(login!.body).toEqual({ role_id: APPROLE.roleId, secret_id: APPROLE.secretId });
    expect(login!.token).toBeUndefined();
    const first = server.loginTokens()[0]!;

    // Renewal: renew-self with the token, before it expires (6 s TTL, renewed at ~4 s).
    const renewal = await waitFor(async () => server.hits("POST", "auth/token/renew-self")[0], 10_000, "a renewal");
    expect(renewal.token).toBe(first);
    expect(renewal.status).toBe(200);
    expect(server.hits("POST", "auth/approle/login")).toHaveLength(1);

    // Vault revokes or expires the token: the next call gets 403, checks lookup-self, logs in, retries once.
    server.expireToken(first);
    const role = h.cfg.roles.find((r) => r.name === "kv-reader")!;
    const minted = await h.backend.mint(h.lease("kv-reader", 60), role);
    expect(minted.handle.accessor).toBeDefined();
    const second = server.loginTokens()[1]!;
    expect(second).not.toBe(first);
    const creates = server.hits("POST", "auth/token/create/agent-readonly");
    expect(creates.map((r) => [r.token === first ? "old" : r.token === second ? "new" : "?", r.status])).toEqual([
      ["old", 403],
      ["new", 200],
    ]);
    expect(server.hits("GET", "auth/token/lookup-self").filter((r) => r.token === first).map((r) => r.status)).toContain(403);
    expect(await h.metric("jitbroker_vault_logins_total")).toBe(2);
  });

  it("renewals capped by max_ttl lead to a fresh login before the token expires", async () => {
    const { server } = await setup({ approle: { ...APPROLE, ttl: 3, maxTtl: 4 } }, { auth: approleAuth() });
    await waitFor(async () => server.loginTokens().length >= 2, 15_000, "a second login");
    const renewals = server.hits("POST", "auth/token/renew-self");
    expect(renewals.length).toBeGreaterThanOrEqual(1);
    expect(renewals[0]!.token).toBe(server.loginTokens()[0]);
    // Nothing was ever refused: the new token came before the old one died.
    expect(server.requests.filter((r) => r.status === 403)).toEqual([]);
  });

  it("jwt: logs in with the JWT read from its file at every login, so a rotated token is picked up", async () => {
    const jwts = ["eyJhbGciOiJSUzI1NiJ9.first-login-jwt.c2lnbmF0dXJlLW9uZQ", "eyJhbGciOiJSUzI1NiJ9.second-login-jwt.c2lnbmF0dXJlLXR3bw"];
    const file = tempFile("jwt", jwts[0]!);
    const { server, h } = await setup({ jwt: { mount: "jwt-ci", role: "jitbroker", jwts, ttl: 3600 } }, { auth: { method: "jwt", mount: "jwt-ci", role: "jitbroker", jwt_file: file } });
    expect(server.hits("POST", "auth/jwt-ci/login").map((r) => r.body)).toEqual([{ role: "jitbroker", jwt: jwts[0] }]);
    writeFileSync(file, jwts[1]!);
    server.expireToken(server.loginTokens()[0]!);
    await h.backend.mint(h.lease("deploy-aws", 60), h.cfg.roles.find((r) => r.name === "deploy-aws")!);
    expect(server.hits("POST", "auth/jwt-ci/login").map((r) => [r.body.jwt, r.status])).toEqual([
      [jwts[0], 200],
      [jwts[1], 200],
    ]);
  });

  it("kubernetes: logs in at auth/kubernetes/login with the service account token from its file", async () => {
    const sa = "eyJhbGciOiJSUzI1NiJ9.service-account-token.c2lnbmF0dXJlLXNh";
    const { server, h } = await setup({ kubernetes: { role: "jitbroker", jwts: [sa], ttl: 3600 } }, { auth: { method: "kubernetes", role: "jitbroker", jwt_file: tempFile("token", sa) } });
    expect(server.hits("POST", "auth/kubernetes/login").map((r) => [r.body, r.status])).toEqual([[{ role: "jitbroker", jwt: sa }, 200]]);
    expect(h.backend.status!()).toEqual({ state: "ok" });
  });

  it("a failed login makes the backend unavailable with a reason, and mints fail", async () => {
    const { h } = await setup({ approle: APPROLE }, { auth: { method: "approle", role_id: APPROLE.roleId, secret_id: "wrong-secret-id-0123456789" } });
    // /readyz (unauthenticated) gets the status only; Vault's words are in the log and the error.
    expect(h.backend.status!()).toEqual({ state: "unavailable", detail: "vault login failed (approle): vault answered 400" });
    expect(h.logs.join("")).toContain("vault answered 400 (invalid secret id)");
    expectBackendError(await rejection(h.backend.mint(h.lease("kv-reader", 60), h.cfg.roles.find((r) => r.name === "kv-reader")!)), false, /vault answered 400 \(invalid secret id\)/);
  });

  it("an empty token or an unreadable secret file is reported as such, without asking Vault", async () => {
    const { server, h } = await setup({ approle: APPROLE }, { auth: { method: "token", token: "" } });
    expect(h.backend.status!()).toEqual({ state: "unavailable", detail: "vault login failed (token): backends.vault.auth.token is empty" });
    const missing = await startBackend(server, { auth: { method: "approle", role_id: APPROLE.roleId, secret_id_file: "/nonexistent/secret-id" } });
    harnesses.push(missing);
    expect(missing.backend.status!()).toEqual({ state: "unavailable", detail: "vault login failed (approle): cannot read the approle secret_id file (ENOENT)" });
    expect(missing.logs.join("")).toContain("cannot read the approle secret_id file /nonexistent/secret-id (ENOENT)");
    expect(server.requests).toEqual([]);
  });

  it("a genuine permission denial (a policy) is not taken for an expired token: no login loop", async () => {
    const { server, h } = await setup({ approle: APPROLE }, { auth: approleAuth() });
    server.fail(403, { match: "auth/token/create/agent-readonly", errors: ["permission denied"] });
    const e = await rejection(h.backend.mint(h.lease("kv-reader", 60), h.cfg.roles.find((r) => r.name === "kv-reader")!));
    expectBackendError(e, true, /vault answered 403 \(permission denied\)/);
    expect(server.hits("POST", "auth/approle/login")).toHaveLength(1);
    expect(server.hits("GET", "auth/token/lookup-self").map((r) => r.status)).toEqual([200]);
  });

  it("token: a token file and a namespace; X-Vault-Namespace on every request; an invalid token makes the backend unavailable", async () => {
    const server0 = await startVaultServer({ namespace: "team-a/payments", engines: ENGINES });
    servers.push(server0);
    const tokenFile = tempFile("vault-token", `${server0.rootToken}\n`);
    const h = await startBackend(server0, { namespace: "team-a/payments", auth: { method: "token", token_file: tokenFile } });
    harnesses.push(h);
    const lease = h.lease("deploy-aws", 60);
    const minted = await h.backend.mint(lease, h.cfg.roles.find((r) => r.name === "deploy-aws")!);
    await h.backend.revoke(lease, minted.handle);
    expect(server0.requests.length).toBeGreaterThanOrEqual(3);
    expect(server0.requests.map((r) => [r.namespace, r.token === server0.rootToken, r.status])).toEqual(server0.requests.map(() => ["team-a/payments", true, expect.any(Number)]));
    expect(server0.requests.every((r) => r.status! < 300)).toBe(true);

    // The same with a token Vault does not know: unavailable, and mints fail.
    const bad = await startBackend(server0, { namespace: "team-a/payments", auth: { method: "token", token: "hvs.not-a-known-token-0123456789" } });
    harnesses.push(bad);
    expect(bad.backend.status!()).toEqual({ state: "unavailable", detail: "vault login failed (token): vault answered 403" });
    expectBackendError(await rejection(bad.backend.mint(bad.lease("deploy-aws", 60), bad.cfg.roles.find((r) => r.name === "deploy-aws")!)), true, /403 \(permission denied\)/);
  });
});

describe("TLS", () => {
  let server: VaultTestServer;
  let caFile: string;
  const saved = process.env.VAULT_SKIP_VERIFY;
  beforeAll(async () => {
    // A self-signed certificate for vault.test (the server listens on 127.0.0.1).
    const dir = path.dirname(tempFile("x", ""));
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=vault.test", "-addext", "subjectAltName=DNS:vault.test", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")], { stdio: "ignore" });
    caFile = path.join(dir, "cert.pem");
    server = await startVaultServer({ approle: APPROLE, engines: ENGINES, tls: { key: readFileSync(path.join(dir, "key.pem"), "utf8"), cert: readFileSync(caFile, "utf8") } });
    servers.push(server);
    process.env.VAULT_SKIP_VERIFY = "1"; // node-vault's own switch: the broker must ignore it
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.VAULT_SKIP_VERIFY;
    else process.env.VAULT_SKIP_VERIFY = saved;
  });

  const tryMint = async (tls: Record<string, unknown> | undefined) => {
    const h = await startBackend(server, { auth: approleAuth(), ...(tls ? { tls } : {}) });
    harnesses.push(h);
    try {
      await h.backend.mint(h.lease("deploy-aws", 60), h.cfg.roles.find((r) => r.name === "deploy-aws")!);
      return "ok";
    } catch (e) {
      return (e as Error).message;
    }
  };

  it("verifies Vault's certificate against ca_file for server_name", async () => {
    expect(server.url.startsWith("https://127.0.0.1:")).toBe(true);
    expect(await tryMint({ ca_file: caFile, server_name: "vault.test" })).toBe("ok");
  });

  it("refuses a certificate it cannot verify, whatever VAULT_SKIP_VERIFY says", async () => {
    expect(await tryMint(undefined)).toMatch(/vault is unreachable \((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)\)/);
    expect(await tryMint({ ca_file: caFile, server_name: "other.test" })).toMatch(/vault is unreachable \(ERR_TLS_CERT_ALTNAME_INVALID\)/);
    expect(await tryMint({ ca_file: caFile })).toMatch(/vault is unreachable \(ERR_TLS_CERT_ALTNAME_INVALID\)/); // 127.0.0.1 is not vault.test
  });

  it("insecure_skip_verify: true (explicit) skips verification, with a warning", async () => {
    expect(await tryMint({ insecure_skip_verify: true })).toBe("ok");
    expect(harnesses.at(-1)!.logs.join("")).toContain("vault TLS certificate verification is OFF");
  });
});
