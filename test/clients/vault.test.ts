/**
 * `jitbroker exchange --format env` with the real vault backend (a broker against the Vault test
 * server): a dynamic secret becomes its fields (JITBROKER_SECRET_USERNAME, JITBROKER_SECRET_PASSWORD), a child token becomes
 * VAULT_TOKEN, and what a shell evals is exactly what Vault handed out. The credentials also
 * match the documented OpenAPI schema. Runs dist/: `npm run build` first.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import Ajv2020 from "ajv/dist/2020";
import addFormats from "ajv-formats";
import { getJson } from "../support/broker";
import { startFixture, type Fixture } from "../support/fixture";
import { startVaultServer, type VaultTestServer } from "../support/vault-server";

jest.setTimeout(60_000);

const ROOT = path.resolve(__dirname, "../..");
const CLI = path.join(ROOT, "dist/cli/main.js");
const DB = "database/creds/payments-ro";

let server: VaultTestServer;
let f: Fixture;
let tmp: string;

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), "jit-cli-vault-"));
  server = await startVaultServer({ engines: { [DB]: { ttlParam: false, defaultTtl: 3600 } }, tokenRoles: { "agent-readonly": { allowedPolicies: ["kv-read"], orphan: true } } });
  const rootFile = path.join(tmp, "vault-token");
  writeFileSync(rootFile, server.rootToken);
  f = await startFixture({
    extra: {
      roles: [
        { name: "payments-db", backend: "vault", ttl: { default: "5m", max: "10m" }, labels: { access: "read", sensitivity: "internal" }, vault: { path: DB } },
        { name: "kv-reader", backend: "vault", ttl: { default: "2m", max: "10m" }, labels: { access: "read", sensitivity: "internal" }, vault: { token_role: "agent-readonly", policies: ["kv-read"] } },
      ],
      backends: { vault: { address: server.url, auth: { method: "token", token_file: rootFile } } },
    },
  });
});
afterAll(async () => {
  await f?.close();
  await server?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Runs `exchange --format env` for the agent, evals it in bash and prints the named variables. */
async function evalExchange(role: string, task: string, names: string[]): Promise<Record<string, string>> {
  const file = path.join(tmp, `agent-${task}`);
  writeFileSync(file, await f.token("agent"));
  const script = `set -e; out="$("${process.execPath}" "${CLI}" exchange --token-file "${file}" --role ${role} --task ${task} --intent read --format env)"; eval "$out"; printf '%s\\n' "$out" | sed 's/=.*//' | tr '\\n' ' '; printf '\\0'; printf '%s\\0' ${names.map((n) => `"\${${n}:-}"`).join(" ")}`;
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile("bash", ["-c", script], { env: { PATH: process.env.PATH, JITBROKER_URL: f.b.url } }, (err, out, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(out))),
  );
  const [exported, ...values] = stdout.split("\0");
  return { _exported: exported!.trim(), ...Object.fromEntries(names.map((n, i) => [n, values[i]!])) };
}

it("a dynamic secret: its fields as variables, exactly as Vault issued them", async () => {
  const v = await evalExchange("payments-db", "vault-env-1", ["JITBROKER_SECRET_USERNAME", "JITBROKER_SECRET_PASSWORD", "JITBROKER_LEASE_ID", "VAULT_TOKEN"]);
  expect(v._exported).toBe("export JITBROKER_SECRET_USERNAME export JITBROKER_SECRET_PASSWORD export JITBROKER_LEASE_ID export JITBROKER_EXPIRES_AT");
  expect(v.JITBROKER_SECRET_USERNAME).toMatch(/^v-jit-/);
  expect(server.secrets()).toContain(v.JITBROKER_SECRET_PASSWORD);
  const lease = (await f.call("GET", `/v1/leases/${v.JITBROKER_LEASE_ID}`, "agent")).body.lease;
  expect(lease).toMatchObject({ backend: "vault", role: "payments-db", state: "active" });
});

it("a child token: VAULT_TOKEN, a token Vault knows", async () => {
  const v = await evalExchange("kv-reader", "vault-env-2", ["VAULT_TOKEN", "TOKEN", "ACCESSOR", "JITBROKER_LEASE_ID"]);
  expect(v._exported).toBe("export VAULT_TOKEN export JITBROKER_LEASE_ID export JITBROKER_EXPIRES_AT");
  expect(v.TOKEN).toBe("");
  expect(server.secrets()).toContain(v.VAULT_TOKEN);
});

it("vault credentials match the documented schema", async () => {
  const doc = (await getJson(`${f.b.url}/openapi.json`)).body as Record<string, unknown>;
  const ajv = new Ajv2020({ strict: false });
  addFormats(ajv);
  ajv.addSchema({ ...doc, $id: "https://jitbroker.test/openapi.json" });
  const validate = ajv.getSchema("https://jitbroker.test/openapi.json#/components/schemas/CredentialGrant")!;
  for (const role of ["payments-db", "kv-reader"]) {
    const r = await f.call("POST", "/v1/credentials", "agent", { role, task: { id: `vault-doc-${role}`, intent: "read" } });
    expect(r.status).toBe(201);
    expect({ role, valid: validate(r.body), errors: ajv.errorsText(validate.errors) }).toEqual({ role, valid: true, errors: "No errors" });
  }
});
