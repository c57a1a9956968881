/**
 * The `jwt` credential backend: the broker itself signs a short-lived access token (RFC 9068
 * style, `typ: at+jwt`, ES256) for each lease.
 *
 * - I2: `exp` is the lease's `expires_at` rounded down to the second, so the token never
 *   outlives its lease.
 * - Revocation is `revocable` through introspection: `revoke` has nothing to cut at a backend;
 *   the lease's state in the store is what `POST /v1/introspect` reads, after `verify` below has
 *   proved the token is ours and named its lease (`jti`). Resource servers that only check the
 *   signature against the JWKS see a revoked token as valid until its `exp`.
 * - I6: the token is returned once in the credential and never put in the handle, errors or logs.
 */
import { SignJWT, decodeProtectedHeader, jwtVerify, type JWTHeaderParameters, type JWTPayload, type CryptoKey, type KeyObject } from "jose";
import type { RoleConfig } from "../../config/schema";
import type { Lease } from "../../leases/types";
import { BackendError, type Backend, type MintRequest, type MintResult, type RevocationTarget } from "../types";
import type { PublicSigningJwk, SigningKeys } from "./keys";

/** Header `typ` of broker-issued tokens (RFC 9068 section 2.1). */
export const TOKEN_TYPE = "at+jwt";
export const SIGNING_ALG = "ES256";
/** Longer strings are not tokens this broker issued (ours are well under 1 KB). */
export const MAX_TOKEN_LENGTH = 8192;
/**
 * Tolerated clock difference between broker instances for `nbf`/`iat` only (a token minted by
 * one instance is introspected by another). `exp` gets no tolerance: a token is dead at `exp`.
 */
export const CLOCK_SKEW_SECONDS = 5;

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const KEY_REFERENCE_HEADERS = ["jku", "x5u", "jwk", "x5c"] as const;

export interface JwtBackendOptions {
  keys: SigningKeys;
  /** `server.public_url`: the `iss` of every token, and where `/.well-known` is served. */
  issuer: string;
  now?: () => number;
}

export interface VerifiedBrokerToken {
  /** The token's `jti`, which is the id of the lease it was minted for. */
  leaseId: string;
  payload: JWTPayload;
}

export interface JwtBackend extends Backend {
  kind: "jwt";
  revocation: "revocable";
  /** The `iss` of broker-issued tokens. */
  issuer: string;
  /** Public keys for `GET /.well-known/jwks.json` (current and previous). */
  jwks(): { keys: PublicSigningJwk[] };
  /**
   * Verifies a broker-issued token: compact JWS, `typ: at+jwt`, ES256 only, signed by the
   * current or a previous key (by `kid`), `iss` equal to ours, not expired, with a string `jti`.
   * Returns the lease id and payload, or null for anything else; never throws. Says nothing about
   * the lease's state: the caller (introspection) must still check that the lease is active.
   */
  verify(token: string): Promise<VerifiedBrokerToken | null>;
}

export function createJwtBackend(opts: JwtBackendOptions): JwtBackend {
  const { keys, issuer } = opts;
  const now = opts.now ?? Date.now;

  async function mint(lease: Lease, role: RoleConfig, req?: MintRequest): Promise<MintResult> {
    if (role.jwt === undefined) throw new BackendError(`role ${role.name} has no jwt section`, "misconfigured");
    const expiresMs = Date.parse(lease.expires_at);
    if (Number.isNaN(expiresMs)) throw new BackendError(`lease ${lease.id} has an invalid expires_at`, "misconfigured");
    const nowSec = Math.floor(now() / 1000);
    const exp = Math.floor(expiresMs / 1000); // never later than the lease (I2)
    if (exp <= nowSec) throw new BackendError(`lease ${lease.id} expires before a token could be valid`, "misconfigured");

    const claims: JWTPayload = { task_id: lease.task_id };
    // A token exchange (src/oauth) narrows scope and audience and names the chain (sub, act).
    const t = req?.token;
    const scope = t ? t.scope : role.jwt.scope;
    if (scope !== undefined && scope !== "") claims.scope = scope;
    if (t?.act) claims.act = t.act as unknown as JWTPayload[string];
    let token: string;
    try {
      token = await new SignJWT(claims)
        .setProtectedHeader({ alg: SIGNING_ALG, kid: keys.current.kid, typ: TOKEN_TYPE })
        .setIssuer(issuer)
        .setSubject(t ? t.subject : lease.workload)
        .setAudience(t ? t.audience : role.jwt.audience)
        .setJti(lease.id)
        .setIssuedAt(nowSec)
        .setNotBefore(nowSec)
        .setExpirationTime(exp)
        .sign(keys.current.key);
    } catch (e) {
      throw new BackendError(`signing the token of lease ${lease.id} failed`, "misconfigured", { cause: e });
    }
    return {
      credential: { type: "jwt", token, expires_at: lease.expires_at },
      handle: { jti: lease.id },
    };
  }

  /** Nothing to cut at a backend: introspection answers from the lease's state. Idempotent. */
  async function revoke(_lease: RevocationTarget, _handle: Record<string, string>): Promise<void> {
    return;
  }

  const getKey = (header: JWTHeaderParameters): CryptoKey | KeyObject => {
    const key = typeof header.kid === "string" ? keys.verificationKey(header.kid) : undefined;
    if (key === undefined) throw new Error("unknown kid");
    return key;
  };

  async function verify(token: string): Promise<VerifiedBrokerToken | null> {
    try {
      if (typeof token !== "string" || token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token)) return null;
      const header = decodeProtectedHeader(token);
      if (header.alg !== SIGNING_ALG) return null; // before any key work: none, HS256, other algs
      if (KEY_REFERENCE_HEADERS.some((h) => h in header)) return null; // keys come from our file only
      const nowMs = now();
      const { payload } = await jwtVerify(token, getKey, {
        algorithms: [SIGNING_ALG],
        issuer,
        typ: TOKEN_TYPE,
        requiredClaims: ["exp", "jti", "iat"],
        currentDate: new Date(nowMs),
        clockTolerance: CLOCK_SKEW_SECONDS,
      });
      if (typeof payload.exp !== "number" || payload.exp <= Math.floor(nowMs / 1000)) return null; // no skew on exp
      if (typeof payload.jti !== "string" || payload.jti === "") return null;
      return { leaseId: payload.jti, payload };
    } catch {
      return null;
    }
  }

  return {
    kind: "jwt",
    // A signature with the broker's own key: nothing exists outside this process until answered.
    mintsLocally: true,
    revocation: "revocable",
    issuer,
    jwks: () => keys.jwks(),
    mint,
    revoke,
    verify,
  };
}
