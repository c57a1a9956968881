/**
 * Test harness for the aws_sts backend: the backend built directly against the STS/IAM test
 * server (real SDK clients, static test credentials), a real Redis for the revocation lock, a
 * recording audit sink and captured logs.
 */
import { Writable } from "node:stream";
import { Redis } from "ioredis";
import { Registry } from "prom-client";
import { createAwsStsBackend, type AwsStsBackend } from "../../src/backends/aws/backend";
import type { AuditEvent, StoredAuditEvent } from "../../src/audit/ledger";
import { createLogger } from "../../src/core/logger";
import type { Lease } from "../../src/leases/types";
import { testRedisUrl, uniquePrefix } from "../support/broker";
import { startAwsServer, type AwsServer } from "../support/aws-server";

/** The broker's own (static, test) AWS credentials: they must never be written anywhere either. */
export const BROKER_CREDS = { accessKeyId: "AKIAJITBROKERTEST001", secretAccessKey: "jitbroker/test+broker/secret/key/000000001" };
export const POLICY_NAME = "jitbroker-revocations";

/** A clock the test moves; the server and the backend share it. */
export function testClock(start = Date.parse("2025-06-01T12:00:30Z")) {
  let t = start;
  return { now: () => t, set: (ms: number) => (t = ms), advance: (ms: number) => (t += ms) };
}

export interface Harness {
  server: AwsServer;
  backend: AwsStsBackend;
  events: AuditEvent[];
  logs: string[];
  redis: Redis;
  tag: string;
  registry: Registry;
  close(): Promise<void>;
}

export async function startHarness(
  o: { now?: () => number; server?: AwsServer; tag?: string; policyMaxChars?: number; maxAttempts?: number; lockWaitMs?: number; owners?: Record<string, string> } = {},
): Promise<Harness> {
  const server = o.server ?? (await startAwsServer({ now: o.now }));
  const redis = new Redis(testRedisUrl(), { lazyConnect: false, maxRetriesPerRequest: 1 });
  const tag = o.tag ?? `{${uniquePrefix()}}`;
  const events: AuditEvent[] = [];
  const logs: string[] = [];
  const registry = new Registry();
  const logger = createLogger({
    level: "debug",
    destination: new Writable({
      write(chunk: Buffer, _e, cb) {
        logs.push(chunk.toString("utf8"));
        cb();
      },
    }),
  });
  const backend = createAwsStsBackend({
    region: "us-east-1",
    endpoint: server.url,
    iamEndpoint: server.url,
    maxAttempts: o.maxAttempts ?? 1,
    requestTimeoutMs: 5000,
    policyName: POLICY_NAME,
    policyMaxChars: o.policyMaxChars ?? 10_240,
    credentials: BROKER_CREDS,
    ownerOf: (w) => (o.owners ?? { deployer: "platform@example.com" })[w],
    redis,
    keyTag: tag,
    audit: {
      append: async (e: AuditEvent) => {
        events.push(e);
        return { ...e, seq: String(events.length), hash: "", prev: "" } as StoredAuditEvent;
      },
    },
    logger,
    registry,
    now: o.now,
    lockWaitMs: o.lockWaitMs,
  });
  return {
    server,
    backend,
    events,
    logs,
    redis,
    tag,
    registry,
    async close() {
      await backend.close?.();
      if (!o.server) await server.close();
      redis.disconnect();
    },
  };
}

let seq = 0;
/** A lease as the lease service hands it to a backend. */
export function leaseFor(now: number, o: { ttlSeconds: number; workload?: string; task?: string; id?: string; trigger?: "expiry" | "owner" | "operator" }): Lease {
  const id = o.id ?? `l_test${String(++seq).padStart(12, "0")}`;
  return {
    id,
    role: "deploy",
    backend: "aws_sts",
    workload: o.workload ?? "deployer",
    task_id: o.task ?? "T-1",
    state: "active",
    issued_at: new Date(now).toISOString(),
    expires_at: new Date(Math.floor((now + o.ttlSeconds * 1000) / 1000) * 1000).toISOString(),
    revocation_kind: "deny_by_session",
    identity: { kind: "oidc", issuer: "idp", subject: "repo:acme/app" },
    policy: { ids: ["p"], hash: "h" },
    task: { id: o.task ?? "T-1", intent: "", tool: "", destination: "", sensitivity: "" },
    ttl_seconds: o.ttlSeconds,
    ...(o.trigger ? { revocation: { trigger: o.trigger } } : {}),
  };
}

/** Every key of a prefix and its contents, as text (strings, hashes, lists, sets, zsets, streams). */
export async function redisText(redis: Redis, pattern: string): Promise<{ keys: number; text: string }> {
  const parts: string[] = [];
  let keys = 0;
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    for (const key of batch) {
      keys++;
      parts.push(key);
      const type = await redis.type(key);
      if (type === "string") parts.push((await redis.get(key)) ?? "");
      else if (type === "hash") parts.push(JSON.stringify(await redis.hgetall(key)));
      else if (type === "list") parts.push(JSON.stringify(await redis.lrange(key, 0, -1)));
      else if (type === "set") parts.push(JSON.stringify(await redis.smembers(key)));
      else if (type === "zset") parts.push(JSON.stringify(await redis.zrange(key, 0, -1, "WITHSCORES")));
      else if (type === "stream") parts.push(JSON.stringify(await redis.xrange(key, "-", "+")));
      else if (type !== "none") throw new Error(`unexpected key type ${type} for ${key}`);
    }
  } while (cursor !== "0");
  return { keys, text: parts.join("\n") };
}

export function expectNoSecrets(where: string, haystack: string, needles: string[]) {
  const leaked = needles.filter((n) => haystack.includes(n)).map((n) => `${n.slice(0, 8)}…(${n.length} chars)`);
  expect({ where, leaked }).toEqual({ where, leaked: [] });
}
