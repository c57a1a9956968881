/**
 * Leases as earlier brokers wrote them (docs/ARCHITECTURE.md, Lease record), for the upgrade
 * tests: their scripts verbatim, and their field names.
 *
 * - "v1": before issue 17 (every lease in its task's set `live:task:<t>`, policy ids and set hash
 *   inline as `pids`/`phash`);
 * - "v2": issue 17's first pass (`live:tasks`, the policy ref `pr`), fields named in full
 *   (`role`, `backend`, `workload`, `task_id`, `ikind`, `issuer`, `subject`) and the handle as
 *   JSON in `handle`, over 64 bytes in pieces `handle.1`, `handle.2`...
 * Both are activated here with the v2 ACTIVATE script (the JSON handle).
 */
import type { Redis } from "ioredis";
import type { ShardKeys } from "../../src/redis/keys";
import { pieces, policyRef } from "../../src/leases/store";

/** The CREATE script of v1, verbatim. */
export const V1_CREATE = `
-- KEYS: 1 lease, 2 due, 3 all, 4 live:workload, 5 live:role, 6 live:issuer, 7 live:task, 8 task marker
-- ARGV: 1 quota (0 = none), 2 id, 3 issued_at ms, 4 expires_at ms, 5.. field/value pairs
-- Output: ok | task_completed | quota_exceeded | exists (nothing written unless ok)
if redis.call('EXISTS', KEYS[8]) == 1 then return 'task_completed' end
local quota = tonumber(ARGV[1])
if quota > 0 and redis.call('SCARD', KEYS[4]) >= quota then return 'quota_exceeded' end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
for k = 4, 7 do redis.call('SADD', KEYS[k], ARGV[2]) end
return 'ok'
`;

/** The CREATE script of v2, verbatim. */
export const V2_CREATE = `
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
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('HSETNX', KEYS[10], ARGV[6], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
for k = 4, 6 do redis.call('SADD', KEYS[k], ARGV[2]) end
if redis.call('HSETNX', KEYS[9], ARGV[5], ARGV[2]) == 0 then redis.call('SADD', KEYS[7], ARGV[2]) end
return 'ok'
`;

/** The ACTIVATE script of v2, verbatim. */
export const V2_ACTIVATE = `
-- KEYS: 1 lease, 2 due.  ARGV: 1 handle JSON (its first piece when over 64 bytes), 2 backend_expires_at
--       ms or '', 3 lease id, 4 now ms, 5.. the handle's further pieces (fields handle.1, handle.2...)
-- Output: active (flipped from issuing) | reopened | missing | the state the lease was in
-- A lease the worker already finished as "never minted" (its mint outlived worker.mint_timeout)
-- is reopened as revoking and due now: the credential that did get minted is then revoked with
-- its handle, retried like any other (I1).
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
local had = redis.call('HEXISTS', KEYS[1], 'handle')
local i = 1
while redis.call('HDEL', KEYS[1], 'handle.' .. i) == 1 do i = i + 1 end
redis.call('HSET', KEYS[1], 'handle', ARGV[1])
for j = 5, #ARGV do redis.call('HSET', KEYS[1], 'handle.' .. (j - 4), ARGV[j]) end
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
`;

export interface OldLease {
  id: string;
  role: string;
  backend: "jwt" | "vault" | "aws_sts";
  workload: string;
  task: string;
  issuer: string;
  subject: string;
  iat: number;
  exp: number;
  policy: { ids: string[]; hash: string };
}

/**
 * Writes a lease as a v1 or v2 broker did (CREATE, then ACTIVATE with `handle` as JSON), into the
 * shard of `sk`. Returns what the two scripts answered.
 */
export async function writeOldLease(redis: Redis, sk: ShardKeys, layout: "v1" | "v2", l: OldLease, handle: Record<string, string>): Promise<[string, string]> {
  const fields: Record<string, string> = {
    role: l.role,
    backend: l.backend,
    workload: l.workload,
    task_id: l.task,
    state: "issuing",
    iat: String(l.iat),
    exp: String(l.exp),
    ikind: "oidc",
    issuer: l.issuer,
    subject: l.subject,
  };
  let created: string;
  if (layout === "v1") {
    fields.pids = JSON.stringify(l.policy.ids);
    fields.phash = Buffer.from(l.policy.hash, "hex").toString("base64url");
    const keys = [sk.lease(l.id), sk.leasesDue, sk.leasesAll, sk.live.workload(l.workload), sk.live.role(l.role), sk.live.issuer(l.issuer), sk.live.task(l.task), sk.taskMarker(l.workload, l.task)];
    created = (await redis.eval(V1_CREATE, keys.length, ...keys, "0", l.id, String(l.iat), String(l.exp), ...Object.entries(fields).flat())) as string;
  } else {
    const ref = policyRef(l.policy);
    fields.pr = ref;
    const pairs: string[] = [];
    for (const [f, v] of Object.entries(fields)) {
      const [first, ...rest] = pieces(v);
      pairs.push(f, first!);
      rest.forEach((p, i) => pairs.push(`${f}.${i + 1}`, p));
    }
    const keys = [sk.lease(l.id), sk.leasesDue, sk.leasesAll, sk.live.workload(l.workload), sk.live.role(l.role), sk.live.issuer(l.issuer), sk.live.task(l.task), sk.taskMarker(l.workload, l.task), sk.liveTasks, sk.leasesPolicies];
    const value = `${Buffer.from(l.policy.hash, "hex").toString("base64url")} ${JSON.stringify(l.policy.ids)}`;
    created = (await redis.eval(V2_CREATE, keys.length, ...keys, "0", l.id, String(l.iat), String(l.exp), l.task, ref, value, ...pairs)) as string;
  }
  const [first, ...rest] = pieces(JSON.stringify(handle));
  const activated = (await redis.eval(V2_ACTIVATE, 2, sk.lease(l.id), sk.leasesDue, first!, "", l.id, String(Date.now()), ...rest)) as string;
  return [created, activated];
}
