/**
 * Audit sinks (`audit.sinks`): every event of the chain leaves Redis for each sink, at least
 * once, in chain order, with its seq, link (`hash`) and previous link (`prev`).
 *
 * Delivery, per sink:
 * - One process at a time delivers to a sink: it holds `{p}:audit:sink:<name>:lock` (SET NX PX,
 *   renewed while it works). Any process with the worker part may take over when it lapses.
 * - The position `{p}:audit:sink:<name>` is the last seq the sink confirmed. The holder reads the
 *   entries after it (XRANGE, a batch), hands them to the sink and, once the sink confirmed, moves
 *   the position (only while it still holds the lock: a Lua compare of the lock token). A crash
 *   between delivery and the move delivers that batch again after the restart: duplicates, with
 *   the same seq and link, never a gap. A new sink starts at the oldest event still in Redis.
 * - A failing sink is retried with capped exponential backoff and jitter (250 ms to 30 s), the
 *   same batch again, forever; its failures and lag are metrics and `/readyz` details.
 * Retention (src/audit/retention.ts) never removes an event a sink has not confirmed.
 *
 * What "confirmed" means per transport: file: written and fsync'ed; http: a 2xx answer; syslog
 * tcp/tls: written and the connection still up a short while later (RFC 5424 has no
 * acknowledgement; an error or close in that window sends the batch again); syslog udp: sent
 * (no delivery guarantee at all: use tcp, tls or http for evidence).
 */
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { Counter, Gauge, type Registry } from "prom-client";
import type { AuditSinkConfig } from "../config/schema";
import type { Keyspace } from "../redis/keys";
import { luaScript, registerScripts, runScript } from "../redis/scripts";
import type { ExportedAuditEvent, StoredAuditEvent } from "./ledger";
import { KEYED_MARKER } from "./chain";
import { createFileSink } from "./sink-file";
import { createHttpSink } from "./sink-http";
import { createSyslogSink } from "./sink-syslog";

/** One destination. `deliver` resolves once the batch is confirmed, or throws. */
export interface SinkTransport {
  deliver(events: ExportedAuditEvent[]): Promise<void>;
  close(): Promise<void>;
}

export interface SinkStatus {
  name: string;
  type: string;
  state: "ok" | "failing" | "starting" | "standby";
  /** Last seq confirmed. */
  position: string | null;
  /** Age in seconds of the oldest event not yet confirmed (0 when caught up). */
  lag_seconds: number;
  consecutive_failures: number;
  last_error?: string;
}

export interface AuditSinks {
  start(): void;
  status(): SinkStatus[];
  /** Positions of every configured sink (null: nothing confirmed yet), read from Redis. */
  positions(): Promise<Map<string, string | null>>;
  close(): Promise<void>;
}

export const sinkName = (s: AuditSinkConfig, i: number): string => s.name ?? `${s.type}-${i}`;

/** Moves the position only if the caller still holds the lock. KEYS[1] lock, KEYS[2] position; ARGV[1] token, ARGV[2] seq, ARGV[3] lock ttl ms. */
const ADVANCE = luaScript<number>("jitAuditSinkAdvance", `
-- KEYS: 1 the sink's lock, 2 its position.  ARGV: 1 token, 2 seq, 3 lock ttl ms
-- Output: 1 moved, 0 the lock is another's (nothing written)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`);
/** Takes or renews the lock. KEYS[1] lock; ARGV[1] token, ARGV[2] ttl ms. */
const ACQUIRE = luaScript<number>("jitAuditSinkAcquire", `
-- KEYS: 1 the sink's lock.  ARGV: 1 token, 2 lock ttl ms
-- Output: 1 held by this token (taken or extended), 0 held by another
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if v then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`);
/** Gives the lock up if held. */
const RELEASE = luaScript<number>("jitAuditSinkRelease", `
-- KEYS: 1 the sink's lock.  ARGV: 1 token.  Output: 1 released, 0 held by another
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0
`);

export function createSinkMetrics(registry: Registry) {
  return {
    delivered: new Counter({ name: "jitbroker_audit_sink_events_total", help: "Audit events confirmed by each sink", labelNames: ["sink"], registers: [registry] }),
    failures: new Counter({ name: "jitbroker_audit_sink_failures_total", help: "Failed deliveries of a batch to a sink (retried)", labelNames: ["sink"], registers: [registry] }),
    lag: new Gauge({ name: "jitbroker_audit_sink_lag_seconds", help: "Age of the oldest audit event a sink has not confirmed (0 when caught up)", labelNames: ["sink"], registers: [registry] }),
  };
}

function seqMs(seq: string): number {
  return Number(seq.split("-")[0]);
}

function toExported(id: string, fields: string[]): ExportedAuditEvent {
  const f = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!);
  const parsed = JSON.parse(f.get("e") ?? "{}") as StoredAuditEvent;
  return { ...parsed, seq: id, hash: f.get("h") ?? "", prev: f.get("p") ?? "", link_kind: f.get("m") === KEYED_MARKER ? "hmac-sha256" : "sha256" };
}

export function createTransport(cfg: AuditSinkConfig, logger: Logger): SinkTransport {
  switch (cfg.type) {
    case "file":
      return createFileSink(cfg);
    case "http":
      return createHttpSink(cfg);
    case "syslog":
      return createSyslogSink(cfg, logger);
  }
}

export function createAuditSinks(
  redis: Redis,
  keys: Keyspace,
  opts: {
    sinks: AuditSinkConfig[];
    logger: Logger;
    registry: Registry;
    now?: () => number;
    /** Poll interval when caught up (ms). Default 200. */
    idleMs?: number;
    lockTtlMs?: number;
    /** Test hook: replaces the transport of a sink. */
    transports?: Record<string, SinkTransport>;
  },
): AuditSinks {
  const now = opts.now ?? Date.now;
  const idleMs = opts.idleMs ?? 200;
  const lockTtl = opts.lockTtlMs ?? 15_000;
  const metrics = createSinkMetrics(opts.registry);
  const token = randomBytes(12).toString("hex");
  let stopped = false;
  const loops: Promise<void>[] = [];
  const wakers = new Set<() => void>();

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
  registerScripts(redis, [ACQUIRE, ADVANCE, RELEASE]);
        clearTimeout(t);
        wakers.delete(done);
        resolve();
      }
      wakers.add(done);
    });

  const runners = opts.sinks.map((cfg, i) => {
    const name = sinkName(cfg, i);
    const status: SinkStatus = { name, type: cfg.type, state: "starting", position: null, lag_seconds: 0, consecutive_failures: 0 };
    const log = opts.logger.child({ sink: name });
    let transport: SinkTransport | undefined;

    async function loop(): Promise<void> {
      let backoff = 250;
      while (!stopped) {
        try {
          const held = (await runScript(redis, ACQUIRE, [keys.auditSinkLock(name)], [token, String(lockTtl)])) === 1;
          if (!held) {
            status.state = "standby";
            await sleep(Math.min(lockTtl / 3, 2000));
            continue;
          }
          const pos = await redis.get(keys.auditSinkPosition(name));
          status.position = pos;
          const entries = await redis.xrange(keys.audit, pos ? `(${pos}` : "-", "+", "COUNT", cfg.batch_size);
          if (entries.length === 0) {
            status.state = status.consecutive_failures > 0 ? status.state : "ok";
            status.lag_seconds = 0;
            metrics.lag.set({ sink: name }, 0);
            await sleep(idleMs);
            continue;
          }
          status.lag_seconds = Math.max(0, (now() - seqMs(entries[0]![0])) / 1000);
          metrics.lag.set({ sink: name }, status.lag_seconds);
          const batch = entries.map(([id, fields]) => toExported(id, fields));
          transport ??= opts.transports?.[name] ?? createTransport(cfg, log);
          await transport.deliver(batch);
          const last = batch[batch.length - 1]!.seq;
          const moved = (await runScript(redis, ADVANCE, [keys.auditSinkLock(name), keys.auditSinkPosition(name)], [token, last, String(lockTtl)])) === 1;
          if (moved) {
            metrics.delivered.inc({ sink: name }, batch.length);
            status.position = last;
          }
          if (status.consecutive_failures > 0) log.info({ after_failures: status.consecutive_failures }, "audit sink delivering again");
          status.state = "ok";
          status.consecutive_failures = 0;
          delete status.last_error;
          backoff = 250;
        } catch (e) {
          if (stopped) break;
          status.state = "failing";
          status.consecutive_failures += 1;
          status.last_error = ((e as Error).message ?? String(e)).slice(0, 300);
          metrics.failures.inc({ sink: name });
          if (status.consecutive_failures === 1 || status.consecutive_failures % 20 === 0) log.warn({ err: status.last_error, failures: status.consecutive_failures }, "audit sink delivery failed; retrying");
          await sleep(backoff / 2 + Math.random() * (backoff / 2));
          backoff = Math.min(backoff * 2, 30_000);
        }
      }
    }

    return {
      name,
      status,
      start: () => loops.push(loop()),
      async close() {
        await transport?.close().catch(() => undefined);
      },
    };
  });

  return {
    start() {
      for (const r of runners) r.start();
    },
    status: () => runners.map((r) => ({ ...r.status })),
    async positions() {
      const out = new Map<string, string | null>();
      if (runners.length === 0) return out;
      const values = await redis.mget(...runners.map((r) => keys.auditSinkPosition(r.name)));
      runners.forEach((r, i) => out.set(r.name, values[i] ?? null));
      return out;
    },
    async close() {
      stopped = true;
      for (const w of [...wakers]) w();
      await Promise.all(loops);
      await Promise.all(runners.map((r) => r.close()));
      await Promise.all(runners.map((r) => runScript(redis, RELEASE, [keys.auditSinkLock(r.name)], [token]).catch(() => undefined)));
    },
  };
}
