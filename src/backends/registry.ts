/**
 * Builds the configured external credential backends (vault, aws_sts) for the composition root.
 * The embedded jwt backend is built in broker.ts because it shares the signing keys with the
 * JWKS endpoint. Each backend gets what it needs and nothing more.
 */
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { AuditLedger } from "../audit/ledger";
import type { LoadedConfig } from "../config/load";
import type { RoleConfig } from "../config/schema";
import type { LeaseStore } from "../leases/store";
import type { Backend } from "./types";
import { createVaultBackend } from "./vault/backend";
import type { Redis } from "ioredis";
import type { Keyspace } from "../redis/keys";
import { createAwsStsBackendFromConfig } from "./aws/backend";

export interface BackendDeps {
  logger: Logger;
  /** Prometheus registry of this broker; backends register their own `jitbroker_<kind>_*` metrics. */
  registry: Registry;
  now: () => number;
  store: LeaseStore;
  audit: AuditLedger;
  /** Which parts run in this process: periodic jobs (reconciliation) run with the worker only. */
  parts: { api: boolean; worker: boolean };
  /** The request-path Redis connection and keyspace (aws_sts: the per-role revocation lock, see src/backends/aws/lock.ts). */
  redis: Redis;
  keys: Keyspace;
  /**
   * The live inventory (src/policy/inventory.ts): SIGHUP and POST /v1/admin/policy/reload replace
   * workloads and roles, so backends read it when they need it and never copy it at start-up.
   * aws_sts: a workload's owner (session tag); vault: the path roles to reconcile.
   */
  workloads: () => { get(id: string): { owner: string } | undefined };
  roles: () => ReadonlyMap<string, RoleConfig>;
}

export async function createConfiguredBackends(cfg: LoadedConfig, deps: BackendDeps): Promise<Map<string, Backend>> {
  const out = new Map<string, Backend>();
  if (cfg.backends.vault) out.set("vault", createVaultBackend(cfg, deps));
  if (cfg.backends.aws_sts) out.set("aws_sts", createAwsStsBackendFromConfig(cfg, deps));
  void cfg;
  void deps;
  return out;
}
