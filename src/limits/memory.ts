/**
 * The Redis memory watch (docs/ARCHITECTURE.md, I9): new issuance stops before Redis runs out of memory, so
 * that revocation, task completion and operator actions (which need a little memory too: lease
 * state changes, queue jobs, audit events) keep working.
 *
 * Every `intervalMs` it reads `INFO memory` (used_memory, maxmemory). Above `maxUse` (the
 * fraction `redis.max_memory_use`, default 0.9) of `maxmemory`, `assertRoom()` refuses with 503
 * `store_full` until use drops below it again. A Redis without `maxmemory` (0) has no limit the
 * broker can see: nothing is refused, and a warning says to set one (with `maxmemory-policy
 * noeviction`: an evicting Redis would silently drop leases and task markers).
 *
 * An OOM error from Redis itself ("command not allowed when used memory > 'maxmemory'") seen on
 * the request path marks the store full at once (`noteOom`), until the next reading.
 *
 * No keys of its own.
 */
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { Gauge, type Registry } from "prom-client";
import { BrokerError } from "../core/errors";
import { repeat, type Repeating } from "../core/repeat";

export const DEFAULT_MAX_MEMORY_USE = 0.9;

export interface MemoryReading {
  used: number;
  max: number;
  /** used / max, or null without maxmemory. */
  ratio: number | null;
  policy: string;
}

export interface MemoryWatch {
  /** Throws 503 store_full while Redis memory is above the threshold. */
  assertRoom(): void;
  /** Reads Redis memory now (also done periodically). */
  check(): Promise<MemoryReading | null>;
  /** An OOM error from Redis: refuse issuance until the next reading says otherwise. */
  noteOom(): void;
  full(): boolean;
  stop(): void;
}

/** `INFO memory` as numbers; null when the fields are missing. */
export function parseMemoryInfo(info: string): MemoryReading | null {
  const field = (name: string) => new RegExp(`^${name}:(.*)$`, "m").exec(info)?.[1]?.trim();
  const used = Number(field("used_memory"));
  const max = Number(field("maxmemory"));
  if (!Number.isFinite(used) || !Number.isFinite(max)) return null;
  return { used, max, ratio: max > 0 ? used / max : null, policy: field("maxmemory_policy") ?? "" };
}

/** Is `e` Redis's OOM refusal? */
export const isOomError = (e: unknown): boolean => e instanceof Error && /^OOM\b/.test(e.message);

export function createMemoryWatch(
  redis: Pick<Redis, "info">,
  opts: { maxUse?: number; intervalMs?: number; logger?: Logger; registry?: Registry; start?: boolean },
): MemoryWatch {
  const maxUse = opts.maxUse ?? DEFAULT_MAX_MEMORY_USE;
  let isFull = false;
  let warnedNoLimit = false;
  let warnedPolicy = false;
  const gauge = opts.registry
    ? new Gauge({ name: "jitbroker_redis_memory_use_ratio", help: "Redis used_memory / maxmemory (absent without maxmemory); issuance stops above redis.max_memory_use", registers: [opts.registry] })
    : null;
  const fullGauge = opts.registry
    ? new Gauge({ name: "jitbroker_store_full", help: "1 while new issuance is refused because Redis memory is above redis.max_memory_use", registers: [opts.registry] })
    : null;

  async function check(): Promise<MemoryReading | null> {
    const r = parseMemoryInfo(await redis.info("memory"));
    if (!r) return null;
    if (r.ratio === null) {
      isFull = false;
      if (!warnedNoLimit) opts.logger?.warn("redis has no maxmemory: set maxmemory and maxmemory-policy noeviction so that revocation keeps room when memory runs short");
      warnedNoLimit = true;
    } else {
      const was = isFull;
      isFull = r.ratio >= maxUse;
      gauge?.set(r.ratio);
      if (isFull !== was) {
        if (isFull) opts.logger?.error({ used_memory: r.used, maxmemory: r.max, max_memory_use: maxUse }, "redis memory above redis.max_memory_use: new issuance refused (store_full); revocation goes on");
        else opts.logger?.info({ used_memory: r.used, maxmemory: r.max }, "redis memory below redis.max_memory_use again: issuance resumes");
      }
      if (r.policy !== "noeviction" && !warnedPolicy) opts.logger?.warn({ maxmemory_policy: r.policy }, "redis maxmemory-policy is not noeviction: Redis may evict leases and task markers");
      warnedPolicy ||= r.policy !== "noeviction";
    }
    fullGauge?.set(isFull ? 1 : 0);
    return r;
  }

  const job: Repeating | null =
    opts.start === false ? null : repeat(check, () => opts.intervalMs ?? 1000, (e) => opts.logger?.debug({ err: { message: e.message } }, "redis memory check failed"));
  void check().catch(() => undefined);

  return {
    assertRoom() {
      if (isFull) {
        throw new BrokerError("store_full", "the lease store is nearly out of memory; new credentials are refused until it has room (revocation goes on)", {
          headers: { "Retry-After": "30" },
        });
      }
    },
    check,
    noteOom() {
      isFull = true;
      fullGauge?.set(1);
    },
    full: () => isFull,
    stop: () => job?.stop(),
  };
}
