/**
 * Names and tags the STS AssumeRole call carries, made valid by construction (pure).
 *
 * - RoleSessionName and SourceIdentity: 2-64 characters of `[\w+=,.@-]` (STS API reference;
 *   `\w` is ASCII letters, digits and `_`). A value that already fits is used as is (lease ids,
 *   `l_<16 base64url>`, always do). Anything else (a workload id with `:`, one longer than 64
 *   or shorter than 2 characters) becomes its sanitized prefix, `.`, and 8 characters of its
 *   SHA-256 (base64url), so two distinct ids never share a name by sanitizing.
 * - Session tag values: at most 256 characters of `[\p{L}\p{Z}\p{N}_.:/=+\-@]`; any other
 *   character becomes `_` and the value is cut at 256 characters (tags are for CloudTrail and
 *   ABAC conditions, the lease record keeps the exact values). Keys are ours and fixed, under
 *   the `jitbroker:` prefix so they never override a principal tag the role itself carries
 *   (an unprefixed `owner` session tag could change what an ABAC policy grants).
 */
import { createHash } from "node:crypto";

const NAME_CHARS = /^[\w+=,.@-]{2,64}$/;
const NAME_BAD = /[^\w+=,.@-]/g;
const TAG_BAD = /[^\p{L}\p{Z}\p{N}_.:/=+\-@]/gu;
export const TAG_VALUE_MAX = 256;

/** STS's RoleSessionName / SourceIdentity form, derived deterministically from `id`. */
export function stsName(id: string): string {
  if (NAME_CHARS.test(id)) return id;
  const digest = createHash("sha256").update(id).digest("base64url").slice(0, 8);
  return `${id.replace(NAME_BAD, "_").slice(0, 55)}.${digest}`;
}

/** The role session name of a lease: the lease id itself (it already fits). */
export const sessionNameOf = (leaseId: string): string => stsName(leaseId);

/** SourceIdentity of a workload. */
export const sourceIdentityOf = (workloadId: string): string => stsName(workloadId);

export function tagValue(value: string): string {
  return Array.from(value.replace(TAG_BAD, "_")).slice(0, TAG_VALUE_MAX).join("");
}

export const TAG_KEYS = { workload: "jitbroker:workload", owner: "jitbroker:owner", task: "jitbroker:task", lease: "jitbroker:lease" } as const;

export function sessionTags(v: { workload: string; owner?: string; task: string; lease: string }): { Key: string; Value: string }[] {
  const tags: { Key: string; Value: string }[] = [
    { Key: TAG_KEYS.workload, Value: tagValue(v.workload) },
    { Key: TAG_KEYS.task, Value: tagValue(v.task) },
    { Key: TAG_KEYS.lease, Value: tagValue(v.lease) },
  ];
  if (v.owner) tags.splice(1, 0, { Key: TAG_KEYS.owner, Value: tagValue(v.owner) });
  return tags;
}

/**
 * `arn:aws:iam::123456789012:role/path/name` → `name` (IAM APIs take the name, not the path).
 * IAM's role APIs (GetRole, PutRolePolicy...) take only this name and act on the CALLER's
 * account: use it only for a role whose account is the broker's own (`roleAccountOf`), and check
 * that GetRole's Arn is the expected one.
 */
export function roleNameOf(roleArn: string): string {
  const m = /^arn:aws[a-z-]*:iam::\d{12}:role\/(?:.*\/)?([\w+=,.@-]{1,64})$/.exec(roleArn);
  if (!m) throw new Error(`"${roleArn}" is not an IAM role ARN`);
  return m[1]!;
}

/** Partition and account of a role ARN (`arn:aws:iam::123456789012:role/x` → aws, 123456789012). */
export function roleAccountOf(roleArn: string): { partition: string; account: string } {
  const m = /^arn:(aws[a-z-]*):iam::(\d{12}):role\//.exec(roleArn);
  if (!m) throw new Error(`"${roleArn}" is not an IAM role ARN`);
  return { partition: m[1]!, account: m[2]! };
}
