/**
 * The composition root: builds every component from the configuration and wires them into an
 * HTTP server. Nothing else constructs Redis clients, key sets or routes.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { LoadedConfig } from "./config/load";
import { answerClientErrors, authenticate, createHttpApp, finishApp } from "./http/app";
import { createMetrics, type Metrics } from "./http/metrics";
import { createKeySet, type KeySet, type KeySource } from "./identity/keyset";
import { createRedisReplayGuard } from "./identity/replay";
import { identityRoutes } from "./identity/routes";
import { createTokenVerifier } from "./identity/verify";
import { createVerifiedTokenCache } from "./identity/token-cache";
import { createRedisFactory, type RedisFactory } from "./redis/connect";
import { createRedisHealth, probeRedis } from "./redis/health";
import { createDurability } from "./redis/durability";
import { checkShardCount, ShardCountError } from "./redis/shards";
import { startEmbeddedRedis, type EmbeddedRedis } from "./redis/embedded";
import { createKeyspace } from "./redis/keys";
import { createAuditLedger, type AuditLedger } from "./audit/ledger";
import { loadOrCreateAuditKey } from "./audit/key";
import { createAuditMetrics } from "./audit/metrics";
import { createAuditSinks, sinkName } from "./audit/sinks";
import { createAuditBacklog, createAuditTrimmer } from "./audit/retention";
import { createJwtBackend, type JwtBackend } from "./backends/jwt/backend";
import { loadOrCreateSigningKeys, type SigningKeys } from "./backends/jwt/keys";
import { openidConfiguration } from "./backends/jwt/oidc";
import { createConfiguredBackends } from "./backends/registry";
import type { Backend } from "./backends/types";
import type { IssuerConfig } from "./config/schema";
import { BrokerError } from "./core/errors";
import { requireOperator } from "./authz/operators";
import { apiRoutes } from "./api";
import { createReadiness, publicChecks, type Readiness } from "./redis/readiness";
import { mount } from "./http/api";
import { buildOpenApiDocument } from "./http/openapi";
import { OPERATIONS_API } from "./http/operations";
import { TOKENS_API } from "./oauth/api";
import { createLeaseMetrics, sampleLeaseGauges } from "./leases/metrics";
import { createRevocationQueue, startRevocationWorker, within, type RevocationWorker } from "./leases/queue";
import { createRevoker } from "./leases/revoker";
import { leaseRoutes } from "./leases/routes";
import { createLeaseService, type LeaseService } from "./leases/service";
import { createLeaseStore, REVOCATION_KIND, type LeaseStore, type UnreadableLease } from "./leases/store";
import { compilePolicies, createPolicyEngine, loadPolicyFiles, type PolicyEngine } from "./policy/engine";
import { createReloadWorkflow } from "./policy/workflow";
import { createInventory } from "./policy/inventory";
import { reauthorizeLeases } from "./policy/reauthorize";
import { policyRoutes } from "./policy/routes";
import { loadConfig } from "./config/load";
import { approvalRoutes, expireApprovals } from "./approvals/routes";
import { createApprovalStore, type ApprovalStore } from "./approvals/store";
import { createRateLimiter, limitWrites } from "./limits/ratelimit";
import { createMemoryWatch, DEFAULT_MAX_MEMORY_USE } from "./limits/memory";
import { createRefusalSampler } from "./limits/refusals";
import { repeat } from "./core/repeat";
import { mountConsole } from "./console/mount";
import { devConsoleSignIn } from "./dev/authorize";
import { createTokenExchange } from "./oauth/exchange";
import { createIntrospector, introspectionRoutes } from "./oauth/introspect";
import { mountOAuthRoutes } from "./oauth/routes";
import { createTracing } from "./telemetry/tracing";

export interface BrokerOptions {
  logger: Logger;
  now?: () => number;
  metrics?: Metrics;
  /** Which parts run in this process (`serve --only`). Default both. */
  parts?: { api: boolean; worker: boolean };
  /** How long POST /v1/admin/policy/reload waits for the re-authorization before answering 202 (default 20 s). */
  reloadWaitMs?: number;
  /** Where a reload reads the configuration from (default: the file `cfg` came from). */
  loadConfig?: () => LoadedConfig;
  /** Replaces credential backends by kind (tests inject faults this way). */
  backends?: Partial<Record<string, Backend>>;
}

import type { ReloadReport } from "./policy/workflow";
export type { ReloadReport };

export type { Readiness } from "./redis/readiness";

export interface Broker {
  app: ReturnType<typeof createHttpApp>;
  redis: Redis;
  /** Where Redis is (mode and nodes, no password). */
  redisUrl: string;
  /** Opens further connections with the configured mode (tests, tools). */
  redisFactory: RedisFactory;
  metrics: Metrics;
  store: LeaseStore;
  approvals: ApprovalStore;
  service: LeaseService;
  audit: AuditLedger;
  policy: () => PolicyEngine;
  jwt: JwtBackend;
  worker: RevocationWorker | null;
  /** Re-reads the policy files now (SIGHUP does the same). */
  reloadPolicies(): Promise<{ ok: boolean; changed: boolean; hash: string; policies: number; problems?: string[] }>;
  /**
   * Reloads workloads, roles and policies from their files (SIGHUP, POST /v1/admin/policy/reload)
   * and re-authorizes every active lease if anything changed.
   */
  reload(cause: { actor: string; source: string }): Promise<ReloadReport>;
  /** Re-reads the signing key file (SIGHUP does the same); on error the loaded keys stay. */
  reloadSigningKeys(): Promise<{ ok: boolean; kid: string; error?: string }>;
  readiness(): Promise<Readiness>;
  /** Starts listening on `server.listen` (or the given port, 0 for any). */
  listen(port?: number, host?: string): Promise<{ url: string; port: number }>;
  close(): Promise<void>;
}

/** Where an issuer's keys come from: exactly the one source its configuration names. */
function keySourceOf(iss: IssuerConfig): KeySource {
  if (iss.type === "spiffe") return iss.bundle_file ? { kind: "file", path: iss.bundle_file } : { kind: "url", url: iss.bundle_url! };
  if (iss.jwks_file) return { kind: "file", path: iss.jwks_file };
  if (iss.jwks_uri) return { kind: "url", url: iss.jwks_uri };
  return { kind: "discovery", issuer: iss.issuer };
}

export async function createBroker(cfg: LoadedConfig, opts: BrokerOptions): Promise<Broker> {
  const { logger } = opts;
  const now = opts.now ?? Date.now;
  const metrics = opts.metrics ?? createMetrics();

  // Everything that can be wrong in files is checked before any process or connection starts.
  const policyEngine = createPolicyEngine(compilePolicies(await loadPolicyFiles(cfg.policy.files)));
  logger.info({ policies: policyEngine.set().policies.length, hash: policyEngine.set().hash }, "policies loaded");
  let signingKeys = await loadOrCreateSigningKeys(cfg.backends.jwt.signing_key_file, now);
  const auditKey = await loadOrCreateAuditKey(cfg.audit.key_file);
  // OpenTelemetry (src/telemetry): without telemetry.otlp_endpoint nothing below is wrapped.
  let traceWarnedAt = -Infinity;
  const tracing = createTracing(cfg.telemetry, {
    // At most one line a minute while the collector is away; traces are best effort.
    onExportError: (e) => {
      if (now() - traceWarnedAt < 60_000) return;
      traceWarnedAt = now();
      logger.warn({ err: { message: e.message } }, "trace export to telemetry.otlp_endpoint failed; spans are dropped until it answers");
    },
  });
  // The jwt backend reads the keys through this view, so a reload (SIGHUP, after
  // `jitbroker keys rotate`) takes effect without a restart.
  const currentKeys: SigningKeys = {
    get current() {
      return signingKeys.current;
    },
    jwks: () => signingKeys.jwks(),
    verificationKey: (kid) => signingKeys.verificationKey(kid),
  };

  let embedded: EmbeddedRedis | null = null;
  let resolvedUrl = cfg.redis.url;
  if (resolvedUrl === "embedded") {
    embedded = await startEmbeddedRedis(cfg.redis.data_dir, cfg.redis.embedded_maxmemory);
    resolvedUrl = embedded.url;
    logger.info({ redis: resolvedUrl, dir: cfg.redis.data_dir }, "embedded redis-server started");
  }
  // Every connection below comes from this factory, in the configured mode (url, sentinel, cluster).
  const redisFactory = createRedisFactory(
    { ...cfg.redis, url: resolvedUrl },
    // A request-path command may be a WAIT of up to durability.timeout (I1).
    { commandTimeoutMs: Math.max(2000, cfg.redis.durability.timeout + 1000) },
  );
  const redisUrl = redisFactory.target;
  const redisHealth = createRedisHealth({ logger, registry: metrics.registry, target: redisFactory.target });
  const connect: RedisFactory["connect"] = (name, use) => {
    const conn = redisFactory.connect(name, use);
    redisHealth.watch(conn, name);
    return conn;
  };
  const redis = connect("jitbroker-api", "request");
  const keys = createKeyspace(cfg.redis.prefix, cfg.redis.shards);
  const durability = createDurability(redis, keys, cfg.redis.durability);
  // redis.shards must match the data (src/redis/shards.ts): a mismatch stops the start. A Redis
  // not reachable yet is asked again in the background; /readyz is 503 until it answered.
  let shardCheck: { ok: boolean; problem?: string } = { ok: false, problem: "redis.shards not checked yet (Redis not reachable)" };
  let shardRetry: NodeJS.Timeout | undefined;
  const checkShards = async (): Promise<void> => {
    try {
      await checkShardCount(redis, keys, cfg.redis.prefix);
      shardCheck = { ok: true };
    } catch (e) {
      if (e instanceof ShardCountError) {
        shardCheck = { ok: false, problem: e.message };
        throw e;
      }
      shardRetry = setTimeout(() => void checkShards().catch((err: Error) => logger.error({ err: { message: err.message } }, "redis.shards does not match the data in Redis; this broker will not become ready")), 500);
      shardRetry.unref();
    }
  };
  try {
    // The connection is still coming up: give it a moment, so a reachable Redis is asked now.
    if (redis.status !== "ready") {
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, 3000);
        function done() {
          clearTimeout(t);
          redis.off("ready", done);
          resolve();
        }
        redis.once("ready", done);
      });
    }
    await checkShards();
  } catch (e) {
    redis.disconnect();
    await embedded?.stop().catch(() => undefined);
    throw e;
  }

  const keySets = new Map<string, KeySet>();
  for (const iss of cfg.identity.issuers) {
    const source = keySourceOf(iss);
    keySets.set(
      iss.name,
      createKeySet({
        name: iss.name,
        source,
        flavour: iss.type,
        refreshMs: iss.jwks_refresh,
        cooldownMs: iss.jwks_cooldown,
        now,
        onLoad: (result, reason) => {
          metrics.jwksLoads.inc({ issuer: iss.name, result });
          if (result === "error") logger.warn({ issuer: iss.name, reason }, "issuer key set could not be loaded");
        },
      }),
    );
  }
  // Warm the key caches; an unreachable issuer is retried on demand (and fails closed).
  await Promise.all([...keySets.values()].map((k) => k.refresh().catch(() => undefined)));

  const verifier = tracing.wrap(createTokenVerifier({
    issuers: cfg.identity.issuers,
    keySets,
    audience: cfg.server.audience,
    replayGuard: createRedisReplayGuard(redis, keys),
    cache: createVerifiedTokenCache(cfg.identity.token_cache.max_entries),
    now,
  }), { verify: "token.verify" });
  // Workloads and roles reload with the policies (SIGHUP, POST /v1/admin/policy/reload).
  const loadForReload = opts.loadConfig ?? (() => loadConfig(cfg.file));
  const inventory = createInventory(cfg, loadForReload);
  const workloads = inventory.workloads;
  const parts = opts.parts ?? { api: true, worker: true };


  const leaseMetrics = createLeaseMetrics(metrics.registry);
  // Each lease store script is a span of its own when tracing.
  const storeOptions = {
    retentionSeconds: Math.ceil(cfg.leases.retention / 1000),
    taskRetentionSeconds: Math.ceil(cfg.leases.task_retention / 1000),
    now,
    // A malformed lease record fails closed wherever it is read; say so (the field, never its value).
    onUnreadable: (l: UnreadableLease) => {
      leaseMetrics.unreadable.inc({ field: l.field });
      logger.warn({ lease_id: l.id, field: l.field }, `lease record in Redis is unreadable (${l.unreadable}): not shown, introspected inactive, not delegated from`);
    },
  };
  // The re-authorization walk reads the leases on a connection of its own, so its batch reads
  // never sit between a request's commands and their replies (docs/ARCHITECTURE.md, Processes and connections).
  const walkConn = connect("jitbroker-reauth", "serial");
  const walkStore = createLeaseStore(walkConn, keys, storeOptions);
  const store = tracing.wrap(
    createLeaseStore(redis, keys, storeOptions),
    {
      create: "redis.script CREATE",
      activate: "redis.script ACTIVATE",
      trigger: "redis.script TRIGGER",
      finish: "redis.script FINISH",
      finishMany: "redis.script FINISH",
      forRevocation: "redis.script REVOCATION_VIEW",
      fail: "redis.script FAIL",
      addChild: "redis.script ADD_CHILD",
      completeTask: "redis.script COMPLETE_TASK",
      isTaskCompleted: "redis.exists task",
    },
    { "db.system.name": "redis" },
  );
  const ledger = createAuditLedger(redis, {
    key: auditKey,
    metrics: createAuditMetrics(metrics.registry),
    streamKey: keys.audit,
    headKey: keys.auditHead,
    anchorKey: keys.auditAnchor,
    leaseIndexPrefix: keys.auditLeasePrefix,
    leaseIndexTtlSeconds: Math.ceil(cfg.leases.retention / 1000),
    // A lease's event ids live in its own record (field "ev"), and expire with it. With several
    // shards the record may be on another Cluster node than the audit stream, and one
    // transaction cannot span nodes: the index is then the list {p}:audit:lease:<id>.
    ...(keys.shards === 1 ? { leaseIndexField: { hashKey: store.keys.lease, field: "ev" } } : {}),
    watchConnection: () => connect("jitbroker-audit", "serial"),
    ...(tracing.enabled ? { traceId: tracing.traceId } : {}),
    logger,
    now,
  });
  const audit = tracing.wrap(ledger, { append: "audit.append", appendMany: "audit.append" });
  const jwt = createJwtBackend({ keys: currentKeys, issuer: cfg.server.public_url, now });
  const backends = new Map<string, Backend>([["jwt", jwt]]);
  for (const [kind, b] of await createConfiguredBackends(cfg, { logger, registry: metrics.registry, now, store, audit, parts: opts.parts ?? { api: true, worker: true }, redis, keys, workloads: () => inventory.workloads, roles: inventory.roles })) backends.set(kind, b);
  for (const [kind, b] of Object.entries(opts.backends ?? {})) {
    if (!b) continue;
    // A replaced backend (tests inject fault-wrapping ones) stops its timers and connections.
    const replaced = backends.get(kind);
    if (replaced && replaced !== b) await replaced.close?.().catch(() => undefined);
    backends.set(kind, b);
  }
  for (const [kind, b] of backends) {
    // Leases derive what revocation means from their backend kind; a backend must agree.
    if (b.kind !== kind || b.revocation !== REVOCATION_KIND[b.kind]) throw new Error(`backend ${kind} declares ${b.kind}/${b.revocation}, expected ${kind}/${REVOCATION_KIND[b.kind]}`);
    if (tracing.enabled) backends.set(kind, tracing.wrap(b, { mint: "backend.mint", revoke: "backend.revoke" }, { "jitbroker.backend": kind }));
  }
  const tracedPolicy = tracing.wrap(policyEngine, { decide: "policy.decide" });
  const queueConn = connect("jitbroker-queue", "queue");
  const queue = createRevocationQueue(queueConn, keys);
  const revoker = createRevoker({
    store,
    backends,
    audit,
    metrics: leaseMetrics,
    logger,
    now,
    failAfter: cfg.worker.fail_after,
    mintTimeoutMs: cfg.worker.mint_timeout,
    concurrencyPerBackend: cfg.worker.backend_concurrency,
  });
  const approvals = createApprovalStore(redis, keys, {
    retentionSeconds: Math.ceil(cfg.leases.retention / 1000),
    pendingTimeoutMs: cfg.approvals.pending_timeout,
    collectTimeoutMs: cfg.approvals.collect_timeout,
    maxPendingPerWorkload: cfg.approvals.max_pending_per_workload,
    now,
  });
  const limiter = createRateLimiter(redis, keys);
  const refusals = createRefusalSampler(redis, keys, audit, { registry: metrics.registry });
  // Only the API issues credentials; a worker-only process does not need to watch memory.
  const memory = parts.api
    ? createMemoryWatch(redis, { maxUse: cfg.redis.max_memory_use ?? DEFAULT_MAX_MEMORY_USE, logger, registry: metrics.registry })
    : null;
  // The hard bound of the audit store (I9): only the API issues, so only it watches the backlog.
  const auditSinkNames = cfg.audit.sinks.map(sinkName);
  const auditBacklog = parts.api && auditSinkNames.length > 0 ? createAuditBacklog(redis, keys, { sinks: auditSinkNames, max: cfg.audit.max_backlog, logger, registry: metrics.registry }) : null;
  const service = createLeaseService({
    store,
    queue,
    revoker,
    backends,
    roles: inventory.roles,
    workloads: () => workloads,
    inventoryVersion: inventory.version,
    policy: () => tracedPolicy,
    audit,
    metrics: leaseMetrics,
    logger,
    quota: cfg.leases.quota_per_workload,
    approvals,
    limiter,
    requestsPerMinute: cfg.limits.requests_per_minute,
    ...(memory ? { memory } : {}),
    ...(auditBacklog ? { auditBacklog } : {}),
    refusals,
    timeZone: cfg.policy.timezone,
    durability,
    now,
  });
  const worker = parts.worker
    ? startRevocationWorker({
        connect,
        onError: (connection, e) => void redisHealth.report(connection, e),
        onRecovered: (connection) => redisHealth.recovered(connection),
        keys,
        store,
        revoker,
        queue,
        audit,
        metrics: leaseMetrics,
        logger,
        concurrency: cfg.worker.concurrency,
        expiryPollMs: cfg.worker.expiry_poll_interval,
        sweepIntervalMs: cfg.worker.sweep_interval,
        graceMs: cfg.worker.sweep_grace,
        mintTimeoutMs: cfg.worker.mint_timeout,
        ...(tracing.enabled ? { traceJob: <T>(name: string, jobId: string, fn: () => Promise<T>) => tracing.span(name, fn, { root: true, attributes: { "jitbroker.job.id": jobId } }) } : {}),
        now,
      })
    : null;
  // Audit events leave Redis for the sinks from worker processes (one deliverer per sink at a time).
  const auditSinks = parts.worker && cfg.audit.sinks.length > 0 ? createAuditSinks(redis, keys, { sinks: cfg.audit.sinks, logger, registry: metrics.registry, now }) : null;
  auditSinks?.start();
  // Events past audit.retention that every sink confirmed leave Redis (src/audit/retention.ts).
  const auditTrimmer = parts.worker ? createAuditTrimmer(redis, keys, { key: auditKey, retentionMs: cfg.audit.retention, sinks: auditSinkNames, logger, registry: metrics.registry, now }) : null;
  // Approval requests past their window expire (and are audited) in the worker process.
  const approvalExpiry = parts.worker
    ? repeat(
        () => expireApprovals(approvals, audit, leaseMetrics, now),
        () => Math.max(250, Math.min(5000, cfg.worker.sweep_interval * 4)),
        (e) =>
          e instanceof BrokerError && e.code === "store_unavailable"
            ? void redisHealth.report("approval-expiry", e.cause ?? e)
            : logger.warn({ err: { message: e.message } }, "approval expiry sweep failed; retrying"),
      )
    : null;
  const { policyReloader, reloadAll } = createReloadWorkflow({
    engine: policyEngine,
    patterns: cfg.policy.files,
    inventory,
    load: loadForReload,
    audit,
    logger,
    now,
    reauthorize: (cause) =>
      reauthorizeLeases({ policy: policyEngine, roles: inventory.roles(), workloads, timeZone: cfg.policy.timezone, maxDepth: cfg.delegation.max_depth, store, reader: walkStore, queue, audit, metrics: leaseMetrics, logger, now }, cause),
  });
  // Gauges are sampled when Prometheus scrapes.
  const sampleGauges = () => sampleLeaseGauges(leaseMetrics, store, queue);

  const readiness = createReadiness({
    probe: () => Promise.all([keys.ready, ...(keys.shards > 1 ? keys.shardKeys.map((sk) => sk.ready) : [])].map((k) => probeRedis(redis, k, cfg.redis.durability))),
    health: redisHealth,
    shardCheck: () => shardCheck,
    issuers: () => [...keySets.values()].map((k) => k.status()),
    backends: () => [...backends].map(([name, b]) => ({ name, ...(b.status?.() ?? { state: "ok" as const }) })),
    ...(auditSinks ? { auditSinks: () => auditSinks.status() } : {}),
    ...(auditBacklog ? { auditBacklog: () => auditBacklog.status() } : {}),
  });

  const app = createHttpApp({ logger, metrics, bodyLimit: cfg.server.body_limit, trustProxy: cfg.server.trust_proxy, tracing });
  mount(app, OPERATIONS_API.health, (_req, res) => {
    res.json({ status: "ok" });
  });
  mount(app, OPERATIONS_API.readiness, async (_req, res) => {
    // Unauthenticated: states only. Why an issuer's keys failed (its error, file path or URL) is
    // in the log and, for operators, at GET /v1/admin/readiness.
    const r = await readiness();
    res.status(r.ready ? 200 : 503).json({ status: r.ready ? "ready" : "unavailable", ...publicChecks(r.checks) });
  });
  mount(app, OPERATIONS_API.metrics, async (_req, res) => {
    await sampleGauges();
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  // A worker-only process (`serve --only worker`) serves health and metrics, never the API.
  if (parts.api) {
    mount(app, TOKENS_API.jwks, (_req, res) => {
      res.setHeader("Cache-Control", "public, max-age=300");
      res.json(jwt.jwks());
    });
    mount(app, TOKENS_API.openidConfiguration, (_req, res) => {
      res.setHeader("Cache-Control", "public, max-age=300");
      res.json(openidConfiguration(cfg.server.public_url));
    });
    // Generated once, on first use, from the routes' own zod schemas (src/http/openapi.ts).
    let openapi: Record<string, unknown> | null = null;
    mount(app, OPERATIONS_API.openapi, (_req, res) => {
      openapi ??= buildOpenApiDocument(apiRoutes(), { serverUrl: cfg.server.public_url });
      res.json(openapi);
    });
    // RFC 8693 token exchange and RFC 8414 metadata (src/oauth): authenticated by actor_token.
    mountOAuthRoutes(app, {
      exchange: createTokenExchange({
        verifier,
        workloads,
        roles: inventory.roles,
        jwt,
        store,
        service,
        audit,
        metrics,
        limiter,
        requestsPerMinute: cfg.limits.requests_per_minute,
        maxDepth: cfg.delegation.max_depth,
        now,
      }),
      verifier,
      workloads,
      metrics,
      logger,
      issuer: cfg.server.public_url,
      bodyLimit: cfg.server.body_limit,
    });
    const introspect = createIntrospector({ jwt, store, now });
    app.use("/v1", authenticate(verifier, workloads, metrics));
    app.use(limitWrites(limiter, cfg.limits.requests_per_minute));
    app.use(identityRoutes());
    app.use(introspectionRoutes(introspect));
    mount(app, OPERATIONS_API.operatorReadiness, async (req, res) => {
      requireOperator(req.auth!, "admin_read", { policy: () => policyEngine, metrics: leaseMetrics, timeZone: cfg.policy.timezone, now });
      const r = await readiness();
      res.json({ status: r.ready ? "ready" : "unavailable", ...r.checks });
    });
    const leaseRouter = leaseRoutes({ service, store, audit, auditSinks: auditSinkNames, policy: () => policyEngine, metrics: leaseMetrics, timeZone: cfg.policy.timezone });
    app.use(leaseRouter);
    app.use(policyRoutes({ reload: reloadAll, policy: () => policyEngine, metrics: leaseMetrics, timeZone: cfg.policy.timezone, now, waitMs: opts.reloadWaitMs ?? 20_000 }));
    const approvalRouter = approvalRoutes({
      approvals,
      service,
      audit,
      store,
      policy: () => policyEngine,
      roles: inventory.roles,
      workloads: () => workloads,
      metrics: leaseMetrics,
      collectLockMs: cfg.worker.mint_timeout + 10_000,
      refusals,
      limitCollect: (auth) => limiter.consume(auth.workload.id, auth.workload.limits?.requests_per_minute ?? cfg.limits.requests_per_minute),
      timeZone: cfg.policy.timezone,
      now,
    });
    app.use(approvalRouter);
    // The operators' console (src/console), when configured: the same routers behind a session.
    mountConsole(app, cfg, {
      redis,
      keys,
      keySets,
      replayGuard: createRedisReplayGuard(redis, keys),
      workloads: () => inventory.workloads,
      check: { policy: () => policyEngine, metrics: leaseMetrics, timeZone: cfg.policy.timezone, now },
      store,
      audit,
      auditKey,
      readiness,
      apiRouters: [leaseRouter, approvalRouter],
      logger,
      now,
      devSignIn: devConsoleSignIn(cfg, { workloads: () => inventory.workloads, now }),
    });
  }
  finishApp(app, logger);

  const server = http.createServer(app);
  answerClientErrors(server);
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;

  // The request-path connections fail fast (no offline queue), so a broker answering before they
  // are ready would refuse its first requests with 503 while Redis is fine. Wait for them, bounded:
  // a broker started while Redis is down still starts, and fails closed until Redis is back (I7).
  const notReady = (await Promise.all([whenReady(redis, 5000), whenReady(queueConn, 5000)])).includes(false);
  if (notReady) logger.warn({ redis: redisUrl }, "redis is not reachable yet; answering 503 store_unavailable until it is");

  let closing: Promise<void> | null = null;
  return {
    app,
    redis,
    redisUrl,
    redisFactory,
    metrics,
    store,
    approvals,
    service,
    audit,
    policy: () => policyEngine,
    jwt,
    worker,
    reloadPolicies: () => policyReloader.reload(),
    reload: reloadAll,
    async reloadSigningKeys() {
      try {
        const next = await loadOrCreateSigningKeys(cfg.backends.jwt.signing_key_file, now);
        if (next.current.kid !== signingKeys.current.kid) logger.info({ kid: next.current.kid, previous: signingKeys.current.kid }, "signing key reloaded");
        signingKeys = next;
        return { ok: true, kid: next.current.kid };
      } catch (e) {
        logger.error({ err: { message: (e as Error).message } }, "signing key reload refused; the loaded keys stay in use");
        return { ok: false, kid: signingKeys.current.kid, error: (e as Error).message };
      }
    },
    readiness,
    listen(port = cfg.server.listen.port, host = cfg.server.listen.host) {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          const addr = server.address() as AddressInfo;
          const h = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
          resolve({ url: `http://${h}:${addr.port}`, port: addr.port });
        });
      });
    },
    close() {
      closing ??= (async () => {
        const grace = setTimeout(() => server.closeAllConnections(), cfg.server.shutdown_grace);
        grace.unref();
        if (server.listening) {
          await new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeIdleConnections();
          });
        }
        clearTimeout(grace);
        policyReloader.close();
        clearTimeout(shardRetry);
        memory?.stop();
        auditBacklog?.stop();
        auditTrimmer?.stop();
        approvalExpiry?.stop();
        // Each step is bounded: a broker whose Redis is gone (or mid-failover) still shuts down.
        await within(auditSinks?.close() ?? Promise.resolve(), 5000);
        if (worker) await worker.close().catch(() => undefined);
        await within(queue.close(), 5000);
        await within(audit.close(), 5000);
        for (const b of backends.values()) await b.close?.().catch(() => undefined);
        await within(tracing.shutdown(), 5000);
        queueConn.disconnect();
        walkConn.disconnect();
        redis.disconnect();
        if (embedded) await embedded.stop();
      })();
      return closing;
    },
  };
}

/** Readiness as anyone may see it: states, never an issuer's error text, file path or URL. */


/** Resolves true once the connection is ready, false after `timeoutMs` (never rejects). */
function whenReady(conn: Redis, timeoutMs: number): Promise<boolean> {
  if (conn.status === "ready") return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      conn.off("ready", onReady);
      resolve(ok);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    timer.unref();
    conn.on("ready", onReady);
  });
}
