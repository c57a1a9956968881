/**
 * redis: exactly one of url / sentinel / cluster, durability, and the connection factory built
 * from them (src/redis/connect.ts). Wrong modes are reported with their path.
 */
import { MINIMAL_CONFIG } from "../../test/support/configs";
import { ConfigError, parseConfig } from "./load";
import { createRedisFactory, describeRedis, isCluster } from "../redis/connect";
import { classifyRedisError, DurabilityError } from "../redis/health";

const FILE = "/etc/jitbroker/broker.yaml";

function problemsOf(text: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(text, FILE, env);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return e.problems;
  }
  throw new Error("expected a ConfigError, but the configuration parsed");
}
const withRedis = (yaml: string) => `${MINIMAL_CONFIG}redis:\n${yaml.replace(/^/gm, "  ")}\n`;

describe("redis modes", () => {
  it("defaults to embedded with no durability", () => {
    const cfg = parseConfig(MINIMAL_CONFIG, FILE, {});
    expect(cfg.redis.url).toBe("embedded");
    expect(cfg.redis.sentinel).toBeUndefined();
    expect(cfg.redis.durability).toEqual({ replicas: 0, timeout: 1000 });
  });

  it("parses a sentinel configuration with passwords from the environment, TLS CA relative to the file", () => {
    const cfg = parseConfig(
      withRedis(`sentinel:\n  master: jitbroker\n  nodes: ["10.0.0.1:26379", "[::1]:26380"]\n  password: "\${REDIS_PASSWORD}"\n  sentinel_password: "\${SENTINEL_PASSWORD}"\n  tls: { ca_file: "certs/ca.pem" }\ndurability: { replicas: 1, timeout: "500ms" }`),
      FILE,
      { REDIS_PASSWORD: "pw1", SENTINEL_PASSWORD: "pw2" },
    );
    expect(cfg.redis.url).toBeUndefined();
    expect(cfg.redis.sentinel).toEqual({ master: "jitbroker", nodes: ["10.0.0.1:26379", "[::1]:26380"], password: "pw1", sentinel_password: "pw2", tls: { ca_file: "/etc/jitbroker/certs/ca.pem" } });
    expect(cfg.redis.durability).toEqual({ replicas: 1, timeout: 500 });
    expect(describeRedis(cfg.redis)).toBe('sentinel master "jitbroker" via 10.0.0.1:26379, [::1]:26380');
  });

  it("parses a cluster configuration", () => {
    const cfg = parseConfig(withRedis(`cluster: { nodes: ["10.0.0.1:7000", "10.0.0.2:7000"], password: "x", tls: true }`), FILE, {});
    expect(cfg.redis.cluster).toEqual({ nodes: ["10.0.0.1:7000", "10.0.0.2:7000"], password: "x", tls: true });
    expect(cfg.redis.url).toBeUndefined();
  });

  it("refuses two modes at once, naming the path of the second", () => {
    expect(problemsOf(withRedis(`url: "redis://127.0.0.1:6380"\ncluster: { nodes: ["10.0.0.1:7000"] }`))).toEqual([
      "redis.cluster: use exactly one of redis.url, redis.sentinel, redis.cluster (also set: redis.url)",
    ]);
    expect(problemsOf(withRedis(`sentinel: { master: m, nodes: ["a:1"] }\ncluster: { nodes: ["b:2"] }`))).toEqual([
      "redis.cluster: use exactly one of redis.url, redis.sentinel, redis.cluster (also set: redis.sentinel)",
    ]);
  });

  it("reports every wrong field of a mode with its path", () => {
    const problems = problemsOf(withRedis(`sentinel: { nodes: ["not a node", "h:1"], sentinels: ["x:1"], password: "" }`));
    expect(problems).toEqual(
      expect.arrayContaining([
        "redis.sentinel.master: required",
        "redis.sentinel.nodes[0]: must be host:port",
        "redis.sentinel.sentinels: unknown key (check the spelling)",
      ]),
    );
    expect(problems.some((p) => p.startsWith("redis.sentinel.password:"))).toBe(true);
    expect(problemsOf(withRedis(`cluster: { nodes: [] }`))).toEqual(["redis.cluster.nodes: at least one cluster node host:port"]);
  });

  it("refuses durability on an embedded Redis (it has no replicas)", () => {
    expect(problemsOf(withRedis(`durability: { replicas: 1 }`))).toEqual([
      "redis.durability.replicas: an embedded Redis has no replicas; use 0, or point redis.url/sentinel/cluster at a Redis with replicas",
    ]);
    expect(problemsOf(withRedis(`url: "redis://127.0.0.1:1"\ndurability: { replicas: -1, timeout: "soon" }`)).length).toBe(2);
  });

  it("REDIS_URL cannot silently replace a Sentinel or Cluster setup", () => {
    expect(problemsOf(withRedis(`cluster: { nodes: ["10.0.0.1:7000"] }`), { REDIS_URL: "redis://127.0.0.1:6380" })).toEqual([
      "REDIS_URL: set while redis.cluster is configured (use exactly one Redis mode; unset REDIS_URL)",
    ]);
  });
});

describe("connection factory", () => {
  it("builds a Cluster client for redis.cluster and plain clients otherwise, without connecting (cli use is lazy)", () => {
    const cluster = createRedisFactory({ cluster: { nodes: ["127.0.0.1:1"] } });
    const c = cluster.connect("t", "cli");
    expect(isCluster(c)).toBe(true);
    c.disconnect();
    const single = createRedisFactory({ url: "redis://:secret@127.0.0.1:1/0" });
    expect(single.target).toBe("redis://***@127.0.0.1:1/0");
    const s = single.connect("t", "cli");
    expect(isCluster(s)).toBe(false);
    s.disconnect();
    expect(() => createRedisFactory({ url: "embedded" })).toThrow(/resolved/);
  });
});

describe("classifyRedisError names the failure instead of 'unreachable'", () => {
  it.each([
    ["READONLY You can't write against a read only replica.", "readonly"],
    ["MOVED 4875 127.0.0.1:7001", "moved"],
    ["CLUSTERDOWN The cluster is down", "clusterdown"],
    ["Command timed out", "timeout"],
    ["NOAUTH Authentication required.", "auth"],
    ["WRONGPASS invalid username-password pair or user is disabled.", "auth"],
    ["LOADING Redis is loading the dataset in memory", "loading"],
    ["OOM command not allowed when used memory > 'maxmemory'.", "oom"],
    ["All sentinels are unreachable. Retrying from scratch after 10ms.", "no_primary"],
    ["connect ECONNREFUSED 127.0.0.1:1", "refused"],
    ["Stream isn't writeable and enableOfflineQueue options is false", "not_connected"],
  ])("%s → %s", (message, kind) => {
    expect(classifyRedisError(new Error(message))).toBe(kind);
  });
  it("a missing replica acknowledgement is a durability failure", () => {
    expect(classifyRedisError(new DurabilityError(0, 1, 500))).toBe("durability");
  });
});
