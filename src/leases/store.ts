/**
 * The lease store: the only module that reads or writes lease state in Redis. Every state
 * change is one Lua script, so a revocation racing an issuance can never leave an active
 * credential behind (I1, I3, I5 in docs/ARCHITECTURE.md).
 *
 * Keys (all under the hash tag `{p}`, see src/redis/keys.ts):
 *   {p}:lease:<id>          hash   the lease (fields below); EXPIRE = retention once terminal
 *   {p}:leases:due          zset   live lease ids, score = ms when the lease next needs the worker:
 *                                  its expiry, its trigger + IN_FLIGHT_MS once a revocation is
 *                                  triggered, or the next retry after a failed revocation. It is the expiry schedule:
 *                                  written with the lease (CREATE), walked by the worker's poller
 *                                  (EXPIRE_DUE) and, for what is late, by the sweeper.
 *   {p}:leases:all          zset   every lease id by issued_at ms (listing; pruned by retention)
 *   {p}:live:workload:<w>   set    live lease ids of a workload   (quota, bulk revocation)
 *   {p}:live:role:<r>       set    live lease ids of a role
 *   {p}:live:issuer:<i>     set    live lease ids by identity issuer
 *   {p}:live:tasks          hash   task id -> one live lease id of that task (any workload): the
 *                                  task's first live lease, an entry in one hash instead of a key
 *                                  per task id (most tasks have one lease)
 *   {p}:live:task:<t>       set    the task's other live lease ids (and, from layouts before
 *                                  live:tasks, all of them): a task's live leases are the union
 *   {p}:leases:policies     hash   policy ref -> "<policy-set hash base64url> <policy ids JSON>":
 *                                  the decision a lease's field `pr` names (the same for every lease
 *                                  issued under one policy set by the same policies); written with
 *                                  the lease, never changed (content-addressed), one entry per
 *                                  distinct (policy set, determining policies) pair
 *   {p}:leases:handles      hash   handle ref -> the shared part of backend handles (a Vault lease
 *                                  path, an AWS role ARN and RoleId) that a lease's field `h` names
 *                                  (src/leases/handle.ts); written with the handle, never changed
 *   {p}:task:<w>:<t>        string completion ms: task completed (I5); EXPIRE = task retention;
 *                                  <w> and <t> escaped by keys.taskMarker (ids may hold `:`)
 *   {p}:leases:failed       set    lease ids in state revoke_failed (metrics, operators)
 *   {p}:revop:<id>          hash   bulk revocation progress (matched, revoked, failed, state...)
 *   {p}:kids:<id>           set    ids of the leases delegated from lease <id> (RFC 8693, src/oauth);
 *                                  EXPIRE = the parent's remaining life + retention
 *
 * Lease hash fields: r b w t (role, backend, workload, task id) state iat (issued_at ms) exp
 * (expires_at ms; never changed once written: the AWS handle's times are relative to it) bexp
 * (backend_expires_at ms) rat (revoked_at ms) trig by reason tat (trigger ms) k i s (identity
 * kind, absent for "oidc"; issuer; subject) pr (policy ref: a field of {p}:leases:policies
 * holding the policy-set hash and the determining policy ids; leases written before it hold them
 * inline as pids (JSON) and phash (base64url), still read) ti tt td ts (task intent, tool,
 * destination, sensitivity; absent when empty). Leases written before issue 17's second pass
 * name role backend workload task_id ikind issuer subject in full and hold the handle as JSON in
 * `handle` (still read). The revocation kind follows from the backend and the TTL from iat/exp,
 * so neither is stored: every byte counts at 1 KB a lease.
 * h (the backend handle in its stored form, src/leases/handle.ts; never secret) err att (revoke
 * attempts) op (bulk op id) ev (the lease's audit event ids, space-separated, written by the
 * audit ledger). For re-authorization
 * (src/policy/reauthorize.ts) the original decision's inputs that are not otherwise stored:
 * ask (the TTL seconds the request asked for, when it differs from the lease's), cl (the token
 * claim values the workload's inventory entry constrains, JSON, absent when none), apr and apb
 * (the approval request id and the approving workload, when the lease was approved).
 * Delegation (src/oauth): par (parent lease id), dep (depth: hops from the root lease), anc
 * (ancestor lease ids, root first, space-separated), chn (workload ids that held the chain before
 * this lease, root first, space-separated), hk ("1" once a lease was delegated from this one);
 * on-behalf-of: obi obs (the person's issuer name and subject), obc (their ID token's claims the
 * policies see, JSON). Children inherit obi/obs/obc.
 * A value over 64 bytes (Redis's default hash-max-listpack-value) is stored in pieces: `f` holds
 * the first 64 bytes, `f.1`, `f.2`... the rest (`pieces`, `joinPieces`), so the lease stays a
 * listpack (docs/ARCHITECTURE.md, Lease record).
 * No field ever holds secret material (I6).
 */
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";
import { BrokerError } from "../core/errors";
import { storeCall } from "../redis/client";
import { luaScript, registerScripts, runScript } from "../redis/scripts";
import { newShardedId, type Keyspace, type ShardKeys } from "../redis/keys";
import { LEASE_STATES, type BackendKind, type Lease, type LeaseState, type RevocationTrigger, type TaskContext } from "./types";
import { decodeHandle, encodeHandle, handleRefOf, type HandleContext } from "./handle";

/**
 * How long after its trigger a lease in revocation is due again (its due-set score): the revoker
 * that triggered it has this long before anyone else looks at it, so the expiry poller, whose walk
 * covers everything due, does not step over the revocations in flight on every tick; the sweeper
 * takes over what is still there `worker.sweep_grace` after that.
 */
export const IN_FLIGHT_MS = 250;
/** Listing entries read per step of a listing's scan (`list`). */
const LIST_PAGE = 200;

const CREATE = luaScript<"ok" | "task_completed" | "quota_exceeded" | "exists">(
  "jitLeaseCreate",
  `
-- KEYS: 1 lease, 2 due, 3 all, 4 live:workload, 5 live:role, 6 live:issuer, 7 live:task:<t>, 8 task marker,
--       9 live:tasks, 10 leases:policies
-- ARGV: 1 quota (0 = none), 2 id, 3 issued_at ms, 4 expires_at ms, 5 task id, 6 policy ref,
--       7 policy ref's value, 8.. field/value pairs
-- Output: ok | task_completed | quota_exceeded | exists (nothing written unless ok)
-- The task's first live lease is its field of live:tasks; while that field holds another live
-- lease, the lease goes to live:task:<t> instead.
if redis.call('EXISTS', KEYS[8]) == 1 then return 'task_completed' end
local quota = tonumber(ARGV[1])
if quota > 0 and redis.call('SCARD', KEYS[4]) >= quota then return 'quota_exceeded' end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('HSETNX', KEYS[10], ARGV[6], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
for k = 4, 6 do redis.call('SADD', KEYS[k], ARGV[2]) end
if redis.call('HSETNX', KEYS[9], ARGV[5], ARGV[2]) == 0 then redis.call('SADD', KEYS[7], ARGV[2]) end
return 'ok'
`,
);

const ACTIVATE = luaScript<LeaseState | "missing" | "reopened">(
  "jitLeaseActivate",
  `
-- KEYS: 1 lease, 2 due, 3 leases:handles.  ARGV: 1 handle as stored (field h, src/leases/handle.ts;
--       its first piece when over 64 bytes), 2 backend_expires_at ms or '', 3 lease id, 4 now ms,
--       5 the handle's ref or '', 6 the ref's shared value, 7.. the handle's further pieces (h.1, h.2...)
-- Output: active (flipped from issuing) | reopened | missing | the state the lease was in
-- A lease the worker already finished as "never minted" (its mint outlived worker.mint_timeout)
-- is reopened as revoking and due now: the credential that did get minted is then revoked with
-- its handle, retried like any other (I1). A handle of the layout before (field handle, JSON,
-- and its pieces) is replaced.
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
local had = redis.call('HEXISTS', KEYS[1], 'h') + redis.call('HEXISTS', KEYS[1], 'handle')
if had > 0 then
  for _, f in ipairs({'h', 'handle'}) do
    local i = 1
    while redis.call('HDEL', KEYS[1], f .. '.' .. i) == 1 do i = i + 1 end
  end
  redis.call('HDEL', KEYS[1], 'handle')
end
if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[3], ARGV[5], ARGV[6]) end
redis.call('HSET', KEYS[1], 'h', ARGV[1])
for j = 7, #ARGV do redis.call('HSET', KEYS[1], 'h.' .. (j - 6), ARGV[j]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'bexp', ARGV[2]) end
if st == 'issuing' then redis.call('HSET', KEYS[1], 'state', 'active') return 'active' end
if had == 0 and (st == 'revoked' or st == 'expired') then
  redis.call('HSET', KEYS[1], 'state', 'revoking', 'tat', ARGV[4])
  redis.call('HDEL', KEYS[1], 'rat')
  redis.call('PERSIST', KEYS[1])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  return 'reopened'
end
return st
`,
);

/**
 * The fields revocation reads of a lease (`forRevocation`), in the order REVOCATION_VIEW answers
 * them: what the revoker, the backends' `revoke`, FINISH and FAIL use, and the `revoked` event.
 */
// The last six are the names of the layout before issue 17's second pass (absent from newer leases).
const REVOCATION_FIELDS = ["state", "b", "r", "w", "t", "i", "h", "op", "tat", "iat", "exp", "trig", "by", "reason", "att", "hk", "backend", "role", "workload", "task_id", "issuer", "handle"] as const;

/**
 * Lua: appends a lease's values of `fields` to `out` (false when absent). A value of 61 bytes or
 * more may be the first of its pieces (f.1, f.2...: a value over 64 bytes is stored in pieces of
 * at most 64, never split inside a character): they are joined here.
 */
const LUA_VIEW = `
local function view(key, fields, out)
  local h = redis.call('HMGET', key, unpack(fields))
  for j = 1, #fields do
    local v = h[j]
    if v and #v >= 61 then
      local k = 1
      local p = redis.call('HGET', key, fields[j] .. '.' .. k)
      while p do
        v = v .. p
        k = k + 1
        p = redis.call('HGET', key, fields[j] .. '.' .. k)
      end
    end
    out[#out + 1] = v
  end
end
`;

/**
 * Lua: whether a lease in state `st` is live (not yet triggered): issuing or active, or a state
 * that is none of LEASE_STATES (a damaged or hostile Redis), which is revoked rather than left
 * out of every revocation path (fail closed). A lease without a state is gone.
 */
const LUA_LIVE = `
local function live(st)
  return st and st ~= 'revoking' and st ~= 'revoke_failed' and st ~= 'revoked' and st ~= 'expired'
end
`;

const TRIGGER = luaScript<(string | null)[]>(
  "jitLeaseTrigger",
  `
-- KEYS: 1 due, 2.. lease keys.  ARGV: 1 trigger, 2 by, 3 reason, 4 now ms, 5 op id or '',
--       6 only-if-expired ('1': trigger only leases whose expires_at <= now or is not a number), 7 due-set score of a
--       triggered lease (now + IN_FLIGHT_MS), 8 F: how many field names follow (0: none),
--       9..8+F field names, then the lease ids (one per lease key)
-- Output: the ids this call moved to revoking; with F > 0 each id followed by its F values
--       (false when absent, pieces joined: what REVOCATION_VIEW answers)
-- Moves each live, untriggered lease to 'revoking' (the first trigger wins) and makes it due at ARGV[7].
-- Live: issuing, active, or a state that is none of the broker's (a damaged or hostile Redis:
-- fail closed, it is revoked rather than left alive out of every path).
${LUA_VIEW}
${LUA_LIVE}
local nf = tonumber(ARGV[8])
local fields = {}
for j = 1, nf do fields[j] = ARGV[8 + j] end
local set = {'state', 'revoking', 'trig', ARGV[1], 'tat', ARGV[4]}
if ARGV[2] ~= '' then set[#set + 1] = 'by' set[#set + 1] = ARGV[2] end
if ARGV[3] ~= '' then set[#set + 1] = 'reason' set[#set + 1] = ARGV[3] end
if ARGV[5] ~= '' then set[#set + 1] = 'op' set[#set + 1] = ARGV[5] end
local out = {}
for i = 2, #KEYS do
  local id = ARGV[7 + nf + i]
  local st = redis.call('HGET', KEYS[i], 'state')
  if live(st) then
    local ok = true
    -- An expiry that is not a number (a damaged or hostile Redis) counts as passed: fail closed,
    -- and never a script error that would stop the walk for every other lease of the batch.
    if ARGV[6] == '1' then
      local e = tonumber(redis.call('HGET', KEYS[i], 'exp'))
      ok = e == nil or e <= tonumber(ARGV[4])
    end
    if ok then
      redis.call('HSET', KEYS[i], unpack(set))
      redis.call('ZADD', KEYS[1], ARGV[7], id)
      out[#out + 1] = id
      if nf > 0 then view(KEYS[i], fields, out) end
    end
  end
end
return out
`,
);

const EXPIRE_DUE = luaScript<[number, ...(string | null)[]]>(
  "jitLeaseExpireDue",
  `
-- KEYS: 1 due.  ARGV: 1 now ms, 2 offset, 3 entries to scan, 4 at most this many to trigger,
--       5 lease key prefix ({p}:lease:, same hash tag as KEYS[1]), 6 due-set score of a triggered
--       lease (now + IN_FLIGHT_MS), 7.. field names to answer for each moved lease (may be none)
-- Output: {scanned, id, values..., id, values...}: walks the due entries with score <= now from
-- the offset and triggers (expiry) each live, untriggered lease whose exp <= now, like TRIGGER,
-- answering each moved id followed by its values of ARGV[7..] (false when absent, pieces joined:
-- what REVOCATION_VIEW answers); entries of leases already triggered (revocation in flight) are
-- passed over, so they cannot stall the walk. A moved lease's score becomes ARGV[6], past the
-- range: the next offset is offset + scanned - moved. An entry without its lease hash is dropped.
-- A live lease whose exp is not a number (a damaged or hostile Redis) is due: its entry's score
-- (its expiry as written) brought it here, and an unreadable expiry must end it, not stall the walk.
-- Live as in TRIGGER: a state that is none of the broker's counts as live (fail closed).
${LUA_VIEW}
${LUA_LIVE}
local now = tonumber(ARGV[1])
local max = tonumber(ARGV[4])
local fields = {}
for j = 7, #ARGV do fields[#fields + 1] = ARGV[j] end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', ARGV[2], ARGV[3])
local out = {0}
local scanned = 0
local moved = 0
for _, id in ipairs(ids) do
  if moved >= max then break end
  scanned = scanned + 1
  local key = ARGV[5] .. id
  local h = redis.call('HMGET', key, 'state', 'exp')
  if not h[1] then
    redis.call('ZREM', KEYS[1], id)
  elseif live(h[1]) and (tonumber(h[2]) == nil or tonumber(h[2]) <= now) then
    redis.call('HSET', key, 'state', 'revoking', 'trig', 'expiry', 'tat', ARGV[1])
    redis.call('ZADD', KEYS[1], ARGV[6], id)
    moved = moved + 1
    out[#out + 1] = id
    if #fields > 0 then view(key, fields, out) end
  end
end
out[1] = scanned
return out
`,
);

const FINISH = luaScript<("revoked" | "expired" | "unchanged")[]>(
  "jitLeaseFinishMany",
  `
-- KEYS: 1 due, 2 failed, 3 live:tasks, then 6 per lease: lease, live:workload, live:role,
--       live:issuer, live:task:<t>, op (a dummy when the lease has none)
-- ARGV: 1 now ms, 2 retention seconds, 3.. per lease (in the order of its 6 keys): id, task id
-- Output: per lease, in order: revoked | expired | unchanged
-- Ends each lease that is revoking or revoke_failed (expired when its trigger was expiry) and
-- answers 'unchanged' for the others (another revoker finished it first, or it is gone): only
-- the caller that made the transition records it (I4). A bulk op's counts are added once per op.
local out = {}
local ops = {}
for i = 3, #ARGV, 2 do
  local b = (i - 3) * 3 + 3
  local key = KEYS[b + 1]
  local id = ARGV[i]
  local h = redis.call('HMGET', key, 'state', 'trig', 'op')
  local st = h[1]
  if st ~= 'revoking' and st ~= 'revoke_failed' then
    out[#out + 1] = 'unchanged'
  else
    local final = 'revoked'
    if h[2] == 'expiry' then final = 'expired' end
    redis.call('HSET', key, 'state', final, 'rat', ARGV[1])
    redis.call('HDEL', key, 'err')
    redis.call('ZREM', KEYS[1], id)
    for k = 2, 5 do redis.call('SREM', KEYS[b + k], id) end
    if redis.call('HGET', KEYS[3], ARGV[i + 1]) == id then redis.call('HDEL', KEYS[3], ARGV[i + 1]) end
    if st == 'revoke_failed' then redis.call('SREM', KEYS[2], id) end
    redis.call('EXPIRE', key, ARGV[2])
    if h[3] then
      local opk = KEYS[b + 6]
      local c = ops[opk]
      if not c then c = {0, 0} ops[opk] = c end
      c[1] = c[1] + 1
      if st == 'revoke_failed' then c[2] = c[2] + 1 end
    end
    out[#out + 1] = final
  end
end
for opk, c in pairs(ops) do
  redis.call('HINCRBY', opk, 'revoked', c[1])
  if c[2] > 0 then redis.call('HINCRBY', opk, 'failed', -c[2]) end
  -- another shard's count of a bulk op (redis.shards > 1) starts here: it expires like the op
  if redis.call('TTL', opk) == -1 then redis.call('EXPIRE', opk, ARGV[2]) end
end
return out
`,
);

const REVOCATION_VIEW = luaScript<(string | null)[]>(
  "jitLeaseRevocationView",
  `
-- KEYS: lease keys.  ARGV: the field names to read (F of them)
-- Output: per lease, in order, its F values (false when absent; no state: the lease is gone),
-- values stored in pieces joined
${LUA_VIEW}
local out = {}
for i = 1, #KEYS do view(KEYS[i], ARGV, out) end
return out
`,
);

const LIST_AFTER = luaScript<string[] | null>(
  "jitLeaseListAfter",
  `
-- KEYS: 1 the listing ({p}:leases:all, score = issued ms).  ARGV: 1 a lease id (a listing cursor's), 2 how many to read after it
-- Output: false when the id is not listed; else its own entry, then up to ARGV[2] entries after it in
-- listing order (score descending, then id descending), as id, score pairs. One call, so no write
-- between finding the id and reading after it can shift the page.
local r = redis.call('ZREVRANK', KEYS[1], ARGV[1])
if not r then return false end
return redis.call('ZREVRANGE', KEYS[1], r, r + tonumber(ARGV[2]), 'WITHSCORES')
`,
);

const FAIL = luaScript<LeaseState | "missing" | "now_failed">(
  "jitLeaseFail",
  `
-- KEYS: 1 lease, 2 due, 3 op or a dummy, 4 failed.  ARGV: 1 id, 2 error text, 3 fail-after attempts, 4 next attempt ms,
--       5 retention seconds (the op count's expiry, when this shard's count of it starts here)
-- Output: now_failed (this attempt made it revoke_failed) | the lease's state | missing
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'revoking' and st ~= 'revoke_failed' then return st or 'missing' end
local att = redis.call('HINCRBY', KEYS[1], 'att', 1)
redis.call('HSET', KEYS[1], 'err', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
if st == 'revoking' and att >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'revoke_failed')
  redis.call('SADD', KEYS[4], ARGV[1])
  if redis.call('HGET', KEYS[1], 'op') then
    redis.call('HINCRBY', KEYS[3], 'failed', 1)
    if redis.call('TTL', KEYS[3]) == -1 then redis.call('EXPIRE', KEYS[3], ARGV[5]) end
  end
  return 'now_failed'
end
return st
`,
);

const ADD_CHILD = luaScript<"ok" | LeaseState | "missing">(
  "jitLeaseAddChild",
  `
-- KEYS: 1 parent lease, 2 parent's kids set.  ARGV: 1 child id, 2 seconds to keep the set
-- Output: ok | the parent's state when not active | missing
-- Registers a delegated lease under its parent, only while the parent is active: a parent
-- triggered later finds the child here (the cascade), one triggered earlier refuses it.
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'active' then return st or 'missing' end
redis.call('HSET', KEYS[1], 'hk', '1')
redis.call('SADD', KEYS[2], ARGV[1])
local ttl = redis.call('TTL', KEYS[2])
if ttl < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return 'ok'
`,
);

const COMPLETE_TASK = luaScript<number>(
  "jitLeaseCompleteTask",
  `
-- KEYS: 1 task marker.  ARGV: 1 completion ms, 2 retention seconds
-- Output: 1 if this call completed the task, 0 if it was already completed.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return 0
`,
);

/**
 * Lease hash fields a re-decision never reads (src/authz/recheck.ts): the re-authorization walk's
 * read (DECISION_INPUTS) leaves them, and their pieces, in Redis. Leaving a field out is only
 * ever a saving: a field not named here is read (a new one costs bytes, never a wrong decision).
 */
const NOT_DECISION_INPUTS = ["h", "handle", "ev", "pr", "pids", "phash", "bexp", "rat", "trig", "by", "reason", "tat", "err", "att", "op", "hk"];

const DECISION_INPUTS = luaScript<string>(
  "jitLeaseDecisionInputs",
  `
-- KEYS: 1 due (the shard's live lease ids; names the shard)
-- ARGV: 1 lease key prefix ({p}:lease:, same hash tag as KEYS[1]), 2 the fields to leave out,
--       space-separated (a field's pieces f.1, f.2... go with them), 3.. lease ids
-- Output: a JSON text [[skipped id...], [id, field, value, field, value...], ...]: an array per
--   lease in state active with its fields but those of ARGV[2], as stored (pieces not joined);
--   the skipped ids are the leases in another state (being issued, being revoked, ended). An id
--   without a hash, or a hash without a state, is left out.
-- The re-authorization walk's read: the decision inputs of a batch in one compact reply instead
-- of one HGETALL reply per lease (docs/BENCHMARKS.md, Issue 17).
local skip = {}
for f in string.gmatch(ARGV[2], '%S+') do skip[f] = true end
local head = {}
local out = {head}
for n = 3, #ARGV do
  local id = ARGV[n]
  local h = redis.call('HGETALL', ARGV[1] .. id)
  local st
  for j = 1, #h, 2 do
    if h[j] == 'state' then st = h[j + 1] break end
  end
  if st == 'active' then
    local row = {id}
    for j = 1, #h, 2 do
      local f = h[j]
      local dot = string.find(f, '.', 1, true)
      if not skip[dot and string.sub(f, 1, dot - 1) or f] then
        row[#row + 1] = f
        row[#row + 1] = h[j + 1]
      end
    end
    out[#out + 1] = row
  elseif st then
    head[#head + 1] = id
  end
end
-- (cjson writes an empty head as {}.)
return cjson.encode(out)
`,
);

export interface NewLease {
  id: string;
  role: string;
  backend: Lease["backend"];
  workload: string;
  task: TaskContext;
  issuedAt: number;
  expiresAt: number;
  identity: Lease["identity"];
  policy: Lease["policy"];
  /** The TTL (seconds) the decision saw, if not the lease's own. */
  askedTtlSeconds?: number;
  /** Claim values the decision's principal carried (only those the inventory constrains). */
  claims?: Record<string, unknown>;
  approval?: { request_id: string; approved_by: string };
  /** Set on a delegated lease (RFC 8693). */
  delegation?: LeaseDelegation;
  /** Set when the chain acts for a person. */
  onBehalfOf?: OnBehalfOf;
}

/** Where a delegated lease sits in its chain. */
export interface LeaseDelegation {
  parent: string;
  /** Hops from the root lease: 1 for the first exchange. */
  depth: number;
  /** Ancestor lease ids, root first (the last is `parent`). */
  ancestors: string[];
  /** Workload ids that held the chain before this lease, root first (the last held `parent`). */
  chain: string[];
}

/** The person a lease acts for, and the ID token claims the policies saw. */
export interface OnBehalfOf {
  issuer: string;
  subject: string;
  claims: Record<string, string | number | boolean | string[]>;
}

/** A lease as stored, with the fields only the broker needs (handle, op). */
export interface StoredLease extends Lease {
  handle: Record<string, string> | null;
  op: string | null;
  trigger_at: number | null;
  issued_ms: number;
  expires_ms: number;
  /** The TTL seconds its policy decision saw. */
  asked_ttl_seconds: number;
  /** The principal's claims at the decision. */
  claims: Record<string, unknown>;
  /** Delegated leases only. */
  delegation: LeaseDelegation | null;
  /** On-behalf-of leases (and their children) only. */
  obo: OnBehalfOf | null;
  /** A lease was delegated from this one (its children must be revoked with it). */
  has_children: boolean;
}

/**
 * What revocation needs of a lease: the revoker, the backends' `revoke`, FINISH, FAIL and the
 * `revoked` event use nothing else. `forRevocation` reads just these (REVOCATION_VIEW, one script
 * per batch) instead of the whole record; a StoredLease is one too.
 */
export type RevokingLease = Pick<
  StoredLease,
  "id" | "state" | "backend" | "role" | "workload" | "task_id" | "handle" | "op" | "trigger_at" | "issued_ms" | "revocation_kind" | "revocation" | "revoke_attempts" | "has_children"
> & { identity: Pick<Lease["identity"], "issuer"> };

/** Reads a lease's handle from its stored fields h / handle, iat and exp. */
type HandleReader = (id: string, f: Partial<Record<"h" | "handle" | "iat" | "exp", string>>) => Record<string, string> | null;

/** Where each of REVOCATION_FIELDS is in a lease's part of REVOCATION_VIEW's answer. */
const RV = Object.fromEntries(REVOCATION_FIELDS.map((f, i) => [f, i])) as Record<(typeof REVOCATION_FIELDS)[number], number>;

/**
 * A lease's part of REVOCATION_VIEW's answer (from offset `o`) as a RevokingLease; null when the
 * lease is gone. `handleOf` reads the handle from its stored fields (its refs resolved first).
 */
function revocationView(id: string, v: (string | null)[], o: number, handleOf: HandleReader): RevokingLease | null {
  const state = v[o + RV.state];
  if (!state) return null;
  // Hostile values are not trusted here either, but a malformed field never stops a revocation
  // (fail closed): a missing name reads as UNKNOWN_ID, a malformed time as absent (0 for
  // issued_at: a lease without a handle is then past its mint timeout), an unknown trigger as
  // none; an unknown backend has no revoker, so the lease shows revoke_failed (misconfigured).
  const at = (a: number, b: number) => v[o + a] || v[o + b] || UNKNOWN_ID;
  const backend = at(RV.b, RV.backend) as Lease["backend"];
  const lease: RevokingLease = {
    id,
    state: state as LeaseState,
    backend,
    role: at(RV.r, RV.role),
    workload: at(RV.w, RV.workload),
    task_id: at(RV.t, RV.task_id),
    identity: { issuer: at(RV.i, RV.issuer) },
    handle: handleOf(id, { h: v[o + RV.h] ?? undefined, handle: v[o + RV.handle] ?? undefined, iat: v[o + RV.iat] ?? undefined, exp: v[o + RV.exp] ?? undefined }),
    op: v[o + RV.op] ?? null,
    trigger_at: storedMs(v[o + RV.tat] ?? undefined) ?? null,
    issued_ms: storedMs(v[o + RV.iat] ?? undefined) ?? 0,
    revocation_kind: REVOCATION_KIND[backend] ?? "expiry_only",
    has_children: v[o + RV.hk] === "1",
  };
  const trig = v[o + RV.trig];
  if (trig && TRIGGERS.includes(trig)) {
    lease.revocation = { trigger: trig as RevocationTrigger };
    const by = v[o + RV.by];
    const reason = v[o + RV.reason];
    if (by) lease.revocation.by = by;
    if (reason) lease.revocation.reason = reason;
  }
  const att = storedInt(v[o + RV.att] ?? undefined);
  if (att !== undefined) lease.revoke_attempts = att;
  return lease;
}

/**
 * What deciding a lease again reads of it (`recheckLease`, src/authz/recheck.ts) and what
 * revoking it needs: the inputs of its original decision, without its handle, its history or the
 * fields only the API shows. The re-authorization walk reads these (`decisionInputs`), not
 * whole leases.
 */
export type DecisionInputs = Pick<
  StoredLease,
  "id" | "workload" | "role" | "backend" | "task_id" | "task" | "identity" | "claims" | "ttl_seconds" | "asked_ttl_seconds" | "issued_ms" | "approval" | "delegation" | "obo"
>;

/**
 * A lease whose stored record cannot be read (a damaged or hostile Redis): a required field is
 * missing, or a field is not what the broker writes (a time that is not a whole number, JSON that
 * is not an object, a value outside its enumeration). It cannot be decided again, so the walk
 * revokes it; every other reader fails closed with it (docs/ARCHITECTURE.md, Lease record:
 * hostile values). `field` and `unreadable` name the field, never its value. `workload` and
 * `task_id` are the stored strings (UNKNOWN_ID when absent): who may see or revoke it, and its events;
 * `state` is set when the stored state is one of LEASE_STATES.
 */
export interface UnreadableLease {
  id: string;
  workload: string;
  task_id: string;
  /** The stored field that is missing or malformed (a field name of the current layout or the one before). */
  field: string;
  /** "its stored field <field> is missing or malformed". */
  unreadable: string;
  state?: LeaseState;
}

/** A lease read back from Redis: the lease, or why it cannot be read. */
export type LeaseRead = StoredLease | UnreadableLease;

/** The read could not make a lease of the record (UnreadableLease). */
export const isUnreadable = <T extends object>(l: T | UnreadableLease): l is UnreadableLease => "unreadable" in l;

/**
 * Not yet triggered, as TRIGGER and EXPIRE_DUE see it: issuing, active, or (an unreadable lease)
 * a stored state that is none of LEASE_STATES, which those scripts revoke (fail closed).
 */
export const isLive = (l: LeaseRead): boolean => l.state === undefined || l.state === "issuing" || l.state === "active";

/** The lease when it is readable; null when it is gone or unreadable (for callers to whom both mean "no lease to act on"). */
export const readable = (l: LeaseRead | null): StoredLease | null => (l === null || isUnreadable(l) ? null : l);

/**
 * The answer about an unreadable lease (RFC 9457, 500 lease_unreadable): the lease id and the
 * field, never a stored value (docs/ARCHITECTURE.md, Errors).
 */
export function leaseUnreadable(l: UnreadableLease, more?: string): BrokerError {
  return new BrokerError("lease_unreadable", `lease ${l.id} cannot be read: ${l.unreadable} in the lease store${more ? `; ${more}` : ""}`, {
    reason: "unreadable_lease",
    extra: { lease_id: l.id, field: l.field },
  });
}

// Each list is the keys of a record over its type, so a value added to the type must be added
// here too (the compiler says so) instead of making every lease that carries it unreadable.
const BACKENDS: readonly string[] = Object.keys({ jwt: 1, vault: 1, aws_sts: 1 } satisfies Record<BackendKind, 1>);
const IDENTITY_KINDS: readonly string[] = Object.keys({ oidc: 1, spiffe: 1 } satisfies Record<Lease["identity"]["kind"], 1>);
const TRIGGERS: readonly string[] = Object.keys({
  expiry: 1,
  task_completed: 1,
  owner: 1,
  operator: 1,
  policy_change: 1,
  issue_failed: 1,
  parent_revoked: 1,
} satisfies Record<RevocationTrigger, 1>);
const isLeaseState = (v: string | undefined): v is LeaseState => v !== undefined && (LEASE_STATES as readonly string[]).includes(v);

/** A whole number of ms or seconds as stored (digits only); undefined otherwise. */
const storedInt = (v: string | undefined): number | undefined => (v !== undefined && /^\d{1,16}$/.test(v) ? Number(v) : undefined);

/** The latest time a Date holds (ms): a stored time past it is malformed (toISOString would throw). */
const MAX_DATE_MS = 8.64e15;

/** A stored time (ms since the epoch, digits only, a time a Date can hold); undefined otherwise. */
const storedMs = (v: string | undefined): number | undefined => {
  const n = storedInt(v);
  return n !== undefined && n <= MAX_DATE_MS ? n : undefined;
};

/**
 * What a lease record that lacks a workload, task, role or issuer reads as where one is needed
 * (an unreadable lease's owner, its audit events, the live sets its revocation leaves): never an
 * id (ids are [A-Za-z0-9._:@-], docs/ARCHITECTURE.md), so it is nobody's lease, and never empty
 * (the audit ledger refuses an event with an empty workload or task, and it would be lost).
 */
export const UNKNOWN_ID = "(unknown)";

/** The UnreadableLease of a lease hash (pieces joined) whose `field` is missing or malformed. */
function unreadableLease(id: string, h: Record<string, string>, field: string): UnreadableLease {
  const out: UnreadableLease = { id, workload: h.w || h.workload || UNKNOWN_ID, task_id: h.t || h.task_id || UNKNOWN_ID, field, unreadable: `its stored field ${field} is missing or malformed` };
  if (isLeaseState(h.state)) out.state = h.state;
  return out;
}

/** A stored JSON object (claims); undefined when it is not one. */
function storedObject(v: string): Record<string, unknown> | undefined {
  try {
    const o: unknown = JSON.parse(v);
    return o !== null && typeof o === "object" && !Array.isArray(o) ? (o as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The decision inputs of a lease hash (pieces joined here), read strictly: a required field
 * missing, a time or TTL that is not a whole number, claims that are not a JSON object make the
 * lease unreadable instead of deciding on a wrong value (a TTL of NaN would pass every TTL check).
 * `readLease` reads the rest of a lease on top of these.
 */
export function decisionInputsOf(id: string, stored: Record<string, string>): DecisionInputs | UnreadableLease {
  return readDecisionInputs(id, joinPieces(stored), true);
}

/**
 * `decisionInputsOf` of a hash with its pieces joined. `deciding`: for a decision, an expiry
 * before the issue time is malformed too (the TTL it gives would be decided on); `readLease`
 * shows such a lease as it is (the plan can write one whose parent ends within the second).
 */
function readDecisionInputs(id: string, h: Record<string, string>, deciding: boolean): DecisionInputs | UnreadableLease {
  // The short names, or those of the layout before issue 17's second pass.
  const role = h.r ?? h.role;
  const backend = h.b ?? h.backend;
  const workload = h.w ?? h.workload;
  const task_id = h.t ?? h.task_id;
  const issuer = h.i ?? h.issuer;
  const subject = h.s ?? h.subject;
  const bad = (field: string): UnreadableLease => unreadableLease(id, h, field);
  if (role === undefined) return bad("role");
  if (backend === undefined || !BACKENDS.includes(backend)) return bad("backend");
  if (workload === undefined) return bad("workload");
  if (task_id === undefined) return bad("task_id");
  if (issuer === undefined) return bad("issuer");
  if (subject === undefined) return bad("subject");
  const kind = h.k ?? h.ikind ?? "oidc";
  if (!IDENTITY_KINDS.includes(kind)) return bad("ikind");
  const iat = storedMs(h.iat);
  if (iat === undefined) return bad("iat");
  const exp = storedMs(h.exp);
  if (exp === undefined || (deciding && exp < iat)) return bad("exp");
  const ttl = ttlSeconds(iat, exp);
  const asked = h.ask === undefined ? ttl : storedInt(h.ask);
  if (asked === undefined) return bad("ask");
  const claims = h.cl === undefined ? {} : storedObject(h.cl);
  if (claims === undefined) return bad("cl");
  let delegation: LeaseDelegation | null = null;
  if (h.par !== undefined) {
    const depth = h.dep === undefined ? 1 : storedInt(h.dep);
    if (depth === undefined) return bad("dep");
    delegation = { parent: h.par, depth, ancestors: (h.anc ?? h.par).split(" "), chain: h.chn ? h.chn.split(" ") : [] };
  }
  let obo: OnBehalfOf | null = null;
  if (h.obs !== undefined) {
    const oc = h.obc === undefined ? {} : storedObject(h.obc);
    if (oc === undefined) return bad("obc");
    obo = { issuer: h.obi ?? "", subject: h.obs, claims: oc as OnBehalfOf["claims"] };
  }
  const out: DecisionInputs = {
    id,
    workload,
    role,
    backend: backend as Lease["backend"],
    task_id,
    task: { id: task_id, intent: h.ti ?? "", tool: h.tt ?? "", destination: h.td ?? "", sensitivity: h.ts ?? "" },
    identity: { kind: kind as Lease["identity"]["kind"], issuer, subject },
    claims,
    ttl_seconds: ttl,
    asked_ttl_seconds: asked,
    issued_ms: iat,
    delegation,
    obo,
  };
  if (h.apr) out.approval = { request_id: h.apr, approved_by: h.apb ?? "" };
  return out;
}

/** What `readLease` takes from the store: a policy ref's decision (resolved first), a lease's handle from its stored fields. */
export interface LeaseResolver {
  policy(ref: string): Lease["policy"] | undefined;
  handle(id: string, h: Record<string, string>): Record<string, string> | null;
}

const isoOfMs = (ms: number) => new Date(ms).toISOString();

/**
 * A lease hash as a StoredLease (pieces joined here); null when it is gone (no hash, or no
 * state); an UnreadableLease when a field is missing or malformed. The one validator of a stored
 * lease: the decision inputs are read by `decisionInputsOf` (what the re-authorization walk
 * reads), the rest here, as strictly: a time that is not a whole number of ms, a state, trigger
 * or backend outside its enumeration, claims or policy ids that are not the JSON written make the
 * lease unreadable, never a lease shown, introspected or delegated from on a made-up value, and
 * never an exception out of a read (docs/ARCHITECTURE.md, Lease record: hostile values).
 */
export function readLease(id: string, stored: Record<string, string>, r: LeaseResolver): LeaseRead | null {
  if (!stored.state) return null;
  const h = joinPieces(stored);
  const d = readDecisionInputs(id, h, false);
  if (isUnreadable(d)) return d;
  const bad = (field: string): UnreadableLease => unreadableLease(id, h, field);
  const state = h.state;
  if (!isLeaseState(state)) return bad("state");
  const times: Partial<Record<"tat" | "rat" | "bexp", number>> = {};
  for (const f of ["tat", "rat", "bexp"] as const) {
    if (h[f] === undefined) continue;
    const ms = storedMs(h[f]);
    if (ms === undefined) return bad(f);
    times[f] = ms;
  }
  const att = h.att === undefined ? undefined : storedInt(h.att);
  if (h.att !== undefined && att === undefined) return bad("att");
  if (h.trig !== undefined && !TRIGGERS.includes(h.trig)) return bad("trig");
  let policy: Lease["policy"];
  if (h.pr !== undefined) policy = r.policy(h.pr) ?? { ids: [], hash: "" };
  else {
    const ids = h.pids === undefined ? [] : storedList(h.pids);
    if (ids === undefined) return bad("pids");
    policy = { ids, hash: h.phash ? Buffer.from(h.phash, "base64url").toString("hex") : "" };
  }
  const exp = storedMs(h.exp)!;
  const lease: StoredLease = {
    id,
    role: d.role,
    backend: d.backend,
    workload: d.workload,
    task_id: d.task_id,
    state,
    issued_at: isoOfMs(d.issued_ms),
    expires_at: isoOfMs(exp),
    revocation_kind: REVOCATION_KIND[d.backend],
    identity: d.identity,
    policy,
    task: d.task,
    ttl_seconds: d.ttl_seconds,
    handle: r.handle(id, h),
    op: h.op ?? null,
    trigger_at: times.tat ?? null,
    issued_ms: d.issued_ms,
    expires_ms: exp,
    asked_ttl_seconds: d.asked_ttl_seconds,
    claims: d.claims,
    delegation: d.delegation,
    obo: d.obo,
    has_children: h.hk === "1",
  };
  if (d.delegation) lease.parent_lease_id = d.delegation.parent;
  if (d.obo) lease.on_behalf_of = { issuer: d.obo.issuer, subject: d.obo.subject };
  if (d.approval) lease.approval = d.approval;
  if (times.bexp !== undefined) lease.backend_expires_at = isoOfMs(times.bexp);
  if (times.rat !== undefined) lease.revoked_at = isoOfMs(times.rat);
  if (h.trig !== undefined) {
    lease.revocation = { trigger: h.trig as RevocationTrigger, ...(times.tat !== undefined ? { at: isoOfMs(times.tat) } : {}) };
    if (h.by) lease.revocation.by = h.by;
    if (h.reason) lease.revocation.reason = h.reason;
  }
  if (h.err) lease.last_error = h.err;
  if (att !== undefined) lease.revoke_attempts = att;
  return lease;
}

/** A stored JSON list of strings (policy ids of the layout before); undefined when it is not one. */
function storedList(v: string): string[] | undefined {
  try {
    const o: unknown = JSON.parse(v);
    return Array.isArray(o) && o.every((x) => typeof x === "string") ? (o as string[]) : undefined;
  } catch {
    return undefined;
  }
}

/** Where a DECISION_INPUTS reply is not what the script answers: Redis is not to be trusted here. */
const malformedReply = (what: string) =>
  new BrokerError("store_unavailable", `the lease store (Redis) answered the re-authorization read with a malformed reply (${what})`, { reason: "redis" });

/** The walk's read of a batch (DECISION_INPUTS): the active leases' inputs, the ids of those in another state. */
export interface DecisionInputsBatch {
  leases: (DecisionInputs | UnreadableLease)[];
  skipped: string[];
}

/**
 * Reads a DECISION_INPUTS reply. A reply that is not the script's shape (a hostile or broken
 * Redis) is an error; a lease whose fields are malformed is an UnreadableLease.
 */
export function parseDecisionInputs(text: unknown): DecisionInputsBatch {
  if (typeof text !== "string") throw malformedReply("not a text");
  let rows: unknown;
  try {
    rows = JSON.parse(text);
  } catch {
    throw malformedReply("not JSON");
  }
  if (!Array.isArray(rows) || rows.length === 0) throw malformedReply("not a list");
  const skipped: unknown = rows[0];
  // An empty Lua table is written {} by cjson.
  const skippedIds = Array.isArray(skipped) ? skipped : skipped !== null && typeof skipped === "object" && Object.keys(skipped).length === 0 ? [] : undefined;
  if (!skippedIds || !skippedIds.every((id) => typeof id === "string")) throw malformedReply("skipped ids");
  const leases: (DecisionInputs | UnreadableLease)[] = [];
  for (let r = 1; r < rows.length; r++) {
    const row: unknown = rows[r];
    if (!Array.isArray(row) || row.length % 2 !== 1) throw malformedReply("row shape");
    const h = Object.create(null) as Record<string, string>;
    for (let j = 0; j < row.length; j++) if (typeof row[j] !== "string") throw malformedReply("field");
    for (let j = 1; j < row.length; j += 2) h[row[j] as string] = row[j + 1] as string;
    leases.push(decisionInputsOf(row[0] as string, h));
  }
  return { leases, skipped: skippedIds as string[] };
}

export interface LeaseFilter {
  workload?: string;
  task_id?: string;
  role?: string;
  issuer?: string;
  state?: LeaseState;
}

export interface LeaseStoreOptions {
  /** Seconds a terminal lease (and its history) is kept. */
  retentionSeconds: number;
  /** Seconds a completed-task marker is kept (I5 holds for this long). */
  taskRetentionSeconds: number;
  now?: () => number;
  /**
   * Called for each lease a read (`get`, `getMany`, `list`) found unreadable: the broker logs a
   * warning naming the lease and the field (never the value) and counts it
   * (jitbroker_lease_unreadable_reads_total).
   */
  onUnreadable?: (l: UnreadableLease) => void;
}

type Selector = "workload" | "role" | "issuer" | "task";

/** How a revocation is triggered (TRIGGER): who, why, for which bulk op; only leases already expired. */
export interface TriggerOptions {
  trigger: RevocationTrigger;
  by?: string;
  reason?: string;
  op?: string;
  onlyIfExpired?: boolean;
}

/** The lease store of one shard: every key of one call is under that shard's hash tag. */
function createShardStore(redis: Redis, sk: ShardKeys, opts: LeaseStoreOptions) {
  const now = opts.now ?? Date.now;
  registerScripts(redis, [CREATE, ACTIVATE, TRIGGER, EXPIRE_DUE, FINISH, FAIL, ADD_CHILD, COMPLETE_TASK, REVOCATION_VIEW, DECISION_INPUTS, LIST_AFTER]);
  const k = {
    lease: sk.lease,
    due: sk.leasesDue,
    all: sk.leasesAll,
    live: (sel: Selector, v: string) => sk.live[sel](v),
    task: sk.taskMarker,
    op: sk.revop,
    failed: sk.leasesFailed,
    kids: sk.kids,
    tasks: sk.liveTasks,
    policies: sk.leasesPolicies,
    handles: sk.leasesHandles,
  };
  // Policy refs resolved so far (content-addressed, so an entry never goes stale); bounded.
  const policyCache = new Map<string, Lease["policy"]>();
  const remember = (ref: string, policy: Lease["policy"]) => {
    if (policyCache.size >= POLICY_CACHE_MAX) policyCache.clear();
    policyCache.set(ref, policy);
  };
  // The same for the shared parts of backend handles ({p}:leases:handles, src/leases/handle.ts).
  const sharedCache = new Map<string, string>();
  const rememberShared = (ref: string, value: string) => {
    if (sharedCache.size >= POLICY_CACHE_MAX) sharedCache.clear();
    sharedCache.set(ref, value);
  };
  /**
   * Resolves the policy refs and handle refs of these lease hashes that this process has not seen
   * yet (one HMGET of each hash, at most).
   */
  async function resolveRefs(hs: Record<string, string>[]): Promise<void> {
    const missing = [...new Set(hs.map((h) => h.pr).filter((r): r is string => r !== undefined && !policyCache.has(r)))];
    const missingShared = [...new Set(hs.map((h) => handleRefOf(h.h)).filter((r): r is string => r !== undefined && !sharedCache.has(r)))];
    if (missing.length === 0 && missingShared.length === 0) return;
    const [values, shared] = await Promise.all([
      missing.length === 0 ? [] : storeCall(() => redis.hmget(k.policies, ...missing)),
      missingShared.length === 0 ? [] : storeCall(() => redis.hmget(k.handles, ...missingShared)),
    ]);
    missing.forEach((ref, i) => {
      const p = parsePolicyValue(values[i] ?? null);
      if (p) remember(ref, p);
    });
    missingShared.forEach((ref, i) => {
      const v = shared[i];
      if (typeof v === "string") rememberShared(ref, v);
    });
  }
  /** A handle's stored form; its shared part is remembered (it is written with the lease). */
  function encode(l: HandleContext, handle: Record<string, string>, refs: boolean) {
    const e = encodeHandle(l, handle, refs);
    if (e.ref) rememberShared(e.ref.ref, e.ref.value);
    return e;
  }
  const liveKeys = (l: { workload: string; role: string; identity: { issuer: string }; task_id: string }) => [
    k.live("workload", l.workload),
    k.live("role", l.role),
    k.live("issuer", l.identity.issuer),
    k.live("task", l.task_id),
  ];

  /** The lease's handle: field h (src/leases/handle.ts), or the JSON of the layout before (field handle). */
  function storedHandle(id: string, h: Record<string, string>): Record<string, string> | null {
    if (h.h !== undefined) return decodeHandle({ id, issuedMs: Number(h.iat), expiresMs: Number(h.exp) }, h.h, (ref) => sharedCache.get(ref));
    return h.handle !== undefined ? decodeHandle({ id, issuedMs: 0, expiresMs: 0 }, h.handle.startsWith("{") ? h.handle : "", () => undefined) : null;
  }

  const resolver: LeaseResolver = { policy: (ref) => policyCache.get(ref), handle: storedHandle };

  /** `readLease`, reporting each unreadable lease (opts.onUnreadable: a warning and a metric). */
  function decode(id: string, stored: Record<string, string>): LeaseRead | null {
    const l = readLease(id, stored, resolver);
    if (l && isUnreadable(l)) opts.onUnreadable?.(l);
    return l;
  }

  /** A lease this process just wrote (`created`, `activated`): readable, or a bug. */
  function decodeOwn(id: string, fields: Record<string, string>): StoredLease {
    const l = readLease(id, fields, resolver);
    if (!l || isUnreadable(l)) throw new BrokerError("internal", `lease ${id} as written does not read back${l ? ` (${l.unreadable})` : ""}`);
    return l;
  }

  /** The lease; null when it is gone; an UnreadableLease when its record is malformed (never an exception). */
  async function get(id: string): Promise<LeaseRead | null> {
    const h = await storeCall(() => redis.hgetall(k.lease(id)));
    await resolveRefs([h]);
    return decode(id, h);
  }

  /** `get` of many leases (one pipeline). */
  async function getMany(ids: string[]): Promise<(LeaseRead | null)[]> {
    if (ids.length === 0) return [];
    const pipe = redis.pipeline();
    for (const id of ids) pipe.hgetall(k.lease(id));
    // A command's own error (its timeout, say) is thrown inside storeCall: 503 store_unavailable,
    // as for `get`, not a plain Error answered 500.
    const hs = await storeCall(async () =>
      (await pipe.exec())!.map(([err, h]) => {
        if (err) throw err;
        return h as Record<string, string>;
      }),
    );
    await resolveRefs(hs);
    return ids.map((id, i) => decode(id, hs[i]!));
  }

  function runTrigger(ids: string[], t: TriggerOptions, views: boolean): Promise<(string | null)[]> {
    const at = now();
    const fields: readonly string[] = views ? REVOCATION_FIELDS : [];
    return storeCall(() =>
      runScript(redis, TRIGGER, [k.due, ...ids.map(k.lease)], [t.trigger, t.by ?? "", t.reason ?? "", String(at), t.op ?? "", t.onlyIfExpired ? "1" : "0", String(at + IN_FLIGHT_MS), String(fields.length), ...fields, ...ids]),
    );
  }

  /** Resolves the handle refs of the views at `from`, `from + stride`... (one HMGET, for those not cached). */
  async function resolveViewRefs(v: (string | null)[], from: number, stride: number): Promise<void> {
    const hs: Record<string, string>[] = [];
    for (let o = from; o < v.length; o += stride) {
      const raw = v[o + RV.h];
      if (raw && handleRefOf(raw) !== undefined) hs.push({ h: raw });
    }
    if (hs.length > 0) await resolveRefs(hs);
  }
  const handleOf: HandleReader = (id, f) => storedHandle(id, f as Record<string, string>);

  /** The leases of an answer made of ids each followed by its REVOCATION_FIELDS values, from offset `from`. */
  async function viewsOf(r: readonly unknown[], from: number): Promise<RevokingLease[]> {
    const out: RevokingLease[] = [];
    const v = r as (string | null)[];
    await resolveViewRefs(v, from + 1, REVOCATION_FIELDS.length + 1);
    for (let o = from; o < v.length; o += REVOCATION_FIELDS.length + 1) {
      const l = revocationView(v[o]!, v, o + 1, handleOf);
      // A moved lease has a state; a record damaged in between is the sweeper's to retry.
      if (l) out.push(l);
    }
    return out;
  }

  /** The leases as revocation needs them (REVOCATION_VIEW: one script, a dozen fields each); null for a lease that is gone. */
  async function forRevocation(ids: string[]): Promise<(RevokingLease | null)[]> {
    if (ids.length === 0) return [];
    const v = await storeCall(() => runScript(redis, REVOCATION_VIEW, ids.map(k.lease), REVOCATION_FIELDS as unknown as string[]));
    const n = REVOCATION_FIELDS.length;
    await resolveViewRefs(v, 0, n);
    return ids.map((id, i) => revocationView(id, v, i * n, handleOf));
  }

  /**
   * The decision inputs of the active leases among `ids` (one script call, one compact reply;
   * docs/BENCHMARKS.md, Issue 17), for the re-authorization walk; the ids of leases in another
   * state come back as skipped, missing ones are left out.
   */
  async function decisionInputs(ids: string[]): Promise<DecisionInputsBatch> {
    if (ids.length === 0) return { leases: [], skipped: [] };
    const text = await storeCall(() => runScript(redis, DECISION_INPUTS, [k.due], [k.lease(""), NOT_DECISION_INPUTS.join(" "), ...ids]));
    return parseDecisionInputs(text);
  }

  /**
   * revoking/revoke_failed → revoked (or expired when the trigger was expiry), for many leases in
   * one script. Per lease, in order: the terminal state set, or "unchanged" when the lease was in
   * no such state (already finished by a concurrent revoker, or gone).
   */
  async function finishMany(leases: RevokingLease[]): Promise<("revoked" | "expired" | "unchanged")[]> {
    if (leases.length === 0) return [];
    const at = String(now());
    const keys = [k.due, k.failed, k.tasks];
    const args = [at, String(opts.retentionSeconds)];
    for (const l of leases) {
      keys.push(k.lease(l.id), ...liveKeys(l), l.op ? k.op(l.op) : k.op("-"));
      args.push(l.id, l.task_id);
    }
    try {
      return await storeCall(() => runScript(redis, FINISH, keys, args));
    } catch (e) {
      // No answer is not "not done": a reply lost to a command timeout or a dropped connection
      // may follow a script that ran. The leases it ended carry its `rat`; read them back, so
      // that the caller records exactly those (their events must not be lost, I4, I8). If the
      // read fails too, or the script did not run, the error stands: the leases are still
      // revoking and due, and whoever retries them (a job, the sweeper) records them.
      // (A lease another revoker ended in the same millisecond would be counted twice: a
      // duplicate event, never a lost one.) The read is tried for a few seconds: what delayed
      // the reply (a busy Redis, a stalled process) may delay it too.
      for (const wait of [0, 200, 500, 1000, 2000]) {
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const back = await Promise.resolve()
          .then(() => {
            const pipe = redis.pipeline();
            for (const l of leases) pipe.hmget(k.lease(l.id), "state", "rat");
            return pipe.exec();
          })
          .catch(() => null);
        const seen = back?.map(([err, v]) => (err ? null : (v as (string | null)[]))) ?? [];
        if (seen.length !== leases.length || seen.some((v) => v === null)) continue;
        const mine = seen.map((v) => (v![1] === at && (v![0] === "revoked" || v![0] === "expired") ? (v![0] as "revoked" | "expired") : "unchanged"));
        if (mine.every((m) => m === "unchanged")) throw e;
        return mine;
      }
      throw e;
    }
  }

  return {
    keys: k,

    /**
     * Writes a new lease in state `issuing`, atomically with the task and quota checks. With
     * `minted` (a backend that mints inside this process, `Backend.mintsLocally`) it is written
     * `active` with its handle at once: what `activate` would have done, without its round trip.
     */
    async create(l: NewLease, quota: number, minted?: Minted): Promise<"ok" | "task_completed" | "quota_exceeded" | "exists"> {
      const fields = minted ? activeFields(l, minted, encode(ctxOf(l), minted.handle, false).value) : newLeaseFields(l);
      remember(fields.pr!, l.policy);
      const lk = liveKeys({ workload: l.workload, role: l.role, identity: l.identity, task_id: l.task.id });
      return storeCall(() =>
        runScript(
          redis,
          CREATE,
          [k.lease(l.id), k.due, k.all, ...lk, k.task(l.workload, l.task.id), k.tasks, k.policies],
          [String(quota), l.id, String(l.issuedAt), String(l.expiresAt), l.task.id, fields.pr!, policyValue(l.policy), ...storedPairs(fields)],
        ),
      );
    },

    /**
     * The lease exactly as `create` wrote it (state `issuing`), without a round trip to Redis:
     * what `get(l.id)` returns right after a successful `create` unless a trigger moved it since.
     */
    created(l: NewLease): StoredLease {
      const h = newLeaseFields(l);
      remember(h.pr!, l.policy);
      return decodeOwn(l.id, h);
    },

    /**
     * The lease exactly as it stood when `activate` answered "active" for it, without a round
     * trip: "active" means it was still `issuing`, and only `activate` writes to an `issuing`
     * lease (every other transition first moves it out of `issuing`), so it holds what `create`
     * wrote plus the handle, the backend expiry and the new state.
     */
    activated(l: NewLease, handle: Record<string, string>, backendExpiresAt?: number): StoredLease {
      const h = activeFields(l, { handle, ...(backendExpiresAt === undefined ? {} : { backendExpiresAt }) }, encode(ctxOf(l), handle, true).value);
      remember(h.pr!, l.policy);
      return decodeOwn(l.id, h);
    },

    /**
     * Records the backend handle; flips issuing → active. Returns the state after the call.
     * `times`: the lease's issued_at and expires_at (ms), which the compact form of an AWS
     * session handle is relative to (without them it is stored as JSON).
     */
    async activate(id: string, handle: Record<string, string>, backendExpiresAt?: number, times?: { issuedAt: number; expiresAt: number }): Promise<LeaseState | "missing" | "reopened"> {
      const e = encode({ id, issuedMs: times?.issuedAt ?? Number.NaN, expiresMs: times?.expiresAt ?? Number.NaN }, handle, true);
      const [first, ...rest] = pieces(e.value);
      return storeCall(() =>
        runScript(redis, ACTIVATE, [k.lease(id), k.due, k.handles], [first!, backendExpiresAt === undefined ? "" : String(backendExpiresAt), id, String(now()), e.ref?.ref ?? "", e.ref?.value ?? "", ...rest]),
      );
    },

    /**
     * Triggers revocation of live, untriggered leases: issuing/active → revoking, due now. Returns
     * the ids that this call moved (others were already triggered or terminal).
     */
    async trigger(ids: string[], t: TriggerOptions): Promise<string[]> {
      if (ids.length === 0) return [];
      return (await runTrigger(ids, t, false)) as string[];
    },

    /**
     * `trigger`, answering the moved leases as revocation needs them (`forRevocation`, read in the
     * same script): the caller that revokes what it triggered saves a round trip and a read.
     */
    async triggerForRevocation(ids: string[], t: TriggerOptions): Promise<RevokingLease[]> {
      if (ids.length === 0) return [];
      return await viewsOf(await runTrigger(ids, t, true), 0);
    },

    /**
     * The expiry schedule's one step (the worker's poller, src/leases/queue.ts): triggers, as
     * expired, the live leases due by `at` among `scan` due entries from `offset`. Returns how
     * many entries it walked, the ids it moved (see EXPIRE_DUE for the next offset) and those
     * leases as revocation needs them (`forRevocation`, read in the same script).
     */
    async expireDue(at: number, offset: number, scan: number, max: number): Promise<{ scanned: number; moved: string[]; leases: RevokingLease[] }> {
      const r = await storeCall(() => runScript(redis, EXPIRE_DUE, [k.due], [String(at), String(offset), String(scan), String(max), k.lease(""), String(at + IN_FLIGHT_MS), ...REVOCATION_FIELDS]));
      const moved: string[] = [];
      for (let o = 1; o < r.length; o += REVOCATION_FIELDS.length + 1) moved.push(r[o] as string);
      return { scanned: r[0], moved, leases: await viewsOf(r, 1) };
    },

    finishMany,

    /** `finishMany` of one lease. */
    async finish(lease: RevokingLease): Promise<"revoked" | "expired" | "unchanged"> {
      return (await finishMany([lease]))[0]!;
    },

    /**
     * Records a failed revocation attempt; after `failAfter` attempts the lease shows revoke_failed.
     * Returns "now_failed" only to the one caller whose attempt made that transition.
     */
    async fail(lease: Pick<RevokingLease, "id" | "op">, error: string, failAfter: number, nextAttemptAt: number): Promise<LeaseState | "missing" | "now_failed"> {
      return storeCall(() =>
        runScript(
          redis,
          FAIL,
          [k.lease(lease.id), k.due, lease.op ? k.op(lease.op) : k.op("-"), k.failed],
          [lease.id, error.slice(0, 500), String(failAfter), String(nextAttemptAt), String(opts.retentionSeconds)],
        ),
      );
    },

    get,
    getMany,
    forRevocation,
    decisionInputs,

    /**
     * Registers `childId` as delegated from `parentId` while the parent is active ("ok"), else
     * answers the parent's state ("missing" when gone). `parentExpiresMs` bounds how long the
     * set of children is kept (plus the retention, for history).
     */
    async addChild(parentId: string, parentExpiresMs: number, childId: string): Promise<"ok" | LeaseState | "missing"> {
      const keep = Math.max(1, Math.ceil((parentExpiresMs - now()) / 1000)) + opts.retentionSeconds;
      return storeCall(() => runScript(redis, ADD_CHILD, [k.lease(parentId), k.kids(parentId)], [childId, String(keep)]));
    },

    /** Ids of the leases delegated from `id` (any state; bounded by quotas and rate limits). */
    async children(id: string): Promise<string[]> {
      return storeCall(() => redis.smembers(k.kids(id)));
    },

    async isTaskCompleted(workload: string, taskId: string): Promise<boolean> {
      return (await storeCall(() => redis.exists(k.task(workload, taskId)))) === 1;
    },

    /**
     * Marks the task completed for this workload (I5). Returns false if it already was. The marker
     * holds only the completion time: it exists to refuse new leases for the task, and a
     * completion that revoked nothing leaves nothing else behind.
     */
    async completeTask(workload: string, taskId: string): Promise<boolean> {
      const r = await storeCall(() => runScript(redis, COMPLETE_TASK, [k.task(workload, taskId)], [String(now()), String(opts.taskRetentionSeconds)]));
      return r === 1;
    },

    /**
     * Live lease ids of one selector value (SSCAN, so large sets do not block Redis). A task's
     * are its field of live:tasks and its set.
     */
    async *liveIds(sel: Selector, value: string, batch = 1000): AsyncGenerator<string[]> {
      if (sel === "task") {
        const first = await storeCall(() => redis.hget(k.tasks, value));
        if (first !== null) yield [first];
      }
      let cursor = "0";
      do {
        const [next, ids] = await storeCall(() => redis.sscan(k.live(sel, value), cursor, "COUNT", batch));
        cursor = next;
        if (ids.length > 0) yield ids;
      } while (cursor !== "0");
    },

    /** Every live lease id (ZSCAN over the due set; an id may repeat across batches). */
    async *allLiveIds(batch = 1000): AsyncGenerator<string[]> {
      let cursor = "0";
      do {
        const [next, flat] = await storeCall(() => redis.zscan(k.due, cursor, "COUNT", batch));
        cursor = next;
        const ids = flat.filter((_, i) => i % 2 === 0);
        if (ids.length > 0) yield ids;
      } while (cursor !== "0");
    },

    /**
     * Leases issued between `from` and `to` (ms, by issued_at) that are still `issuing`: their
     * activation never landed (the API process died, or a failover lost the write). Scans at most
     * `limit` leases; `next` is where the next scan starts (null when it reached `to`).
     */
    async stuckIssuing(from: number, to: number, limit: number): Promise<{ ids: string[]; next: number | null }> {
      if (from > to) return { ids: [], next: null };
      const flat = await storeCall(() => redis.zrangebyscore(k.all, String(from), String(to), "WITHSCORES", "LIMIT", 0, limit));
      const ids: string[] = [];
      let last = from;
      for (let i = 0; i < flat.length; i += 2) {
        ids.push(flat[i]!);
        last = Number(flat[i + 1]);
      }
      if (ids.length === 0) return { ids: [], next: null };
      const pipe = redis.pipeline();
      for (const id of ids) pipe.hget(k.lease(id), "state");
      const states = await storeCall(() => pipe.exec());
      const stuck = ids.filter((_, i) => states?.[i]?.[1] === "issuing");
      // Ties at `last` are scanned again next time (harmless: triggering is first-wins).
      return { ids: stuck, next: ids.length < limit ? null : last === from ? last + 1 : last };
    },

    async countLive(sel: Selector, value: string): Promise<number> {
      if (sel === "task") {
        const [first, rest] = await Promise.all([storeCall(() => redis.hexists(k.tasks, value)), storeCall(() => redis.scard(k.live(sel, value)))]);
        return first + rest;
      }
      return storeCall(() => redis.scard(k.live(sel, value)));
    },

    /** Lease ids due for the worker at `at` (expired, triggered, or retry time reached). */
    async due(at: number, limit: number): Promise<string[]> {
      return storeCall(() => redis.zrangebyscore(k.due, "-inf", String(at), "LIMIT", 0, limit));
    },

    /** Live leases (all of them are in the due set) and those in revoke_failed. */
    async counts(): Promise<{ live: number; revoke_failed: number }> {
      const [live, failed] = await Promise.all([storeCall(() => redis.zcard(k.due)), storeCall(() => redis.scard(k.failed))]);
      return { live, revoke_failed: failed };
    },

    /**
     * Lists leases newest first. The cursor is the (issued_at, id) of the last lease examined;
     * equal scores are ordered by id, so no lease is skipped or repeated across pages. Filters
     * are applied while scanning; at most `scanLimit` leases are examined per call, so a page may
     * hold fewer than `limit` items while `next` is still set. An unreadable lease is not listed
     * (it matches no filter: its fields cannot be trusted); `onUnreadable` reports it.
     */
    async list(filter: LeaseFilter, limit: number, cursor: string | undefined, scanLimit = 5000): Promise<{ leases: StoredLease[]; next: string | null }> {
      await storeCall(() => redis.zremrangebyscore(k.all, "-inf", String(now() - opts.retentionSeconds * 1000)));
      let pos: { score: string; id: string } | null = null;
      if (cursor) {
        const [score, id] = Buffer.from(cursor, "base64url").toString("utf8").split("|");
        if (!score || !id || !/^\d+$/.test(score)) return { leases: [], next: null };
        pos = { score, id };
      }
      const out: StoredLease[] = [];
      let scanned = 0;
      while (out.length < limit && scanned < scanLimit) {
        const ids: string[] = [];
        const scores: string[] = [];
        const take = (pairs: string[], from = 0) => {
          for (let i = from; i + 1 < pairs.length; i += 2) {
            ids.push(pairs[i]!);
            scores.push(pairs[i + 1]!);
          }
        };
        if (pos) {
          const p = pos;
          // The cursor's lease is listed here (every page after a request's first): the entries
          // after it, by rank. Leases issued in the same millisecond share a score, and thousands
          // can (a bulk load): a step never reads more than LIST_PAGE of them.
          const after = await storeCall(() => runScript(redis, LIST_AFTER, [k.all], [p.id, String(LIST_PAGE)]));
          if (after && after[0] === p.id && after[1] === p.score) take(after, 2);
          else {
            // Not listed here (another shard's cursor, trimmed, or deleted): the ties at its score
            // that sort after it, LIST_PAGE at a time, then what is strictly older.
            for (let off = 0; ids.length < LIST_PAGE; off += LIST_PAGE) {
              const tied = await storeCall(() => redis.zrevrangebyscore(k.all, p.score, p.score, "LIMIT", off, LIST_PAGE));
              for (const id of tied) {
                if (id >= p.id || ids.length >= LIST_PAGE) continue;
                ids.push(id);
                scores.push(p.score);
              }
              if (tied.length < LIST_PAGE) break;
            }
            if (ids.length < LIST_PAGE) take(await storeCall(() => redis.zrevrangebyscore(k.all, `(${p.score}`, "-inf", "WITHSCORES", "LIMIT", 0, LIST_PAGE - ids.length)));
          }
        } else {
          take(await storeCall(() => redis.zrevrangebyscore(k.all, "+inf", "-inf", "WITHSCORES", "LIMIT", 0, LIST_PAGE)));
        }
        if (ids.length === 0) return { leases: out, next: null };
        const leases = await getMany(ids);
        for (let i = 0; i < leases.length && out.length < limit; i++) {
          scanned++;
          pos = { score: scores[i]!, id: ids[i]! };
          const l = leases[i];
          if (!l || isUnreadable(l) || !matchesFilter(l, filter)) continue;
          out.push(l);
        }
      }
      return { leases: out, next: pos ? Buffer.from(`${pos.score}|${pos.id}`).toString("base64url") : null };
    },

    async createOp(id: string, fields: Record<string, string>): Promise<void> {
      await storeCall(() => redis.multi().hset(k.op(id), { ...fields, revoked: "0", failed: "0" }).expire(k.op(id), opts.retentionSeconds).exec());
    },
    async updateOp(id: string, fields: Record<string, string>): Promise<void> {
      await storeCall(() => redis.hset(k.op(id), fields));
    },
    async incrOp(id: string, field: string, by: number): Promise<void> {
      await storeCall(() => redis.hincrby(k.op(id), field, by));
    },
    async getOp(id: string): Promise<Record<string, string> | null> {
      const h = await storeCall(() => redis.hgetall(k.op(id)));
      return Object.keys(h).length === 0 ? null : h;
    },
  };
}

/**
 * The lease store over every shard (`redis.shards`, docs/ARCHITECTURE.md, Shards): a lease lives
 * on its workload's shard, and its id falls on that shard (`newId`), so a call about one lease
 * goes to one shard; calls about many (trigger, getMany) are split by shard; listing, counting,
 * bulk selection and the sweeper's due set are read from every shard. With one shard this is the
 * shard store itself.
 */
export function createLeaseStore(redis: Redis, keys: Keyspace, opts: LeaseStoreOptions) {
  const shards = keys.shardKeys.map((sk) => createShardStore(redis, sk, opts));
  if (shards.length === 1) {
    const only = shards[0]!;
    return { ...only, newId: (_workload: string) => newShardedId("l", 0, 1), shardCount: 1, shardStores: [only] as readonly ShardStore[] };
  }
  const index = new Map(keys.shardKeys.map((sk, i) => [sk, i]));
  const ofId = (id: string) => shards[index.get(keys.forId(id))!]!;
  const ofWorkload = (w: string) => shards[index.get(keys.forWorkload(w))!]!;
  /** Splits ids by shard, keeping the position of each. */
  const byShard = (ids: string[]) => {
    const groups = new Map<ShardStore, { ids: string[]; at: number[] }>();
    ids.forEach((id, i) => {
      const s = ofId(id);
      let g = groups.get(s);
      if (!g) groups.set(s, (g = { ids: [], at: [] }));
      g.ids.push(id);
      g.at.push(i);
    });
    return groups;
  };
  /**
   * A per-lease call on each shard's share of `ids` (side by side), its answers put back in the
   * order of `ids`; `call` gets the shard's ids and their positions in `ids`.
   */
  async function inIdOrder<T>(ids: string[], call: (s: ShardStore, ids: string[], at: number[]) => Promise<T[]>): Promise<T[]> {
    const out = new Array<T>(ids.length);
    await Promise.all(
      [...byShard(ids)].map(async ([s, g]) => {
        const got = await call(s, g.ids, g.at);
        got.forEach((v, j) => (out[g.at[j]!] = v));
      }),
    );
    return out;
  }
  const perShard = Math.ceil;
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

  return {
    shardCount: shards.length,
    /** Each shard's store: the expiry poller walks each one's due set (walkExpiries in src/leases/queue.ts). */
    shardStores: shards as readonly ShardStore[],
    /** A walk step of one due set, so per shard: use `shardStores`. */
    expireDue: (): Promise<{ scanned: number; moved: string[]; leases: RevokingLease[] }> => Promise.reject(new Error("with several shards the due sets are walked one by one (shardStores)")),
    keys: { ...shards[0]!.keys, lease: (id: string) => ofId(id).keys.lease(id) },
    /** A new lease id on the workload's shard. */
    newId: (workload: string) => newShardedId("l", index.get(keys.forWorkload(workload))!, shards.length),
    create(l: NewLease, quota: number, minted?: Minted) {
      const s = ofWorkload(l.workload);
      // Every key of the lease must be on one shard (one script, one hash tag).
      if (ofId(l.id) !== s) throw new Error(`lease id ${l.id} is not on the shard of workload ${l.workload}`);
      return s.create(l, quota, minted);
    },
    created: shards[0]!.created,
    activated: shards[0]!.activated,
    activate: (id: string, handle: Record<string, string>, backendExpiresAt?: number, times?: { issuedAt: number; expiresAt: number }) => ofId(id).activate(id, handle, backendExpiresAt, times),
    async trigger(ids: string[], t: TriggerOptions): Promise<string[]> {
      const out: string[] = [];
      for (const [s, g] of byShard(ids)) out.push(...(await s.trigger(g.ids, t)));
      return out;
    },
    async triggerForRevocation(ids: string[], t: TriggerOptions): Promise<RevokingLease[]> {
      const out: RevokingLease[] = [];
      for (const [s, g] of byShard(ids)) out.push(...(await s.triggerForRevocation(g.ids, t)));
      return out;
    },
    finish: (lease: RevokingLease) => ofId(lease.id).finish(lease),
    finishMany: (leases: RevokingLease[]): Promise<("revoked" | "expired" | "unchanged")[]> =>
      inIdOrder(
        leases.map((l) => l.id),
        (s, _ids, at) => s.finishMany(at.map((i) => leases[i]!)),
      ),
    fail: (lease: Pick<RevokingLease, "id" | "op">, error: string, failAfter: number, nextAttemptAt: number) => ofId(lease.id).fail(lease, error, failAfter, nextAttemptAt),
    get: (id: string) => ofId(id).get(id),
    getMany: (ids: string[]): Promise<(LeaseRead | null)[]> => inIdOrder(ids, (s, own) => s.getMany(own)),
    forRevocation: (ids: string[]): Promise<(RevokingLease | null)[]> => inIdOrder(ids, (s, own) => s.forRevocation(own)),
    addChild: (parentId: string, parentExpiresMs: number, childId: string) => ofId(parentId).addChild(parentId, parentExpiresMs, childId),
    children: (id: string) => ofId(id).children(id),
    isTaskCompleted: (workload: string, taskId: string) => ofWorkload(workload).isTaskCompleted(workload, taskId),
    completeTask: (workload: string, taskId: string) => ofWorkload(workload).completeTask(workload, taskId),
    /** Live lease ids of one selector value: one shard for a workload, every shard otherwise. */
    async *liveIds(sel: Selector, value: string, batch = 1000): AsyncGenerator<string[]> {
      for (const s of sel === "workload" ? [ofWorkload(value)] : shards) yield* s.liveIds(sel, value, batch);
    },
    async *allLiveIds(batch = 1000): AsyncGenerator<string[]> {
      for (const s of shards) yield* s.allLiveIds(batch);
    },
    /**
     * Every shard scanned from `from`; `next` is the earliest place a shard stopped (the others
     * scan a bounded stretch again, which is harmless: triggering is first-wins).
     */
    async stuckIssuing(from: number, to: number, limit: number): Promise<{ ids: string[]; next: number | null }> {
      const res = await Promise.all(shards.map((s) => s.stuckIssuing(from, to, perShard(limit / shards.length))));
      const nexts = res.map((r) => r.next).filter((n): n is number => n !== null);
      return { ids: res.flatMap((r) => r.ids), next: nexts.length > 0 ? Math.min(...nexts) : null };
    },
    countLive: async (sel: Selector, value: string) =>
      sel === "workload" ? ofWorkload(value).countLive(sel, value) : sum(await Promise.all(shards.map((s) => s.countLive(sel, value)))),
    /** Due lease ids of every shard, a share of `limit` from each (callers loop until none is due). */
    async due(at: number, limit: number): Promise<string[]> {
      const each = Math.max(1, perShard(limit / shards.length));
      return (await Promise.all(shards.map((s) => s.due(at, each)))).flat();
    },
    async counts(): Promise<{ live: number; revoke_failed: number }> {
      const all = await Promise.all(shards.map((s) => s.counts()));
      return { live: sum(all.map((c) => c.live)), revoke_failed: sum(all.map((c) => c.revoke_failed)) };
    },
    /**
     * Newest first over every shard, in the one order (issued_at, id) descending. Each shard lists
     * from the cursor; a lease is returned only when no shard still has unexamined leases above
     * it, so nothing is skipped or repeated across pages; `next` is the last lease returned, or
     * the least far any shard got when the page is short.
     */
    async list(filter: LeaseFilter, limit: number, cursor: string | undefined, scanLimit = 5000): Promise<{ leases: StoredLease[]; next: string | null }> {
      if (cursor !== undefined && parseListCursor(cursor) === null) return { leases: [], next: null };
      const each = Math.max(200, perShard(scanLimit / shards.length));
      const pages = await Promise.all(shards.map((s) => s.list(filter, limit, cursor, each)));
      const merged = mergePages(
        pages.map((p) => ({ items: p.leases.map((l) => ({ pos: { score: l.issued_ms, id: l.id }, item: l })), next: p.next === null ? null : parseListCursor(p.next) })),
        limit,
      );
      return { leases: merged.items, next: merged.next === null ? null : listCursor(merged.next) };
    },
    createOp: (id: string, fields: Record<string, string>) => ofId(id).createOp(id, fields),
    updateOp: (id: string, fields: Record<string, string>) => ofId(id).updateOp(id, fields),
    incrOp: (id: string, field: string, by: number) => ofId(id).incrOp(id, field, by),
    /** The op's record, with `revoked` and `failed` summed over the shards that counted some. */
    async getOp(id: string): Promise<Record<string, string> | null> {
      const home = ofId(id);
      const [op, ...others] = await Promise.all([home.getOp(id), ...shards.filter((s) => s !== home).map((s) => s.getOp(id))]);
      if (!op) return null;
      for (const field of ["revoked", "failed"]) op[field] = String(sum([op, ...others].map((o) => Number(o?.[field] ?? 0))));
      return op;
    },
  };
}

export type ShardStore = ReturnType<typeof createShardStore>;

/** A position in a listing order: score descending, then id descending. */
export interface ListPos {
  score: number;
  id: string;
}

/** `a` comes before (is newer than) `b` in listing order. */
const before = (a: ListPos, b: ListPos) => a.score > b.score || (a.score === b.score && a.id > b.id);

const listCursor = (p: ListPos) => Buffer.from(`${p.score}|${p.id}`).toString("base64url");
function parseListCursor(cursor: string): ListPos | null {
  const [score, id] = Buffer.from(cursor, "base64url").toString("utf8").split("|");
  return score && id && /^\d+$/.test(score) ? { score: Number(score), id } : null;
}

/**
 * Merges one page from each shard (each in listing order, `next` = the last position it examined,
 * null when it reached the end) into one page in listing order (also used by src/approvals/store.ts).
 */
export function mergePages<T>(pages: { items: { pos: ListPos; item: T }[]; next: ListPos | null }[], limit: number): { items: T[]; next: ListPos | null } {
  // The least far any unfinished shard got: items past it might be preceded by ones not yet seen.
  let bound: ListPos | null = null;
  for (const p of pages) if (p.next !== null && (bound === null || before(p.next, bound))) bound = p.next;
  const all = pages
    .flatMap((p) => p.items)
    .filter((x) => bound === null || !before(bound, x.pos))
    .sort((a, b) => (before(a.pos, b.pos) ? -1 : before(b.pos, a.pos) ? 1 : 0));
  const items = all.slice(0, limit);
  if (items.length === limit && items.length > 0) return { items: items.map((x) => x.item), next: items[items.length - 1]!.pos };
  return { items: items.map((x) => x.item), next: bound };
}

export function matchesFilter(l: StoredLease, f: LeaseFilter): boolean {
  return (
    (!f.workload || l.workload === f.workload) &&
    (!f.task_id || l.task_id === f.task_id) &&
    (!f.role || l.role === f.role) &&
    (!f.issuer || l.identity.issuer === f.issuer) &&
    (!f.state || l.state === f.state)
  );
}

/** What revocation means for each backend (docs/ARCHITECTURE.md, How to add a backend). */
export const REVOCATION_KIND: Record<Lease["backend"], Lease["revocation_kind"]> = { jwt: "revocable", vault: "revocable", aws_sts: "deny_by_session" };

export const ttlSeconds = (issuedAtMs: number, expiresAtMs: number) => Math.round((expiresAtMs - issuedAtMs) / 1000);

export type LeaseStore = ReturnType<typeof createLeaseStore>;

/** How many resolved policy refs a store keeps in memory (a few per policy set in practice). */
const POLICY_CACHE_MAX = 10_000;

/** `{p}:leases:policies` value of a decision's policy: "<set hash base64url> <ids JSON>". */
const policyValue = (p: Lease["policy"]) => `${Buffer.from(p.hash, "hex").toString("base64url")} ${JSON.stringify(p.ids)}`;

/**
 * The name of a decision's policy in `{p}:leases:policies`: 72 bits of the SHA-256 of its value
 * (content-addressed: the same policy set and determining policies give the same ref, and a ref
 * never changes meaning). Memoized for the last one: consecutive leases mostly share it.
 */
let lastRef: { value: string; ref: string } | null = null;
export function policyRef(p: Lease["policy"]): string {
  const value = policyValue(p);
  if (lastRef?.value !== value) lastRef = { value, ref: createHash("sha256").update(value).digest("base64url").slice(0, 12) };
  return lastRef.ref;
}

/** Reads a `{p}:leases:policies` value; null when absent or malformed (a hostile or damaged Redis). */
function parsePolicyValue(v: string | null): Lease["policy"] | null {
  if (v === null) return null;
  const sp = v.indexOf(" ");
  if (sp < 0) return null;
  try {
    const ids: unknown = JSON.parse(v.slice(sp + 1));
    if (!Array.isArray(ids) || !ids.every((x) => typeof x === "string")) return null;
    return { ids: ids as string[], hash: Buffer.from(v.slice(0, sp), "base64url").toString("hex") };
  } catch {
    return null;
  }
}

/**
 * Redis keeps a small hash in its compact listpack encoding only while every value is at most
 * `hash-max-listpack-value` bytes (64 by default); one longer value turns the whole lease into a
 * hashtable of about three times the size (a Vault or AWS handle, a long task intent or SPIFFE
 * id). So a longer value is stored in pieces of at most 64 bytes: field `f` holds the first,
 * `f.1`, `f.2`... the rest, and reading joins them (a record without pieces reads as before).
 */
const LISTPACK_VALUE_MAX = 64;

/** A value cut into pieces of at most LISTPACK_VALUE_MAX UTF-8 bytes, never inside a character. */
export function pieces(v: string): string[] {
  if (v.length <= LISTPACK_VALUE_MAX / 3 || Buffer.byteLength(v) <= LISTPACK_VALUE_MAX) return [v];
  const out: string[] = [];
  let cur = "";
  let bytes = 0;
  for (const ch of v) {
    const b = Buffer.byteLength(ch);
    if (bytes + b > LISTPACK_VALUE_MAX) {
      out.push(cur);
      cur = "";
      bytes = 0;
    }
    cur += ch;
    bytes += b;
  }
  out.push(cur);
  return out;
}

/** Field/value pairs as stored: each value over 64 bytes as its pieces (`f`, `f.1`, ...). */
function storedPairs(fields: Record<string, string>): string[] {
  const out: string[] = [];
  for (const [f, v] of Object.entries(fields)) {
    const [first, ...rest] = pieces(v);
    out.push(f, first!);
    rest.forEach((p, i) => out.push(`${f}.${i + 1}`, p));
  }
  return out;
}

/** A lease hash with its pieced values joined (`f` + `f.1` + `f.2` ...); the hash itself when it has none. */
export function joinPieces(h: Record<string, string>): Record<string, string> {
  if (!Object.keys(h).some((key) => key.includes("."))) return h;
  let out: Record<string, string> | null = null;
  for (const key of Object.keys(h)) {
    const m = /^([a-z_]+)\.1$/.exec(key);
    if (!m || h[m[1]!] === undefined) continue;
    out ??= { ...h };
    const f = m[1]!;
    let v = h[f]!;
    for (let i = 1; h[`${f}.${i}`] !== undefined; i++) {
      v += h[`${f}.${i}`];
      delete out[`${f}.${i}`];
    }
    out[f] = v;
  }
  if (out) for (const key of Object.keys(out)) if (/^[a-z_]+\.\d+$/.test(key)) delete out[key];
  return out ?? h;
}

/** The hash fields `create` writes for a new lease (state `issuing`). */
/** What a backend returned for a lease: its handle (never secret) and the backend's own expiry. */
export interface Minted {
  handle: Record<string, string>;
  backendExpiresAt?: number;
}

/** What a lease's handle is encoded against (src/leases/handle.ts). */
const ctxOf = (l: NewLease): HandleContext => ({ id: l.id, issuedMs: l.issuedAt, expiresMs: l.expiresAt });

/**
 * The fields of a lease that is active with its handle (`activate`'s result, or `create` with
 * `minted`); `handle` is the handle's stored form (field h).
 */
function activeFields(l: NewLease, m: Minted, handle: string): Record<string, string> {
  const h: Record<string, string> = { ...newLeaseFields(l), state: "active", h: handle };
  if (m.backendExpiresAt !== undefined) h.bexp = String(m.backendExpiresAt);
  return h;
}

function newLeaseFields(l: NewLease): Record<string, string> {
  return {
    // One- and two-letter names for the fields only this module reads (the scripts read state,
    // exp, trig, op...): every byte of a field name is a byte of every lease.
    r: l.role,
    b: l.backend,
    w: l.workload,
    t: l.task.id,
    state: "issuing",
    iat: String(l.issuedAt),
    exp: String(l.expiresAt),
    // The identity kind only when not "oidc" (the common case costs no field).
    ...(l.identity.kind === "oidc" ? {} : { k: l.identity.kind }),
    i: l.identity.issuer,
    s: l.identity.subject,
    pr: policyRef(l.policy),
    // Task context as separate fields, absent when empty: short values keep the hash in Redis's
    // compact listpack encoding (values up to hash-max-listpack-value, 64 bytes by default).
    ...(l.task.intent ? { ti: l.task.intent } : {}),
    ...(l.task.tool ? { tt: l.task.tool } : {}),
    ...(l.task.destination ? { td: l.task.destination } : {}),
    ...(l.task.sensitivity ? { ts: l.task.sensitivity } : {}),
    ...(l.askedTtlSeconds !== undefined && l.askedTtlSeconds !== ttlSeconds(l.issuedAt, l.expiresAt) ? { ask: String(l.askedTtlSeconds) } : {}),
    ...(l.claims && Object.keys(l.claims).length > 0 ? { cl: JSON.stringify(l.claims) } : {}),
    ...(l.approval ? { apr: l.approval.request_id, apb: l.approval.approved_by } : {}),
    ...(l.delegation
      ? { par: l.delegation.parent, dep: String(l.delegation.depth), anc: l.delegation.ancestors.join(" "), ...(l.delegation.chain.length ? { chn: l.delegation.chain.join(" ") } : {}) }
      : {}),
    ...(l.onBehalfOf
      ? { obi: l.onBehalfOf.issuer, obs: l.onBehalfOf.subject, ...(Object.keys(l.onBehalfOf.claims).length ? { obc: JSON.stringify(l.onBehalfOf.claims) } : {}) }
      : {}),
  };
}


/** The lease as the API shows it (no handle, no internal bookkeeping). */
export function publicLease(l: StoredLease): Lease {
  const { handle: _h, op: _o, trigger_at: _t, issued_ms: _i, expires_ms: _e, asked_ttl_seconds: _a, claims: _c, delegation: _d, obo: _b, has_children: _k, ...lease } = l;
  return lease;
}
