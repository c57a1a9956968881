/**
 * The authoritative record of revoked STS sessions, per target role, in Redis.
 *
 * IAM is eventually consistent: GetRolePolicy may answer with the document from before the last
 * PutRolePolicy, and a PutRolePolicy abandoned by its sender (a deadline, a lost lock) may still
 * land later. Either way a read-modify-write of the revocation policy alone could drop earlier
 * denies. So the broker keeps its own record: every revoked session is added here, under the
 * role's lock (lock.ts), BEFORE the PutRolePolicy that names it, and every document written is
 * built from this record united with what IAM returned. A later check (backend.ts: a delayed
 * re-read after each write, and periodically on the worker) rewrites the policy when IAM's copy
 * misses sessions recorded here.
 *
 * Keys (under the keyspace's hash tag `{p}`, see src/redis/keys.ts):
 *   {p}:aws:revoked:<sha256(role ARN) base64url>  zset   member "<issued_at ms> <aws:userid>" of a
 *                                                        revoked session, score = the upper bound
 *                                                        of its expiry (ms). PEXPIRE = until the
 *                                                        latest entry is garbage.
 *   {p}:aws:roles                                 zset   member = role ARN, score = the latest
 *                                                        expiry among its recorded sessions (the
 *                                                        roles the periodic check looks at).
 *
 * Garbage collection follows deny.ts (`isDead`): an entry whose expiry is more than the grace
 * plus the clock skew margin in the past is dropped at each update. Memory: about 100 bytes per
 * revoked session (a listpack entry of ~60 bytes), gone with the session (at most 12 h + grace).
 * Nothing secret: `aws:userid` is `<RoleId>:<lease id>`.
 */
import { luaScript, registerScripts, runScript } from "../../redis/scripts";
import type { Redis } from "ioredis";
import type { Keyspace } from "../../redis/keys";
import type { RevokedSession } from "./deny";
import { redisCall } from "./redis-call";

const SYNC = luaScript<string[]>("jitAwsRevokedSync", `
-- KEYS: 1 revoked set of the role, 2 roles index
-- ARGV: 1 role ARN, 2 dead-at-or-before (ms; entries with a score up to it are dropped),
--       3.. member, score pairs to add (a member already there keeps the larger score)
-- Output: the record after the update, as member, score pairs ({} when empty)
local dead = tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local old = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not old or tonumber(old) < tonumber(ARGV[i + 1]) then redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i]) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #top == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {}
end
redis.call('PEXPIRE', KEYS[1], math.max(1, math.floor(tonumber(top[2]) - dead)))
redis.call('ZADD', KEYS[2], top[2], ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
`);

const FORGET = luaScript<number>("jitAwsRevokedForget", `
-- KEYS: 1 revoked set of the role, 2 roles index.  ARGV: 1 role ARN
-- Output: 1 the role was in the index, 0 it was not
redis.call('DEL', KEYS[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
`);

export interface RevokedRecord {
  /**
   * Adds `sessions` to the role's record, drops entries dead at `deadAt` (ms: an expiry at or
   * before it is garbage), and returns the live record. With no sessions: a read (and GC).
   */
  sync(roleArn: string, sessions: RevokedSession[], deadAt: number): Promise<RevokedSession[]>;
  /** Role ARNs with live entries (dropping those whose latest entry is dead at `deadAt`). */
  roles(deadAt: number): Promise<string[]>;
  /** Drops the role's record (the role is gone: its sessions are dead). */
  forget(roleArn: string): Promise<void>;
}

const member = (s: RevokedSession) => `${Math.round(s.issuedAt)} ${s.userId}`;

function parseMember(m: string, score: string): RevokedSession | null {
  const sp = m.indexOf(" ");
  const issuedAt = Number(m.slice(0, sp));
  const expiresAt = Number(score);
  if (sp <= 0 || !Number.isFinite(issuedAt) || !Number.isFinite(expiresAt)) return null;
  return { userId: m.slice(sp + 1), issuedAt, expiresAt };
}

export function createRevokedRecord(redis: Redis, keys: Pick<Keyspace, "awsRevoked" | "awsRoles">): RevokedRecord {
  const key = keys.awsRevoked;
  const rolesKey = keys.awsRoles;
  registerScripts(redis, [SYNC, FORGET]);

  return {
    async sync(roleArn, sessions, deadAt) {
      const args = sessions.flatMap((s) => [member(s), String(Math.round(s.expiresAt))]);
      const out = (await redisCall("update the record of revoked sessions", () => runScript(redis, SYNC, [key(roleArn), rolesKey], [roleArn, String(Math.floor(deadAt)), ...args])));
      const live: RevokedSession[] = [];
      for (let i = 0; i + 1 < out.length; i += 2) {
        const s = parseMember(out[i]!, out[i + 1]!);
        if (s) live.push(s);
      }
      return live;
    },
    async roles(deadAt) {
      return redisCall("read the record of revoked sessions", async () => {
        await redis.zremrangebyscore(rolesKey, "-inf", String(Math.floor(deadAt)));
        return redis.zrange(rolesKey, 0, -1);
      });
    },
    async forget(roleArn) {
      await redisCall("update the record of revoked sessions", () => runScript(redis, FORGET, [key(roleArn), rolesKey], [roleArn]));
    },
  };
}
