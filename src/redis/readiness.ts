/**
 * Readiness (I10, docs/ARCHITECTURE.md): whether the broker can serve, and the state of what it
 * depends on. Redis decides: a write under every hash tag the broker uses (so it reaches the
 * node owning those keys; a replica answers READONLY, a wrong Cluster node MOVED) and, with
 * durability, a WAIT for the replicas, on every call, so the answer follows a change at once.
 * Issuers, backends and audit delivery are reported but never make the broker unready.
 */
import type { BacklogStatus } from "../audit/retention";
import type { SinkStatus } from "../audit/sinks";
import type { BackendStatus } from "../backends/types";
import type { KeySet } from "../identity/keyset";
import type { ProbeResult, RedisErrorKind, RedisHealth } from "./health";

export interface Readiness {
  ready: boolean;
  /** Backends report their own health here; an unavailable backend does not make the broker unready. */
  /**
   * redis: "ok", "unreachable" (no connection), or the kind of failure that makes the broker's keys
   * not writable from here (readonly, moved, clusterdown, timeout, durability, ...), named in
   * redis_error (I10).
   */
  checks: { redis: "ok" | "unreachable" | "shards" | Exclude<RedisErrorKind, "refused" | "not_connected">; redis_error?: string; issuers: ReturnType<KeySet["status"]>[]; backends: ({ name: string } & BackendStatus)[]; audit_sinks?: SinkStatus[]; audit_backlog?: BacklogStatus };
}


export interface ReadinessDeps {
  /** One probe per hash tag (src/redis/health.ts probeRedis). */
  probe(): Promise<ProbeResult[]>;
  health: Pick<RedisHealth, "report" | "recovered">;
  /** The start-time check of redis.shards against the count recorded in Redis (src/redis/shards.ts). */
  shardCheck(): { ok: boolean; problem?: string };
  issuers(): ReturnType<KeySet["status"]>[];
  backends(): ({ name: string } & BackendStatus)[];
  auditSinks?(): SinkStatus[];
  auditBacklog?(): BacklogStatus;
}

export function createReadiness(deps: ReadinessDeps): () => Promise<Readiness> {
  return async function readiness(): Promise<Readiness> {
    const probes = await deps.probe();
    const probe = probes.find((p) => !p.ok) ?? probes[0]!;
    if (probe.ok) deps.health.recovered("readiness");
    else deps.health.report("readiness", probe.error);
    const redisCheck = probe.ok ? ("ok" as const) : probe.kind === "refused" || probe.kind === "not_connected" ? ("unreachable" as const) : probe.kind;
    const shards = deps.shardCheck();
    if (probe.ok && !shards.ok) {
      return { ready: false, checks: { redis: "shards", redis_error: shards.problem ?? "redis.shards not checked", issuers: deps.issuers(), backends: deps.backends() } };
    }
    return {
      ready: probe.ok,
      checks: {
        redis: redisCheck,
        ...(probe.ok ? {} : { redis_error: probe.detail }),
        issuers: deps.issuers(),
        backends: deps.backends(),
        // A failing sink does not make the broker unready: events wait in Redis.
        ...(deps.auditSinks ? { audit_sinks: deps.auditSinks() } : {}),
        // At the hard bound new issuance is refused, but the broker stays ready: it still revokes (I9).
        ...(deps.auditBacklog ? { audit_backlog: deps.auditBacklog() } : {}),
      },
    };
  };
}

/** What unauthenticated /readyz shows: states only, never an error text that may name a URL or path. */
export function publicChecks(c: Readiness["checks"]) {
  return {
    redis: c.redis,
    ...(c.redis_error === undefined ? {} : { redis_error: c.redis_error }),
    issuers: c.issuers.map((i) => ({ name: i.name, state: i.last_error === null && i.keys > 0 ? "ok" : i.keys > 0 ? "degraded" : "unavailable", keys: i.keys, loaded_at: i.loaded_at })),
    backends: c.backends,
    // States only: a sink's last error (it may name its URL) is for operators (GET /v1/admin/readiness).
    ...(c.audit_sinks ? { audit_sinks: c.audit_sinks.map(({ last_error: _e, ...s }) => s) } : {}),
    ...(c.audit_backlog ? { audit_backlog: c.audit_backlog } : {}),
  };
}
