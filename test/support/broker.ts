/**
 * Starts a real broker (the same composition root as `jitbroker serve`) on a free port against
 * the test run's redis-server, with its log lines captured for secret scans.
 */
import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { stringify } from "yaml";
import { createBroker, type Broker } from "../../src/broker";
import { parseConfig, type LoadedConfig } from "../../src/config/load";
import { createLogger } from "../../src/core/logger";
import { createMetrics } from "../../src/http/metrics";
import type { Backend } from "../../src/backends/types";

export interface TestBroker {
  url: string;
  broker: Broker;
  config: LoadedConfig;
  /** Every log line written so far (raw JSON text). */
  logs: string[];
  close(): Promise<void>;
}

export function testRedisUrl(): string {
  const url = process.env.JITBROKER_TEST_REDIS_URL;
  if (!url) throw new Error("JITBROKER_TEST_REDIS_URL is not set: run the tests with jest (global setup starts Redis)");
  return url;
}

let counter = 0;
/**
 * A Redis key prefix unique to this broker, so suites never see each other's keys (jest runs
 * several files in one worker process, each with its own module registry: the counter alone
 * would repeat, hence the random part).
 */
export function uniquePrefix(): string {
  return `t${randomBytes(4).toString("hex")}x${++counter}`;
}

/** Writes `config` as YAML in a fresh temp dir (relative paths resolve there) and loads it. */
export function configFrom(config: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): LoadedConfig {
  const dir = mkdtempSync(path.join(os.tmpdir(), "jitbroker-cfg-"));
  const file = path.join(dir, "broker.yaml");
  const text = stringify(config);
  writeFileSync(file, text);
  return parseConfig(text, file, env);
}

/** The test run's Redis and a unique prefix, unless the test names its own mode (sentinel, cluster). */
function redisSection(own: Record<string, unknown> | undefined, url: string | undefined): Record<string, unknown> {
  const base = { prefix: uniquePrefix(), ...(own ?? {}) };
  if (own?.sentinel || own?.cluster) return base;
  return { url: url ?? testRedisUrl(), ...base };
}

export async function startTestBroker(
  config: Record<string, unknown> | LoadedConfig,
  opts: { redisUrl?: string; now?: () => number; backends?: Partial<Record<string, Backend>>; worker?: boolean; reloadWaitMs?: number } = {},
): Promise<TestBroker> {
  const base = "file" in config && "dir" in config ? (config as LoadedConfig) : null;
  const cfg =
    base ??
    configFrom({
      ...config,
      redis: redisSection((config as { redis?: Record<string, unknown> }).redis, opts.redisUrl),
    });
  const logs: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(chunk.toString("utf8"));
      cb();
    },
  });
  const broker = await createBroker(cfg, {
    logger: createLogger({ level: "debug", destination }),
    now: opts.now,
    metrics: createMetrics({ defaultMetrics: false }),
    backends: opts.backends,
    parts: { api: true, worker: opts.worker ?? true },
    ...(opts.reloadWaitMs !== undefined ? { reloadWaitMs: opts.reloadWaitMs } : {}),
  });
  const { url } = await broker.listen(0, "127.0.0.1");
  return { url, broker, config: cfg, logs, close: () => broker.close() };
}

export async function getJson(url: string, token?: string, init: RequestInit = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(url, { ...init, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(init.headers as object) } });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, body, headers: res.headers };
}
