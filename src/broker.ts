/**
 * The composition root: builds every component from the configuration and wires them into an
 * HTTP server. Nothing else constructs Redis clients, key sets or routes.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { LoadedConfig } from "./config/load";
import { authenticate, createHttpApp, finishApp } from "./http/app";
import { createMetrics, type Metrics } from "./http/metrics";
import { createKeySet, type KeySet } from "./identity/keyset";
import { createRedisReplayGuard } from "./identity/replay";
import { identityRoutes } from "./identity/routes";
import { createTokenVerifier } from "./identity/verify";
import { compileWorkloads } from "./identity/workloads";
import { createRedisClient, pingRedis } from "./redis/client";
import { startEmbeddedRedis, type EmbeddedRedis } from "./redis/embedded";
import { createKeyspace } from "./redis/keys";

export interface BrokerOptions {
  logger: Logger;
  now?: () => number;
  metrics?: Metrics;
}

export interface Readiness {
  ready: boolean;
  checks: { redis: "ok" | "unreachable"; issuers: ReturnType<KeySet["status"]>[] };
}

export interface Broker {
  app: ReturnType<typeof createHttpApp>;
  redis: Redis;
  redisUrl: string;
  metrics: Metrics;
  readiness(): Promise<Readiness>;
  /** Starts listening on `server.listen` (or the given port, 0 for any). */
  listen(port?: number, host?: string): Promise<{ url: string; port: number }>;
  close(): Promise<void>;
}

export async function createBroker(cfg: LoadedConfig, opts: BrokerOptions): Promise<Broker> {
  const { logger } = opts;
  const now = opts.now ?? Date.now;
  const metrics = opts.metrics ?? createMetrics();

  let embedded: EmbeddedRedis | null = null;
  let redisUrl = cfg.redis.url;
  if (redisUrl === "embedded") {
    embedded = await startEmbeddedRedis(cfg.redis.data_dir);
    redisUrl = embedded.url;
    logger.info({ redis: redisUrl, dir: cfg.redis.data_dir }, "embedded redis-server started");
  }
  const redis = createRedisClient(redisUrl, "jitbroker-api");
  redis.on("error", (e: Error) => logger.warn({ err: { message: e.message } }, "redis connection error"));
  const keys = createKeyspace(cfg.redis.prefix);

  const keySets = new Map<string, KeySet>();
  for (const iss of cfg.identity.issuers) {
    const source =
      iss.type === "spiffe"
        ? iss.bundle_file
          ? ({ kind: "file", path: iss.bundle_file } as const)
          : ({ kind: "url", url: iss.bundle_url! } as const)
        : iss.jwks_file
          ? ({ kind: "file", path: iss.jwks_file } as const)
          : iss.jwks_uri
            ? ({ kind: "url", url: iss.jwks_uri } as const)
            : ({ kind: "discovery", issuer: iss.issuer } as const);
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

  const verifier = createTokenVerifier({
    issuers: cfg.identity.issuers,
    keySets,
    audience: cfg.server.audience,
    replayGuard: createRedisReplayGuard(redis, keys),
    now,
  });
  const workloads = compileWorkloads(cfg.workloads);

  async function readiness(): Promise<Readiness> {
    const ok = await pingRedis(redis);
    return { ready: ok, checks: { redis: ok ? "ok" : "unreachable", issuers: [...keySets.values()].map((k) => k.status()) } };
  }

  const app = createHttpApp({ logger, metrics, bodyLimit: cfg.server.body_limit, trustProxy: cfg.server.trust_proxy });
  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });
  app.get("/readyz", async (_req, res) => {
    const r = await readiness();
    res.status(r.ready ? 200 : 503).json({ status: r.ready ? "ready" : "unavailable", ...r.checks });
  });
  app.get("/metrics", async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.use("/v1", authenticate(verifier, workloads, metrics));
  app.use(identityRoutes());
  finishApp(app, logger);

  const server = http.createServer(app);
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.keepAliveTimeout = 5_000;

  let closing: Promise<void> | null = null;
  return {
    app,
    redis,
    redisUrl,
    metrics,
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
        redis.disconnect();
        if (embedded) await embedded.stop();
      })();
      return closing;
    },
  };
}
