/**
 * A backend handle as the lease hash stores it (field `h`, docs/ARCHITECTURE.md, Lease record):
 * pure encoding and decoding, no I/O. Backends keep producing and receiving the handle as a
 * record of strings; only its stored form is compact, because at 1 KB a lease (issue 17) the
 * JSON of an AWS session (about 240 bytes) was a quarter of a lease.
 *
 * The stored value's first character says its form:
 *   `j`                     `{jti: <lease id>}` (the jwt backend's handle: the lease id itself)
 *   `t<accessor>`           `{accessor}` (a Vault child token, revoked by accessor)
 *   `v<ref><rest>`          `{lease_id: <prefix><rest>}` (a Vault dynamic-secret lease id: the
 *                           prefix, up to its last `/`, is the role's path, the same for every
 *                           lease of the role, so it is shared: `<ref>` names it)
 *   `a<ref><di> <de>`       an AWS STS session `{role_arn, session_name, user_id, issued_at,
 *                           expires_at}` whose session name is the lease id and whose user id is
 *                           `<RoleId>:<session name>`: `<ref>` names "<RoleId> <role ARN>" (shared
 *                           by every session of the role), the times are milliseconds relative
 *                           to the lease's `iat` and `exp` (which never change once written)
 *   `{...}`                 any other handle, as JSON
 * `<ref>` is 12 base64url characters naming a field of `{p}:leases:handles` (content-addressed:
 * 72 bits of the SHA-256 of the shared value, written once with the lease, never changed).
 *
 * A compact form is used only when it decodes back to exactly the handle given (same keys, same
 * values); anything else is stored as JSON. Reading treats the stored value as hostile: a value
 * that is not one of these forms, or names a ref that cannot be resolved, reads as a handle
 * without the parts it could not read, which the backend then refuses (a revocation that fails
 * loudly, never a lease taken for "never minted").
 */
import { createHash } from "node:crypto";

/** What the lease needs to encode or decode its handle (its id and its immutable times, ms). */
export interface HandleContext {
  id: string;
  issuedMs: number;
  expiresMs: number;
}

/** A handle's stored value and, when it has one, the shared value its ref names. */
export interface EncodedHandle {
  value: string;
  ref?: { ref: string; value: string };
}

const REF_LEN = 12;
const REF = /^[A-Za-z0-9_-]{12}$/;
/** An IAM unique id (a RoleId is `AROA` + 17 characters): letters and digits only. */
const ROLE_ID = /^[A-Za-z0-9]{1,128}$/;
/** Offsets of at most 10 digits (about 115 days; a session lasts 12 hours at most): anything else is not read. */
const AWS_TIMES = /^(-?\d{1,10}) (-?\d{1,10})$/;
const AWS_FIELDS = ["role_arn", "session_name", "user_id", "issued_at", "expires_at"];

/** The ref of a shared handle part: 72 bits of its SHA-256, base64url. */
export const handleRef = (shared: string): string => createHash("sha256").update(shared).digest("base64url").slice(0, REF_LEN);

/** The refs a stored handle value names (none, or one). */
export function handleRefOf(value: string | undefined): string | undefined {
  if (value === undefined || (value[0] !== "v" && value[0] !== "a")) return undefined;
  const ref = value.slice(1, 1 + REF_LEN);
  return REF.test(ref) ? ref : undefined;
}

const isoOf = (ms: number): string | undefined => {
  const d = new Date(ms);
  return Number.isFinite(d.getTime()) ? d.toISOString() : undefined;
};

/** An ISO time that `toISOString` gives back exactly from its milliseconds, else undefined. */
function exactMs(s: string): number | undefined {
  const ms = Date.parse(s);
  return Number.isFinite(ms) && isoOf(ms) === s ? ms : undefined;
}

function compact(l: HandleContext, h: Record<string, string>, refs: boolean): EncodedHandle | null {
  const keys = Object.keys(h);
  if (keys.length === 1 && h.jti === l.id) return { value: "j" };
  if (keys.length === 1 && typeof h.accessor === "string" && h.accessor !== "") return { value: `t${h.accessor}` };
  if (!refs) return null;
  if (keys.length === 1 && typeof h.lease_id === "string") {
    const cut = h.lease_id.lastIndexOf("/") + 1;
    if (cut <= 1 || cut === h.lease_id.length) return null;
    const prefix = h.lease_id.slice(0, cut);
    const ref = handleRef(prefix);
    return { value: `v${ref}${h.lease_id.slice(cut)}`, ref: { ref, value: prefix } };
  }
  if (keys.length === AWS_FIELDS.length && AWS_FIELDS.every((f) => typeof h[f] === "string") && Number.isFinite(l.issuedMs) && Number.isFinite(l.expiresMs)) {
    const suffix = `:${l.id}`;
    if (h.session_name !== l.id || !h.user_id!.endsWith(suffix)) return null;
    const roleId = h.user_id!.slice(0, -suffix.length);
    const issued = exactMs(h.issued_at!);
    const expires = exactMs(h.expires_at!);
    if (!ROLE_ID.test(roleId) || h.role_arn === "" || issued === undefined || expires === undefined) return null;
    const shared = `${roleId} ${h.role_arn}`;
    const ref = handleRef(shared);
    return { value: `a${ref}${issued - l.issuedMs} ${expires - l.expiresMs}`, ref: { ref, value: shared } };
  }
  return null;
}

/**
 * The stored form of a handle. `refs: false` when the caller cannot write a shared part with the
 * lease (then only the forms without a ref, or JSON).
 */
export function encodeHandle(l: HandleContext, h: Record<string, string>, refs = true): EncodedHandle {
  const c = compact(l, h, refs);
  if (c) {
    const back = decodeHandle(l, c.value, () => c.ref?.value);
    if (sameHandle(back, h)) return c;
  }
  return { value: JSON.stringify(h) };
}

function sameHandle(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

/** A JSON handle as read: an object of strings, else the empty handle (unusable: the backend refuses it). */
export function parseJsonHandle(v: string): Record<string, string> {
  try {
    const o: unknown = JSON.parse(v);
    if (o === null || typeof o !== "object" || Array.isArray(o)) return {};
    const out: Record<string, string> = {};
    for (const [k, x] of Object.entries(o as Record<string, unknown>)) if (typeof x === "string") out[k] = x;
    return out;
  } catch {
    return {};
  }
}

/**
 * The handle a stored value means. `shared(ref)` is the value of a ref in `{p}:leases:handles`,
 * undefined when it is not known; the parts that need it are then left out.
 */
export function decodeHandle(l: HandleContext, v: string, shared: (ref: string) => string | undefined): Record<string, string> {
  switch (v[0]) {
    case "{":
      return parseJsonHandle(v);
    case "j":
      return v === "j" ? { jti: l.id } : {};
    case "t":
      return v.length > 1 ? { accessor: v.slice(1) } : {};
    case "v": {
      const ref = handleRefOf(v);
      const rest = v.slice(1 + REF_LEN);
      const prefix = ref === undefined ? undefined : shared(ref);
      return prefix === undefined || rest === "" || !prefix.endsWith("/") ? {} : { lease_id: prefix + rest };
    }
    case "a": {
      const ref = handleRefOf(v);
      const times = AWS_TIMES.exec(v.slice(1 + REF_LEN));
      if (ref === undefined || !times) return {};
      const out: Record<string, string> = { session_name: l.id };
      const issued = isoOf(l.issuedMs + Number(times[1]));
      const expires = isoOf(l.expiresMs + Number(times[2]));
      if (issued !== undefined) out.issued_at = issued;
      if (expires !== undefined) out.expires_at = expires;
      const s = shared(ref);
      const sp = s?.indexOf(" ") ?? -1;
      if (s !== undefined && sp > 0 && ROLE_ID.test(s.slice(0, sp)) && sp < s.length - 1) {
        out.role_arn = s.slice(sp + 1);
        out.user_id = `${s.slice(0, sp)}:${l.id}`;
      }
      return out;
    }
    default:
      return {};
  }
}
