/**
 * Authorization refusals (a policy denying a request, a non-operator calling an operator route)
 * write nothing permanent per attempt (docs/ARCHITECTURE.md, I9): each is counted in
 * `jitbroker_refusals_total{kind}`, and the first of each kind per workload in every sampling
 * interval goes to the audit ledger, marked `sampled: true` (the counter has the rest). A
 * workload retrying a refused call in a loop therefore adds at most one audit event per interval.
 *
 * Keys (under the hash tag, see src/redis/keys.ts):
 *   {p}:refused:<kind>:<workload>   string  refusals counted in the current interval, PX = interval
 *
 * Sampling is best effort: if Redis cannot count, the event is not written (the metric still
 * counts it) and the refusal is answered as usual.
 */
import type { Redis } from "ioredis";
import { Counter, type Registry } from "prom-client";
import type { AuditEvent, AuditLedger } from "../audit/ledger";
import type { Keyspace } from "../redis/keys";
import { luaScript, registerScripts, runScript } from "../redis/scripts";

export const REFUSAL_SAMPLE_INTERVAL_MS = 60_000;

const SAMPLE = luaScript<number>(
  "jitRefusalSample",
  `
-- KEYS: 1 sample counter.  ARGV: 1 interval ms
-- Output: the refusal's number within the interval (1 = the one to audit).
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
`,
);

export interface RefusalSampler {
  /** Counts one refusal of `kind` by `workload`; audits `event` if it is the interval's first. */
  record(workload: string, kind: string, event: AuditEvent): Promise<void>;
}

export function createRefusalSampler(redis: Redis, keys: Keyspace, audit: AuditLedger, opts: { registry?: Registry; intervalMs?: number } = {}): RefusalSampler {
  const intervalMs = opts.intervalMs ?? REFUSAL_SAMPLE_INTERVAL_MS;
  registerScripts(redis, [SAMPLE]);
  const counter = new Counter({
    name: "jitbroker_refusals_total",
    help: "Authorization refusals (policy denials, non-operators on operator routes), by kind; the audit ledger gets one sample per workload and kind per interval",
    labelNames: ["kind"],
    registers: opts.registry ? [opts.registry] : [],
  });
  return {
    async record(workload, kind, event) {
      counter.inc({ kind });
      try {
        const n = Number(await runScript(redis, SAMPLE, [keys.refusalSample(kind, workload)], [String(intervalMs)]));
        if (n !== 1) return;
        await audit.append({ ...event, sampled: true, sample_interval_seconds: Math.round(intervalMs / 1000) });
      } catch {
        /* best effort: the metric has it */
      }
    },
  };
}
