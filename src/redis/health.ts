/**
 * What is wrong with Redis, said precisely (I10), and said once.
 *
 * - `classifyRedisError` names the kind of a Redis failure (READONLY, MOVED, CLUSTERDOWN,
 *   timeout...) so errors and /readyz say what happened instead of "unreachable".
 * - `createRedisHealth` is where every connection reports its errors: each one is counted in
 *   `jitbroker_redis_errors_total{connection,kind}`, but a line is logged only when a
 *   connection's state changes (first error of a kind, recovery), so a failing Redis never
 *   produces a log storm.
 * - `probe` is the readiness check: a write under the broker's hash tag (so it lands on the node
 *   that owns the broker's keys, and fails on a replica or a node that does not own the slot),
 *   plus `WAIT` when durability is configured. `confirmDurable` is the same WAIT on the request
 *   path (I1).
 */
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { Counter, Gauge, type Registry } from "prom-client";

export type RedisErrorKind =
  | "readonly"
  | "moved"
  | "clusterdown"
  | "timeout"
  | "auth"
  | "loading"
  | "oom"
  | "no_primary"
  | "not_connected"
  | "refused"
  | "durability"
  | "other";

/** What each kind means, for messages and /readyz. */
export const REDIS_ERROR_TEXT: Record<RedisErrorKind, string> = {
  readonly: "READONLY: the Redis node is a replica, not a writable primary",
  moved: "MOVED: the Redis node does not own the broker's keys (a Redis Cluster node; configure redis.cluster)",
  clusterdown: "CLUSTERDOWN: the Redis Cluster cannot serve the broker's slot",
  timeout: "timeout: Redis did not answer in time",
  auth: "authentication with Redis failed",
  loading: "LOADING: Redis is loading its data set",
  oom: "OOM: Redis is out of memory",
  no_primary: "no primary: the sentinels name no reachable primary",
  not_connected: "not connected to Redis (reconnecting)",
  refused: "connection refused or reset by Redis",
  durability: "durability: not enough replicas acknowledged the write",
  other: "Redis error",
};

export class DurabilityError extends Error {
  constructor(
    readonly acked: number,
    readonly wanted: number,
    readonly timeoutMs: number,
  ) {
    super(`durability: ${acked} of ${wanted} replica(s) acknowledged within ${timeoutMs} ms`);
    this.name = "DurabilityError";
  }
}

export function classifyRedisError(e: unknown): RedisErrorKind {
  if (e instanceof DurabilityError) return "durability";
  const err = e as { message?: string; code?: string; name?: string; lastNodeError?: unknown } | null;
  const msg = String(err?.message ?? e ?? "");
  if (/^READONLY\b|You can't write against a read only replica/i.test(msg)) return "readonly";
  if (/^MOVED\b|^ASK\b|Too many Cluster redirections/i.test(msg)) {
    // A Cluster client that gave up names the last node error; otherwise it is a redirect problem.
    if (err?.lastNodeError) return classifyRedisError(err.lastNodeError);
    return "moved";
  }
  if (/^CLUSTERDOWN\b|^TRYAGAIN\b|Failed to refresh slots cache|None of startup nodes is available|Cluster isn't ready/i.test(msg)) return "clusterdown";
  if (/timed? ?out|ETIMEDOUT/i.test(msg) || err?.name === "TimeoutError") return "timeout";
  if (/^NOAUTH\b|^WRONGPASS\b|invalid password|^NOPERM\b/i.test(msg)) return "auth";
  if (/^LOADING\b/.test(msg)) return "loading";
  if (/^OOM\b/.test(msg)) return "oom";
  if (/All sentinels are unreachable|failed to connect to sentinel|No master|not found in sentinel|master .*is unreachable/i.test(msg)) return "no_primary";
  if (/ECONNREFUSED|ECONNRESET|EPIPE|EHOSTUNREACH|Connection is closed|connection closed|socket closed/i.test(msg)) return "refused";
  if (/enableOfflineQueue|Stream isn't writeable|not connected|Reached the max retries/i.test(msg)) return "not_connected";
  return "other";
}

/** A one-line, secret-free description of a Redis failure for messages and logs. */
export function describeRedisError(e: unknown): string {
  const kind = classifyRedisError(e);
  if (kind === "durability") return (e as Error).message;
  return REDIS_ERROR_TEXT[kind];
}

export interface RedisHealth {
  /** Attaches error/ready listeners to a connection (replaces any per-connection logging). */
  watch(conn: Redis, connection: string): void;
  /** Records an error seen by `connection` (a command failure, a probe failure). */
  report(connection: string, e: unknown): RedisErrorKind;
  /** Records that `connection` works again (logged once if it was failing). */
  recovered(connection: string): void;
}

export function createRedisHealth(opts: { logger: Logger; registry: Registry; target: string }): RedisHealth {
  const errors = new Counter({
    name: "jitbroker_redis_errors_total",
    help: "Redis errors by connection and kind (readonly, moved, clusterdown, timeout, ...); only changes of state are logged",
    labelNames: ["connection", "kind"],
    registers: [opts.registry],
  });
  const failing = new Gauge({
    name: "jitbroker_redis_connection_failing",
    help: "1 while a Redis connection of the broker is failing, by connection",
    labelNames: ["connection"],
    registers: [opts.registry],
  });
  /** The last kind logged per connection; absent = healthy. */
  const state = new Map<string, RedisErrorKind>();

  function report(connection: string, e: unknown): RedisErrorKind {
    const kind = classifyRedisError(e);
    errors.inc({ connection, kind });
    if (state.get(connection) !== kind) {
      state.set(connection, kind);
      failing.set({ connection }, 1);
      opts.logger.warn({ redis: opts.target, connection, kind, error: describeRedisError(e) }, "redis connection failing (further errors of this kind are counted in jitbroker_redis_errors_total, not logged)");
    }
    return kind;
  }
  function recovered(connection: string): void {
    if (!state.has(connection)) return;
    const was = state.get(connection);
    state.delete(connection);
    failing.set({ connection }, 0);
    opts.logger.info({ redis: opts.target, connection, was }, "redis connection recovered");
  }
  return {
    report,
    recovered,
    watch(conn, connection) {
      conn.on("error", (e: Error) => void report(connection, e));
      conn.on("ready", () => recovered(connection));
    },
  };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`timed out after ${ms} ms`), { name: "TimeoutError" })), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Writes `key` (under the broker's hash tag, PX 10 s) and, with `replicas` > 0, WAITs for that
 * many replicas, in one pipeline so a Cluster client sends both to the node owning the tag.
 * Resolves with the replicas that acknowledged; rejects with the Redis error (or a
 * DurabilityError when fewer than `replicas` acknowledged).
 */
export async function writeAndWait(conn: Redis, key: string, replicas: number, waitMs: number, timeoutMs: number): Promise<number> {
  const pipe = conn.pipeline().set(key, String(Date.now()), "PX", 10_000);
  if (replicas > 0) pipe.call("WAIT", String(replicas), String(waitMs));
  const res = await withTimeout(pipe.exec(), timeoutMs);
  if (!res) throw new Error("Connection is closed");
  for (const [err] of res) if (err) throw err;
  const acked = replicas > 0 ? Number(res[1]![1]) : 0;
  if (acked < replicas) throw new DurabilityError(acked, replicas, waitMs);
  return acked;
}

export type ProbeResult = { ok: true; kind?: undefined; detail?: undefined; error?: undefined } | { ok: false; kind: RedisErrorKind; detail: string; error: unknown };

/** The readiness probe: can the broker write its keys here, with the durability it is configured for? */
export async function probeRedis(conn: Redis, key: string, durability: { replicas: number; timeout: number }, timeoutMs = 1500): Promise<ProbeResult> {
  const waitMs = Math.max(50, Math.min(durability.timeout, timeoutMs - 300));
  try {
    await writeAndWait(conn, key, durability.replicas, waitMs, timeoutMs);
    return { ok: true };
  } catch (e) {
    return { ok: false, kind: classifyRedisError(e), detail: describeRedisError(e), error: e };
  }
}
