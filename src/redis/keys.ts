/**
 * Every Redis key the broker writes, in one place (docs/ARCHITECTURE.md, Redis key layout).
 *
 * Hash tags and shards. Keys carry a hash tag so that multi-key scripts, pipelines and
 * transactions stay on one Redis Cluster slot. Global keys use the base tag `{<prefix>}`. The
 * keys of workloads are on shards (`redis.shards`, default 1): with one shard its tag is the
 * base tag (the key names of deployments from before shards existed); with N > 1 shard i has
 * the tag `{<prefix>:<i>}`, which a Cluster places on its own slot. A workload's shard is
 * crc32(workload id) mod N; a lease or approval request id is drawn so that crc32(id) mod N is
 * its workload's shard (`newShardedId`), so an id names its shard and nothing needs a lookup;
 * a bulk op's records are on the shard of its id. Below, `{p}` is the base tag in the first
 * list and a shard's tag in the second.
 *
 * Base tag (global):
 *   {p}:shards                                 string: the shard count the data was written with
 *                                               (src/redis/shards.ts; a broker with another is refused)
 *   {p}:jti:<issuer>:<sha256(jti) base64url>   string "1", PXAT = token exp + clock skew.
 *                                               Single-use token ids already presented.
 *   {p}:audit                                  stream: the hash-chained audit ledger (src/audit)
 *   {p}:audit:head                             string: head mark (seq, link, MAC) of the newest ledger event
 *   {p}:audit:sink:<name>                      string: last seq delivered to that sink (src/audit/sinks.ts)
 *   {p}:audit:sink:<name>:lock                 string: token of the process delivering to it, PX
 *   {p}:audit:anchor                           string: trim anchor, the mark of the newest event
 *                                               removed by retention (src/audit/retention.ts)
 *   {p}:audit:lease:<id>                       list: a lease's audit event ids with several shards
 *                                               (with one, they are in its lease hash, field "ev")
 *   {p}:sweeper                                string: the sweeper's per-tick lock (owner token)
 *   {p}:ready                                  string, PX 10 s: /readyz's write probe (src/redis/health.ts)
 *   {p}:durable                                string, PX 10 s: the write WAIT is measured
 *                                               against (src/redis/durability.ts)
 *   {p}:console:s:*, {p}:console:op:*,         console sessions and sign-ins
 *   {p}:console:login:*, {p}:console:logins:*   (src/console/sessions.ts)
 *   {p}:aws:lock:<sha256(role ARN) base64url>  string: owner token of the per-role lock that
 *                                               serializes revocation policy writes, PX
 *                                               (src/backends/aws/lock.ts)
 *   {p}:aws:revoked:<sha256(role ARN) base64url>, {p}:aws:roles
 *                                               zsets: the record of revoked STS sessions per
 *                                               role and the roles that have some, expiring with
 *                                               the sessions (src/backends/aws/revoked.ts)
 *
 * Shard tag (per workload):
 *   {p}:lease:*, {p}:leases:*, {p}:live:*,     the lease store: see src/leases/store.ts
 *   {p}:task:*, {p}:revop:*, {p}:kids:*
 *   {p}:revocations:*                          BullMQ's queue (src/leases/queue.ts), one per shard
 *   {p}:req:*, {p}:reqs, {p}:reqs:*            approval requests: see src/approvals/store.ts
 *   {p}:rl:<limit>:<workload>                  string: write requests in the current minute
 *                                               (src/limits/ratelimit.ts; <limit> is digits, so
 *                                               the workload id is everything after it)
 *   {p}:refused:<kind>:<workload>              string: authorization refusals of one kind in the
 *                                               current sampling interval, PX = the interval
 *                                               (src/limits/refusals.ts)
 *   {p}:ready, {p}:durable                     with several shards, the same probes on each shard
 *
 * Ids may contain `:` (docs/ARCHITECTURE.md, Redis key layout). A key built from two or more ids escapes each of
 * them with `keyPart` (`%` → `%25`, `:` → `%3A`), so no two different id pairs share a key
 * (workload `ci` + task `team:x` is not workload `ci:team` + task `x`). An id without `%` or `:`
 * is its own encoding, so keys written before this encoding existed keep their meaning. A key
 * built from one id after fixed words needs no escaping: everything after the words is the id.
 */
import { createHash } from "node:crypto";
import { randomBase64url } from "../core/random";
import { crc32 } from "node:zlib";

/** Most shards `redis.shards` accepts (each shard is one more BullMQ queue and worker connection). */
export const MAX_SHARDS = 64;

/** The keys of one shard: everything that belongs to one workload lives under one shard's tag. */
export interface ShardKeys {
  /** The shard's hash tag: `{<prefix>}` with one shard, `{<prefix>:<n>}` with several; BullMQ's queue prefix. */
  tag: string;
  /** lease store (src/leases/store.ts) */
  lease(id: string): string;
  leasesDue: string;
  leasesAll: string;
  leasesFailed: string;
  /** The policy decisions leases refer to (field `pr` of a lease hash), see src/leases/store.ts. */
  leasesPolicies: string;
  /** The shared parts of backend handles leases refer to (field `h` of a lease hash), see src/leases/handle.ts. */
  leasesHandles: string;
  /** Live lease ids of one workload, role, identity issuer or task id (any workload). */
  live: Record<"workload" | "role" | "issuer" | "task", (value: string) => string>;
  /** One live lease id per task id (any workload); the task's other live leases are in `live.task`. */
  liveTasks: string;
  /** The marker of a task a workload completed (I5), see src/leases/store.ts. */
  taskMarker(workload: string, taskId: string): string;
  /** Progress of a bulk revocation: with several shards, each shard counts its own leases. */
  revop(opId: string): string;
  kids(leaseId: string): string;
  /** approval requests (src/approvals/store.ts) */
  req(id: string): string;
  reqCollect(id: string): string;
  reqs: string;
  reqsOpen: string;
  reqsPending(workload: string): string;
  /** `req` and `reqsPending` without the id: the approvals expiry script completes them. */
  reqPrefix: string;
  reqsPendingPrefix: string;
  /** The rate limit keys of one limit, up to the workload id (src/limits/ratelimit.ts). */
  rateLimitPrefix(limit: string): string;
  /** The sampling counter of one kind of authorization refusal of one workload. */
  refusalSample(kind: string, workload: string): string;
  /** The marker write `redis.durability`'s WAIT is measured against, on this shard's node. */
  durable: string;
  /** /readyz's write probe on this shard's node. */
  ready: string;
}

export interface Keyspace {
  /** The base hash tag, e.g. `{jit}`: global keys (audit, console, replay, aws, sweeper lock). */
  tag: string;
  /** `redis.shards`. */
  shards: number;
  /** The shard count the data in Redis was written with (`redis.shards`, checked at start). */
  shardCount: string;
  /** Every shard's keys, shard 0 first (one shard: its tag is the base tag). */
  shardKeys: readonly ShardKeys[];
  /** The shard of a workload: crc32(workload id) mod shards. */
  forWorkload(workload: string): ShardKeys;
  /** The shard of a lease, approval request or bulk op id: crc32(id) mod shards. */
  forId(id: string): ShardKeys;
  /** The sweeper's lock for one tick (src/leases/queue.ts). */
  sweeper: string;
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
  /** The marker of a task a workload completed (I5): on the workload's shard. */
  taskMarker(workload: string, taskId: string): string;
  /** The sampling counter of one kind of authorization refusal of one workload: on its shard. */
  refusalSample(kind: string, workload: string): string;
}

/** One id as a key segment that can never contain the `:` separator (see the header). */
export const keyPart = (id: string): string => id.replace(/%/g, "%25").replace(/:/g, "%3A");

const sha256 = (s: string) => createHash("sha256").update(s).digest("base64url");

/** The shard (0..shards-1) of an id: CRC-32 of its UTF-8 bytes, mod the shard count. Stable across versions. */
export function shardIndex(id: string, shards: number): number {
  return shards <= 1 ? 0 : crc32(Buffer.from(id, "utf8")) % shards;
}

/** Checks `redis.shards` (an integer 1..MAX_SHARDS). */
export function checkShards(n: unknown): number {
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > MAX_SHARDS) throw new Error(`redis.shards must be an integer from 1 to ${MAX_SHARDS} (got ${String(n)})`);
  return n;
}

/**
 * A new random id `<kind>_<16 base64url characters>` that falls on `shard` (see `shardIndex`):
 * drawn until it does (on average `shards` draws), so a lease or request id finds its shard
 * without a lookup and an id from a request can never name a shard that does not exist.
 */
export function newShardedId(kind: string, shard: number, shards: number): string {
  for (;;) {
    const id = `${kind}_${randomBase64url(12)}`;
    if (shardIndex(id, shards) === shard) return id;
  }
}

function shardKeysOf(tag: string): ShardKeys {
  return {
    tag,
    lease: (id) => `${tag}:lease:${id}`,
    leasesDue: `${tag}:leases:due`,
    leasesAll: `${tag}:leases:all`,
    leasesFailed: `${tag}:leases:failed`,
    leasesPolicies: `${tag}:leases:policies`,
    leasesHandles: `${tag}:leases:handles`,
    live: {
      workload: (value) => `${tag}:live:workload:${value}`,
      role: (value) => `${tag}:live:role:${value}`,
      issuer: (value) => `${tag}:live:issuer:${value}`,
      task: (value) => `${tag}:live:task:${value}`,
    },
    liveTasks: `${tag}:live:tasks`,
    taskMarker: (workload, taskId) => `${tag}:task:${keyPart(workload)}:${keyPart(taskId)}`,
    revop: (opId) => `${tag}:revop:${opId}`,
    kids: (leaseId) => `${tag}:kids:${leaseId}`,
    req: (id) => `${tag}:req:${id}`,
    reqCollect: (id) => `${tag}:req:${id}:collect`,
    reqs: `${tag}:reqs`,
    reqsOpen: `${tag}:reqs:open`,
    reqsPending: (workload) => `${tag}:reqs:pending:${workload}`,
    reqPrefix: `${tag}:req:`,
    reqsPendingPrefix: `${tag}:reqs:pending:`,
    rateLimitPrefix: (limit) => `${tag}:rl:${limit}:`,
    refusalSample: (kind, workload) => `${tag}:refused:${keyPart(kind)}:${keyPart(workload)}`,
    durable: `${tag}:durable`,
    ready: `${tag}:ready`,
  };
}

export function createKeyspace(prefix: string, shards = 1): Keyspace {
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(prefix)) throw new Error(`invalid redis prefix "${prefix}"`);
  checkShards(shards);
  const tag = `{${prefix}}`;
  // One shard keeps the base tag (the key names of deployments from before shards existed);
  // several get their own tags, which a Redis Cluster spreads over its slots (docs/ARCHITECTURE.md, Shards).
  const shardKeys = shards === 1 ? [shardKeysOf(tag)] : Array.from({ length: shards }, (_, i) => shardKeysOf(`{${prefix}:${i}}`));
  const forWorkload = (workload: string) => shardKeys[shardIndex(workload, shards)]!;
  return {
    tag,
    shards,
    shardCount: `${tag}:shards`,
    shardKeys,
    forWorkload,
    forId: (id) => shardKeys[shardIndex(id, shards)]!,
    sweeper: `${tag}:sweeper`,
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
    taskMarker: (workload, taskId) => forWorkload(workload).taskMarker(workload, taskId),
    refusalSample: (kind, workload) => forWorkload(workload).refusalSample(kind, workload),
  };
}
