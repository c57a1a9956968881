/**
 * The one place the broker opens Redis connections (docs/ARCHITECTURE.md, Processes and connections).
 * Every connection — API, BullMQ queue and worker, sweeper, audit ledger and its commit
 * connection, rate limiter, CLI — is built here from `redis.url`, `redis.sentinel` or
 * `redis.cluster`, so each follows failovers by itself:
 *   - url:      one node (`embedded` is resolved to its local URL before this module is used);
 *   - sentinel: ioredis asks the sentinels for the current primary, reconnects when they switch
 *               (failoverDetector) and when the node it talks to answers READONLY (demoted);
 *   - cluster:  an ioredis Cluster client follows MOVED/ASK and slot changes after a failover.
 * Every key the broker writes carries its hash tag (src/redis/keys.ts), so Lua scripts,
 * pipelines and BullMQ (whose prefix is the tag) work unchanged on a Cluster.
 *
 * Connections are typed as ioredis `Redis`: a `Cluster` offers the same command interface
 * (both implement ioredis's RedisCommander), which is all the feature modules use.
 */
import { readFileSync } from "node:fs";
import type { ConnectionOptions } from "node:tls";
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from "ioredis";
import type { RedisConfig } from "../config/schema";

/** The configured mode: exactly one of url (resolved, not `embedded`), sentinel, cluster. */
export type RedisTarget = Partial<Pick<RedisConfig, "url" | "sentinel" | "cluster">>;

/**
 * How a connection is used:
 *   request  request path (API, sweeper, rate limits): fails fast while Redis is away
 *            (no offline queue, one retry) so the broker answers 503 instead of hanging (I7).
 *            With ioredis auto-pipelining (single node and Sentinel; not on a Cluster, see
 *            below): the commands that concurrent requests issue in one event-loop turn go out
 *            in one write and come back in one read (one syscall each way instead of one per
 *            command; docs/BENCHMARKS.md, issue 17). Every Lua script is registered on it
 *            before traffic (src/redis/scripts.ts);
 *   serial   one sequential user's own connection (the audit ledger's commits, the
 *            re-authorization walk's reads): like request,
 *            without auto-pipelining (nothing to group; and a connection that holds WATCH state
 *            must never auto-pipeline, whose deferred sends could reorder it);
 *   queue    BullMQ Queue (adds jobs): like watch;
 *   blocking BullMQ Worker: blocking commands, so no command timeout, offline queue on;
 *   cli      one-shot CLI commands: connect once, no reconnection.
 */
export type ConnectionUse = "request" | "serial" | "queue" | "blocking" | "cli";

export interface RedisFactory {
  mode: "url" | "sentinel" | "cluster";
  /** Where it connects, safe for logs and messages (no password). */
  target: string;
  /** A new connection; the caller closes it (`disconnect()` / `quit()`). */
  connect(name: string, use: ConnectionUse): Redis;
}

export interface FactoryOptions {
  /** Command timeout of request connections (ms); raised by the broker above durability.timeout. */
  commandTimeoutMs?: number;
}

/** Reconnect backoff: 100 ms doubling, at most 2 s (a dead Redis costs one attempt per 2 s per connection). */
const retryDelay = (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2000);

/** Redacts the password of a redis:// URL. */
export const redactRedisUrl = (url: string) => url.replace(/\/\/[^@/]*@/, "//***@");

/** A one-line description of the configured mode, without secrets. */
export function describeRedis(cfg: RedisTarget): string {
  if (cfg.sentinel) return `sentinel master "${cfg.sentinel.master}" via ${cfg.sentinel.nodes.join(", ")}`;
  if (cfg.cluster) return `cluster via ${cfg.cluster.nodes.join(", ")}`;
  return cfg.url ?? "embedded";
}

function hostPort(text: string): { host: string; port: number } {
  const i = text.lastIndexOf(":");
  return { host: text.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(text.slice(i + 1)) };
}

function tlsOptions(tls: boolean | { ca_file?: string; servername?: string } | undefined): ConnectionOptions | undefined {
  if (!tls) return undefined;
  if (tls === true) return {};
  return { ...(tls.ca_file ? { ca: readFileSync(tls.ca_file) } : {}), ...(tls.servername ? { servername: tls.servername } : {}) };
}

/** Per-use options shared by every mode. */
function useOptions(name: string, use: ConnectionUse, commandTimeoutMs: number): RedisOptions {
  switch (use) {
    case "request":
      return { ...useOptions(name, "serial", commandTimeoutMs), enableAutoPipelining: true };
    case "serial":
    case "queue":
      return { connectionName: name, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 2000, commandTimeout: commandTimeoutMs, retryStrategy: retryDelay };
    case "blocking":
      return { connectionName: name, enableOfflineQueue: true, maxRetriesPerRequest: null, connectTimeout: 2000, retryStrategy: retryDelay };
    case "cli":
      return { connectionName: name, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 3000, commandTimeout: 10_000, retryStrategy: () => null };
  }
}

/** A demoted primary answers READONLY: reconnect, so Sentinel names the new primary. */
const reconnectOnReadonly = (e: Error) => (/^READONLY\b/.test(e.message) ? 1 : false);

/**
 * Builds the factory for a resolved configuration (`url` must not be `embedded` here: the broker
 * starts the embedded Redis, the CLI finds the running one, and either passes its URL).
 */
export function createRedisFactory(cfg: RedisTarget, opts: FactoryOptions = {}): RedisFactory {
  const commandTimeoutMs = opts.commandTimeoutMs ?? 2000;
  if (cfg.sentinel) {
    const s = cfg.sentinel;
    const tls = tlsOptions(s.tls);
    return {
      mode: "sentinel",
      target: describeRedis(cfg),
      connect(name, use) {
        return new Redis({
          ...useOptions(name, use, commandTimeoutMs),
          sentinels: s.nodes.map(hostPort),
          name: s.master,
          role: "master",
          ...(s.username ? { username: s.username } : {}),
          ...(s.password ? { password: s.password } : {}),
          ...(s.sentinel_password ? { sentinelPassword: s.sentinel_password } : {}),
          ...(tls ? { tls, sentinelTLS: tls, enableTLSForSentinelMode: true } : {}),
          // Follow +switch-master at once instead of waiting for the old primary to fail.
          failoverDetector: use !== "cli",
          sentinelRetryStrategy: use === "cli" ? () => null : (times: number) => Math.min(100 * times, 1000),
          sentinelMaxConnections: 10,
          reconnectOnError: reconnectOnReadonly,
        });
      },
    };
  }
  if (cfg.cluster) {
    const c = cfg.cluster;
    const tls = tlsOptions(c.tls);
    return {
      mode: "cluster",
      target: describeRedis(cfg),
      connect(name, use) {
        const base = useOptions(name, use, commandTimeoutMs);
        const { enableOfflineQueue, lazyConnect, enableAutoPipelining: _a, retryStrategy: _r, ...nodeOptions } = base;
        const options: ClusterOptions = {
          redisOptions: {
            ...nodeOptions,
            ...(c.username ? { username: c.username } : {}),
            ...(c.password ? { password: c.password } : {}),
            ...(tls ? { tls } : {}),
          },
          enableOfflineQueue: enableOfflineQueue ?? true,
          // No auto-pipelining on a Cluster: ioredis groups a turn's commands per node, and its
          // pipeline then refuses keys of several slots ("All keys in the pipeline should belong
          // to the same slots allocation group"), which sharded keyspaces hit (test/ha/cluster).
          enableAutoPipelining: false,
          lazyConnect: lazyConnect ?? false,
          // The broker's keys are written and read on primaries only: a replica's copy may lag.
          scaleReads: "master",
          maxRedirections: 16,
          retryDelayOnFailover: 200,
          retryDelayOnClusterDown: 300,
          retryDelayOnTryAgain: 100,
          slotsRefreshTimeout: 2000,
          slotsRefreshInterval: 5000,
          clusterRetryStrategy: use === "cli" ? () => null : retryDelay,
        };
        return new Cluster(c.nodes.map(hostPort), options) as unknown as Redis;
      },
    };
  }
  const url = cfg.url;
  if (!url || url === "embedded") throw new Error("redis.url embedded must be resolved to the running Redis before connecting");
  return {
    mode: "url",
    target: redactRedisUrl(url),
    connect: (name, use) => new Redis(url, useOptions(name, use, commandTimeoutMs)),
  };
}

/** True for an ioredis Cluster client. */
export const isCluster = (conn: Redis): boolean => (conn as unknown as { isCluster?: boolean }).isCluster === true;
