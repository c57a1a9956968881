/**
 * Wires the console into the API process (called by the composition root when the
 * configuration has a `console` section): its sessions, its OpenID Connect client, a verifier
 * for ID tokens of its issuer, and, under `jitbroker dev`, the dev issuer's sign-in endpoints.
 */
import type { Express, Router } from "express";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { AuditLedger } from "../audit/ledger";
import type { LoadedConfig } from "../config/load";
import type { OperatorCheck } from "../authz/operators";
import type { KeySet } from "../identity/keyset";
import { createTokenVerifier, type ReplayGuard } from "../identity/verify";
import type { WorkloadMatcher } from "../identity/workloads";
import type { LeaseStore } from "../leases/store";
import type { Keyspace } from "../redis/keys";
import type { AuditKey } from "../audit/key";
import { createOidcClient } from "./oidc";
import { consoleRoutes } from "./routes";
import { createConsoleSessions } from "./sessions";

/**
 * The sign-in endpoints of an issuer the broker itself serves (`jitbroker dev`'s issuer, built by
 * src/dev/authorize.ts and passed in by the composition root): used when `console.oidc.issuer`
 * names that issuer.
 */
export interface DevSignIn {
  /** The issuer URL (`iss`) it serves. */
  issuer: string;
  routes(o: { clientId: string; redirectUri: string; issuerName: string }): Router;
}

export interface MountConsoleDeps {
  redis: Redis;
  keys: Keyspace;
  keySets: Map<string, KeySet>;
  replayGuard: ReplayGuard;
  workloads: () => WorkloadMatcher;
  check: OperatorCheck;
  store: LeaseStore;
  audit: AuditLedger;
  /** The audit chain's key, for the console's chain check. */
  auditKey: AuditKey;
  readiness: () => Promise<unknown>;
  apiRouters: Router[];
  logger: Logger;
  now?: () => number;
  devSignIn?: DevSignIn;
}

export function mountConsole(app: Express, cfg: LoadedConfig, deps: MountConsoleDeps): void {
  const c = cfg.console;
  if (!c) return;
  const issuer = cfg.identity.issuers.find((i) => i.name === c.oidc.issuer);
  if (!issuer || issuer.type !== "oidc") throw new Error(`console.oidc.issuer "${c.oidc.issuer}" is not an oidc issuer`); // the schema says so first
  const publicUrl = cfg.server.public_url.replace(/\/+$/, "");
  const redirectUri = `${publicUrl}/console/callback`;
  // `jitbroker dev`: the dev issuer has no web presence of its own; the broker serves its sign-in.
  const dev = deps.devSignIn !== undefined && issuer.issuer === deps.devSignIn.issuer;
  if (dev) app.use(deps.devSignIn!.routes({ clientId: c.oidc.client_id, redirectUri, issuerName: issuer.name }));
  const oidc = createOidcClient({
    issuer: issuer.issuer,
    clientId: c.oidc.client_id,
    ...(c.oidc.client_secret ? { clientSecret: c.oidc.client_secret } : {}),
    redirectUri,
    ...(dev ? { endpoints: { authorization: `${publicUrl}/dev/oidc/authorize`, token: `${publicUrl}/dev/oidc/token` }, algorithms: issuer.algorithms } : {}),
  });
  const idTokens = createTokenVerifier({ issuers: [issuer], keySets: deps.keySets, audience: c.oidc.client_id, replayGuard: deps.replayGuard, now: deps.now });
  const sessions = createConsoleSessions(deps.redis, deps.keys, { idleMs: c.session_idle, maxMs: c.session_max, now: deps.now });
  const url = cfg.redis.url;
  app.use(
    consoleRoutes({
      publicUrl,
      issuerName: issuer.name,
      issuerUrl: issuer.issuer,
      sessionIdleMs: c.session_idle,
      sessionMaxMs: c.session_max,
      oidc,
      idTokens,
      sessions,
      workloads: deps.workloads,
      check: deps.check,
      store: deps.store,
      audit: deps.audit,
      redis: deps.redis,
      redisMode: cfg.redis.sentinel
        ? `sentinel (primary "${cfg.redis.sentinel.master}", ${cfg.redis.sentinel.nodes.length} sentinels)`
        : cfg.redis.cluster
          ? `cluster (${cfg.redis.cluster.nodes.length} seed nodes)`
          : url === "embedded"
            ? "embedded (single node)"
            : "single node",
      auditKeys: { key: deps.auditKey, streamKey: deps.keys.audit, headKey: deps.keys.auditHead, anchorKey: deps.keys.auditAnchor },
      readiness: deps.readiness,
      apiRouters: deps.apiRouters,
      logger: deps.logger,
      now: deps.now,
    }),
  );
}
