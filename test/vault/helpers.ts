/**
 * The real vault backend against the Vault test server, with a real lease store and audit
 * ledger on the test run's Redis and every log line captured (for secret scans).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { Redis } from "ioredis";
import { Registry } from "prom-client";
import { randomBytes } from "node:crypto";
import { createAuditLedger, type AuditLedger } from "../../src/audit/ledger";
import { auditKeyFromBytes } from "../../src/audit/key";
import { createVaultBackend, type VaultBackend } from "../../src/backends/vault/backend";
import type { LoadedConfig } from "../../src/config/load";
import { createLogger } from "../../src/core/logger";
import { createLeaseStore, type LeaseStore, type NewLease } from "../../src/leases/store";
import { createInventory } from "../../src/policy/inventory";
import type { Lease } from "../../src/leases/types";
import { createKeyspace } from "../../src/redis/keys";
import { configFrom, testRedisUrl, uniquePrefix } from "../support/broker";
import type { VaultTestServer } from "../support/vault-server";

export const ISSUERS = { issuers: [{ name: "idp", type: "oidc", issuer: "https://idp.example.com", jwks_uri: "https://idp.example.com/jwks" }] };

/** A temp file holding `content` (secret id, login JWT, token, CA). */
export function tempFile(name: string, content: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "jitbroker-vault-"));
  const file = path.join(dir, name);
  writeFileSync(file, content, { mode: 0o600 });
  return file;
}

export const ROLES = [
  { name: "payments-db", backend: "vault", ttl: { default: "10m", max: "30m" }, labels: { access: "read", sensitivity: "internal" }, vault: { path: "database/creds/payments-ro" } },
  { name: "deploy-aws", backend: "vault", ttl: { default: "10m", max: "30m" }, vault: { path: "aws/creds/deploy" } },
  { name: "kv-reader", backend: "vault", ttl: { default: "5m", max: "15m" }, labels: { access: "read", sensitivity: "internal" }, vault: { token_role: "agent-readonly", policies: ["kv-read"] } },
];

export interface Harness {
  backend: VaultBackend;
  cfg: LoadedConfig;
  store: LeaseStore;
  audit: AuditLedger;
  registry: Registry;
  logs: string[];
  redis: Redis;
  prefix: string;
  /** Replaces the live roles as a configuration reload does (SIGHUP, POST /v1/admin/policy/reload); returns the new configuration. */
  reload(roles: unknown[]): LoadedConfig;
  /** A lease as the service hands it to `mint` (not stored). */
  lease(role: string, ttlSeconds?: number): Lease;
  /** Writes a lease to the store (state issuing) as the service does before minting. */
  createLease(role: string, ttlSeconds?: number): Promise<NewLease>;
  metric(name: string): Promise<number>;
  close(): Promise<void>;
}

let seq = 0;

export async function startBackend(server: VaultTestServer, vault: Record<string, unknown>, opts: { roles?: unknown[]; worker?: boolean; mintTimeout?: string } = {}): Promise<Harness> {
  const prefix = uniquePrefix();
  const configWith = (roles: unknown[]) =>
    configFrom({
      server: { public_url: "http://127.0.0.1:8080" },
      identity: ISSUERS,
      roles,
      redis: { url: testRedisUrl(), prefix },
      backends: { vault: { address: server.url, health_check_interval: 0, reconcile_interval: 0, ...vault } },
      worker: { mint_timeout: opts.mintTimeout ?? "30s" },
    });
  const cfg = configWith(opts.roles ?? ROLES);
  const inventory = createInventory(cfg);
  const logs: string[] = [];
  const logger = createLogger({
    level: "debug",
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        logs.push(chunk.toString("utf8"));
        cb();
      },
    }),
  });
  const redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: 1 });
  const keys = createKeyspace(prefix);
  const store = createLeaseStore(redis, keys, { retentionSeconds: 3600, taskRetentionSeconds: 3600 });
  const audit = createAuditLedger(redis, {
    key: auditKeyFromBytes(randomBytes(32)),
    streamKey: keys.audit,
    headKey: keys.auditHead,
    leaseIndexPrefix: keys.auditLeasePrefix,
    leaseIndexTtlSeconds: 3600,
    leaseIndexField: { hashKey: store.keys.lease, field: "ev" },
  });
  const registry = new Registry();
  const backend = createVaultBackend(cfg, { logger, registry, now: Date.now, store, audit, parts: { api: true, worker: opts.worker ?? false }, roles: inventory.roles });
  await backend.ready();

  const draft = (role: string, ttlSeconds: number): NewLease => {
    const issuedAt = Date.now();
    const r = cfg.roles.find((x) => x.name === role);
    return {
      id: `l_test${++seq}_${prefix}`,
      role,
      backend: r?.backend ?? "vault",
      workload: "agent",
      task: { id: `task-${seq}`, intent: "", tool: "", destination: "", sensitivity: "" },
      issuedAt,
      expiresAt: Math.floor((issuedAt + ttlSeconds * 1000) / 1000) * 1000,
      identity: { kind: "oidc", issuer: "idp", subject: "agent-1" },
      policy: { ids: ["p"], hash: "00" },
    };
  };
  return {
    backend,
    cfg,
    store,
    audit,
    registry,
    logs,
    redis,
    prefix,
    reload(roles) {
      const next = configWith(roles);
      const candidate = inventory.prepare(() => next);
      expect(candidate).toMatchObject({ ok: true, changed: true });
      candidate.apply();
      return next;
    },
    lease: (role, ttlSeconds = 600) => store.created(draft(role, ttlSeconds)),
    async createLease(role, ttlSeconds = 600) {
      const d = draft(role, ttlSeconds);
      expect(await store.create(d, 0)).toBe("ok");
      return d;
    },
    async metric(name) {
      const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
      return Number(m?.values[0]?.value ?? NaN);
    },
    async close() {
      await backend.close?.();
      await audit.close();
      redis.disconnect();
    },
  };
}

export { expectNoSecrets, redisContents } from "../support/secrets";
