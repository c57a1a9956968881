/**
 * Redirects are never followed (security review, MEDIUM): a 3xx from the configured Vault address
 * (a standby without request forwarding, a proxy, an attacker in the path) must not carry the
 * AppRole secret_id, a login JWT or the broker's token anywhere else, including from https to
 * plain http. Every 3xx is an error that says what happened, without a secret.
 *
 * Set-up: the Vault test server answers matching requests with a redirect; a second server
 * ("elsewhere") records whatever reaches it and would happily answer with a token.
 */
import { execFileSync } from "node:child_process";
import type http from "node:http";
import { readFileSync } from "node:fs";
import path from "node:path";
import { Writable } from "node:stream";
import { Registry } from "prom-client";
import { BackendError } from "../../src/backends/types";
import { createVaultSession } from "../../src/backends/vault/client";
import type { VaultBackendConfig } from "../../src/config/schema";
import { createLogger } from "../../src/core/logger";
import { startRecordingServer } from "../support/http-server";
import { startVaultServer, type VaultServerOptions, type VaultTestServer } from "../support/vault-server";
import { expectNoSecrets, startBackend, tempFile, type Harness } from "./helpers";

jest.setTimeout(30_000);

const APPROLE = { roleId: "jitbroker-role-id", secretId: "6a1f0c77-redirect-secret-id-must-stay-home", ttl: 3600 };
const ENGINES: VaultServerOptions["engines"] = { "aws/creds/deploy": { ttlParam: true, defaultTtl: 3600 } };
const TOKEN_ROLES = { "agent-readonly": { allowedPolicies: ["kv-read"], orphan: true } };

type Seen = { method: string; url: string; headers: http.IncomingHttpHeaders; body: string };
const seen: Seen[] = [];
let elsewhere: Awaited<ReturnType<typeof startRecordingServer>>;
const servers: VaultTestServer[] = [];
const harnesses: Harness[] = [];

beforeAll(async () => {
  elsewhere = await startRecordingServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString() });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ auth: { client_token: "hvs.from-elsewhere-0123456789abcdef", accessor: "acc", lease_duration: 3600, renewable: true }, lease_id: "x/y", data: { keys: [], sealed: false, initialized: true } }));
    });
  });
});

afterAll(async () => {
  const logs: string[] = [];
  const secrets = new Set<string>([APPROLE.secretId]);
  for (const h of harnesses) {
    logs.push(...h.logs);
    await h.close();
  }
  for (const s of servers) {
    for (const x of s.secrets()) secrets.add(x);
    await s.close();
  }
  await elsewhere.close();
  // I6: nothing reached the other host, and no secret is in any log line.
  expect(seen).toEqual([]);
  expect(logs.join("")).toContain("never follows redirects");
  expectNoSecrets("logs", logs.join(""), [...secrets]);
});

async function setup(vault: Record<string, unknown> = {}, serverOpts: VaultServerOptions = {}) {
  const server = await startVaultServer({ approle: APPROLE, engines: ENGINES, tokenRoles: TOKEN_ROLES, ...serverOpts });
  servers.push(server);
  const auth = { method: "approle", role_id: APPROLE.roleId, secret_id_file: tempFile("secret-id", APPROLE.secretId) };
  return { server, start: async () => {
    const h = await startBackend(server, { auth, ...vault });
    harnesses.push(h);
    return h;
  } };
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected a rejection");
}

const role = (h: Harness, name: string) => h.cfg.roles.find((r) => r.name === name)!;

it("a Vault that redirects everything elsewhere: nothing reaches the other host (the review's case, through the session)", async () => {
  const server = await startVaultServer({ approle: APPROLE, engines: ENGINES });
  servers.push(server);
  server.redirect(elsewhere.url);
  const logs: string[] = [];
  const session = createVaultSession({
    cfg: { address: server.url, auth: { method: "approle", mount: "approle", role_id: APPROLE.roleId, secret_id: APPROLE.secretId }, health_check_interval: 0, reconcile_interval: 0 } as unknown as VaultBackendConfig,
    dir: "/tmp",
    logger: createLogger({ level: "debug", destination: new Writable({ write: (c: Buffer, _e, cb) => (logs.push(c.toString()), cb()) }) }),
    registry: new Registry(),
    now: Date.now,
  });
  session.start();
  await session.ready();
  const e = await rejection(session.call("mint", "POST", "aws/creds/deploy", { ttl: "60s" }));
  await session.probe();
  session.close();
  expect(e.message).toMatch(/^login \(POST auth\/approle\/login\): vault answered 307 \(a redirect to http:\/\/127\.0\.0\.1:\d+\); the broker never follows redirects/);
  expect(session.status()).toEqual({ state: "unavailable", detail: "vault answered 307 (a redirect, not followed)" });
  expect(server.hits("POST", "auth/approle/login").map((r) => r.status)).toEqual([307, 307]);
  expect(seen).toEqual([]);
  expectNoSecrets("session logs", logs.join(""), [APPROLE.secretId]);
});

it("a redirected login: the secret_id stays home, the login fails with a clear message, the backend is unavailable and mints fail", async () => {
  const { server, start } = await setup();
  server.redirect(elsewhere.url, { match: "auth/approle/login" });
  const h = await start();
  expect(h.backend.status!()).toEqual({ state: "unavailable", detail: "vault login failed (approle): vault answered 307 (a redirect, not followed)" });
  const e = await rejection(h.backend.mint(h.lease("kv-reader", 60), role(h, "kv-reader")));
  expect(e).toBeInstanceOf(BackendError);
  expect((e as BackendError).retryable).toBe(true); // an operator fixes the address; a mint answers 503 either way
  expect(e.message).toMatch(/vault answered 307 \(a redirect to http:\/\/127\.0\.0\.1:\d+\); the broker never follows redirects: set backends\.vault\.address/);
  expect(seen).toEqual([]);

  // Once Vault stops redirecting, the next call logs in.
  server.clearFailures();
  await h.backend.probe();
  expect(h.backend.status!()).toEqual({ state: "ok" });
});

it.each([301, 302, 303, 307, 308])("%i on an authenticated call (mint, revoke): the broker's token is not sent elsewhere; nothing is minted", async (status) => {
  const { server, start } = await setup();
  const h = await start();
  const kv = role(h, "kv-reader");
  const lease = h.lease("kv-reader", 60);
  const minted = await h.backend.mint(lease, kv);

  server.redirect(elsewhere.url, { match: /^auth\/token\/(create|revoke-accessor)/, status });
  const mint = await rejection(h.backend.mint(h.lease("kv-reader", 60), kv));
  expect(mint.message).toMatch(new RegExp(`minting kv-reader: mint \\(POST auth/token/create/agent-readonly\\): vault answered ${status} \\(a redirect to http://127\\.0\\.0\\.1:\\d+\\)`));
  const revoke = await rejection(h.backend.revoke(lease, minted.handle));
  expect(revoke).toBeInstanceOf(BackendError);
  expect((revoke as BackendError).retryable).toBe(true); // revocations keep being retried
  expect(server.token(minted.handle.accessor!)).toBeDefined();
  expect(h.backend.status!()).toEqual({ state: "unavailable", detail: `vault answered ${status} (a redirect, not followed)` });
  // No 403 dance either: a redirect is not taken for an expired token.
  expect(server.hits("POST", "auth/approle/login")).toHaveLength(1);
  expect(seen).toEqual([]);

  server.clearFailures();
  await h.backend.revoke(lease, minted.handle);
  expect(server.token(minted.handle.accessor!)).toBeUndefined();
});

it("a redirect whose Location carries credentials or another scheme: the message names the origin only", async () => {
  const { server, start } = await setup();
  const h = await start();
  server.redirect(() => "http://admin:hunter2-redirect-pw@127.0.0.1:1/v1/x?token=hvs.abcdefghijklmnopqrstuvwx", { match: "aws/creds/deploy", times: 1 });
  const e = await rejection(h.backend.mint(h.lease("deploy-aws", 60), role(h, "deploy-aws")));
  expect(e.message).toContain("vault answered 307 (a redirect to http://127.0.0.1:1)");
  expect(e.message).not.toMatch(/hunter2|admin|hvs\.|\/v1\/x/);
  server.redirect(() => "file:///etc/passwd", { match: "aws/creds/deploy", times: 1 });
  expect((await rejection(h.backend.mint(h.lease("deploy-aws", 60), role(h, "deploy-aws")))).message).toContain("(a redirect to file://…)");
  server.redirect(() => "", { match: "aws/creds/deploy", times: 1, status: 302 });
  expect((await rejection(h.backend.mint(h.lease("deploy-aws", 60), role(h, "deploy-aws")))).message).toMatch(/vault answered 302 \(a redirect\); the broker never follows/);
});

it("a redirected health check makes the backend unavailable until Vault answers itself again", async () => {
  const { server, start } = await setup();
  const h = await start();
  server.redirect(elsewhere.url, { match: "sys/health" });
  await h.backend.probe();
  expect(h.backend.status!()).toEqual({ state: "unavailable", detail: "vault answered 307 (a redirect, not followed)" });
  expect(await h.metric("jitbroker_vault_up")).toBe(0);
  server.clearFailures();
  await h.backend.probe();
  expect(h.backend.status!()).toEqual({ state: "ok" });
});

it("https to plain http: a redirect from a TLS Vault to an http host is not followed either", async () => {
  const dir = path.dirname(tempFile("x", ""));
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=vault.test", "-addext", "subjectAltName=DNS:vault.test", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")], { stdio: "ignore" });
  const { server, start } = await setup({ tls: { ca_file: path.join(dir, "cert.pem"), server_name: "vault.test" } }, { tls: { key: readFileSync(path.join(dir, "key.pem"), "utf8"), cert: readFileSync(path.join(dir, "cert.pem"), "utf8") } });
  expect(server.url.startsWith("https://")).toBe(true);
  const h = await start();
  expect(h.backend.status!()).toEqual({ state: "ok" });
  server.redirect(elsewhere.url, { match: "auth/token/create/agent-readonly", status: 308 });
  const e = await rejection(h.backend.mint(h.lease("kv-reader", 60), role(h, "kv-reader")));
  expect(e.message).toMatch(/vault answered 308 \(a redirect to http:\/\/127\.0\.0\.1:\d+\)/);
  expect(seen).toEqual([]);
  // ...and a redirected login (the secret_id in the body) neither.
  server.clearFailures();
  server.redirect(elsewhere.url, { match: "auth/approle/login" });
  server.expireToken(server.loginTokens()[0]!);
  expect((await rejection(h.backend.mint(h.lease("kv-reader", 60), role(h, "kv-reader")))).message).toMatch(/vault answered 307 \(a redirect/);
  expect(seen).toEqual([]);
});
