/**
 * The vault backend inside a real broker (the composition root, the lease service, the BullMQ
 * worker): credentials per task, revocation across a Vault outage, a sealed Vault, periodic
 * reconciliation, and a scan of everything the broker wrote for Vault secrets (I6).
 */
import { getJson } from "../support/broker";
import { createKeyspace } from "../../src/redis/keys";
import { handleRef } from "../../src/leases/handle";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { startVaultServer, type VaultTestServer } from "../support/vault-server";
import { expectNoSecrets, redisContents, tempFile } from "./helpers";

jest.setTimeout(60_000);

const APPROLE = { roleId: "jitbroker-broker-role", secretId: "7c0d1e2f-broker-approle-secret-id", ttl: 3600, maxTtl: 7200 };
const DB = "database/creds/payments-ro";

let server: VaultTestServer;
let f: Fixture;
/** Secrets the broker handed out: none may be stored or logged (I6). */
const handedOut = new Set<string>();
/** Credentials Vault's error text quotes below (a database plugin's connection string, a token). */
const QUOTED = { password: "Pl4ntedDbRootPassw0rd", token: "hvs.CAESIPlantedTokenInAnErrorText0123" };

beforeAll(async () => {
  server = await startVaultServer({
    approle: APPROLE,
    engines: { [DB]: { ttlParam: false, defaultTtl: 3600 } },
    tokenRoles: { "agent-readonly": { allowedPolicies: ["kv-read"], orphan: true } },
  });
  f = await startFixture({
    extra: {
      roles: [
        { name: "payments-db", backend: "vault", ttl: { default: "5m", max: "10m" }, labels: { access: "read", sensitivity: "internal" }, vault: { path: DB } },
        { name: "kv-reader", backend: "vault", ttl: { default: "2m", max: "10m" }, labels: { access: "read", sensitivity: "internal" }, vault: { token_role: "agent-readonly", policies: ["kv-read"] } },
      ],
      backends: {
        vault: {
          address: server.url,
          auth: { method: "approle", role_id: APPROLE.roleId, secret_id_file: tempFile("secret-id", APPROLE.secretId) },
          health_check_interval: "300ms",
          reconcile_interval: "1s",
          reconcile_grace: "1s",
        },
      },
      worker: { sweep_interval: "200ms", sweep_grace: "1s", fail_after: 2, mint_timeout: "2s" },
    },
  });
  await waitFor(async () => server.loginTokens().length > 0, 10_000, "the broker's vault login");
});

afterAll(async () => {
  await f?.close();
  await server?.close();
});

async function request(role: string, task: string) {
  const res = await f.call("POST", "/v1/credentials", "agent", { role, task: { id: task, intent: "read payments" } });
  const cred = res.body?.credential;
  for (const v of [cred?.data?.password, cred?.data?.token]) if (typeof v === "string") handedOut.add(v);
  return res;
}

const leaseState = async (id: string) => (await f.call("GET", `/v1/leases/${id}`, "agent")).body.lease;

it("mints a database credential and a child token for a task, and revokes both at Vault when the task completes", async () => {
  const db = await request("payments-db", "T-1");
  expect(db.status).toBe(201);
  const vaultLease = db.body.credential.lease_id as string;
  expect(db.body.credential).toEqual({ type: "vault", lease_id: vaultLease, lease_duration: expect.any(Number), data: { username: expect.any(String), password: expect.any(String) } });
  expect(db.body.credential.lease_duration).toBeLessThanOrEqual(300);
  // Vault keeps database credentials for its role's TTL (1 h): the lease says so (I2).
  expect(db.body.lease).toMatchObject({ backend: "vault", state: "active", revocation_kind: "revocable" });
  expect(Date.parse(db.body.lease.backend_expires_at) - Date.parse(db.body.lease.expires_at)).toBeGreaterThan(3000_000);
  expect(server.leases()).toContain(vaultLease);

  const tok = await request("kv-reader", "T-1");
  expect(tok.status).toBe(201);
  const accessor = tok.body.credential.data.accessor as string;
  expect(server.token(accessor)!.meta).toEqual({ workload: "agent", task: "T-1", lease_id: tok.body.lease.id });
  expect(tok.body.lease.backend_expires_at).toBeUndefined();
  // Stored compactly (src/leases/handle.ts): the lease id's path through a ref, the accessor as is.
  const sk = createKeyspace(f.b.config.redis.prefix).shardKeys[0]!;
  const path = vaultLease.slice(0, vaultLease.lastIndexOf("/") + 1);
  expect(await f.b.broker.redis.hget(sk.lease(db.body.lease.id), "h")).toBe(`v${handleRef(path)}${vaultLease.slice(path.length)}`);
  expect(await f.b.broker.redis.hget(sk.leasesHandles, handleRef(path))).toBe(path);
  expect(await f.b.broker.redis.hget(sk.lease(tok.body.lease.id), "h")).toBe(`t${accessor}`);

  const done = await f.call("POST", "/v1/tasks/T-1/complete", "agent");
  expect(done.body).toEqual({ task_id: "T-1", revoked: 2 });
  await waitFor(async () => (await leaseState(db.body.lease.id)).state === "revoked" && (await leaseState(tok.body.lease.id)).state === "revoked", 15_000, "both leases revoked");
  expect(server.leases()).not.toContain(vaultLease);
  expect(server.token(accessor)).toBeUndefined();
});

it("a revocation is retried across a Vault outage and completes after it; Vault's error text reaches last_error without the credentials it quotes", async () => {
  const db = await request("payments-db", "T-2");
  expect(db.status).toBe(201);
  const id = db.body.lease.id as string;
  server.fail(500, { match: "sys/leases/revoke", errors: [`internal error: dial "postgres://vault:${QUOTED.password}@db:5432/app" failed`, `token ${QUOTED.token}`] });
  expect((await f.call("DELETE", `/v1/leases/${id}`, "agent")).status).toBe(200);

  // fail_after 2: the lease shows revoke_failed with the last error, and is still retried.
  const failed = await waitFor(async () => {
    const l = await leaseState(id);
    return l.state === "revoke_failed" ? l : null;
  }, 20_000, "revoke_failed");
  expect(failed.last_error).toMatch(/vault answered 500 \(internal error: dial "postgres:\/\/\[redacted\]@db:5432\/app" failed; token \[redacted\]\)/);
  expect(server.leases()).toContain(db.body.credential.lease_id);
  const attempts = server.hits("PUT", "sys/leases/revoke").filter((r) => r.body.lease_id === db.body.credential.lease_id);
  expect(attempts.length).toBeGreaterThanOrEqual(2);
  expect(attempts.every((r) => r.status === 500)).toBe(true);

  server.clearFailures();
  await waitFor(async () => (await leaseState(id)).state === "revoked", 30_000, "revoked after the outage");
  expect(server.leases()).not.toContain(db.body.credential.lease_id);
  // The `revoked` event is appended after the lease is revoked (after FINISH): wait for it.
  const history = await waitFor(async () => {
    const h = await f.call("GET", `/v1/admin/leases/${id}/history`, "alice");
    return (h.body.events as { type: string }[] | undefined)?.some((e) => e.type === "revoked") ? h : null;
  }, 10_000, "the revoked event in the lease's history");
  expect(history.body.events.map((e: { type: string }) => e.type)).toEqual(expect.arrayContaining(["mint", "revocation_requested", "revoke_failed", "revoked"]));
});

it("a sealed Vault: 503 backend_unavailable with nothing minted, /readyz stays ready and shows the backend unavailable; unsealed, it recovers", async () => {
  server.seal();
  const leasesBefore = server.leases();
  const res = await request("payments-db", "T-3");
  expect(res.status).toBe(503);
  expect(res.headers.get("content-type")).toMatch(/application\/problem\+json/);
  expect(res.body.code).toBe("backend_unavailable");
  expect(server.leases()).toEqual(leasesBefore);
  expect(server.requests.filter((r) => r.path === DB).at(-1)!.status).toBe(503);

  const ready = await getJson(`${f.b.url}/readyz`);
  expect(ready.status).toBe(200);
  expect(ready.body.status).toBe("ready");
  expect(ready.body.backends).toEqual(expect.arrayContaining([{ name: "vault", state: "unavailable", detail: "vault is sealed" }]));
  const metrics = (await getJson(`${f.b.url}/metrics`)).body as string;
  expect(metrics).toMatch(/^jitbroker_vault_up 0$/m);

  server.unseal();
  await waitFor(async () => (await getJson(`${f.b.url}/readyz`)).body.backends.find((b: { name: string }) => b.name === "vault")?.state === "ok", 10_000, "vault ok again");
  expect((await getJson(`${f.b.url}/metrics`)).body).toMatch(/^jitbroker_vault_up 1$/m);
  expect((await request("payments-db", "T-3")).status).toBe(201);
});

it("/readyz details stay generic: a redirected health check shows the status, not where it pointed", async () => {
  const vaultCheck = async () => (await getJson(`${f.b.url}/readyz`)).body.backends.find((b: { name: string }) => b.name === "vault");
  server.redirect(() => `http://ops:${QUOTED.password}@10.0.0.9:8200/v1/sys/health`, { match: "sys/health" });
  // One read per try: other Vault calls (reconciliation) succeed meanwhile and may mark it ok again.
  const check = await waitFor(async () => {
    const c = await vaultCheck();
    return c?.state === "unavailable" ? c : null;
  }, 10_000, "vault unavailable");
  expect(check).toEqual({ name: "vault", state: "unavailable", detail: "vault answered 307 (a redirect, not followed)" });
  server.clearFailures();
  await waitFor(async () => (await vaultCheck())?.state === "ok", 10_000, "vault ok again");
});

it("the worker reconciles periodically: an orphan Vault lease is revoked and audited", async () => {
  const orphan = server.addLease(DB, 60_000);
  await waitFor(async () => !server.leases().includes(orphan), 15_000, "the orphan revoked");
  const events = await waitFor(async () => {
    const all = await f.b.broker.audit.range({ count: 10_000 });
    const found = all.filter((e) => e.type === "vault_orphan_revoked" && e.vault_lease_id === orphan);
    return found.length > 0 ? found : null;
  }, 10_000, "the audit event");
  expect(events[0]).toMatchObject({ actor: "system", role: "payments-db", path: DB });
  // Leases the broker knows are never taken for orphans.
  const live = await request("payments-db", "T-4");
  expect(live.status).toBe(201);
  const passes = server.hits("GET", `sys/leases/lookup/${DB}/`).length;
  await waitFor(async () => server.hits("GET", `sys/leases/lookup/${DB}/`).length >= passes + 2, 15_000, "two more passes");
  expect(server.leases()).toContain(live.body.credential.lease_id);
});

it("no Vault secret in Redis, logs or metrics (I6)", async () => {
  const secrets = [...new Set([...server.secrets(), ...handedOut, ...Object.values(QUOTED)])];
  expect(handedOut.size).toBeGreaterThanOrEqual(4);
  const { keys, text, dumps } = await redisContents(f.b.broker.redis, f.b.config.redis.prefix);
  expect(keys).toBeGreaterThan(10);
  expect(text).toContain(`${DB}/`); // Vault lease ids (handles) are there: they are not secret
  expect(text).toMatch(/vault_orphan_revoked/);
  expect(text).toContain("postgres://[redacted]@db:5432/app"); // the scan read the stored errors
  expectNoSecrets("redis", text, secrets);
  for (const d of dumps) expectNoSecrets("redis (DUMP)", d, secrets);
  const logs = f.b.logs.join("");
  expect(logs).toContain("logged in to vault");
  expect(logs).toContain("revocation failed");
  expectNoSecrets("logs", logs, secrets);
  expectNoSecrets("metrics", (await getJson(`${f.b.url}/metrics`)).body as string, secrets);
});
