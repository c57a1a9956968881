/**
 * What leaves the vault backend when something fails (I6): error messages (which become
 * `last_error` on the lease in Redis, audit events and log lines) keep Vault's wording but not
 * what looks like a credential; /readyz gets a generic reason only; and paths are built from
 * encoded segments, never with `.`, `..` or empty segments (security review, LOW).
 */
import { Writable } from "node:stream";
import { Registry } from "prom-client";
import { BackendError } from "../../src/backends/types";
import { classify, createVaultSession, encodeVaultPath, vaultErrorText, VaultCallError } from "../../src/backends/vault/client";
import { scrubSecrets } from "../../src/backends/vault/scrub";
import type { VaultBackendConfig } from "../../src/config/schema";
import { createLogger } from "../../src/core/logger";
import { startVaultServer, type VaultTestServer } from "../support/vault-server";
import { expectNoSecrets, startBackend, tempFile, type Harness } from "./helpers";

jest.setTimeout(30_000);

const SECRET_ID = "6a1f0c77-review-secret-id-must-stay-home";
const DB_PASSWORD = "S3cr3tRootPw";
const TOKEN = "hvs.CAESIJq0sQ3mX9aLk2vBn8TzR1yHwE";
const vaultError = (...errors: string[]) => ({ response: { statusCode: 500, body: { errors } } });

describe("Vault's error text in messages", () => {
  it("keeps Vault's wording", () => {
    for (const text of [
      "permission denied",
      "invalid secret id",
      "error validating token: invalid signature",
      "token policies (kv-admin) must be subset of the role's allowed policies",
      'no handler for route "database/creds/payments-ro". route entry not found.',
      "lease database/creds/payments-ro/AbC3dEfGhIjKlMnOpQrStUvW not found",
    ]) {
      expect(scrubSecrets(text)).toBe(text);
    }
    expect(classify({ response: { statusCode: 400, body: { errors: ["invalid secret id"] } } }, "login (approle)").message).toBe("login (approle): vault answered 400 (invalid secret id)");
  });

  it("drops credentials inside URLs and DSNs (a database plugin's connection string)", () => {
    const m = classify(vaultError(`1 error occurred: * error verifying connection: parse "postgres://vault:${DB_PASSWORD}@db:5432/app": invalid port`), "revoke (PUT sys/leases/revoke)").message;
    expect(m).toBe('revoke (PUT sys/leases/revoke): vault answered 500 (1 error occurred: * error verifying connection: parse "postgres://[redacted]@db:5432/app": invalid port)');
    expect(scrubSecrets("postgres://vault:p@ss/w@rd@db:5432/app?sslmode=disable")).toBe("postgres://[redacted]@db:5432/app?sslmode=disable");
    expect(scrubSecrets(`Error 1045: Access denied for user vault:${DB_PASSWORD}@tcp(db:3306)/app`)).toBe("Error 1045: Access denied for user [redacted]@tcp(db:3306)/app");
    expect(scrubSecrets(`host=db user=vault password=${DB_PASSWORD} dbname=app`)).toBe("host=db user=vault password=[redacted] dbname=app");
    expect(scrubSecrets("host=db password='two words' sslmode=require")).toBe("host=db password=[redacted] sslmode=require");
    expect(scrubSecrets(`db_password=${DB_PASSWORD}&x=1`)).toBe("db_password=[redacted]&x=1");
    expect(scrubSecrets(`{"username":"vault","password":"${DB_PASSWORD}"}`)).toBe('{"username":"vault","password":"[redacted]"}');
    expect(scrubSecrets(`{Username:vault Password:${DB_PASSWORD}}`)).toBe("{Username:vault Password:[redacted]}");
  });

  it("drops anything that looks like a Vault token, a JWT, a UUID (secret ids, old tokens) or a long opaque key", () => {
    const text = [
      TOKEN,
      "hvb.AAAAAQJxyz0123456789abcdefghijklmnop",
      "hvr.abcdefghijklmnopqrstuvwx",
      "s.abcdefghijklmnopqrstuvwx",
      "s.abcdefghijklmnopqrstuvwx.nS3cd",
      "b.AAAAAQKn7Mzl0rdpiAq3xS8k2Abc",
      SECRET_ID.replace("review-secret-id-must-stay-home", "5a3c-4b1e-9c3d-0123456789ab"),
      "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
      "Bearer abcdefghijklmnopqrstu",
      "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY1",
      "0123456789abcdef0123456789abcdef01234567",
    ];
    const out = vaultErrorText({ errors: [text.join(" | ")] });
    expect(out).toBe("[redacted] | [redacted] | [redacted] | [redacted] | [redacted] | [redacted] | [redacted] | [redacted] | Bearer [redacted] | [redacted] | [redacted]".slice(0, 300));
  });

  it("scrubs before it cuts (a cut never leaves half a credential unrecognised), and keeps printable characters only", () => {
    const long = `${"x".repeat(290)} postgres://vault:${DB_PASSWORD}@db/app`;
    const out = vaultErrorText({ errors: [long] });
    expect(out).not.toContain(DB_PASSWORD.slice(0, 4));
    expect(out.length).toBeLessThanOrEqual(300);
    expect(vaultErrorText({ errors: ["a\nb\u0000c"] })).toBe("a b c");
  });

  it("never carries the broker's own request (headers with X-Vault-Token, the login body)", () => {
    const networkError = Object.assign(new Error(`connect ECONNREFUSED; X-Vault-Token: ${TOKEN}`), { code: "ECONNREFUSED", config: { headers: { "X-Vault-Token": TOKEN }, data: `{"secret_id":"${SECRET_ID}"}` } });
    const m = classify(networkError, "login (approle)").message;
    expect(m).toBe("login (approle): vault is unreachable (ECONNREFUSED)");
    // An error code is a code, never text.
    expect(classify(Object.assign(new Error("x"), { code: `E ${TOKEN}` }), "x").message).toBe("x: vault is unreachable");
  });

  it("/readyz reasons are generic: state, status, error code", () => {
    expect(classify(vaultError(`postgres://u:${DB_PASSWORD}@db`), "x").reason).toBe("vault answered 500");
    expect(classify({ response: { statusCode: 503, body: { errors: ["Vault is sealed"] } } }, "x").reason).toBe("vault is sealed");
    expect(classify(Object.assign(new Error("t"), { code: "ETIMEDOUT" }), "x").reason).toBe("vault does not answer in time");
    expect(classify(Object.assign(new Error("t"), { code: "ECONNREFUSED" }), "x").reason).toBe("vault is unreachable (ECONNREFUSED)");
    expect(classify({ response: { statusCode: 302, body: "" } }, "x").reason).toBe("vault answered 302 (a redirect, not followed)");
  });
});

describe("Vault paths in URLs", () => {
  it("encodes every segment and keeps a list prefix's trailing / and the broker's query", () => {
    expect(encodeVaultPath("database/creds/payments-ro")).toBe("database/creds/payments-ro");
    expect(encodeVaultPath("auth/token/create/agent@ro")).toBe("auth/token/create/agent%40ro");
    expect(encodeVaultPath("sys/leases/lookup/database/creds/x/?list=true")).toBe("sys/leases/lookup/database/creds/x/?list=true");
    expect(encodeVaultPath("sys/health?standbyok=true")).toBe("sys/health?standbyok=true");
    expect(encodeVaultPath("a/b c/&#x2F;")).toBe("a/b%20c/%26%23x2F%3B"); // node-vault turns a literal &#x2F; into /
  });

  it.each(["auth/token/create/.", "auth/token/create/..", "auth/approle/../../sys/login", "database//creds", "/database/creds", "", "./x"])("refuses %j", (p) => {
    expect(() => encodeVaultPath(p)).toThrow(VaultCallError);
  });
});

describe("through the backend against the Vault test server", () => {
  const APPROLE = { roleId: "jitbroker-role-id", secretId: SECRET_ID, ttl: 3600 };
  let server: VaultTestServer;
  let h: Harness;
  beforeAll(async () => {
    server = await startVaultServer({ approle: APPROLE, engines: { "aws/creds/deploy": { ttlParam: true, defaultTtl: 3600 } }, tokenRoles: { "agent-readonly": { allowedPolicies: ["kv-read"], orphan: true } } });
    h = await startBackend(server, { auth: { method: "approle", role_id: APPROLE.roleId, secret_id_file: tempFile("sid", SECRET_ID) } });
  });
  afterAll(async () => {
    const logs = h.logs.join("");
    await h.close();
    const secrets = [...server.secrets(), DB_PASSWORD, TOKEN];
    await server.close();
    expect(logs).toContain("logged in to vault");
    expectNoSecrets("logs", logs, secrets);
  });

  it("a revocation error keeps Vault's words without the credentials in them; the status says 500 only", async () => {
    const lease = h.lease("deploy-aws", 60);
    const minted = await h.backend.mint(lease, h.cfg.roles.find((r) => r.name === "deploy-aws")!);
    server.fail(500, { match: "sys/leases/revoke", times: 1, errors: [`error verifying connection: parse "postgres://vault:${DB_PASSWORD}@db:5432/app": invalid port`, `token ${TOKEN} rejected`] });
    let e: unknown;
    await h.backend.revoke(lease, minted.handle).catch((x: unknown) => (e = x));
    expect(e).toBeInstanceOf(BackendError);
    expect((e as Error).message).toBe(`revoking lease ${lease.id}: revoke (PUT sys/leases/revoke): vault answered 500 (error verifying connection: parse "postgres://[redacted]@db:5432/app": invalid port; token [redacted] rejected)`);
    expect(h.backend.status!()).toEqual({ state: "degraded", detail: "vault answered 500" });
    await h.backend.revoke(lease, minted.handle);
    expect(h.backend.status!()).toEqual({ state: "ok" });
  });

  it("a token_role or path with a dot segment (a role that skipped config validation) is refused before anything is sent", async () => {
    const before = server.requests.length;
    const kv = h.cfg.roles.find((r) => r.name === "kv-reader")!;
    for (const tokenRole of [".", "..", "a/..", ""]) {
      const e = await h.backend.mint(h.lease("kv-reader", 60), { ...kv, vault: { token_role: tokenRole } }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(BackendError);
      expect((e as BackendError).retryable).toBe(false);
    }
    const deploy = h.cfg.roles.find((r) => r.name === "deploy-aws")!;
    const e = await h.backend.mint(h.lease("deploy-aws", 60), { ...deploy, vault: { path: "aws/creds/../../sys/raw" } }).catch((x: unknown) => x);
    expect((e as Error).message).toBe('minting deploy-aws: mint: refusing the vault path "aws/creds/../../sys/raw": ".." segment');
    expect(server.requests.length).toBe(before);
    expect(h.backend.status!()).toEqual({ state: "ok" }); // a local refusal says nothing about Vault
  });

  it("an auth mount with a dot segment (skipping config validation) never reaches Vault", async () => {
    const before = server.requests.length;
    const session = createVaultSession({
      cfg: { address: server.url, auth: { method: "approle", mount: "approle/../../sys", role_id: APPROLE.roleId, secret_id: SECRET_ID }, health_check_interval: 0 } as unknown as VaultBackendConfig,
      dir: "/tmp",
      logger: createLogger({ level: "silent", destination: new Writable({ write: (_c, _e, cb) => cb() }) }),
      registry: new Registry(),
      now: Date.now,
    });
    session.start();
    await session.ready();
    session.close();
    expect(session.status()).toEqual({ state: "unavailable", detail: "vault login failed (approle): a vault path in the configuration is invalid" });
    expect(server.requests.length).toBe(before);
  });
});
