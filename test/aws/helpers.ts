/**
 * Test harness for the aws_sts backend: the backend built directly against the STS/IAM test
 * server (real SDK clients, static test credentials), a real Redis for the revocation lock and
 * the record of revoked sessions, a recording audit sink and captured logs. Options left
 * undefined take the backend's defaults (clock skew margin 60 s, re-read 30 s after a write).
 */
import { Writable } from "node:stream";
import { Redis } from "ioredis";
import { Registry } from "prom-client";
import { createAwsStsBackend, type AwsStsBackend } from "../../src/backends/aws/backend";
import type { AuditEvent, StoredAuditEvent } from "../../src/audit/ledger";
import { createLogger } from "../../src/core/logger";
import { createKeyspace, type Keyspace } from "../../src/redis/keys";
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
  /** Sizes of the audit.appendMany calls, in order. */
  appendCalls: number[];
  logs: string[];
  redis: Redis;
  keys: Keyspace;
  registry: Registry;
  close(): Promise<void>;
}

export async function startHarness(
  o: {
    now?: () => number;
    server?: AwsServer;
    /** IAM endpoint other than the server's (a proxy, another account's server). */
    iamUrl?: string;
    /** Redis key prefix (default: a fresh one); harnesses with the same prefix share the lock and the record. */
    prefix?: string;
    policyMaxChars?: number;
    maxAttempts?: number;
    lockWaitMs?: number;
    lockTtlMs?: number;
    owners?: Record<string, string>;
    clockSkewMarginMs?: number;
    roleGoneConfirmMs?: number;
    repairDelayMs?: number;
    repairIntervalMs?: number;
  } = {},
): Promise<Harness> {
  const server = o.server ?? (await startAwsServer({ now: o.now }));
  const redis = new Redis(testRedisUrl(), { lazyConnect: false, maxRetriesPerRequest: 1 });
  const keys = createKeyspace(o.prefix ?? uniquePrefix());
  const events: AuditEvent[] = [];
  const appendCalls: number[] = [];
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
    iamEndpoint: o.iamUrl ?? server.url,
    maxAttempts: o.maxAttempts ?? 1,
    requestTimeoutMs: 5000,
    policyName: POLICY_NAME,
    policyMaxChars: o.policyMaxChars ?? 10_240,
    credentials: BROKER_CREDS,
    ownerOf: (w) => (o.owners ?? { deployer: "platform@example.com" })[w],
    redis,
    keys,
    audit: {
      append: async (e: AuditEvent) => {
        events.push(e);
        return { ...e, seq: String(events.length), hash: "", prev: "" } as StoredAuditEvent;
      },
      appendMany: async (es: AuditEvent[]) => {
        appendCalls.push(es.length);
        return es.map((e) => {
          events.push(e);
          return { ...e, seq: String(events.length), hash: "", prev: "" } as StoredAuditEvent;
        });
      },
    },
    logger,
    registry,
    now: o.now,
    lockWaitMs: o.lockWaitMs,
    lockTtlMs: o.lockTtlMs,
    clockSkewMarginMs: o.clockSkewMarginMs,
    roleGoneConfirmMs: o.roleGoneConfirmMs,
    repairDelayMs: o.repairDelayMs,
    repairIntervalMs: o.repairIntervalMs,
  });
  return {
    server,
    backend,
    events,
    appendCalls,
    logs,
    redis,
    keys,
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

export { expectNoSecrets, redisContents } from "../support/secrets";
