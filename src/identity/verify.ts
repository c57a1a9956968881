/**
 * Workload token verification (docs/ARCHITECTURE.md, Request path; a public contract). A token is accepted only if
 * it is a compact JWS signed with an allowed asymmetric algorithm by a key from the key set of
 * the configured issuer it routes to, and its claims pass every check below. Every refusal is a
 * `BrokerError` (`invalid_token` or `token_expired`) with a `reason` used for metrics and logs.
 *
 * Routing: an `oidc` issuer by exact `iss`; otherwise a `spiffe` issuer by the trust domain of a
 * SPIFFE ID `sub` (a JWT-SVID needs no `iss`). Header members that point at keys (`jku`, `x5u`,
 * `jwk`, `x5c`) are refused outright: keys come only from the issuer's configured source.
 */
import { decodeJwt, decodeProtectedHeader, jwtVerify, errors as jose, type JWTPayload } from "jose";
import { BrokerError, invalidToken } from "../core/errors";
import type { IssuerConfig } from "../config/schema";
import type { KeySet } from "./keyset";
import { parseSpiffeId, spiffeTrustDomainOf } from "./spiffe";
import type { VerifiedTokenCache } from "./token-cache";

export const MAX_TOKEN_BYTES = 8192;

export interface Identity {
  /** Name of the configured issuer that vouched for the token. */
  issuer: string;
  kind: "oidc" | "spiffe";
  /** The token's `iss` (absent on JWT-SVIDs that carry none). */
  iss: string | undefined;
  subject: string;
  claims: JWTPayload;
  jti: string | undefined;
  expiresAt: number;
}

/** Records single-use `jti`s; `claim` returns false if the jti was seen before. */
export interface ReplayGuard {
  claim(issuer: string, jti: string, expiresAtMs: number): Promise<boolean>;
}

export interface TokenVerifierOptions {
  issuers: IssuerConfig[];
  keySets: Map<string, KeySet>;
  audience: string;
  replayGuard: ReplayGuard;
  /** Verified tokens (src/identity/token-cache.ts); none: every token is verified in full. */
  cache?: VerifiedTokenCache;
  now?: () => number;
}

/** What a token is presented as: a workload's own token, or a person's ID token (on-behalf-of). */
export type TokenUse = "workloads" | "users";

export interface TokenVerifier {
  /**
   * Verifies a token of an issuer configured for `use` (default `workloads`). A token of an
   * issuer with the other use is refused like any other invalid token (401 invalid_token).
   */
  verify(token: string, use?: TokenUse): Promise<Identity>;
}

const COMPACT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const KEY_REFERENCE_HEADERS = ["jku", "x5u", "jwk", "x5c"] as const;

function shapeCheck(token: string): void {
  if (token.length > MAX_TOKEN_BYTES) throw invalidToken("oversized", `token longer than ${MAX_TOKEN_BYTES} bytes`);
  if (token.trimStart().startsWith("{")) throw invalidToken("json_serialization", "JWS JSON serialization is not accepted; send a compact JWS");
  if (COMPACT.test(token)) return;
  if (/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.$/.test(token)) {
    // An unsigned JWS: name it for what it is when it says alg "none".
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      /* not even a header */
    }
    if (typeof alg === "string" && alg.toLowerCase() === "none") throw invalidToken("alg_none", "unsigned tokens (alg none) are never accepted");
    throw invalidToken("malformed", "token has no signature");
  }
  if (token.split(".").length === 5) throw invalidToken("jwe", "encrypted tokens (JWE) are not accepted; send a signed JWT");
  throw invalidToken("malformed", "not a compact JWS");
}

function mapJoseError(e: unknown): BrokerError {
  if (e instanceof BrokerError) return e;
  if (e instanceof jose.JWTExpired) return new BrokerError("token_expired", "token has expired", { reason: "expired" });
  if (e instanceof jose.JWTClaimValidationFailed) {
    const claim = e.claim;
    if (claim === "exp") return invalidToken("missing_exp", "token has no valid exp claim");
    if (claim === "aud") return invalidToken("bad_audience", "token audience does not include this broker");
    if (claim === "iss") return invalidToken("bad_issuer", "token issuer does not match");
    if (claim === "nbf") return invalidToken("not_yet_valid", "token is not valid yet (nbf)");
    if (claim === "iat") return invalidToken("bad_iat", "token iat is invalid");
    return invalidToken("bad_claims", `token claim ${claim} is invalid`);
  }
  if (e instanceof jose.JWSSignatureVerificationFailed) return invalidToken("bad_signature", "signature verification failed");
  if (e instanceof jose.JWKSNoMatchingKey || e instanceof jose.JWKSMultipleMatchingKeys) {
    return invalidToken("unknown_kid", "no key of this issuer matches the token's kid and alg");
  }
  if (e instanceof jose.JOSEAlgNotAllowed) return invalidToken("alg_not_allowed", "algorithm not allowed for this issuer");
  if (e instanceof jose.JOSENotSupported) return invalidToken("unsupported", "token uses an unsupported feature");
  if (e instanceof jose.JOSEError) return invalidToken("malformed", "token is malformed");
  return new BrokerError("internal", "token verification failed unexpectedly", { cause: e });
}

export function createTokenVerifier(opts: TokenVerifierOptions): TokenVerifier {
  const now = opts.now ?? Date.now;
  const oidcByIss = new Map<string, Extract<IssuerConfig, { type: "oidc" }>>();
  const spiffeByDomain = new Map<string, Extract<IssuerConfig, { type: "spiffe" }>>();
  for (const iss of opts.issuers) {
    if (iss.type === "oidc") oidcByIss.set(iss.issuer, iss);
    else spiffeByDomain.set(iss.trust_domain, iss);
  }

  function route(payload: JWTPayload): IssuerConfig {
    if (typeof payload.iss === "string") {
      const oidc = oidcByIss.get(payload.iss);
      if (oidc) return oidc;
    }
    const td = spiffeTrustDomainOf(payload.sub);
    if (td !== null) {
      const spiffe = spiffeByDomain.get(td);
      if (spiffe) return spiffe;
      throw invalidToken("unknown_trust_domain", "token subject is in a trust domain this broker does not trust");
    }
    throw invalidToken("unknown_issuer", "token issuer is not trusted by this broker");
  }

  const cache = opts.cache;
  /** The generation of an issuer's keys, or null while a refresh of them is due (no cache use). */
  const generationOf = (issuer: string) => {
    const ks = opts.keySets.get(issuer);
    return ks && !ks.refreshDue() ? ks.generation() : null;
  };

  async function verify(token: string, use: TokenUse = "workloads"): Promise<Identity> {
    if (cache && token.length <= MAX_TOKEN_BYTES) {
      const key = cache.key(token);
      const hit = cache.get(key, use, now(), generationOf);
      if (hit) return hit;
      const identity = await verifyFully(token, use);
      const issuer = opts.issuers.find((i) => i.name === identity.issuer);
      const generation = generationOf(identity.issuer);
      // Never single-use tokens: their jti is claimed on every presentation.
      if (issuer && !issuer.single_use && generation !== null) cache.set(key, use, identity, generation);
      return identity;
    }
    return verifyFully(token, use);
  }

  async function verifyFully(token: string, use: TokenUse): Promise<Identity> {
    shapeCheck(token);
    let header: ReturnType<typeof decodeProtectedHeader>;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
      unverified = decodeJwt(token);
    } catch {
      throw invalidToken("malformed", "token header or payload is not valid JSON");
    }
    const alg = header.alg;
    if (typeof alg !== "string") throw invalidToken("malformed", "token has no alg");
    if (alg.toLowerCase() === "none") throw invalidToken("alg_none", "unsigned tokens (alg none) are never accepted");
    for (const h of KEY_REFERENCE_HEADERS) {
      if (h in header) throw invalidToken("key_reference_header", `tokens carrying a ${h} header are not accepted`);
    }
    const issuer = route(unverified);
    // A person's ID token never authenticates a workload, and a workload token is no ID token.
    if (issuer.use !== use) {
      throw invalidToken(
        use === "workloads" ? "users_token" : "not_a_users_token",
        use === "workloads" ? `issuer ${issuer.name} issues tokens of people (use: users), not workload tokens` : `issuer ${issuer.name} does not issue tokens of people (use: users)`,
      );
    }
    if (!issuer.algorithms.includes(alg)) throw invalidToken("alg_not_allowed", `the token's algorithm is not among those allowed for issuer ${issuer.name} (${issuer.algorithms.join(", ")})`);
    const keySet = opts.keySets.get(issuer.name);
    if (!keySet) throw new BrokerError("internal", `no key set for issuer ${issuer.name}`);

    const nowMs = now();
    const skewSec = Math.floor(issuer.clock_skew / 1000);
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keySet.getKey, {
        algorithms: issuer.algorithms,
        issuer: issuer.type === "oidc" ? issuer.issuer : undefined,
        audience: issuer.audience ?? opts.audience,
        clockTolerance: skewSec,
        requiredClaims: ["exp"],
        currentDate: new Date(nowMs),
      }));
    } catch (e) {
      throw mapJoseError(e);
    }

    const nowSec = Math.floor(nowMs / 1000);
    const exp = payload.exp!;
    if (payload.iat !== undefined && payload.iat > nowSec + skewSec) throw invalidToken("issued_in_future", "token iat is in the future");
    const start = payload.iat ?? payload.nbf ?? nowSec;
    const maxLifetime = Math.floor(issuer.max_token_lifetime / 1000);
    if (exp - start > maxLifetime || exp - nowSec > maxLifetime) {
      throw invalidToken("lifetime_too_long", `token lifetime exceeds ${maxLifetime}s allowed for issuer ${issuer.name}`);
    }
    if (typeof payload.sub !== "string" || payload.sub === "") throw invalidToken("missing_sub", "token has no sub");
    if (issuer.type === "spiffe") {
      const id = parseSpiffeId(payload.sub);
      if (!id || id.trustDomain !== issuer.trust_domain) throw invalidToken("invalid_spiffe_id", "sub is not a SPIFFE ID of the issuer's trust domain");
    }
    if (issuer.single_use) {
      if (typeof payload.jti !== "string" || payload.jti === "" || payload.jti.length > 256) {
        throw invalidToken("missing_jti", `issuer ${issuer.name} requires single-use tokens with a jti`);
      }
      const first = await opts.replayGuard.claim(issuer.name, payload.jti, (exp + skewSec) * 1000);
      if (!first) throw invalidToken("replayed_jti", "token was already used (single-use issuer)");
    }
    return {
      issuer: issuer.name,
      kind: issuer.type,
      iss: typeof payload.iss === "string" ? payload.iss : undefined,
      subject: payload.sub,
      claims: payload,
      jti: typeof payload.jti === "string" ? payload.jti : undefined,
      expiresAt: exp * 1000,
    };
  }

  return { verify };
}
