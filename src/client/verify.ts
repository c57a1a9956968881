/**
 * Checking a broker credential at a resource server (an MCP tool server, any API), on Node's own
 * crypto:
 *
 *   import { verifyCredential } from "jitbroker/client";
 *   const cred = await verifyCredential(bearer, { broker: "https://jitbroker.internal", resource: "https://orders.internal" });
 *   // cred.sub, cred.act (the chain of agents), cred.scope, cred.task_id
 *
 * What is checked: a compact JWS, `alg` ES256 and `typ` at+jwt (nothing else is ever issued),
 * no key-reference header, the key chosen by `kid` from the broker's JWKS (cached for
 * `jwksMaxAgeMs`; an unknown kid refreshes it at most once per `jwksCooldownMs`), the signature,
 * `iss` equal to the broker's issuer (from its RFC 8414 metadata unless given), `aud` containing
 * `resource` (RFC 8707: a token bound to another resource is refused), `exp` in the future and
 * `nbf`/`iat` not ahead of the clock by more than `clockSkewSeconds`. With `introspect` (a
 * `BrokerClient` of the resource server's own workload), the broker is also asked whether the
 * lease is still active, the answer kept `introspectionCacheMs` (default 5 s): a revoked chain
 * is then refused within that time instead of at `exp`.
 */
import { createHash, createPublicKey, verify as verifySignature, type KeyObject } from "node:crypto";
import type { BrokerClient } from "./client";
import { CredentialRejectedError } from "./errors";

export interface VerifyOptions {
  /** The broker's base URL (where /.well-known/jwks.json is served). */
  broker: string;
  /** This resource server's identifier: the token's `aud` must contain it. */
  resource: string;
  /** The broker's `iss` (server.public_url); default: read from /.well-known/oauth-authorization-server. */
  issuer?: string;
  /** Also ask the broker whether the lease is active (revocation before `exp`). */
  introspect?: BrokerClient;
  introspectionCacheMs?: number;
  jwksMaxAgeMs?: number;
  jwksCooldownMs?: number;
  clockSkewSeconds?: number;
  fetch?: typeof fetch;
  now?: () => number;
}

export interface ActClaim {
  sub: string;
  act?: ActClaim;
}

/** The claims of an accepted broker credential. */
export interface VerifiedCredential {
  iss: string;
  /** The chain's subject: the workload that got the root credential, or the person it acts for. */
  sub: string;
  /** The agents that acted, outermost = the one presenting the token (RFC 8693). */
  act?: ActClaim;
  aud: string | string[];
  scope?: string;
  task_id: string;
  /** The lease id. */
  jti: string;
  exp: number;
  iat: number;
  [claim: string]: unknown;
}

export interface CredentialVerifier {
  verify(token: string): Promise<VerifiedCredential>;
}

interface Jwk {
  kty?: string;
  crv?: string;
  x?: string;
  y?: string;
  kid?: string;
}

const COMPACT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const reject = (reason: string, message: string): never => {
  throw new CredentialRejectedError(reason, message);
};

function part<T>(b64: string, what: string): T {
  try {
    const v = JSON.parse(Buffer.from(b64, "base64url").toString("utf8")) as unknown;
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
    return v as T;
  } catch {
    return reject("malformed", `the token's ${what} is not a JSON object`);
  }
}

export function createCredentialVerifier(opts: VerifyOptions): CredentialVerifier {
  const base = opts.broker.replace(/\/+$/, "");
  const doFetch = opts.fetch ?? fetch;
  const now = opts.now ?? Date.now;
  const skew = opts.clockSkewSeconds ?? 5;
  const maxAge = opts.jwksMaxAgeMs ?? 300_000;
  const cooldown = opts.jwksCooldownMs ?? 30_000;
  const cacheMs = opts.introspectionCacheMs ?? 5000;
  let keys = new Map<string, KeyObject>();
  let loadedAt = -Infinity;
  let loading: Promise<void> | null = null;
  let issuer: string | undefined = opts.issuer;
  const introspected = new Map<string, { active: boolean; until: number }>();

  async function getJson(path: string): Promise<unknown> {
    const res = await doFetch(`${base}${path}`, { headers: { accept: "application/json" }, signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new CredentialRejectedError("broker_unavailable", `the broker answered ${res.status} for ${path}`);
    return res.json();
  }

  function loadKeys(): Promise<void> {
    loading ??= (async () => {
      try {
        const doc = (await getJson("/.well-known/jwks.json")) as { keys?: Jwk[] };
        const next = new Map<string, KeyObject>();
        for (const jwk of doc.keys ?? []) {
          if (typeof jwk.kid !== "string" || jwk.kty !== "EC" || jwk.crv !== "P-256") continue;
          next.set(jwk.kid, createPublicKey({ key: { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y }, format: "jwk" }));
        }
        keys = next;
        loadedAt = now();
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  async function keyFor(kid: string): Promise<KeyObject> {
    if (now() - loadedAt > maxAge) await loadKeys();
    let key = keys.get(kid);
    if (!key && now() - loadedAt > cooldown) {
      await loadKeys();
      key = keys.get(kid);
    }
    return key ?? reject("unknown_kid", "no key of the broker matches the token's kid");
  }

  async function issuerOf(): Promise<string> {
    if (issuer === undefined) {
      const meta = (await getJson("/.well-known/oauth-authorization-server")) as { issuer?: unknown };
      if (typeof meta.issuer !== "string") reject("broker_unavailable", "the broker's metadata has no issuer");
      issuer = meta.issuer as string;
    }
    return issuer;
  }

  return {
    async verify(token: string): Promise<VerifiedCredential> {
      if (typeof token !== "string" || token.length > 8192 || !COMPACT.test(token)) reject("malformed", "not a compact JWS");
      const [h, p, s] = token.split(".") as [string, string, string];
      const header = part<Record<string, unknown>>(h, "header");
      if (header.alg !== "ES256") reject("alg_not_allowed", "broker credentials are ES256");
      if (header.typ !== "at+jwt") reject("wrong_type", "not a broker access token (typ at+jwt)");
      for (const k of ["jku", "x5u", "jwk", "x5c"]) if (k in header) reject("key_reference_header", `tokens carrying a ${k} header are not accepted`);
      if (typeof header.kid !== "string") reject("unknown_kid", "the token has no kid");
      const key = await keyFor(header.kid as string);
      const ok = verifySignature("sha256", Buffer.from(`${h}.${p}`), { key, dsaEncoding: "ieee-p1363" }, Buffer.from(s, "base64url"));
      if (!ok) reject("bad_signature", "signature verification failed");
      const c = part<VerifiedCredential>(p, "payload");
      if (c.iss !== (await issuerOf())) reject("bad_issuer", "the token was not issued by this broker");
      const aud = Array.isArray(c.aud) ? c.aud : [c.aud];
      if (!aud.includes(opts.resource)) reject("wrong_resource", `the token is not bound to ${opts.resource}`);
      const t = Math.floor(now() / 1000);
      if (typeof c.exp !== "number" || c.exp <= t) reject("expired", "the token has expired");
      if (typeof c.nbf === "number" && c.nbf > t + skew) reject("not_yet_valid", "the token is not valid yet");
      if (typeof c.iat === "number" && c.iat > t + skew) reject("issued_in_future", "the token's iat is in the future");
      if (typeof c.sub !== "string" || typeof c.jti !== "string") reject("malformed", "the token has no sub or jti");
      if (opts.introspect) {
        const id = createHash("sha256").update(token).digest("base64url");
        let hit = introspected.get(id);
        if (!hit || hit.until <= now()) {
          const r = await opts.introspect.introspect(token, opts.resource);
          hit = { active: r.active, until: now() + cacheMs };
          introspected.set(id, hit);
          if (introspected.size > 10_000) for (const [k, v] of introspected) if (v.until <= now()) introspected.delete(k);
        }
        if (!hit.active) reject("inactive", "the broker says the credential is no longer active (revoked)");
      }
      return c;
    },
  };
}

const plain = new Map<string, CredentialVerifier>();
const byClient = new WeakMap<BrokerClient, Map<string, CredentialVerifier>>();

/**
 * Verifies a broker credential for `resource` (see the module comment). Keeps one verifier (its
 * JWKS and introspection caches) per broker, resource, issuer and introspecting client.
 */
export function verifyCredential(token: string, opts: VerifyOptions): Promise<VerifiedCredential> {
  if (opts.fetch || opts.now) return createCredentialVerifier(opts).verify(token);
  const id = JSON.stringify([opts.broker, opts.resource, opts.issuer ?? null, opts.introspectionCacheMs ?? null]);
  let cache = plain;
  if (opts.introspect) {
    cache = byClient.get(opts.introspect) ?? new Map();
    byClient.set(opts.introspect, cache);
  }
  let v = cache.get(id);
  if (!v) cache.set(id, (v = createCredentialVerifier(opts)));
  return v.verify(token);
}
