/**
 * The lease TTL (docs/ARCHITECTURE.md, Request path): min(requested or the role's default, the role's max, the
 * deciding policy's @max_ttl). Asking for more than the role's max is an error, not a clamp, so a
 * caller never silently gets less than it planned for; a policy's @max_ttl clamps.
 */
import { parseDuration } from "../core/duration";
import { BrokerError } from "../core/errors";

/**
 * A request's `ttl`: whole seconds, or a duration such as "5m"; at least 2 s (lease expiries are
 * whole seconds and never later than asked, so below 2 s little would be left). Throws an Error
 * saying what is wrong (callers add where).
 */
export function parseTtlMs(v: string | number): number {
  if (typeof v === "number") {
    if (!Number.isInteger(v) || v < 2) throw new Error("must be a whole number of seconds, at least 2");
    return v * 1000;
  }
  const ms = parseDuration(v);
  if (ms < 2000) throw new Error("must be at least 2s");
  return ms;
}

export interface TtlInput {
  requestedMs?: number;
  roleDefaultMs: number;
  roleMaxMs: number;
  policyMaxMs?: number;
}

export function requestedTtlMs(i: TtlInput): number {
  if (i.requestedMs !== undefined && i.requestedMs > i.roleMaxMs) {
    throw new BrokerError("ttl_too_long", `requested ttl ${Math.round(i.requestedMs / 1000)}s exceeds the role's max of ${Math.round(i.roleMaxMs / 1000)}s`, {
      extra: { max_ttl_seconds: Math.floor(i.roleMaxMs / 1000) },
    });
  }
  return i.requestedMs ?? i.roleDefaultMs;
}

export function leaseTtlMs(i: TtlInput): number {
  return Math.min(requestedTtlMs(i), i.roleMaxMs, i.policyMaxMs ?? Number.POSITIVE_INFINITY);
}
