/**
 * Approval requests: the only module that reads or writes them in Redis. A request is created
 * when a permit that decided a credential request says `@approval("required")`; an operator
 * approves or denies it; the requester collects it (the credential is minted then, so its TTL
 * starts at collection). Every transition is one Lua script, so an approval racing a denial,
 * an expiry or a second collection has exactly one winner.
 *
 *   pending_approval ──approve──▶ approved ──collect──▶ collected
 *          │    └──deny──▶ denied       │
 *          └──(pending_timeout)──▶ expired ◀──(collect_timeout)
 *
 * Keys (all under the hash tag `{p}`, see src/redis/keys.ts):
 *   {p}:req:<id>                hash    the request (fields below); EXPIRE = both windows +
 *                                       retention, set at creation
 *   {p}:reqs                    zset    every request id by created ms (listing; pruned by retention)
 *   {p}:reqs:open               zset    pending or approved-not-collected ids, score = deadline ms
 *                                       (when they expire); the expiry sweep walks it
 *   {p}:reqs:pending:<workload> set     pending ids of a workload (max_pending_per_workload)
 *   {p}:req:<id>:collect        string  "1" while a collection mints (PX = collection timeout):
 *                                       one collection at a time, and no expiry meanwhile
 *
 * Request hash fields: workload role task (JSON task context) ttl (asked ms, absent = role
 * default) scope (JSON, absent = none) state created deadline (ms) ikind issuer subject
 * pids phash (the decision that asked for approval: policy ids JSON, set hash hex) by (the
 * approver or denier) decided (ms) reason lease (collected lease id) collected (ms).
 * Nothing secret: no token, no credential (I6).
 */
import { luaScript, registerScripts, runScript } from "../redis/scripts";
import { randomBase64url } from "../core/random";
import type { Redis } from "ioredis";
import { storeCall } from "../redis/client";
import { newShardedId, type Keyspace, type ShardKeys } from "../redis/keys";
import { mergePages, type ListPos } from "../leases/store";
import type { TaskContext } from "../policy/types";

import { APPROVAL_STATES, publicRequest, type ApprovalState } from "../leases/approval-request";

export { APPROVAL_STATES, publicRequest, type ApprovalState };

export interface ApprovalRequest {
  id: string;
  state: ApprovalState;
  workload: string;
  role: string;
  task: TaskContext;
  /** The TTL asked for, ms (absent: the role's default). */
  ttl_ms?: number;
  scope?: Record<string, unknown>;
  identity: { kind: "oidc" | "spiffe"; issuer: string; subject: string };
  policy: { ids: string[]; hash: string };
  created_ms: number;
  /** When it expires if nothing happens (pending: approval deadline; approved: collection deadline). */
  deadline_ms: number;
  decided_by?: string;
  decided_ms?: number;
  reason?: string;
  lease_id?: string;
  collected_ms?: number;
}

export const newRequestId = () => `rq_${randomBase64url(12)}`;
export const REQUEST_ID = /^rq_[A-Za-z0-9_-]{16}$/;

const CREATE = luaScript<string>("jitApprovalCreate", `
-- KEYS: 1 request, 2 reqs, 3 open, 4 pending set of the workload
-- ARGV: 1 max pending (0 = none), 2 id, 3 created ms, 4 deadline ms, 5 expire seconds, 6 prune-before ms, 7.. field/value pairs
-- Output: 'ok', 'too_many' (the workload's pending limit) or 'exists'
local max = tonumber(ARGV[1])
if max > 0 and redis.call('SCARD', KEYS[4]) >= max then return 'too_many' end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
return 'ok'
`);

// Approve or deny a pending request; a pending request past its deadline becomes expired instead.
const DECIDE = luaScript<string>("jitApprovalDecide", `
-- KEYS: 1 request, 2 open, 3 pending set of the workload
-- ARGV: 1 id, 2 new state (approved|denied), 3 by, 4 reason, 5 now ms, 6 collect deadline ms
-- Output: 'ok', 'missing', 'now_expired', or the state the request is already in
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st ~= 'pending_approval' then return st end
local now = tonumber(ARGV[5])
if tonumber(redis.call('HGET', KEYS[1], 'deadline')) <= now then
  redis.call('HSET', KEYS[1], 'state', 'expired', 'decided', ARGV[5])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[1])
  return 'now_expired'
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'by', ARGV[3], 'decided', ARGV[5])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'reason', ARGV[4]) end
redis.call('SREM', KEYS[3], ARGV[1])
if ARGV[2] == 'approved' then
  redis.call('HSET', KEYS[1], 'deadline', ARGV[6])
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 'ok'
`);

// Starts a collection: only an approved request within its window, one collection at a time.
const COLLECT_BEGIN = luaScript<string>("jitApprovalCollectBegin", `
-- KEYS: 1 request, 2 collection lock
-- ARGV: 1 now ms, 2 lock ms
-- Output: 'ok' (lock taken), 'missing', 'expired', 'busy', or the request's state when not approved
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st ~= 'approved' then return st end
if tonumber(redis.call('HGET', KEYS[1], 'deadline')) <= tonumber(ARGV[1]) then return 'expired' end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 'busy' end
return 'ok'
`);

const COLLECT_END = luaScript<number>("jitApprovalCollectEnd", `
-- KEYS: 1 request, 2 collection lock, 3 open
-- ARGV: 1 id, 2 lease id, 3 now ms
-- Output: 1 recorded as collected, 0 no longer approved (left as it is)
redis.call('DEL', KEYS[2])
if redis.call('HGET', KEYS[1], 'state') ~= 'approved' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'collected', 'lease', ARGV[2], 'collected', ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
`);

// Expires open requests whose deadline has passed (skipping one being collected right now).
const EXPIRE_DUE = luaScript<string[]>("jitApprovalExpireDue", `
-- KEYS: 1 open; ARGV: 1 now ms, 2 limit, 3 request key prefix ("{p}:req:"), 4 pending set prefix
-- ("{p}:reqs:pending:"), both from src/redis/keys.ts (the keys of one shard: one hash tag)
-- Output: id, state it expired in, workload, task JSON; four per expired request.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  local st = redis.call('HGET', key, 'state')
  if st == 'pending_approval' or st == 'approved' then
    if redis.call('EXISTS', key .. ':collect') == 0 and tonumber(redis.call('HGET', key, 'deadline')) <= tonumber(ARGV[1]) then
      local workload = redis.call('HGET', key, 'workload')
      redis.call('HSET', key, 'state', 'expired')
      redis.call('SREM', ARGV[4] .. workload, id)
      redis.call('ZREM', KEYS[1], id)
      out[#out + 1] = id
      out[#out + 1] = st
      out[#out + 1] = workload
      out[#out + 1] = redis.call('HGET', key, 'task') or '{}'
    end
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
`);

export interface ApprovalStoreOptions {
  /** Seconds a finished request stays queryable. */
  retentionSeconds: number;
  pendingTimeoutMs: number;
  collectTimeoutMs: number;
  maxPendingPerWorkload: number;
  now?: () => number;
}

export interface NewApprovalRequest {
  workload: string;
  role: string;
  task: TaskContext;
  ttlMs?: number;
  scope?: Record<string, unknown>;
  identity: ApprovalRequest["identity"];
  policy: ApprovalRequest["policy"];
}

/** The requests of one shard (a request lives on its workload's shard: src/redis/keys.ts). */
function createShardApprovals(redis: Redis, sk: ShardKeys, shard: { index: number; count: number }, opts: ApprovalStoreOptions) {
  const now = opts.now ?? Date.now;
  registerScripts(redis, [CREATE, DECIDE, COLLECT_BEGIN, COLLECT_END, EXPIRE_DUE]);
  const k = {
    req: sk.req,
    lock: sk.reqCollect,
    all: sk.reqs,
    open: sk.reqsOpen,
    pending: sk.reqsPending,
  };

  function decode(id: string, h: Record<string, string>): ApprovalRequest | null {
    if (!h.state) return null;
    const r: ApprovalRequest = {
      id,
      state: h.state as ApprovalState,
      workload: h.workload!,
      role: h.role!,
      task: JSON.parse(h.task ?? "{}") as TaskContext,
      identity: { kind: h.ikind as "oidc" | "spiffe", issuer: h.issuer!, subject: h.subject! },
      policy: { ids: JSON.parse(h.pids ?? "[]") as string[], hash: h.phash ?? "" },
      created_ms: Number(h.created),
      deadline_ms: Number(h.deadline),
    };
    if (h.ttl) r.ttl_ms = Number(h.ttl);
    if (h.scope) r.scope = JSON.parse(h.scope) as Record<string, unknown>;
    if (h.by) r.decided_by = h.by;
    if (h.decided) r.decided_ms = Number(h.decided);
    if (h.reason) r.reason = h.reason;
    if (h.lease) r.lease_id = h.lease;
    if (h.collected) r.collected_ms = Number(h.collected);
    return r;
  }

  async function get(id: string): Promise<ApprovalRequest | null> {
    if (!REQUEST_ID.test(id)) return null;
    return decode(id, await storeCall(() => redis.hgetall(k.req(id))));
  }

  return {
    keys: k,
    get,

    async create(r: NewApprovalRequest): Promise<{ result: "ok"; request: ApprovalRequest } | { result: "too_many" }> {
      const id = shard.count === 1 ? newRequestId() : newShardedId("rq", shard.index, shard.count);
      const created = now();
      const deadline = created + opts.pendingTimeoutMs;
      const fields: Record<string, string> = {
        workload: r.workload,
        role: r.role,
        task: JSON.stringify(r.task),
        state: "pending_approval",
        created: String(created),
        deadline: String(deadline),
        ikind: r.identity.kind,
        issuer: r.identity.issuer,
        subject: r.identity.subject,
        pids: JSON.stringify(r.policy.ids),
        phash: r.policy.hash,
        ...(r.ttlMs !== undefined ? { ttl: String(r.ttlMs) } : {}),
        ...(r.scope !== undefined ? { scope: JSON.stringify(r.scope) } : {}),
      };
      const expireSeconds = Math.ceil((opts.pendingTimeoutMs + opts.collectTimeoutMs) / 1000) + opts.retentionSeconds;
      const out = (await storeCall(() =>
        runScript(
          redis,
          CREATE,
          [k.req(id), k.all, k.open, k.pending(r.workload)],
          [String(opts.maxPendingPerWorkload),
          id,
          String(created),
          String(deadline),
          String(expireSeconds),
          String(created - expireSeconds * 1000),
          ...Object.entries(fields).flat()],
        ),
      ));
      if (out === "too_many") return { result: "too_many" };
      if (out !== "ok") throw new Error(`approval request ${id}: ${out}`);
      return { result: "ok", request: decode(id, fields)! };
    },

    /** Approves or denies a pending request. Returns "ok", or why not (its state, "now_expired", "missing"). */
    async decide(id: string, workload: string, state: "approved" | "denied", by: string, reason?: string): Promise<string> {
      const t = now();
      return (await storeCall(() =>
        runScript(redis, DECIDE, [k.req(id), k.open, k.pending(workload)], [id, state, by, reason ?? "", String(t), String(t + opts.collectTimeoutMs)]),
      ));
    },

    /** "ok" when this caller may mint for the request now (it holds the collection lock). */
    async beginCollect(id: string, lockMs: number): Promise<string> {
      return await storeCall(() => runScript(redis, COLLECT_BEGIN, [k.req(id), k.lock(id)], [String(now()), String(lockMs)]));
    },

    /** Records the collected lease; false if the request is no longer approved (it then stays as it is). */
    async endCollect(id: string, leaseId: string): Promise<boolean> {
      return (await storeCall(() => runScript(redis, COLLECT_END, [k.req(id), k.lock(id), k.open], [id, leaseId, String(now())]))) === 1;
    },

    /** Releases the collection lock after a failed mint; the request stays approved. */
    async abortCollect(id: string): Promise<void> {
      await storeCall(() => redis.del(k.lock(id)));
    },

    /** Expires requests past their deadline; returns them with the state they expired in. */
    async expireDue(limit = 500): Promise<{ id: string; was: ApprovalState; workload: string; task_id: string }[]> {
      const flat = await storeCall(() => runScript(redis, EXPIRE_DUE, [k.open], [String(now()), String(limit), sk.reqPrefix, sk.reqsPendingPrefix]));
      const out: { id: string; was: ApprovalState; workload: string; task_id: string }[] = [];
      for (let i = 0; i < flat.length; i += 4) {
        out.push({ id: flat[i]!, was: flat[i + 1] as ApprovalState, workload: flat[i + 2]!, task_id: (JSON.parse(flat[i + 3]!) as { id?: string }).id ?? "" });
      }
      return out;
    },

    /**
     * Requests, newest first (pending/approved filters: soonest deadline last), optionally of one
     * state or workload. `cursor` is opaque (`<score>.<id>` of the last request returned).
     */
    async list(filter: { state?: ApprovalState; workload?: string }, limit: number, cursor?: string): Promise<{ requests: ApprovalRequest[]; next: string | null }> {
      const index = filter.state === "pending_approval" || filter.state === "approved" ? k.open : k.all;
      const m = cursor ? /^(\d+)\.(rq_[A-Za-z0-9_-]{16})$/.exec(cursor) : null;
      let max = m ? m[1]! : "+inf";
      let after = m ? m[2]! : null;
      const out: ApprovalRequest[] = [];
      for (let scanned = 0, rounds = 0; scanned < 5000 && rounds < 100; rounds++) {
        const batch = (await storeCall(() => redis.zrevrangebyscore(index, max, "-inf", "WITHSCORES", "LIMIT", 0, 200))) as string[];
        const entries: [string, string][] = [];
        for (let i = 0; i < batch.length; i += 2) {
          // Ties come in reverse lexical order: skip what the previous page already returned.
          if (after !== null && batch[i + 1] === max && batch[i]! >= after) continue;
          entries.push([batch[i]!, batch[i + 1]!]);
        }
        if (entries.length === 0) return { requests: out, next: null };
        const pipe = redis.pipeline();
        for (const [id] of entries) pipe.hgetall(k.req(id));
        const res = (await storeCall(() => pipe.exec()))!;
        for (let i = 0; i < entries.length; i++) {
          scanned++;
          const [id, score] = entries[i]!;
          const r = decode(id, res[i]![1] as Record<string, string>);
          if (r && (!filter.state || r.state === filter.state) && (!filter.workload || r.workload === filter.workload)) out.push(r);
          max = score;
          after = id;
          if (out.length >= limit) return { requests: out, next: `${score}.${id}` };
        }
      }
      return { requests: out, next: `${max}.${after}` };
    },
  };
}

/**
 * Approval requests over every shard (`redis.shards`): a request is on its workload's shard and
 * its id falls there, so one request is one shard's; expiry and listing visit every shard
 * (listing merges them in one order, as src/leases/store.ts does for leases).
 */
export function createApprovalStore(redis: Redis, keys: Keyspace, opts: ApprovalStoreOptions) {
  const count = keys.shardKeys.length;
  const shards = keys.shardKeys.map((sk, index) => createShardApprovals(redis, sk, { index, count }, opts));
  if (count === 1) return shards[0]!;
  const ofId = (id: string) => shards[keys.shardKeys.indexOf(keys.forId(id))]!;
  const ofWorkload = (w: string) => shards[keys.shardKeys.indexOf(keys.forWorkload(w))]!;
  const one = shards[0]!;
  return {
    keys: one.keys,
    get: (id: string) => ofId(id).get(id),
    create: (r: NewApprovalRequest) => ofWorkload(r.workload).create(r),
    decide: (id: string, workload: string, state: "approved" | "denied", by: string, reason?: string) => ofId(id).decide(id, workload, state, by, reason),
    beginCollect: (id: string, lockMs: number) => ofId(id).beginCollect(id, lockMs),
    endCollect: (id: string, leaseId: string) => ofId(id).endCollect(id, leaseId),
    abortCollect: (id: string) => ofId(id).abortCollect(id),
    async expireDue(limit = 500) {
      return (await Promise.all(shards.map((s) => s.expireDue(Math.ceil(limit / count))))).flat();
    },
    async list(filter: { state?: ApprovalState; workload?: string }, limit: number, cursor?: string): Promise<{ requests: ApprovalRequest[]; next: string | null }> {
      if (cursor && !LIST_CURSOR.test(cursor)) return { requests: [], next: null };
      const open = filter.state === "pending_approval" || filter.state === "approved";
      const pages = await Promise.all((filter.workload ? [ofWorkload(filter.workload)] : shards).map((s) => s.list(filter, limit, cursor)));
      const pos = (c: string): ListPos => {
        const m = LIST_CURSOR.exec(c)!;
        return { score: Number(m[1]), id: m[2]! };
      };
      const merged = mergePages(
        pages.map((p) => ({ items: p.requests.map((r) => ({ pos: { score: open ? r.deadline_ms : r.created_ms, id: r.id }, item: r })), next: p.next === null ? null : pos(p.next) })),
        limit,
      );
      return { requests: merged.items, next: merged.next === null ? null : `${merged.next.score}.${merged.next.id}` };
    },
  };
}

const LIST_CURSOR = /^(\d+)\.(rq_[A-Za-z0-9_-]{16})$/;

export type ApprovalStore = ReturnType<typeof createApprovalStore>;

