/**
 * Every Redis key the broker writes, in one place. All keys share one hash tag, `{<prefix>}`,
 * so that multi-key scripts work unchanged on Redis Cluster (docs/ARCHITECTURE.md, Redis key layout).
 *
 *   {p}:jti:<issuer>:<sha256(jti) base64url>   string "1", PXAT = token exp + clock skew.
 *                                               Single-use token ids already presented.
 *   {p}:audit                                  stream: the hash-chained audit ledger (src/audit)
 *   {p}:audit:head                             string: head mark (seq, link, MAC) of the newest ledger event
 *   {p}:audit:sink:<name>                      string: last seq delivered to that sink (src/audit/sinks.ts)
 *   {p}:audit:sink:<name>:lock                 string: token of the process delivering to it, PX
 *   {p}:audit:anchor                           string: trim anchor, the mark of the newest event
 *                                               removed by retention (src/audit/retention.ts)
 *   (a lease's audit event ids are in its lease hash, field "ev": see src/leases/store.ts)
 *   {p}:lease:*, {p}:leases:*, {p}:live:*,     the lease store: see src/leases/store.ts
 *   {p}:task:*, {p}:revop:*
 *   {p}:revocations:*                          BullMQ's queue (src/leases/queue.ts)
 *   {p}:sweeper                                string: the sweeper's per-tick lock
 *   {p}:ready                                  string, PX 10 s: /readyz's write probe (src/redis/health.ts)
 *   {p}:durable                                string, PX 10 s: the write WAIT is measured
 *                                               against (src/redis/durability.ts)
 *   {p}:req:*, {p}:reqs, {p}:reqs:*            approval requests: see src/approvals/store.ts
 *   {p}:console:s:*, {p}:console:op:*,         console sessions and sign-ins
 *   {p}:console:login:*, {p}:console:logins:*   (src/console/sessions.ts)
 *   {p}:rl:<limit>:<workload>                  string: write requests in the current minute
 *                                               (src/limits/ratelimit.ts; <limit> is digits, so
 *                                               the workload id is everything after it)
 *   {p}:refused:<kind>:<workload>              string: authorization refusals of one kind in the
 *                                               current sampling interval, PX = the interval
 *                                               (src/limits/refusals.ts)
 *
 * Ids may contain `:` (docs/ARCHITECTURE.md, Redis key layout). A key built from two or more ids escapes each of
 * them with `keyPart` (`%` → `%25`, `:` → `%3A`), so no two different id pairs share a key
 * (workload `ci` + task `team:x` is not workload `ci:team` + task `x`). An id without `%` or `:`
 * is its own encoding, so keys written before this encoding existed keep their meaning. A key
 * built from one id after fixed words needs no escaping: everything after the words is the id.
 *   {p}:aws:lock:<sha256(role ARN) base64url>  string: owner token of the per-role lock that
 *                                               serializes revocation policy writes, PX
 *                                               (src/backends/aws/lock.ts)
 *   {p}:aws:revoked:<sha256(role ARN) base64url>, {p}:aws:roles
 *                                               zsets: the record of revoked STS sessions per
 *                                               role and the roles that have some, expiring with
 *                                               the sessions (src/backends/aws/revoked.ts)
 */
import { createHash } from "node:crypto";

export interface Keyspace {
  /** The hash tag, e.g. `{jit}`; also the prefix for BullMQ queues. */
  tag: string;
  seenJti(issuer: string, jti: string): string;
  audit: string;
  auditHead: string;
  auditAnchor: string;
  /** Delivery position (last seq delivered) of one audit sink. */
  auditSinkPosition(sink: string): string;
  /** Lock held by the one process delivering to that sink. */
  auditSinkLock(sink: string): string;
  auditLeasePrefix: string;
  /** aws_sts: the lock serializing one role's revocation policy writes. */
  awsLock(roleArn: string): string;
  /** aws_sts: the record of one role's revoked sessions. */
  awsRevoked(roleArn: string): string;
  /** aws_sts: the roles with recorded revoked sessions. */
  awsRoles: string;
  /** console: a session, by the SHA-256 (base64url) of its cookie value. */
  consoleSession(sidHash: string): string;
  /** console: the session hashes of one operator (sign-out ends them all). */
  consoleOperator(workload: string): string;
  /** console: a sign-in in progress, by its OAuth `state`. */
  consoleLogin(state: string): string;
  /** console: sign-ins started in one minute (a budget). */
  consoleLogins(minute: string): string;
  /** /readyz's write probe; `durable`: the marker write of redis.durability's WAIT. */
  ready: string;
  durable: string;
  /** The marker of a task a workload completed (I5), see src/leases/store.ts. */
  taskMarker(workload: string, taskId: string): string;
  /** The sampling counter of one kind of authorization refusal of one workload. */
  refusalSample(kind: string, workload: string): string;
}

/** One id as a key segment that can never contain the `:` separator (see the header). */
export const keyPart = (id: string): string => id.replace(/%/g, "%25").replace(/:/g, "%3A");

const sha256 = (s: string) => createHash("sha256").update(s).digest("base64url");

export function createKeyspace(prefix: string): Keyspace {
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(prefix)) throw new Error(`invalid redis prefix "${prefix}"`);
  const tag = `{${prefix}}`;
  return {
    tag,
    audit: `${tag}:audit`,
    auditHead: `${tag}:audit:head`,
    auditAnchor: `${tag}:audit:anchor`,
    auditSinkPosition: (sink) => `${tag}:audit:sink:${sink}`,
    auditSinkLock: (sink) => `${tag}:audit:sink:${sink}:lock`,
    auditLeasePrefix: `${tag}:audit:lease:`,
    seenJti: (issuer, jti) => `${tag}:jti:${issuer}:${sha256(jti)}`,
    awsLock: (roleArn) => `${tag}:aws:lock:${sha256(roleArn)}`,
    awsRevoked: (roleArn) => `${tag}:aws:revoked:${sha256(roleArn)}`,
    awsRoles: `${tag}:aws:roles`,
    consoleSession: (sidHash) => `${tag}:console:s:${sidHash}`,
    consoleOperator: (workload) => `${tag}:console:op:${sha256(workload)}`,
    consoleLogin: (state) => `${tag}:console:login:${sha256(state)}`,
    consoleLogins: (minute) => `${tag}:console:logins:${minute}`,
    ready: `${tag}:ready`,
    durable: `${tag}:durable`,
    taskMarker: (workload, taskId) => `${tag}:task:${keyPart(workload)}:${keyPart(taskId)}`,
    refusalSample: (kind, workload) => `${tag}:refused:${keyPart(kind)}:${keyPart(workload)}`,
  };
}
