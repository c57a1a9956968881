/**
 * Configuration loading (docs/ARCHITECTURE.md, How to add a config section): parsing, defaults, durations, path resolution,
 * ${VAR} substitution, environment overrides, and every problem reported at once with its path.
 */
import { MINIMAL_CONFIG } from "../../test/support/configs";
import { ConfigError, parseConfig, type LoadedConfig } from "./load";

const FILE = "/etc/jitbroker/broker.yaml";
const DIR = "/etc/jitbroker";

/** Parses and expects failure; returns the problems. */
function problemsOf(text: string, env: NodeJS.ProcessEnv = {}, file = FILE): string[] {
  try {
    parseConfig(text, file, env);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    expect(e.file).toBe(file);
    return e.problems;
  }
  throw new Error("expected a ConfigError, but the configuration parsed");
}

const pathOf = (problem: string) => problem.slice(0, problem.indexOf(": "));

const MINIMAL = MINIMAL_CONFIG;

/** MINIMAL with `extra` appended (YAML at top level) and the issuer block replaced if given. */
function withIssuer(issuerYaml: string, extra = ""): string {
  return `
server:
  public_url: "https://broker.example.com"
identity:
  issuers:
${issuerYaml
  .trim()
  .split("\n")
  .map((l) => `    ${l}`)
  .join("\n")}
${extra}`;
}

/** The full configuration example of the public contract (every section), verbatim. */
const DESIGN_EXAMPLE = `
server:
  listen: "127.0.0.1:8080"
  public_url: "http://127.0.0.1:8080"   # iss of broker-issued JWTs; where /.well-known lives
  audience: "jitbroker"                  # every presented workload token must carry this aud
redis:
  url: "embedded"        # or redis://host:port/db, rediss://...; "embedded" starts a local redis-server
  prefix: "jit"          # all keys share one hash tag built from it, so Redis Cluster works
identity:
  issuers:
    - name: ci                       # referenced by workloads
      type: oidc                     # oidc | spiffe
      issuer: "https://token.actions.githubusercontent.com"
      discovery: true                # or jwks_uri: "...", or jwks_file: "path"
      algorithms: ["RS256"]
      clock_skew: "30s"
      max_token_lifetime: "1h"
      single_use: false
    - name: mesh
      type: spiffe
      trust_domain: "prod.example.org"
      bundle_file: "config/bundles/prod.json"   # or bundle_url: "..."
workloads:
  - id: payments-deployer
    kind: ci                         # ci | agent | service | human
    owner: "platform-team@example.com"
    purpose: "Deploys the payments service"
    issuer: ci
    subject: "repo:acme/payments:ref:refs/heads/main"   # optional exact sub
    claims: { repository_id: "912345", ref: ["refs/heads/main"] }  # exact values; a list = any of
  - id: support-agent
    kind: agent
    owner: "alice@example.com"
    purpose: "Answers support tickets"
    issuer: mesh
    subject: "spiffe://prod.example.org/agents/support"
roles:
  - name: orders-read
    backend: jwt
    ttl: { default: "5m", max: "15m" }
    labels: { sensitivity: "internal", access: "read" }   # visible to policies as resource attrs
    jwt: { audience: "https://orders.internal", scope: "orders:read" }
  - name: payments-db
    backend: vault
    ttl: { default: "10m", max: "30m" }
    vault: { path: "database/creds/payments-ro" }
  - name: deploy-bucket
    backend: aws_sts
    ttl: { default: "15m", max: "1h" }
    aws_sts: { role_arn: "arn:aws:iam::123456789012:role/deployer", session_policy: { } }
backends:
  jwt: { signing_key_file: ".jitbroker/signing-key.json" }   # created on first start if absent
  vault: { address: "http://127.0.0.1:8200", auth: { method: token, token: "\${VAULT_TOKEN}" } }
  aws_sts: { region: "us-east-1" }     # endpoint / iam_endpoint optional
policy:
  files: ["config/policies/*.cedar"]
`;

describe("parseConfig: valid configurations", () => {
  it("parses a minimal configuration and fills every default", () => {
    const cfg = parseConfig(MINIMAL, FILE, {});
    expect(cfg.file).toBe(FILE);
    expect(cfg.dir).toBe(DIR);
    expect(cfg.server).toEqual({
      listen: { host: "127.0.0.1", port: 8080, text: "127.0.0.1:8080" },
      public_url: "https://broker.example.com",
      audience: "jitbroker",
      body_limit: "16kb",
      trust_proxy: false,
      shutdown_grace: 10_000,
    });
    expect(cfg.redis).toEqual({ url: "embedded", prefix: "jit", shards: 1, data_dir: `${DIR}/.jitbroker/redis`, durability: { replicas: 0, timeout: 1000 } });
    expect(cfg.identity.issuers).toEqual([
      {
        name: "ci",
        type: "oidc",
        use: "workloads",
        issuer: "https://ci.example.com",
        jwks_uri: "https://ci.example.com/jwks",
        algorithms: ["RS256"],
        clock_skew: 30_000,
        max_token_lifetime: 3_600_000,
        single_use: false,
        jwks_refresh: 600_000,
        jwks_cooldown: 30_000,
      },
    ]);
    expect(cfg.workloads).toEqual([]);
    expect(cfg.roles).toEqual([]);
    expect(cfg.backends.jwt).toEqual({ signing_key_file: `${DIR}/.jitbroker/signing-key.json` });
    expect(cfg.backends.vault).toBeUndefined();
    expect(cfg.backends.aws_sts).toBeUndefined();
    expect(cfg.policy).toEqual({ files: [`${DIR}/policies/*.cedar`], timezone: "UTC" });
    expect(cfg.approvals).toEqual({ pending_timeout: 3_600_000, collect_timeout: 900_000, max_pending_per_workload: 20 });
    expect(cfg.limits).toEqual({ requests_per_minute: 120 });
    expect(cfg.dev).toBeUndefined();
  });

  it("refuses an unknown policy time zone", () => {
    expect(() => parseConfig(withIssuer("") + `policy: { timezone: "Mars/Olympus" }\n`, FILE, {})).toThrow(/policy\.timezone.*IANA time zone/);
  });

  it("defaults a spiffe issuer's algorithms to RS256 and ES256", () => {
    const cfg = parseConfig(withIssuer(`- { name: mesh, type: spiffe, trust_domain: prod.example.org, bundle_url: "https://spire.example.org/bundle" }`), FILE, {});
    expect(cfg.identity.issuers[0]).toMatchObject({ type: "spiffe", algorithms: ["RS256", "ES256"], clock_skew: 30_000, max_token_lifetime: 3_600_000 });
  });

  it("parses the full contract example (VAULT_TOKEN set)", () => {
    const cfg = parseConfig(DESIGN_EXAMPLE, FILE, { VAULT_TOKEN: "s.devtoken" });
    expect(cfg.server.listen).toEqual({ host: "127.0.0.1", port: 8080, text: "127.0.0.1:8080" });
    expect(cfg.server.public_url).toBe("http://127.0.0.1:8080");
    expect(cfg.redis).toEqual({ url: "embedded", prefix: "jit", shards: 1, data_dir: `${DIR}/.jitbroker/redis`, durability: { replicas: 0, timeout: 1000 } });
    expect(cfg.identity.issuers.map((i) => [i.name, i.type])).toEqual([
      ["ci", "oidc"],
      ["mesh", "spiffe"],
    ]);
    expect(cfg.identity.issuers[0]).toMatchObject({ discovery: true, algorithms: ["RS256"], clock_skew: 30_000, max_token_lifetime: 3_600_000, single_use: false });
    expect(cfg.identity.issuers[1]).toMatchObject({ trust_domain: "prod.example.org", bundle_file: `${DIR}/config/bundles/prod.json` });
    expect(cfg.workloads.map((w) => w.id)).toEqual(["payments-deployer", "support-agent"]);
    expect(cfg.workloads[0]).toEqual({
      id: "payments-deployer",
      kind: "ci",
      owner: "platform-team@example.com",
      purpose: "Deploys the payments service",
      issuer: "ci",
      subject: "repo:acme/payments:ref:refs/heads/main",
      claims: { repository_id: "912345", ref: ["refs/heads/main"] },
    });
    expect(cfg.workloads[1]!.claims).toEqual({});
    expect(cfg.roles.map((r) => [r.name, r.backend, r.ttl.default, r.ttl.max])).toEqual([
      ["orders-read", "jwt", 300_000, 900_000],
      ["payments-db", "vault", 600_000, 1_800_000],
      ["deploy-bucket", "aws_sts", 900_000, 3_600_000],
    ]);
    expect(cfg.roles[0]!.labels).toEqual({ sensitivity: "internal", access: "read" });
    expect(cfg.roles[0]!.jwt).toEqual({ audience: "https://orders.internal", scope: "orders:read" });
    expect(cfg.roles[1]!.labels).toEqual({});
    expect(cfg.roles[2]!.aws_sts).toEqual({ role_arn: "arn:aws:iam::123456789012:role/deployer", session_policy: {} });
    expect(cfg.backends.vault).toEqual({ address: "http://127.0.0.1:8200", auth: { method: "token", token: "s.devtoken" } });
    expect(cfg.backends.aws_sts).toEqual({ region: "us-east-1" });
    expect(cfg.backends.jwt.signing_key_file).toBe(`${DIR}/.jitbroker/signing-key.json`);
    expect(cfg.policy.files).toEqual([`${DIR}/config/policies/*.cedar`]);
  });

  it("reports the contract example's unset VAULT_TOKEN with its path, and nothing else", () => {
    expect(problemsOf(DESIGN_EXAMPLE, {})).toEqual(["backends.vault.auth.token: environment variable VAULT_TOKEN is not set"]);
  });
});

describe("durations", () => {
  it.each([
    ["30s", 30_000],
    ["1h", 3_600_000],
    ["5m", 300_000],
    ["250ms", 250],
    ["2d", 172_800_000],
    ["0s", 0],
  ])("clock_skew %p is %p ms", (text, ms) => {
    const cfg = parseConfig(withIssuer(`- { name: ci, type: oidc, issuer: "https://ci.example.com", discovery: true, clock_skew: "${text}" }`), FILE, {});
    expect(cfg.identity.issuers[0]!.clock_skew).toBe(ms);
  });

  it.each(["30", "1 year", "1.5h", "-5m", "", "1H", "5 m", "1h30m"])("refuses clock_skew %p with its path", (text) => {
    expect(problemsOf(withIssuer(`- { name: ci, type: oidc, issuer: "https://ci.example.com", discovery: true, clock_skew: "${text}" }`))).toEqual([
      `identity.issuers[0].clock_skew: "${text}" is not a duration (use e.g. 30s, 5m, 1h)`,
    ]);
  });

  it("refuses a duration given as a YAML number", () => {
    const problems = problemsOf(withIssuer(`- { name: ci, type: oidc, issuer: "https://ci.example.com", discovery: true, max_token_lifetime: 3600 }`));
    expect(problems.map(pathOf)).toEqual(["identity.issuers[0].max_token_lifetime"]);
  });

  it("parses role ttls and refuses a bad one with its path", () => {
    const roles = (ttl: string) => `roles:\n  - { name: r, backend: jwt, ttl: ${ttl}, jwt: { audience: "https://a.example" } }\n`;
    expect(parseConfig(withIssuer(`- { name: ci, type: oidc, issuer: "https://ci.example.com", discovery: true }`, roles(`{ default: "90s", max: "1h" }`)), FILE, {}).roles[0]!.ttl).toEqual({
      default: 90_000,
      max: 3_600_000,
    });
    expect(problemsOf(withIssuer(`- { name: ci, type: oidc, issuer: "https://ci.example.com", discovery: true }`, roles(`{ default: "5m", max: "1 year" }`)))).toEqual([
      `roles[0].ttl.max: "1 year" is not a duration (use e.g. 30s, 5m, 1h)`,
    ]);
  });
});

describe("relative paths are resolved against the file's directory", () => {
  const config = (p: { jwks: string; bundle: string; key: string; policies: string[]; data: string; devKey: string }) =>
    withIssuer(
      `
- { name: ci, type: oidc, issuer: "https://ci.example.com", jwks_file: "${p.jwks}" }
- { name: mesh, type: spiffe, trust_domain: prod.example.org, bundle_file: "${p.bundle}" }`,
      `redis: { data_dir: "${p.data}" }
backends:
  jwt: { signing_key_file: "${p.key}" }
policy:
  files: ${JSON.stringify(p.policies)}
dev: { issuer_key_file: "${p.devKey}" }
`,
    );

  it.each([
    ["/etc/jitbroker/broker.yaml", "/etc/jitbroker"],
    ["/srv/app/config/nested/broker.yaml", "/srv/app/config/nested"],
  ])("relative paths in %s", (file, dir) => {
    const cfg: LoadedConfig = parseConfig(
      config({ jwks: "keys/jwks.json", bundle: "../bundles/prod.json", key: "./state/signing.json", policies: ["policies/*.cedar", "../extra/a.cedar"], data: "redis", devKey: "dev/keys.json" }),
      file,
      {},
    );
    const parent = dir.slice(0, dir.lastIndexOf("/"));
    expect(cfg.dir).toBe(dir);
    expect(cfg.file).toBe(file);
    const [oidc, spiffe] = cfg.identity.issuers;
    expect(oidc!.type === "oidc" && oidc!.jwks_file).toBe(`${dir}/keys/jwks.json`);
    expect(spiffe!.type === "spiffe" && spiffe!.bundle_file).toBe(`${parent}/bundles/prod.json`);
    expect(cfg.backends.jwt.signing_key_file).toBe(`${dir}/state/signing.json`);
    expect(cfg.policy.files).toEqual([`${dir}/policies/*.cedar`, `${parent}/extra/a.cedar`]);
    expect(cfg.redis.data_dir).toBe(`${dir}/redis`);
    expect(cfg.dev?.issuer_key_file).toBe(`${dir}/dev/keys.json`);
  });

  it("leaves absolute paths as written", () => {
    const cfg = parseConfig(
      config({ jwks: "/opt/keys/jwks.json", bundle: "/opt/bundles/prod.json", key: "/var/lib/jit/key.json", policies: ["/opt/policies/*.cedar"], data: "/var/lib/jit/redis", devKey: "/opt/dev.json" }),
      FILE,
      {},
    );
    const [oidc, spiffe] = cfg.identity.issuers;
    expect(oidc!.type === "oidc" && oidc!.jwks_file).toBe("/opt/keys/jwks.json");
    expect(spiffe!.type === "spiffe" && spiffe!.bundle_file).toBe("/opt/bundles/prod.json");
    expect(cfg.backends.jwt.signing_key_file).toBe("/var/lib/jit/key.json");
    expect(cfg.policy.files).toEqual(["/opt/policies/*.cedar"]);
    expect(cfg.redis.data_dir).toBe("/var/lib/jit/redis");
    expect(cfg.dev?.issuer_key_file).toBe("/opt/dev.json");
  });

  it("resolves a relative file name against the working directory first", () => {
    const cfg = parseConfig(MINIMAL, "conf/broker.yaml", {});
    expect(cfg.file).toBe(`${process.cwd()}/conf/broker.yaml`);
    expect(cfg.redis.data_dir).toBe(`${process.cwd()}/conf/.jitbroker/redis`);
  });
});

describe("${VAR} substitution", () => {
  const withPublicUrl = (value: string) => MINIMAL.replace('"https://broker.example.com"', JSON.stringify(value));

  it.each([
    ["${PUB}", { PUB: "https://pub.example.com" }, "https://pub.example.com"],
    ["https://${HOST}:${PORT}/base", { HOST: "b.example.com", PORT: "8443" }, "https://b.example.com:8443/base"],
    ["${PUB:-https://default.example.com}", {}, "https://default.example.com"],
    ["${PUB:-https://default.example.com}", { PUB: "https://set.example.com" }, "https://set.example.com"],
    ["${PUB:-https://default.example.com}", { PUB: "" }, "https://default.example.com"],
    ["https://${HOST:-}localhost", {}, "https://localhost"],
    // A substituted value is not substituted again.
    ["https://x.example.com/${P}", { P: "${Q}", Q: "nope" }, "https://x.example.com/${Q}"],
  ])("public_url %p with env %p is %p", (written, env, expected) => {
    expect(parseConfig(withPublicUrl(written), FILE, env).server.public_url).toBe(expected);
  });

  it("keeps $${literal} as a literal ${literal}", () => {
    const text = `${MINIMAL}roles:\n  - { name: r, backend: jwt, description: "costs $\${HOME} and $\${X:-y}", ttl: { default: "1m", max: "2m" }, jwt: { audience: "a" } }\n`;
    expect(parseConfig(text, FILE, { HOME: "/root", X: "x" }).roles[0]!.description).toBe("costs ${HOME} and ${X:-y}");
  });

  it("substitutes inside lists and nested mappings, not in keys", () => {
    const text = `${MINIMAL}policy:\n  files: ["\${POL}/a.cedar", "b.cedar"]\n`;
    expect(parseConfig(text, FILE, { POL: "/opt/pol" }).policy.files).toEqual(["/opt/pol/a.cedar", `${DIR}/b.cedar`]);
  });

  it("reports an unset variable with the path where it is used", () => {
    const text = `${MINIMAL}roles:\n  - { name: r, backend: jwt, description: "\${UNSET_DESC}", ttl: { default: "1m", max: "2m" }, jwt: { audience: "a" } }\n`;
    expect(problemsOf(text, {})).toEqual(["roles[0].description: environment variable UNSET_DESC is not set"]);
  });

  it("reports every unset variable, with its path, alongside the problems it causes", () => {
    const text = withIssuer(`- { name: ci, type: oidc, issuer: "\${CI_ISSUER}", jwks_uri: "https://ci.example.com/jwks", algorithms: ["RS256", "\${ALG2}"] }`);
    const problems = problemsOf(text, {});
    expect(problems).toContain("identity.issuers[0].issuer: environment variable CI_ISSUER is not set");
    expect(problems).toContain("identity.issuers[0].algorithms[1]: environment variable ALG2 is not set");
    expect(problems.map(pathOf).sort()).toEqual(
      ["identity.issuers[0].issuer", "identity.issuers[0].issuer", "identity.issuers[0].algorithms[1]", "identity.issuers[0].algorithms[1]"].sort(),
    );
  });
});

describe("environment overrides", () => {
  it.each([
    [{}, "embedded"],
    [{ REDIS_URL: "" }, "embedded"],
    [{ REDIS_URL: "redis://10.0.0.5:6379/2" }, "redis://10.0.0.5:6379/2"],
    [{ REDIS_URL: "rediss://user:pw@redis.example.com:6380" }, "rediss://user:pw@redis.example.com:6380"],
    [{ REDIS_URL: "embedded" }, "embedded"],
  ])("REDIS_URL %p gives redis.url %p", (env, url) => {
    expect(parseConfig(`${MINIMAL}redis: { url: "embedded" }\n`, FILE, env).redis.url).toBe(url);
  });

  it("REDIS_URL overrides a redis.url written in the file", () => {
    expect(parseConfig(`${MINIMAL}redis: { url: "redis://file.example:6379" }\n`, FILE, { REDIS_URL: "redis://env.example:6379" }).redis.url).toBe("redis://env.example:6379");
  });

  it.each(["http://redis.example.com", "localhost:6379", "redis://"])("reports an invalid REDIS_URL %p", (url) => {
    expect(problemsOf(MINIMAL, { REDIS_URL: url })).toEqual(["REDIS_URL: must be embedded, redis://... or rediss://..."]);
  });

  it.each([
    ["0.0.0.0:9090", { host: "0.0.0.0", port: 9090, text: "0.0.0.0:9090" }],
    ["[::1]:8443", { host: "::1", port: 8443, text: "[::1]:8443" }],
    ["broker.internal:80", { host: "broker.internal", port: 80, text: "broker.internal:80" }],
  ])("JITBROKER_LISTEN %p overrides server.listen", (listen, expected) => {
    expect(parseConfig(MINIMAL.replace("server:\n", 'server:\n  listen: "127.0.0.1:7000"\n'), FILE, { JITBROKER_LISTEN: listen }).server.listen).toEqual(expected);
  });

  it.each(["nope", "127.0.0.1", "127.0.0.1:70000", ":8080"])("reports an invalid JITBROKER_LISTEN %p", (listen) => {
    expect(problemsOf(MINIMAL, { JITBROKER_LISTEN: listen })).toEqual([`JITBROKER_LISTEN: "${listen}" is not host:port`]);
  });

  it("reports both invalid overrides at once", () => {
    expect(problemsOf(MINIMAL, { REDIS_URL: "mysql://x", JITBROKER_LISTEN: "x" })).toEqual([
      "REDIS_URL: must be embedded, redis://... or rediss://...",
      'JITBROKER_LISTEN: "x" is not host:port',
    ]);
  });
});

describe("YAML problems", () => {
  it("reports a duplicate key with its line and column", () => {
    const text = 'server:\n  public_url: "https://a.example.com"\n  public_url: "https://b.example.com"\nidentity: {}\n';
    expect(problemsOf(text)).toEqual(["line 3, column 3: Map keys must be unique"]);
  });

  it.each([
    ["an unclosed flow sequence", 'server:\n  public_url: "https://a.example.com"\nidentity: { issuers: [ {name: a}\nroles: []\n', /^line \d+, column \d+: \S/],
    ["a tab used for indentation", "server:\n\tpublic_url: x\n", /^line 2, column 1: Tabs are not allowed as indentation/],
    ["a nested compact mapping", "server: public_url: x\n", /^line 1, column 9: Nested mappings are not allowed in compact mappings/],
  ])("reports %s with its line and column", (_what, text, pattern) => {
    const problems = problemsOf(text);
    expect(problems.length).toBeGreaterThanOrEqual(1);
    for (const p of problems) expect(p).toMatch(/^line \d+, column \d+: \S/);
    expect(problems[0]).toMatch(pattern);
  });

  it.each([
    ["an empty file", ""],
    ["a list", "- a\n- b\n"],
    ["a scalar", "just text\n"],
  ])("refuses %s as the whole document", (_what, text) => {
    expect(problemsOf(text)).toEqual(["(root): must be a mapping with server, identity, workloads, roles..."]);
  });

  it("puts a single problem on one line in the error message", () => {
    try {
      parseConfig("a: 1\na: 2\n", FILE, {});
      throw new Error("expected a ConfigError");
    } catch (e) {
      expect((e as Error).message).toBe(`${FILE}: line 2, column 1: Map keys must be unique`);
    }
  });
});

describe("unknown keys", () => {
  it.each([
    ["a typo in an issuer (isuer)", withIssuer(`- { name: ci, type: oidc, isuer: "https://ci.example.com", issuer: "https://ci.example.com", discovery: true }`), ["identity.issuers[0].isuer: unknown key (check the spelling)"]],
    ["a typo at top level (workload)", `${MINIMAL}workload: []\n`, ["workload: unknown key (check the spelling)"]],
    ["a typo in redis (prefx)", `${MINIMAL}redis: { prefx: x }\n`, ["redis.prefx: unknown key (check the spelling)"]],
    ["a typo in server (audiance)", MINIMAL.replace("server:\n", "server:\n  audiance: x\n"), ["server.audiance: unknown key (check the spelling)"]],
    [
      "a typo in a workload (subjet)",
      `${MINIMAL}workloads:\n  - { id: w, kind: ci, owner: o, purpose: p, issuer: ci, subjet: "repo:a/b" }\n`,
      ["workloads[0].subjet: unknown key (check the spelling)"],
    ],
    ["a typo in a role ttl (defualt)", `${MINIMAL}roles:\n  - { name: r, backend: jwt, ttl: { defualt: "1m", max: "2m" }, jwt: { audience: a } }\n`, ["roles[0].ttl.default: required", "roles[0].ttl.defualt: unknown key (check the spelling)"]],
  ])("refuses %s with its path", (_what, text, expected) => {
    expect(problemsOf(text)).toEqual(expected);
  });

  it("reports a replaced key both as unknown and as missing", () => {
    const problems = problemsOf(withIssuer(`- { name: ci, type: oidc, isuer: "https://ci.example.com", discovery: true }`));
    expect(problems.sort()).toEqual(["identity.issuers[0].isuer: unknown key (check the spelling)", "identity.issuers[0].issuer: required"].sort());
  });
});

describe("every problem at once", () => {
  const BROKEN = `
server:
  listen: "not-a-listen"
  public_url: "https://broker.example.com"
identity:
  issuers:
    - name: ci
      type: oidc
      issuer: "https://ci.example.com"
      discovery: true
      algorithms: ["none", "HS256"]
    - name: other
      type: oidc
      issuer: "https://other.example.com"
      jwks_uri: "http://keys.example.com/jwks"
    - name: both
      type: oidc
      issuer: "https://both.example.com"
      discovery: true
      jwks_file: "keys.json"
    - name: mesh
      type: spiffe
      trust_domain: "prod.example.org"
workloads:
  - id: deployer
    kind: ci
    owner: "o@example.com"
    purpose: "p"
    issuer: nosuch
  - id: agent
    kind: agent
    owner: "o@example.com"
    purpose: "p"
    issuer: mesh
    subject: "spiffe://other.example.org/agents/x"
  - id: deployer
    kind: ci
    owner: "o@example.com"
    purpose: "p"
    issuer: ci
roles:
  - name: tokens
    backend: jwt
    ttl: { default: "1h", max: "5m" }
  - name: tokens
    backend: vault
    ttl: { default: "5m", max: "10m" }
    vault: { path: "database/creds/x" }
`;

  it("reports all of them, each with its exact path", () => {
    const problems = problemsOf(BROKEN);
    const byPath = new Map<string, string[]>();
    for (const p of problems) byPath.set(pathOf(p), [...(byPath.get(pathOf(p)) ?? []), p.slice(pathOf(p).length + 2)]);
    expect([...byPath.keys()].sort()).toEqual(
      [
        "server.listen",
        "identity.issuers[0].algorithms[0]",
        "identity.issuers[0].algorithms[1]",
        "identity.issuers[1].jwks_uri",
        "identity.issuers[2]",
        "identity.issuers[3]",
        "workloads[0].issuer",
        "workloads[1].subject",
        "workloads[2].id",
        "roles[0].ttl",
        "roles[0].jwt",
        "roles[1].name",
        "roles[1].backend",
      ].sort(),
    );
    expect(problems).toHaveLength(13);
    const msg = (p: string) => byPath.get(p)!.join(" | ");
    expect(msg("server.listen")).toBe('"not-a-listen" is not host:port');
    expect(msg("identity.issuers[0].algorithms[0]")).toMatch(/^algorithm "none" is not allowed/);
    expect(msg("identity.issuers[0].algorithms[1]")).toMatch(/^algorithm "HS256" is not allowed/);
    expect(msg("identity.issuers[1].jwks_uri")).toBe('must be an https URL (http only for localhost), got "http://keys.example.com/jwks"');
    expect(msg("identity.issuers[2]")).toBe("set exactly one of discovery: true, jwks_uri or jwks_file");
    expect(msg("identity.issuers[3]")).toBe("set exactly one of bundle_file or bundle_url");
    expect(msg("workloads[0].issuer")).toBe('unknown issuer "nosuch" (known: ci, other, both, mesh)');
    expect(msg("workloads[1].subject")).toBe("must be a SPIFFE ID in trust domain prod.example.org (spiffe://prod.example.org/...)");
    expect(msg("workloads[2].id")).toBe('duplicate workload id "deployer" (first at workloads[0].id)');
    expect(msg("roles[0].ttl")).toBe("default must not exceed max");
    expect(msg("roles[0].jwt")).toBe('backend jwt needs a "jwt" section');
    expect(msg("roles[1].name")).toBe('duplicate role name "tokens" (first at roles[0].name)');
    expect(msg("roles[1].backend")).toBe("backend vault is used but backends.vault is not configured");
  });

  it("lists them all in the error message, one per line", () => {
    try {
      parseConfig(BROKEN, FILE, {});
      throw new Error("expected a ConfigError");
    } catch (e) {
      const lines = (e as Error).message.split("\n");
      expect(lines[0]).toBe(`${FILE}: 13 problems`);
      expect(lines).toHaveLength(14);
      expect(lines).toContain("  identity.issuers[1].jwks_uri: must be an https URL (http only for localhost), got \"http://keys.example.com/jwks\"");
    }
  });

  it("still runs the cross-reference checks when other sections have type errors", () => {
    const text = `
server: { public_url: "https://broker.example.com", audiance: x }
identity:
  issuers:
    - { name: ci, type: oidc, issuer: "https://ci.example.com", discovery: true, clock_skew: "1 year" }
    - { name: odd, type: kerberos }
    - 7
workloads:
  - { id: w, kind: robot, owner: o, purpose: p, issuer: zz }
  - null
roles:
  - { name: r, backend: aws_sts, ttl: { default: "x", max: "5m" } }
  - "r"
`;
    expect(problemsOf(text).sort()).toEqual(
      [
        "server.audiance: unknown key (check the spelling)",
        'identity.issuers[0].clock_skew: "1 year" is not a duration (use e.g. 30s, 5m, 1h)',
        "identity.issuers[1].type: Invalid discriminator value. Expected 'oidc' | 'spiffe'",
        "identity.issuers[2]: Invalid input: expected object, received number",
        'workloads[0].kind: Invalid option: expected one of "ci"|"agent"|"service"|"human"',
        'workloads[0].issuer: unknown issuer "zz" (known: ci, odd)',
        "workloads[1]: Invalid input: expected object, received null",
        'roles[0].ttl.default: "x" is not a duration (use e.g. 30s, 5m, 1h)',
        'roles[0].aws_sts: backend aws_sts needs a "aws_sts" section',
        "roles[0].backend: backend aws_sts is used but backends.aws_sts is not configured",
        "roles[1]: Invalid input: expected object, received string",
      ].sort(),
    );
  });

  it.each([
    ["http to a non-loopback host", "http://keys.example.com/jwks", false],
    ["http to 127.0.0.1", "http://127.0.0.1:9999/jwks", true],
    ["http to localhost", "http://localhost/jwks", true],
    ["http to [::1]", "http://[::1]:9999/jwks", true],
    ["http to a host named like loopback", "http://127.0.0.1.example.com/jwks", false],
    ["https anywhere", "https://keys.example.com/jwks", true],
    ["not a URL", "keys.example.com/jwks", false],
    ["ftp", "ftp://keys.example.com/jwks", false],
  ])("jwks_uri: %s", (_what, uri, ok) => {
    const text = withIssuer(`- { name: ci, type: oidc, issuer: "https://ci.example.com", jwks_uri: "${uri}" }`);
    if (ok) expect(parseConfig(text, FILE, {}).identity.issuers[0]).toMatchObject({ jwks_uri: uri });
    else expect(problemsOf(text).map(pathOf)).toEqual(["identity.issuers[0].jwks_uri"]);
  });

  it.each([
    ["none", false],
    ["HS256", false],
    ["HS512", false],
    ["RS256", true],
    ["ES256", true],
    ["EdDSA", true],
  ])("oidc algorithm %s allowed: %p", (alg, ok) => {
    const text = withIssuer(`- { name: ci, type: oidc, issuer: "https://ci.example.com", discovery: true, algorithms: ["${alg}"] }`);
    if (ok) expect(parseConfig(text, FILE, {}).identity.issuers[0]!.algorithms).toEqual([alg]);
    else expect(problemsOf(text).map(pathOf)).toEqual(["identity.issuers[0].algorithms[0]"]);
  });

  it("refuses EdDSA for a spiffe issuer (JWT-SVID algorithms only)", () => {
    const text = withIssuer(`- { name: m, type: spiffe, trust_domain: x.org, bundle_url: "https://x.org/b", algorithms: ["ES256", "EdDSA"] }`);
    expect(problemsOf(text).map(pathOf)).toEqual(["identity.issuers[0].algorithms[1]"]);
  });

  it("reports duplicate issuer names and issuer URLs", () => {
    const text = withIssuer(`
- { name: a, type: oidc, issuer: "https://ci.example.com", discovery: true }
- { name: a, type: oidc, issuer: "https://ci.example.com", discovery: true }
- { name: m, type: spiffe, trust_domain: x.org, bundle_url: "https://x.org/b" }
- { name: n, type: spiffe, trust_domain: x.org, bundle_url: "https://x.org/b" }`);
    expect(problemsOf(text)).toEqual([
      'identity.issuers[1].name: duplicate issuer name "a" (first at identity.issuers[0].name)',
      'identity.issuers[1].issuer: duplicate issuer "issuer URL https://ci.example.com" (first at identity.issuers[0].issuer)',
      'identity.issuers[3].trust_domain: duplicate issuer "trust domain x.org" (first at identity.issuers[2].trust_domain)',
    ]);
  });
});

describe("console", () => {
  const ISSUERS = `
- name: corp
  type: oidc
  issuer: "https://login.example.com"
  discovery: true
- name: mesh
  type: spiffe
  trust_domain: "prod.example.org"
  bundle_file: "b.json"`;

  it("is absent unless configured, and fills the session defaults (30m idle, 8h max)", () => {
    expect(parseConfig(withIssuer(ISSUERS), FILE, {}).console).toBeUndefined();
    const cfg = parseConfig(withIssuer(ISSUERS, `console:\n  oidc: { issuer: corp, client_id: "jitbroker-console", client_secret: "\${S}" }`), FILE, { S: "s3cret" });
    expect(cfg.console).toEqual({ oidc: { issuer: "corp", client_id: "jitbroker-console", client_secret: "s3cret" }, session_idle: 30 * 60_000, session_max: 8 * 3_600_000 });
  });

  it("refuses an issuer that does not exist or is not oidc, with its path", () => {
    expect(problemsOf(withIssuer(ISSUERS, `console:\n  oidc: { issuer: nope, client_id: c }`)).map(pathOf)).toEqual(["console.oidc.issuer"]);
    const spiffe = problemsOf(withIssuer(ISSUERS, `console:\n  oidc: { issuer: mesh, client_id: c }`));
    expect(spiffe).toHaveLength(1);
    expect(spiffe[0]).toMatch(/^console\.oidc\.issuer: .*spiffe/);
    expect(problemsOf(withIssuer(ISSUERS, `console:\n  oidc: { issuer: corp }\n  session_idle: soon`)).map(pathOf).sort()).toEqual(["console.oidc.client_id", "console.session_idle"]);
  });
});

describe("audit", () => {
  it("defaults: 30 days of retention, a backlog bound of 1,000,000 events, no sinks", () => {
    const cfg = parseConfig(MINIMAL, FILE, {});
    expect(cfg.audit).toEqual({ key_file: `${DIR}/.jitbroker/audit.key`, retention: 30 * 24 * 3_600_000, max_backlog: 1_000_000, sinks: [] });
  });

  it("takes a retention in seconds and a bound of its own", () => {
    const cfg = parseConfig(withIssuer("- { name: ci, type: oidc, issuer: \"https://ci.example.com\", jwks_uri: \"https://ci.example.com/jwks\" }", "audit: { retention: 30s, max_backlog: 5000 }"), FILE, {});
    expect(cfg.audit).toMatchObject({ retention: 30_000, max_backlog: 5000 });
  });

  it("refuses a retention under a second, a bound under one, and a bad duration, each with its path", () => {
    const issuer = "- { name: ci, type: oidc, issuer: \"https://ci.example.com\", jwks_uri: \"https://ci.example.com/jwks\" }";
    expect(problemsOf(withIssuer(issuer, "audit: { retention: 500ms, max_backlog: 0 }")).map(pathOf).sort()).toEqual(["audit.max_backlog", "audit.retention"]);
    expect(problemsOf(withIssuer(issuer, "audit: { retention: forever }")).map(pathOf)).toEqual(["audit.retention"]);
  });
});

describe("telemetry", () => {
  const issuer = "- { name: ci, type: oidc, issuer: \"https://ci.example.com\", jwks_uri: \"https://ci.example.com/jwks\" }";
  it("is off by default (no endpoint), named jitbroker", () => {
    expect(parseConfig(MINIMAL, FILE, {}).telemetry).toEqual({ service_name: "jitbroker" });
  });
  it("takes an http or https collector and a service name", () => {
    expect(parseConfig(withIssuer(issuer, 'telemetry: { otlp_endpoint: "http://otel-collector:4318", service_name: "broker-eu" }'), FILE, {}).telemetry).toEqual({ otlp_endpoint: "http://otel-collector:4318", service_name: "broker-eu" });
  });
  it("refuses another scheme, credentials in the URL, a query, and a bad name, each with its path", () => {
    for (const bad of ['"ftp://x:4318"', '"https://user:pw@x:4318"', '"https://x:4318/?a=1"', '"not a url"']) {
      expect(problemsOf(withIssuer(issuer, `telemetry: { otlp_endpoint: ${bad} }`)).map(pathOf)).toEqual(["telemetry.otlp_endpoint"]);
    }
    expect(problemsOf(withIssuer(issuer, 'telemetry: { service_name: "" }')).map(pathOf)).toEqual(["telemetry.service_name"]);
  });
});
