/**
 * `backends.vault` and `roles[].vault` in the configuration: defaults, every auth method's
 * required fields, clear messages at their own path, and no secret echoed by an error or by
 * `config check`.
 */
import { stringify } from "yaml";
import { describeConfig } from "../../src/cli/describe";
import { vaultTimings } from "../../src/backends/vault/client";
import path from "node:path";
import { ConfigError, loadConfig, parseConfig, type LoadedConfig } from "../../src/config/load";

const TOKEN = "hvs.CAESIJ-very-secret-broker-token-value";
const SECRET_ID = "6a1f0c77-secret-id-never-shown-anywhere";

function load(vault: unknown, roles: unknown[] = [], env: NodeJS.ProcessEnv = {}): LoadedConfig {
  const text = stringify({
    server: { public_url: "https://broker.example.com" },
    identity: { issuers: [{ name: "ci", type: "oidc", issuer: "https://ci.example.com", jwks_uri: "https://ci.example.com/jwks" }] },
    roles,
    backends: vault === undefined ? {} : { vault },
  });
  return parseConfig(text, "/etc/jitbroker/broker.yaml", env);
}

function problems(vault: unknown, roles: unknown[] = [], env: NodeJS.ProcessEnv = {}): string[] {
  try {
    load(vault, roles, env);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

const role = (vault: unknown) => ({ name: "r", backend: "vault", ttl: { default: "5m", max: "10m" }, vault });
const address = "https://vault.example.com:8200";

describe("backends.vault", () => {
  it("fills in defaults for every auth method", () => {
    const token = load({ address, auth: { method: "token", token: "${VAULT_TOKEN}" } }, [], { VAULT_TOKEN: TOKEN }).backends.vault!;
    expect(token).toEqual({ address, auth: { method: "token", token: TOKEN } });
    // The durations' defaults are the backend's.
    expect(vaultTimings(token)).toEqual({ request_timeout: 10_000, health_check_interval: 30_000, reconcile_interval: 300_000, reconcile_grace: 120_000 });
    expect(load({ address, auth: { method: "approle", role_id: "rid", secret_id_file: "/run/secrets/sid" } }).backends.vault!.auth).toEqual({ method: "approle", mount: "approle", role_id: "rid", secret_id_file: "/run/secrets/sid" });
    expect(load({ address, auth: { method: "jwt", role: "broker", jwt_file: "/run/jwt" } }).backends.vault!.auth).toEqual({ method: "jwt", mount: "jwt", role: "broker", jwt_file: "/run/jwt" });
    expect(load({ address, auth: { method: "kubernetes", role: "broker" } }).backends.vault!.auth).toEqual({
      method: "kubernetes",
      mount: "kubernetes",
      role: "broker",
      jwt_file: "/var/run/secrets/kubernetes.io/serviceaccount/token",
    });
    const full = load({
      address,
      namespace: "team-a/payments",
      auth: { method: "approle", mount: "auth-prod/approle", role_id: "rid", secret_id: SECRET_ID },
      tls: { ca_file: "vault-ca.pem", server_name: "vault.internal" },
      request_timeout: "3s",
      reconcile_interval: 0,
      health_check_interval: "0",
    }).backends.vault!;
    expect(full).toMatchObject({ namespace: "team-a/payments", tls: { ca_file: "vault-ca.pem", server_name: "vault.internal", insecure_skip_verify: false }, request_timeout: 3000, reconcile_interval: 0, health_check_interval: 0 });
  });

  it("names every problem at its own path", () => {
    expect(problems({ address, auth: { method: "userpass" } })).toEqual(["backends.vault.auth.method: method must be one of token, approle, jwt, kubernetes"]);
    expect(problems({ address, auth: { method: "token" } })).toEqual(["backends.vault.auth: set exactly one of token or token_file"]);
    expect(problems({ address, auth: { method: "approle", secret_id: SECRET_ID } })).toEqual(["backends.vault.auth.role_id: required"]);
    expect(problems({ address, auth: { method: "approle", role_id: "r" } })).toEqual(["backends.vault.auth: set exactly one of secret_id or secret_id_file"]);
    expect(problems({ address, auth: { method: "jwt", role: "r" } })).toEqual(["backends.vault.auth.jwt_file: required"]);
    expect(problems({ address, auth: { method: "kubernetes" } })).toEqual(["backends.vault.auth.role: required"]);
    expect(problems({ address, auth: { method: "approle", role_id: "r", secret_id: "s", mount: "/approle/" } })).toEqual([
      "backends.vault.auth.mount: must be an auth mount path such as approle (no leading or trailing /)",
    ]);
    // URL normalisation turns a dot segment into another endpoint (auth/<mount>/login).
    for (const mount of ["approle/../../sys", "..", ".", "auth-prod/./approle"]) {
      expect(problems({ address, auth: { method: "approle", role_id: "r", secret_id: "s", mount } })).toEqual(["backends.vault.auth.mount: must not contain . or .. segments"]);
    }
    expect(problems({ address, auth: { method: "jwt", role: "r", jwt_file: "/j", mount: "jwt//ci" } })).toEqual(["backends.vault.auth.mount: must be an auth mount path such as jwt (no leading or trailing /)"]);
    expect(problems({ address, namespace: "team-a/../root", auth: { method: "token", token: "t" } })).toEqual(["backends.vault.namespace: must not contain . or .. segments"]);
    expect(problems({ auth: { method: "token", token: "t" } })).toEqual(["backends.vault.address: required"]);
    expect(problems({ address: "vault.example.com:8200", auth: { method: "token", token: "t" } })).toEqual(["backends.vault.address: must be an https URL (http only for localhost), got \"vault.example.com:8200\""]);
    expect(problems({ address: "not a url", auth: { method: "token", token: "t" } })).toEqual(["backends.vault.address: is not a URL (expected the server address, such as https://vault.example.com:8200)"]);
    expect(problems({ address: "http://vault.internal:8200", auth: { method: "token", token: "t" } })).toEqual([
      'backends.vault.address: must be an https URL (http only for localhost), got "http://vault.internal:8200"',
    ]);
    expect(problems({ address: "https://vault.example.com/v1", auth: { method: "token", token: "t" } })).toEqual([
      "backends.vault.address: must be the server address only, such as https://vault.example.com:8200 (no /v1 path)",
    ]);
    expect(problems({ address: "http://127.0.0.1:8200", auth: { method: "token", token: "t" }, tls: { ca_file: "ca.pem" } })).toEqual(["backends.vault.tls: tls applies to an https address only"]);
    expect(problems({ address, auth: { method: "token", token: "t" }, tls: { ca_file: "ca.pem", insecure_skip_verify: true } })).toEqual([
      "backends.vault.tls.insecure_skip_verify: insecure_skip_verify: true ignores ca_file and server_name; remove them or verify the certificate",
    ]);
    expect(problems({ address, auth: { method: "token", token: "t" }, tls: { insecure_skip_verify: "yes" } })).toEqual(["backends.vault.tls.insecure_skip_verify: Invalid input: expected boolean, received string"]);
    expect(problems({ address, auth: { method: "token", token: "t" }, reconcile_interval: "5 minutes" })).toHaveLength(1);
    expect(problems({ address, auth: { method: "token", token: "t" }, tokn: "x" })).toEqual(["backends.vault.tokn: unknown key (check the spelling)"]);
  });

  it("never echoes a secret in a problem", () => {
    // Credentials in the address: refused, and the address is not repeated.
    for (const a of [`https://broker:${SECRET_ID}@vault.example.com:8200`, `http://broker:${SECRET_ID}@vault.internal`]) {
      expect(problems({ address: a, auth: { method: "token", token: "t" } })).toEqual(["backends.vault.address: must not contain credentials (user:password@): the broker authenticates with backends.vault.auth"]);
    }
    const all = [
      ...problems({ address: "http://vault.internal", auth: { method: "token", token: TOKEN, secret: TOKEN } }),
      ...problems({ address, auth: { method: "approle", role_id: 42, secret_id: SECRET_ID, secret_id_file: "/x" } }),
      ...problems({ address, auth: { method: "token", token: TOKEN, token_file: "/t" } }),
      ...problems({ address, auth: { method: "token", token: 12345678 } }),
    ];
    expect(all.length).toBeGreaterThanOrEqual(4);
    const text = all.join("\n");
    expect(text).not.toContain(TOKEN);
    expect(text).not.toContain(SECRET_ID);
    expect(text).not.toContain("12345678");
  });

  it("a vault role needs backends.vault; an unset ${VAR} is reported", () => {
    expect(problems(undefined, [role({ path: "database/creds/x" })])).toEqual(["roles[0].backend: backend vault is used but backends.vault is not configured"]);
    expect(problems({ address, auth: { method: "token", token: "${VAULT_TOKEN}" } })).toEqual(["backends.vault.auth.token: environment variable VAULT_TOKEN is not set"]);
  });

  it("config check describes the backend without its secrets", () => {
    const inline = describeConfig(load({ address, namespace: "ns1", auth: { method: "token", token: TOKEN } }));
    expect(inline).toContain(`vault: ${address}, namespace ns1, auth token (inline)`);
    const approle = describeConfig(load({ address, auth: { method: "approle", role_id: "broker-role", secret_id: SECRET_ID }, tls: { ca_file: "/etc/ssl/vault-ca.pem" } }));
    expect(approle).toContain(`vault: ${address}, auth approle at auth/approle (role_id broker-role, secret_id inline), CA /etc/ssl/vault-ca.pem`);
    const k8s = describeConfig(load({ address, auth: { method: "kubernetes", role: "broker" }, tls: { insecure_skip_verify: true } }));
    expect(k8s).toContain("auth kubernetes at auth/kubernetes (role broker, JWT from /var/run/secrets/kubernetes.io/serviceaccount/token), TLS verification OFF");
    for (const out of [inline, approle, k8s]) {
      expect(out).not.toContain(TOKEN);
      expect(out).not.toContain(SECRET_ID);
    }
  });
});

describe("roles[].vault", () => {
  const vault = { address, auth: { method: "token", token: "t" } };

  it("accepts a path (with ttl_param) or a token_role (with policies)", () => {
    const cfg = load(vault, [role({ path: "database/creds/payments-ro" }), { ...role({ path: "aws/creds/deploy", ttl_param: true }), name: "r2" }, { ...role({ token_role: "agent-readonly", policies: ["kv-read"] }), name: "r3" }]);
    expect(cfg.roles.map((r) => r.vault)).toEqual([{ path: "database/creds/payments-ro" }, { path: "aws/creds/deploy", ttl_param: true }, { token_role: "agent-readonly", policies: ["kv-read"] }]);
  });

  it("refuses what cannot work, with the reason", () => {
    expect(problems(vault, [role({})])).toEqual(["roles[0].vault: set exactly one of path (a dynamic secret) or token_role (a child token)"]);
    expect(problems(vault, [role({ path: "database/creds/x", token_role: "t" })])).toEqual(["roles[0].vault: set exactly one of path (a dynamic secret) or token_role (a child token)"]);
    expect(problems(vault, [role({ path: "/v1/database/creds/x" })])).toEqual([
      "roles[0].vault.path: must be a Vault path such as database/creds/payments-ro (no leading or trailing /, no v1/ prefix)",
    ]);
    expect(problems(vault, [role({ path: "database/../sys/raw" })])).toEqual(["roles[0].vault.path: must not contain . or .. segments"]);
    expect(problems(vault, [role({ path: "database/creds/../../sys/raw" })])).toEqual(["roles[0].vault.path: must not contain . or .. segments"]);
    expect(problems(vault, [role({ path: "database/creds/." })])).toEqual(["roles[0].vault.path: must not contain . or .. segments"]);
    expect(problems(vault, [role({ path: "database//creds" })])).toEqual(["roles[0].vault.path: must be a Vault path such as database/creds/payments-ro (no leading or trailing /, no v1/ prefix)"]);
    // auth/token/create/. is auth/token/create/ once normalised: a child of the broker's own token.
    for (const tokenRole of [".", ".."]) {
      expect(problems(vault, [role({ token_role: tokenRole })])).toEqual([`roles[0].vault.token_role: must not be "." or ".." (auth/token/create/. is auth/token/create/, a child of the broker's own token)`]);
    }
    expect(problems(vault, [role({ token_role: "agent.readonly" })])).toEqual([]); // a dot inside a name is fine
    expect(problems(vault, [role({ path: "database/creds/x?list=true" })])).toHaveLength(1);
    expect(problems(vault, [role({ path: "database/creds/x", policies: ["p"] })])).toEqual(["roles[0].vault.policies: policies apply to token_role only"]);
    expect(problems(vault, [role({ token_role: "t", ttl_param: false })])).toEqual(["roles[0].vault.ttl_param: ttl_param applies to path only"]);
    expect(problems(vault, [role({ token_role: "a/b" })])).toEqual(["roles[0].vault.token_role: must be a Vault token role name (1-128 of [A-Za-z0-9_.-])"]);
    expect(problems(vault, [role({ token_role: "t", policies: [] })])).toHaveLength(1);
  });
});

describe("config/examples/vault.yaml", () => {
  const file = path.resolve(__dirname, "../../config/examples/vault.yaml");

  it("is a valid configuration once VAULT_SECRET_ID is set", () => {
    const cfg = loadConfig(file, { VAULT_SECRET_ID: SECRET_ID });
    expect(cfg.backends.vault!.auth).toEqual({ method: "approle", mount: "approle", role_id: "jitbroker-dev", secret_id: SECRET_ID });
    expect(cfg.roles.map((r) => [r.name, r.vault])).toEqual([
      ["payments-db", { path: "database/creds/payments-ro" }],
      ["kv-reader", { token_role: "jitbroker-agent", policies: ["kv-read"] }],
    ]);
    expect(describeConfig(cfg)).not.toContain(SECRET_ID);
  });

  it("says which variable is missing", () => {
    expect(() => loadConfig(file, {})).toThrow(/^[^\n]*vault\.yaml: backends\.vault\.auth\.secret_id: environment variable VAULT_SECRET_ID is not set$/);
  });
});
