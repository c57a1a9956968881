/**
 * Signing keys of broker-issued JWTs (`backends.jwt.signing_key_file`).
 *
 * The key file is JSON, readable by its owner only (0600), in a directory created 0700:
 *
 *   { "current":  { <private ES256 JWK>, "kid", "alg": "ES256", "created_at": RFC 3339 },
 *     "previous": [ <private ES256 JWKs, newest first> ] }
 *
 * - Created on first start if absent. Creation is exclusive (temp file + link): when several
 *   broker processes on one host start at once, exactly one key wins and every process loads it.
 * - Rotation makes a new current key and moves the old current to the front of `previous`
 *   (at most MAX_PREVIOUS kept), written atomically (temp file + rename). Previous keys stay in
 *   the JWKS and keep verifying, so tokens minted before a rotation stay valid until their `exp`
 *   as long as no more than MAX_PREVIOUS rotations happen within the longest role TTL. Rotation
 *   is read-modify-write: do not run two rotations of one file concurrently. A running broker
 *   sees a rotation done by another process only after it reloads the file.
 * - Refused, with a message saying what is wrong: a file that is not a regular file, is group or
 *   world accessible (mode & 0o077), is not JSON of the shape above, holds a key that is not an
 *   ES256 (EC P-256) private key, whose public part does not match its private part, or has
 *   duplicate kids. Messages name fields, never key material (I6).
 */
import { createECDH, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { errno, writeFileAtomic } from "../../core/files";
import { calculateJwkThumbprint, type JWK, type CryptoKey } from "jose";

/** How many superseded keys are kept (and published) after a rotation. */
export const MAX_PREVIOUS = 2;
const MAX_FILE_BYTES = 64 * 1024;

/** A private key as stored in the key file. */
export interface StoredSigningJwk {
  kty: "EC";
  crv: "P-256";
  x: string;
  y: string;
  d: string;
  kid: string;
  alg: "ES256";
  created_at: string;
}

export interface SigningKeyFile {
  current: StoredSigningJwk;
  previous: StoredSigningJwk[];
}

/** A public key as published in the JWKS: no private members. */
export interface PublicSigningJwk {
  kty: "EC";
  crv: "P-256";
  x: string;
  y: string;
  kid: string;
  alg: "ES256";
  use: "sig";
}

export interface SigningKey {
  kid: string;
  alg: "ES256";
  /** Private key, for signing. */
  key: CryptoKey | KeyObject;
  created_at: string;
}

export interface SigningKeys {
  /** The key new tokens are signed with. */
  readonly current: SigningKey;
  /** Public JWKS of the current and previous keys (a fresh copy on every call). */
  jwks(): { keys: PublicSigningJwk[] };
  /** Public key with this kid (current or previous), or undefined. */
  verificationKey(kid: string): CryptoKey | KeyObject | undefined;
}

/** A key file the broker refuses to use; the message says why and, where it can, how to fix it. */
export class SigningKeyFileError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SigningKeyFileError";
  }
}

const B64URL = /^[A-Za-z0-9_-]+$/;
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/** Checks one stored key and returns its (private, public) key objects. */
function parseKey(file: string, where: string, raw: unknown): { jwk: StoredSigningJwk; priv: KeyObject; pub: KeyObject } {
  const bad = (why: string) => new SigningKeyFileError(`signing key file ${file}: ${where} ${why}`);
  if (!isObject(raw)) throw bad("is not a JWK object");
  if (raw.alg !== "ES256") throw bad(`has alg ${JSON.stringify(raw.alg ?? null)}; only ES256 keys are accepted`);
  if (raw.kty !== "EC" || raw.crv !== "P-256") throw bad("is not an EC P-256 key (ES256 needs kty EC, crv P-256)");
  for (const m of ["x", "y", "d"] as const) {
    if (typeof raw[m] !== "string" || !B64URL.test(raw[m])) {
      throw bad(m === "d" ? "has no private part (d); the key file must hold private keys" : `has no valid ${m}`);
    }
  }
  if (typeof raw.kid !== "string" || raw.kid === "") throw bad("has no kid");
  if (typeof raw.created_at !== "string" || Number.isNaN(Date.parse(raw.created_at))) throw bad("has no valid created_at");
  const jwk: StoredSigningJwk = {
    kty: "EC",
    crv: "P-256",
    x: raw.x as string,
    y: raw.y as string,
    d: raw.d as string,
    kid: raw.kid,
    alg: "ES256",
    created_at: raw.created_at,
  };
  let pub: KeyObject;
  try {
    pub = createPublicKey({ key: { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y }, format: "jwk" });
  } catch (e) {
    throw new SigningKeyFileError(`signing key file ${file}: ${where} has x/y that are not a P-256 point`, { cause: e });
  }
  // x/y must be the public point of d, or tokens signed with d would not verify against the
  // published (x, y). Derived here rather than left to createPrivateKey: whether that refuses a
  // mismatched JWK (and with which message) depends on the OpenSSL version Node is built with.
  let derived: Buffer;
  try {
    const ecdh = createECDH("prime256v1");
    ecdh.setPrivateKey(Buffer.from(jwk.d, "base64url"));
    derived = ecdh.getPublicKey();
  } catch (e) {
    throw new SigningKeyFileError(`signing key file ${file}: ${where} is not a valid EC P-256 private key`, { cause: e });
  }
  const published = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, "base64url"), Buffer.from(jwk.y, "base64url")]);
  if (!derived.equals(published)) throw bad("has x/y that do not belong to its private part (d)");
  let priv: KeyObject;
  try {
    priv = createPrivateKey({ key: { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y, d: jwk.d }, format: "jwk" });
  } catch (e) {
    throw new SigningKeyFileError(`signing key file ${file}: ${where} is not a valid EC P-256 private key`, { cause: e });
  }
  return { jwk, priv, pub };
}

/** Validates a parsed key file and builds the in-memory key set (and the normalised file). */
function buildSigningKeys(file: string, doc: unknown): SigningKeys & { stored: SigningKeyFile } {
  if (!isObject(doc)) throw new SigningKeyFileError(`signing key file ${file}: not a JSON object with current and previous`);
  const previousRaw = doc.previous ?? [];
  if (!Array.isArray(previousRaw)) throw new SigningKeyFileError(`signing key file ${file}: previous is not an array`);
  const current = parseKey(file, "current", doc.current);
  const previous = previousRaw.map((k: unknown, i) => parseKey(file, `previous[${i}]`, k));

  const publicByKid = new Map<string, KeyObject>();
  const published: PublicSigningJwk[] = [];
  for (const k of [current, ...previous]) {
    if (publicByKid.has(k.jwk.kid)) throw new SigningKeyFileError(`signing key file ${file}: kid ${JSON.stringify(k.jwk.kid)} is used twice`);
    publicByKid.set(k.jwk.kid, k.pub);
    // Built member by member (never by deleting from the private JWK), so nothing private leaks.
    published.push({ kty: "EC", crv: "P-256", x: k.jwk.x, y: k.jwk.y, kid: k.jwk.kid, alg: "ES256", use: "sig" });
  }

  const signing: SigningKey = Object.freeze({ kid: current.jwk.kid, alg: "ES256", key: current.priv, created_at: current.jwk.created_at });
  return {
    stored: { current: current.jwk, previous: previous.map((k) => k.jwk) },
    current: signing,
    jwks: () => ({ keys: published.map((k) => ({ ...k })) }),
    verificationKey: (kid) => (typeof kid === "string" ? publicByKid.get(kid) : undefined),
  };
}

/** Reads and validates the key file; undefined if it does not exist. */
async function readKeyFile(file: string): Promise<unknown | undefined> {
  let st;
  try {
    st = await stat(file);
  } catch (e) {
    if (errno(e) === "ENOENT") return undefined;
    throw new SigningKeyFileError(`signing key file ${file}: cannot be read (${errno(e) ?? (e as Error).message})`, { cause: e });
  }
  if (!st.isFile()) throw new SigningKeyFileError(`signing key file ${file}: not a regular file`);
  if (process.platform !== "win32" && (st.mode & 0o077) !== 0) {
    throw new SigningKeyFileError(
      `signing key file ${file}: is readable by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, "0")}); ` +
        `it holds private keys: run chmod 600 ${file}`,
    );
  }
  if (st.size > MAX_FILE_BYTES) throw new SigningKeyFileError(`signing key file ${file}: larger than ${MAX_FILE_BYTES} bytes`);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    throw new SigningKeyFileError(`signing key file ${file}: cannot be read (${errno(e) ?? (e as Error).message})`, { cause: e });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new SigningKeyFileError(`signing key file ${file}: not valid JSON`);
  }
}

async function newKey(now: () => number): Promise<StoredSigningJwk> {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk = privateKey.export({ format: "jwk" });
  const pub: JWK = { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y };
  return {
    kty: "EC",
    crv: "P-256",
    x: jwk.x!,
    y: jwk.y!,
    d: jwk.d!,
    kid: await calculateJwkThumbprint(pub, "sha256"), // RFC 7638: unique per key, stable across restarts
    alg: "ES256",
    created_at: new Date(now()).toISOString(),
  };
}

const publicView = ({ current, jwks, verificationKey }: SigningKeys): SigningKeys => ({ current, jwks, verificationKey });
const serialise = (doc: SigningKeyFile): string => `${JSON.stringify(doc, null, 2)}\n`;

/** Loads the key file, creating it (one fresh ES256 key) if it does not exist. */
export async function loadOrCreateSigningKeys(file: string, now: () => number = Date.now): Promise<SigningKeys> {
  const existing = await readKeyFile(file);
  if (existing !== undefined) return publicView(buildSigningKeys(file, existing));
  const doc: SigningKeyFile = { current: await newKey(now), previous: [] };
  try {
    await writeFileAtomic(file, serialise(doc), true);
  } catch (e) {
    if (errno(e) === "EEXIST") {
      // Another process created it first: use its key, so all processes sign with the same one.
      return publicView(buildSigningKeys(file, await readKeyFile(file)));
    }
    throw new SigningKeyFileError(`signing key file ${file}: cannot be created (${errno(e) ?? (e as Error).message})`, { cause: e });
  }
  return publicView(buildSigningKeys(file, doc));
}

/**
 * Makes a new current key; the old current becomes previous[0] and at most MAX_PREVIOUS previous
 * keys are kept. The file must exist and be valid (a typo in the path does not silently start
 * a new key file). Returns the rotated key set.
 */
export async function rotateSigningKey(file: string, now: () => number = Date.now): Promise<SigningKeys> {
  const existing = await readKeyFile(file);
  if (existing === undefined) throw new SigningKeyFileError(`signing key file ${file}: does not exist; nothing to rotate`);
  const old = buildSigningKeys(file, existing).stored; // refuse to rotate a file we would refuse to load
  const doc: SigningKeyFile = {
    current: await newKey(now),
    previous: [old.current, ...old.previous].slice(0, MAX_PREVIOUS),
  };
  const keys = buildSigningKeys(file, doc);
  try {
    await writeFileAtomic(file, serialise(doc), false);
  } catch (e) {
    throw new SigningKeyFileError(`signing key file ${file}: cannot be written (${errno(e) ?? (e as Error).message})`, { cause: e });
  }
  return publicView(keys);
}
