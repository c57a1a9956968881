/**
 * Every Redis key the broker writes, in one place. All keys share one hash tag, `{<prefix>}`,
 * so that multi-key scripts work unchanged on Redis Cluster (DESIGN.md section 8).
 *
 *   {p}:jti:<issuer>:<sha256(jti) base64url>   string "1", PXAT = token exp + clock skew.
 *                                               Single-use token ids already presented.
 */
import { createHash } from "node:crypto";

export interface Keyspace {
  /** The hash tag, e.g. `{jit}`; also the prefix for BullMQ queues. */
  tag: string;
  seenJti(issuer: string, jti: string): string;
}

export function createKeyspace(prefix: string): Keyspace {
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(prefix)) throw new Error(`invalid redis prefix "${prefix}"`);
  const tag = `{${prefix}}`;
  return {
    tag,
    seenJti: (issuer, jti) => `${tag}:jti:${issuer}:${createHash("sha256").update(jti).digest("base64url")}`,
  };
}
