/**
 * The `jitbroker` binary (docs/ARCHITECTURE.md, Feature folders) as a user runs it: child processes of
 * `node dist/cli/main.js`, exit codes 0 / 2, what lands on stdout and stderr.
 * `scripts/test` builds dist/ before jest; run `npm run build` first when calling jest directly.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from "jose";
import { parseConfig } from "../../src/config/load";
import { devConfigYaml } from "../../src/dev/config";
import { MINIMAL_CONFIG } from "../support/configs";
import { loadOrCreateSigningKeys } from "../../src/backends/jwt/keys";
import { DEV_OIDC_ISSUER, DEV_TRUST_DOMAIN, ensureDevIssuer } from "../../src/dev/issuer";
import { CLI, ROOT, lines, runCli } from "../support/cli";


// Each run is a fresh Node process loading the whole CLI: about a second on a quiet machine,
// several on a loaded 2-core CI machine, and a test here runs up to 5 of them one after the other.
// One timeout for the file (jest.setTimeout applies to the whole file, whichever describe calls
// it; the 60 s set in two describes below applied to every test); each run keeps its own 20 s.
jest.setTimeout(120_000);

const run = (args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}) => runCli(args, { ...opts, timeoutMs: 20_000 });


const MINIMAL = `${MINIMAL_CONFIG.trimStart()}workloads:
  - { id: builder, kind: ci, owner: "o@example.com", purpose: "builds", issuer: ci, subject: "repo:acme/app" }
policy:
  files: [${JSON.stringify(path.join(ROOT, "config/policies/*.cedar"))}]
`;

const BROKEN = `server:
  listen: "not-a-listen"
  public_url: "https://broker.example.com"
identity:
  issuers:
    - { name: ci, type: oidc, issuer: "https://ci.example.com", discovery: true, algorithms: ["none"] }
    - { name: other, type: oidc, issuer: "https://other.example.com", jwks_uri: "http://keys.example.com/jwks" }
    - { name: mesh, type: spiffe, trust_domain: prod.example.org }
workloads:
  - { id: w, kind: ci, owner: o, purpose: p, issuer: nosuch }
  - { id: w, kind: ci, owner: o, purpose: p, issuer: ci }
roles:
  - { name: r, backend: vault, ttl: { default: "1h", max: "5m" }, vault: { path: "x" } }
`;

let tmp: string;

beforeAll(() => {
  if (!existsSync(CLI)) {
    throw new Error(`${CLI} does not exist: build first (npm run build, or run the suite with ./scripts/test)`);
  }
  tmp = mkdtempSync(path.join(os.tmpdir(), "jit-cli-"));
});

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe("config check", () => {
  it("accepts config/broker.yaml and prints the issuers, workloads and roles it understood", async () => {
    const r = await run(["config", "check", "--config", "config/broker.yaml"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const out = lines(r.stdout);
    expect(out[0]).toBe("config/broker.yaml: OK");

    // Whatever the example grows into, everything it defines is listed, under exact counts.
    const cfg = parseConfig(readFileSync(path.join(ROOT, "config/broker.yaml"), "utf8"), path.join(ROOT, "config/broker.yaml"), {});
    const section = (title: string, n: number) => {
      const start = out.indexOf(`${title} (${n}):`);
      expect(start).toBeGreaterThan(0);
      return out.slice(start + 1, start + 1 + n);
    };
    const issuerRows = section("issuers", cfg.identity.issuers.length);
    expect(issuerRows.map((l) => l.trim().split(/\s+/).slice(0, 2))).toEqual(cfg.identity.issuers.map((i) => [i.name, i.type]));
    const workloadRows = section("workloads", cfg.workloads.length);
    expect(workloadRows.map((l) => l.trim().split(/\s+/).slice(0, 3))).toEqual(cfg.workloads.map((w) => [w.id, w.kind, w.issuer]));
    const roleRows = section("roles", cfg.roles.length);
    expect(roleRows.map((l) => l.trim().split(/\s+/).slice(0, 2))).toEqual(cfg.roles.map((x) => [x.name, x.backend]));

    // The entries of the example as committed.
    expect(out).toContain("server: listen 127.0.0.1:8080, public_url http://127.0.0.1:8080, audience jitbroker");
    expect(out).toContain("redis: embedded (data in .jitbroker/redis), prefix jit");
    expect(issuerRows.find((l) => /^\s+github\s/.test(l))).toMatch(/^\s+github\s+oidc\s+https:\/\/token\.actions\.githubusercontent\.com\s+discovery\s+RS256$/);
    expect(issuerRows.find((l) => /^\s+mesh\s/.test(l))).toMatch(/^\s+mesh\s+spiffe\s+spiffe:\/\/prod\.example\.org\s+bundle_url https:\/\/spire\.prod\.example\.org\/bundle\s+RS256,ES256$/);
    expect(workloadRows.find((l) => /^\s+payments-deployer\s/.test(l))).toMatch(
      /^\s+payments-deployer\s+ci\s+github\s+repo:acme\/payments:ref:refs\/heads\/main\s+repository_id=912345 repository_owner_id=4242 ref=refs\/heads\/main\s+platform-team@example\.com$/,
    );
    expect(workloadRows.find((l) => /^\s+support-agent\s/.test(l))).toMatch(/^\s+support-agent\s+agent\s+mesh\s+spiffe:\/\/prod\.example\.org\/agents\/support\s+alice@example\.com$/);
    expect(roleRows.find((l) => /^\s+orders-read\s/.test(l))).toMatch(/^\s+orders-read\s+jwt\s+ttl 5m \(max 15m\)\s+sensitivity=internal access=read$/);
  });

  it("exits 2 on a broken file and prints every problem with its path on stderr", async () => {
    const file = path.join(tmp, "broken.yaml");
    writeFileSync(file, BROKEN);
    const r = await run(["config", "check", "--config", file]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    const err = lines(r.stderr);
    expect(err[0]).toBe(`${file}: 8 problems`);
    expect(err.slice(1, 9).map((l) => l.trim().slice(0, l.trim().indexOf(": "))).sort()).toEqual(
      [
        "server.listen",
        "identity.issuers[0].algorithms[0]",
        "identity.issuers[1].jwks_uri",
        "identity.issuers[2]",
        "workloads[0].issuer",
        "workloads[1].id",
        "roles[0].ttl",
        "roles[0].backend",
      ]
        .sort(),
    );
    expect(err).toContain('  identity.issuers[1].jwks_uri: must be an https URL (http only for localhost), got "http://keys.example.com/jwks"');
    expect(err).toContain('  workloads[0].issuer: unknown issuer "nosuch" (known: ci, other, mesh)');
    expect(err[err.length - 1]).toBe("jitbroker: configuration has 8 problems");
  });

  it("fails (exit 2) on a policy pattern that matches no file, and on key files without a usable key", async () => {
    const dir = mkdtempSync(path.join(tmp, "files-"));
    writeFileSync(path.join(dir, "empty-bundle.json"), JSON.stringify({ keys: [], spiffe_refresh_hint: 300 }));
    // an OIDC signing key is not a JWT-SVID key: the SPIFFE bundle has none that counts
    writeFileSync(path.join(dir, "wrong-use.json"), JSON.stringify({ keys: [{ kty: "EC", crv: "P-256", x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", use: "sig" }] }));
    writeFileSync(path.join(dir, "jwks.json"), JSON.stringify({ keys: [{ kty: "oct", k: "c2VjcmV0" }] }));
    const config = `${MINIMAL_CONFIG.trimStart()}    - { name: mesh, type: spiffe, trust_domain: prod.example.org, bundle_file: empty-bundle.json }
    - { name: mesh2, type: spiffe, trust_domain: two.example.org, bundle_file: wrong-use.json }
    - { name: files, type: oidc, issuer: "https://files.example.com", jwks_file: jwks.json }
    - { name: gone, type: oidc, issuer: "https://gone.example.com", jwks_file: missing.json }
policy:
  files: ["policies/*.cedar", "more/*.cedar"]
`;
    writeFileSync(path.join(dir, "broker.yaml"), config);
    const r = await run(["config", "check", "--config", path.join(dir, "broker.yaml")], { cwd: dir });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(lines(r.stderr)).toEqual([
      "policy.files[0]: policies/*.cedar matches no file",
      "policy.files[1]: more/*.cedar matches no file",
      'identity.issuers[1].bundle_file: empty-bundle.json has no usable key, so no token of issuer mesh can verify (a SPIFFE bundle needs public keys with "use": "jwt-svid")',
      'identity.issuers[2].bundle_file: wrong-use.json has no usable key, so no token of issuer mesh2 can verify (a SPIFFE bundle needs public keys with "use": "jwt-svid")',
      "identity.issuers[3].jwks_file: jwks.json has no usable key, so no token of issuer files can verify (it needs public RSA, EC or OKP signature keys)",
      "identity.issuers[4].jwks_file: missing.json: file not found",
      "jitbroker: configuration has 6 problems",
    ]);
    // one problem: one line
    writeFileSync(path.join(dir, "one.yaml"), `${MINIMAL_CONFIG.trimStart()}policy:\n  files: ["nothing-here/*.cedar"]\n`);
    const one = await run(["config", "check", "--config", path.join(dir, "one.yaml")], { cwd: dir });
    expect(one.code).toBe(2);
    expect(lines(one.stderr)).toEqual(["jitbroker: policy.files[0]: nothing-here/*.cedar matches no file"]);
  });

  it("exits 2 on a missing file with one clear line naming it", async () => {
    const file = path.join(tmp, "nope", "broker.yaml");
    const r = await run(["config", "check", "--config", file]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    const err = lines(r.stderr);
    expect(err).toEqual([`jitbroker: ${file}: file not found (use --config PATH or JITBROKER_CONFIG)`]);
  });

  it("reads JITBROKER_CONFIG when --config is not given, and --config wins over it", async () => {
    const dir = mkdtempSync(path.join(tmp, "env-"));
    writeFileSync(path.join(dir, "mine.yaml"), MINIMAL);
    const viaEnv = await run(["config", "check"], { cwd: dir, env: { JITBROKER_CONFIG: path.join(dir, "mine.yaml") } });
    expect(viaEnv.stderr).toBe("");
    expect(viaEnv.code).toBe(0);
    expect(lines(viaEnv.stdout)[0]).toBe("mine.yaml: OK");
    expect(lines(viaEnv.stdout)).toContain("workloads (1):");
    expect(viaEnv.stdout).toMatch(/^\s+builder\s+ci\s+ci\s+repo:acme\/app\s+o@example\.com$/m);

    const relative = await run(["config", "check"], { cwd: dir, env: { JITBROKER_CONFIG: "mine.yaml" } });
    expect(relative.code).toBe(0);

    writeFileSync(path.join(dir, "broken.yaml"), BROKEN);
    const flagWins = await run(["config", "check", "--config", "mine.yaml"], { cwd: dir, env: { JITBROKER_CONFIG: "broken.yaml" } });
    expect(flagWins.code).toBe(0);
    const envBroken = await run(["config", "check"], { cwd: dir, env: { JITBROKER_CONFIG: "broken.yaml" } });
    expect(envBroken.code).toBe(2);
    expect(lines(envBroken.stderr)[0]).toBe(`${path.join(dir, "broken.yaml")}: 8 problems`);
  });

  it("without --config or JITBROKER_CONFIG reads config/broker.yaml under the working directory", async () => {
    const dir = mkdtempSync(path.join(tmp, "default-"));
    const missing = await run(["config", "check"], { cwd: dir });
    expect(missing.code).toBe(2);
    expect(lines(missing.stderr)[0]).toBe(`jitbroker: ${path.join(dir, "config/broker.yaml")}: file not found (use --config PATH or JITBROKER_CONFIG)`);
  });

  it("applies REDIS_URL and hides its password", async () => {
    const file = path.join(tmp, "redis.yaml");
    writeFileSync(file, MINIMAL);
    const r = await run(["config", "check", "--config", file], { env: { REDIS_URL: "redis://user:s3cret@redis.example.com:6379/1" } });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("redis: redis://***@redis.example.com:6379/1, prefix jit\n");
    expect(r.stdout).not.toContain("s3cret");
    const bad = await run(["config", "check", "--config", file], { env: { REDIS_URL: "http://redis" } });
    expect(bad.code).toBe(2);
    expect(lines(bad.stderr)[0]).toBe(`jitbroker: ${file}: REDIS_URL: must be embedded, redis://... or rediss://...`);
  });
});

describe("usage errors and help", () => {
  it.each([
    [["frobnicate"], "jitbroker: usage: unknown command 'frobnicate' (jitbroker --help)"],
    [["config", "check", "--frob"], "jitbroker: usage: unknown option '--frob' (jitbroker config check --help)"],
    [["token", "dev"], "jitbroker: usage: required option '--workload <id>' not specified (jitbroker token dev --help)"],
    [["serve", "--only", "everything"], "jitbroker: usage: option '--only <part>' argument 'everything' is invalid. Allowed choices are api, worker. (jitbroker serve --help)"],
    // serve has no --port (server.listen or JITBROKER_LISTEN say where it listens)
    [["serve", "--port", "9000"], "jitbroker: usage: unknown option '--port' (jitbroker serve --help)"],
  ])("jitbroker %j exits 2 with one line", async (args, message) => {
    const r = await run(args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(lines(r.stderr)).toEqual([message]);
  });

  it("dev --port with a non-number exits 2", async () => {
    const r = await run(["dev", "--port", "http"], { cwd: tmp, env: { JITBROKER_HOME: path.join(tmp, "never") } });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual(["jitbroker: --port http: not a port number"]);
    expect(existsSync(path.join(tmp, "never"))).toBe(false);
  });

  it("--help exits 0 and lists the commands", async () => {
    const r = await run(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: jitbroker \[options\] \[command\]/);
    for (const cmd of ["serve", "dev", "token", "config"]) expect(r.stdout).toMatch(new RegExp(`^\\s+${cmd}\\b`, "m"));
  });

  it("config check --help exits 0", async () => {
    const r = await run(["config", "check", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: jitbroker config check \[options\]/);
    expect(r.stdout).toContain("--config <file>");
  });

  it("--version exits 0", async () => {
    const r = await run(["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe("0.1.0");
  });
});

describe("token dev", () => {
  let home: string;
  let oidcKeys: JSONWebKeySet;
  let spiffeBundle: JSONWebKeySet;

  beforeAll(async () => {
    home = mkdtempSync(path.join(tmp, "home-"));
    writeFileSync(path.join(home, "dev.yaml"), devConfigYaml());
    await ensureDevIssuer(home);
    oidcKeys = JSON.parse(readFileSync(path.join(home, "dev-jwks.json"), "utf8")) as JSONWebKeySet;
    spiffeBundle = JSON.parse(readFileSync(path.join(home, "dev-bundle.json"), "utf8")) as JSONWebKeySet;
  });

  const token = (args: string[]) => run(["token", "dev", ...args], { cwd: tmp, env: { JITBROKER_HOME: home } });

  it("exits 2 with a config that has no dev: section", async () => {
    const r = await run(["token", "dev", "--workload", "payments-deployer", "--config", "config/broker.yaml"]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(lines(r.stderr)).toEqual([`jitbroker: ${path.join(ROOT, "config/broker.yaml")} is not a dev configuration (no dev: section); dev tokens are for dev mode only`]);
  });

  it("exits 2 when there is no dev configuration yet", async () => {
    const empty = mkdtempSync(path.join(tmp, "empty-"));
    const r = await run(["token", "dev", "--workload", "support-agent"], { cwd: tmp, env: { JITBROKER_HOME: empty } });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual([`jitbroker: ${path.join(empty, "dev.yaml")} not found: start \`jitbroker dev\` first`]);
  });

  it("prints an OIDC token for payments-deployer whose claims match the workload", async () => {
    const r = await token(["--workload", "payments-deployer"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const jwt = r.stdout.trim();
    expect(r.stdout).toBe(`${jwt}\n`);
    expect(jwt.split(".")).toHaveLength(3);
    expect(decodeProtectedHeader(jwt)).toEqual({ alg: "ES256", typ: "JWT", kid: oidcKeys.keys[0]!.kid });
    const { payload } = await jwtVerify(jwt, createLocalJWKSet(oidcKeys), { issuer: DEV_OIDC_ISSUER, audience: "jitbroker", algorithms: ["ES256"] });
    expect(payload).toEqual({
      iss: DEV_OIDC_ISSUER,
      sub: "repo:acme/payments:ref:refs/heads/main",
      aud: "jitbroker",
      repository_id: "912345",
      repository_owner_id: "4242",
      ref: "refs/heads/main",
      iat: expect.any(Number),
      exp: expect.any(Number),
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(payload.exp! - payload.iat!).toBe(600); // default --ttl 10m
    expect(Math.abs(payload.iat! - Date.now() / 1000)).toBeLessThan(30);
  });

  it("prints a JWT-SVID for support-agent: SPIFFE sub, no iss, signed with the bundle key", async () => {
    const r = await token(["--workload", "support-agent"]);
    expect(r.code).toBe(0);
    const jwt = r.stdout.trim();
    // A SPIFFE bundle marks its keys `use: jwt-svid`; jose's local key set only picks `sig` keys.
    const svidKeys = { keys: spiffeBundle.keys.map((k) => ({ ...k, use: k.use === "jwt-svid" ? "sig" : k.use })) };
    expect(spiffeBundle.keys.map((k) => k.use)).toEqual(["jwt-svid"]);
    const { payload, protectedHeader } = await jwtVerify(jwt, createLocalJWKSet(svidKeys), { audience: "jitbroker", algorithms: ["ES256"] });
    expect(protectedHeader.kid).toBe(spiffeBundle.keys[0]!.kid);
    expect(payload.iss).toBeUndefined();
    expect(Object.keys(payload).sort()).toEqual(["aud", "exp", "iat", "jti", "sub"]);
    expect(payload.sub).toBe(`spiffe://${DEV_TRUST_DOMAIN}/agents/support`);
    expect(payload.aud).toBe("jitbroker");
    // Not verifiable with the OIDC key set.
    await expect(jwtVerify(jwt, createLocalJWKSet(oidcKeys))).rejects.toThrow();
  });

  it("keeps boolean claims as booleans (alice: email_verified)", async () => {
    const r = await token(["--workload", "alice"]);
    expect(r.code).toBe(0);
    const claims = decodeJwt(r.stdout.trim());
    expect(claims).toMatchObject({ iss: DEV_OIDC_ISSUER, sub: "alice@example.com", email_verified: true });
  });

  it.each([
    ["30s", 30],
    ["30m", 1800],
    ["1h", 3600],
  ])("--ttl %s gives a lifetime of %d s", async (ttl, seconds) => {
    const r = await token(["--workload", "billing-api", "--ttl", ttl]);
    expect(r.code).toBe(0);
    const claims = decodeJwt(r.stdout.trim());
    expect(claims.sub).toBe("system:serviceaccount:billing:api");
    expect(claims.exp! - claims.iat!).toBe(seconds);
  });

  it.each([["payments-deployer"], ["support-agent"]])("--ttl 2h for %s exceeds max_token_lifetime 1h: exit 2", async (workload) => {
    const r = await token(["--workload", workload, "--ttl", "2h"]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(lines(r.stderr)).toEqual(["jitbroker: --ttl 2h exceeds the issuer's max_token_lifetime"]);
  });

  it("refuses a --ttl that is not a duration with exit 2", async () => {
    const r = await token(["--workload", "support-agent", "--ttl", "1.5h"]);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toEqual(['jitbroker: --ttl: "1.5h" is not a duration (use e.g. 30s, 5m, 1h)']);
  });

  it("exits 2 on an unknown workload, listing the known ones", async () => {
    const r = await token(["--workload", "nobody"]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(lines(r.stderr)).toEqual(['jitbroker: unknown workload "nobody" (known: payments-deployer, support-agent, billing-api, alice, bob)']);
  });

  it("takes the dev configuration from --config too", async () => {
    const r = await run(["token", "dev", "--workload", "support-agent", "--config", path.join(home, "dev.yaml")], { cwd: tmp });
    expect(r.code).toBe(0);
    expect(decodeJwt(r.stdout.trim()).sub).toBe(`spiffe://${DEV_TRUST_DOMAIN}/agents/support`);
  });
});

describe("keys rotate", () => {
  it("refuses a missing key file with exit 2, and rotates an existing one keeping the previous key", async () => {
    const dir = mkdtempSync(path.join(tmp, "keys-"));
    const file = path.join(dir, "broker.yaml");
    writeFileSync(file, `${MINIMAL}backends:\n  jwt: { signing_key_file: "signing-key.json" }\n`);
    const missing = await run(["keys", "rotate", "--config", file]);
    expect(missing.code).toBe(2);
    expect(lines(missing.stderr)).toEqual([`jitbroker: signing key file ${path.join(dir, "signing-key.json")}: does not exist; nothing to rotate`]);

    const first = await loadOrCreateSigningKeys(path.join(dir, "signing-key.json"));
    const r = await run(["keys", "rotate", "--config", file]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^new signing key \S+ in .*signing-key\.json; 1 previous key\(s\) stay in the JWKS\n/);
    const after = await loadOrCreateSigningKeys(path.join(dir, "signing-key.json"));
    expect(after.current.kid).not.toBe(first.current.kid);
    expect(after.jwks().keys.map((k) => k.kid)).toEqual([after.current.kid, first.current.kid]);
  });
});

describe("offline commands without --config (policy why, policy test, keys rotate, audit verify)", () => {
  it("read the running jitbroker dev's configuration and say so; otherwise say they read the default", async () => {
    const home = mkdtempSync(path.join(tmp, "devhome-"));
    const cwd = mkdtempSync(path.join(tmp, "devcwd-"));
    await ensureDevIssuer(home);
    writeFileSync(path.join(home, "dev.yaml"), devConfigYaml());
    cpSync(path.join(ROOT, "config/policies"), path.join(home, "policies"), { recursive: true });
    const env = { JITBROKER_HOME: home };
    const devFile = path.relative(cwd, path.join(home, "dev.yaml"));

    // no dev running (its embedded Redis left no URL file): the default, said loudly
    const idle = await run(["policy", "why", "--workload", "support-agent", "--role", "orders-read"], { cwd, env });
    expect(idle.code).toBe(2);
    expect(lines(idle.stderr)).toEqual([
      "jitbroker: reading config/broker.yaml (the default; --config to read another)",
      `jitbroker: ${path.join(cwd, "config/broker.yaml")}: file not found (use --config PATH or JITBROKER_CONFIG)`,
    ]);

    // a dev broker is running on that home: its configuration
    mkdirSync(path.join(home, "redis"));
    writeFileSync(path.join(home, "redis/redis.url"), "redis://127.0.0.1:1\n");
    const why = await run(["policy", "why", "--workload", "support-agent", "--role", "orders-read"], { cwd, env });
    expect(why.code).toBe(0);
    expect(lines(why.stderr)).toEqual([`jitbroker: reading ${devFile}, the configuration of the running jitbroker dev (--config to read another)`]);
    expect(why.stdout).toContain("agents-request-read");

    await loadOrCreateSigningKeys(path.join(home, "signing-key.json"));
    const rotate = await run(["keys", "rotate"], { cwd, env });
    expect(rotate.code).toBe(0);
    expect(lines(rotate.stderr)).toEqual([`jitbroker: reading ${devFile}, the configuration of the running jitbroker dev (--config to read another)`]);
    expect(rotate.stdout).toContain(`in ${path.join(home, "signing-key.json")}`);

    // JITBROKER_CONFIG and --config still win
    const viaEnv = await run(["policy", "why", "--workload", "support-agent", "--role", "orders-read"], { cwd, env: { ...env, JITBROKER_CONFIG: path.join(ROOT, "test/policy/fixtures/broker.yaml") } });
    expect(lines(viaEnv.stderr)[0]).toBe(`jitbroker: reading ${path.relative(cwd, path.join(ROOT, "test/policy/fixtures/broker.yaml"))} (JITBROKER_CONFIG; --config to read another)`);
    const flag = await run(["policy", "why", "--workload", "support-agent", "--role", "orders-read", "--config", path.join(home, "dev.yaml")], { cwd, env: {} });
    expect(flag.stderr).toBe("");
    expect(flag.code).toBe(0);
  });
});
