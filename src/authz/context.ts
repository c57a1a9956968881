/**
 * What a Cedar decision is asked about, besides the principal (docs/ARCHITECTURE.md, Operators
 * and authorization): the resource and the context, built in one place for issuance,
 * re-authorization, approvals, the operator check and `jitbroker policy test|why`:
 *
 *   resource             Role::"<name>" {backend, labels} (roleResource), or
 *                        Broker::"jitbroker" (BROKER_RESOURCE) for admin actions
 *   context.task         { id, intent, tool, destination, sensitivity }  (absent fields: "")
 *   context.ttl_seconds  the TTL the request asked for (or the role default), in seconds
 *   context.approved     true once an operator approved the request
 *   context.time         { hour, minute, weekday, day, date, timezone } of the request, in
 *                        `policy.timezone` (IANA name, default UTC): weekday 1 = Monday .. 7 =
 *                        Sunday, day "mon".."sun", date "YYYY-MM-DD"; working-hours policies use it
 *   context.requester    (approve only) { id, kind, owner } of the workload whose request is
 *                        being approved, so a policy can refuse approvals within one team
 *
 * Re-authorization evaluates a lease with the context it was issued with (its task, its TTL,
 * its approval, and the time it was issued at). Pure: no I/O, no engine (src/policy evaluates
 * what is built here).
 */
import type { RoleConfig } from "../config/schema";
import type { BrokerResource, DecisionRequest, ResourceInfo, TaskContext } from "../policy/types";

/** The id of the broker as a Cedar resource, `Broker::"jitbroker"`. */
export const BROKER_RESOURCE_ID = "jitbroker";
export const BROKER_RESOURCE: BrokerResource = { type: "Broker", id: BROKER_RESOURCE_ID };

export interface TimeContext {
  hour: number;
  minute: number;
  weekday: number;
  day: string;
  date: string;
  timezone: string;
}

export const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] as const;
const formatters = new Map<string, Intl.DateTimeFormat>();

/**
 * Recent answers by time zone and second: every offset and transition in the time zone database
 * is a whole number of seconds, so all instants of one UTC second have the same local time. A
 * re-authorization walk asks for the issue time of every lease, and leases are issued many to a
 * second when there are many of them.
 */
const recent = new Map<string, Map<number, TimeContext>>();
const RECENT_MAX = 4096;

export function timeContext(atMs: number, timeZone = "UTC"): TimeContext {
  const second = Math.floor(atMs / 1000);
  let byZone = recent.get(timeZone);
  const hit = byZone?.get(second);
  if (hit) return { ...hit };
  const t = computeTimeContext(atMs, timeZone);
  if (!byZone) recent.set(timeZone, (byZone = new Map()));
  if (byZone.size >= RECENT_MAX) byZone.clear();
  if (Number.isFinite(second)) byZone.set(second, { ...t });
  return t;
}

function computeTimeContext(atMs: number, timeZone: string): TimeContext {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", { timeZone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", weekday: "short" });
    formatters.set(timeZone, f);
  }
  const parts: Record<string, string> = {};
  for (const p of f.formatToParts(new Date(atMs))) parts[p.type] = p.value;
  const day = parts.weekday!.slice(0, 3).toLowerCase();
  const weekday = DAYS.indexOf(day as (typeof DAYS)[number]) + 1;
  return { hour: Number(parts.hour), minute: Number(parts.minute), weekday, day, date: `${parts.year}-${parts.month}-${parts.day}`, timezone: timeZone };
}

/** A role as the policies see it: `Role::"<name>"` with `backend` and `labels`. */
export const roleResource = (role: Pick<RoleConfig, "name" | "backend" | "labels">): ResourceInfo => ({ name: role.name, backend: role.backend, labels: role.labels });

/**
 * The resource of a credential request for a role name: the role, or, for a name no role has,
 * a Role without attributes, so that a caller no policy allows gets the same answer for a role
 * that exists and one that does not.
 */
export const requestedRoleResource = (name: string, role: Pick<RoleConfig, "name" | "backend" | "labels"> | undefined): ResourceInfo =>
  role ? roleResource(role) : { name, backend: "", labels: {} };

export function decisionContext(input: {
  task: Partial<TaskContext>;
  ttlSeconds: number;
  approved: boolean;
  atMs: number;
  timeZone?: string;
  requester?: { id: string; kind: string; owner: string };
}): DecisionRequest["context"] {
  const t = input.task;
  return {
    task: { id: t.id ?? "", intent: t.intent ?? "", tool: t.tool ?? "", destination: t.destination ?? "", sensitivity: t.sensitivity ?? "" },
    ttl_seconds: input.ttlSeconds,
    approved: input.approved,
    time: timeContext(input.atMs, input.timeZone),
    ...(input.requester ? { requester: input.requester } : {}),
  };
}

/** The context of an admin action on the broker (no task, no TTL, not an approval). */
export const adminContext = (atMs: number, timeZone?: string): DecisionRequest["context"] => decisionContext({ task: {}, ttlSeconds: 0, approved: false, atMs, timeZone });
