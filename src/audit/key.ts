/**
 * The audit chain's MAC key (`audit.key_file`; README "Audit ledger"): 32 random bytes
 * kept outside Redis, so that whoever can write Redis cannot recompute the chain.
 *
 * File format: one line, the key as 64 lowercase hex characters (a trailing newline is allowed).
 * - Created on first start if absent, 0600 in a directory created 0700. Creation is exclusive
 *   (temp file + link): when several processes on one host start at once, one key wins and every
 *   process loads it. Every replica of a deployment must use the same key (copy the file, or
 *   mount one secret): a replica that made its own key writes links that `audit verify` rejects.
 * - Refused, with a message naming the problem (never the key): not a regular file, group or
 *   world accessible (mode & 0o077), not exactly 64 hex characters.
 * - The key id (`kid`) is HMAC-SHA256(key, "jitbroker audit key id") truncated to 16 hex
 *   characters: it names the key in the switch-over event and the head without revealing it.
 */
import { createHmac, randomBytes } from "node:crypto";
import { lstat, readFile } from "node:fs/promises";
import { errno, writeFileAtomic } from "../core/files";

export interface AuditKey {
  /** The secret (never logged, never sent to Redis). */
  readonly key: Buffer;
  /** Public name of the key (16 hex characters). */
  readonly kid: string;
}

export class AuditKeyFileError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AuditKeyFileError";
  }
}

const HEX_KEY = /^[0-9a-f]{64}\n?$/;

export function auditKeyFromBytes(key: Buffer): AuditKey {
  if (key.length !== 32) throw new AuditKeyFileError("the audit key must be 32 bytes");
  const kid = createHmac("sha256", key).update("jitbroker audit key id").digest("hex").slice(0, 16);
  return Object.freeze({ key: Buffer.from(key), kid });
}

/** Reads the key file; throws AuditKeyFileError (ENOENT is passed through as `cause`). */
export async function readAuditKey(file: string): Promise<AuditKey> {
  let st;
  try {
    st = await lstat(file);
  } catch (e) {
    if (errno(e) === "ENOENT") throw new AuditKeyFileError(`no audit key at ${file} (audit.key_file; the broker creates it on first start)`, { cause: e });
    throw new AuditKeyFileError(`cannot read the audit key file ${file}: ${errno(e) ?? "error"}`, { cause: e });
  }
  if (!st.isFile()) throw new AuditKeyFileError(`the audit key file ${file} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    throw new AuditKeyFileError(`the audit key file ${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 on it`);
  }
  const text = await readFile(file, "utf8").catch((e: unknown) => {
    throw new AuditKeyFileError(`cannot read the audit key file ${file}: ${errno(e) ?? "error"}`, { cause: e });
  });
  if (!HEX_KEY.test(text)) throw new AuditKeyFileError(`the audit key file ${file} must hold exactly 64 lowercase hex characters (32 bytes)`);
  return auditKeyFromBytes(Buffer.from(text.trim(), "hex"));
}

/** Reads the key file, creating it (0600, exclusively) with a fresh random key if absent. */
export async function loadOrCreateAuditKey(file: string): Promise<AuditKey> {
  try {
    return await readAuditKey(file);
  } catch (e) {
    if (!(e instanceof AuditKeyFileError) || errno(e.cause) !== "ENOENT") throw e;
  }
  try {
    await writeFileAtomic(file, `${randomBytes(32).toString("hex")}\n`, true);
  } catch (e) {
    // EEXIST: another process created it first (a concurrent starter's key wins): use theirs.
    if (errno(e) !== "EEXIST") throw new AuditKeyFileError(`cannot create the audit key file ${file}: ${errno(e) ?? "error"}`, { cause: e });
  }
  return readAuditKey(file);
}
