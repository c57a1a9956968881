/**
 * Key sets of trusted issuers. One `KeySet` per configured issuer, loaded from exactly the
 * source the configuration names (a file, a JWKS URL, OIDC discovery, a SPIFFE bundle) and
 * never from anything a token says.
 *
 * - Keys are cached; the set is re-read every `refreshMs` (a failed periodic refresh keeps the
 *   last good keys: a briefly unreachable issuer does not lock everyone out).
 * - An unknown `kid` causes at most one refresh per `cooldownMs`, so a flood of tokens with
 *   random kids cannot make the broker hammer the issuer.
 * - Concurrent refreshes share one in-flight request.
 * - Only public asymmetric signature keys survive normalisation: `oct` keys, encryption keys and
 *   any private members are dropped. For SPIFFE bundles only `use: "jwt-svid"` keys are kept.
 */
import { readFile } from "node:fs/promises";
import { createLocalJWKSet, errors as joseErrors, type JWK, type JWTHeaderParameters, type FlattenedJWSInput, type CryptoKey, type KeyObject } from "jose";
import { BrokerError } from "../core/errors";

export type KeySource =
  | { kind: "file"; path: string }
  | { kind: "url"; url: string }
  | { kind: "discovery"; issuer: string };

export interface KeySetOptions {
  /** Issuer name, for messages and metrics. */
  name: string;
  source: KeySource;
  /** "oidc" keeps signature keys; "spiffe" keeps only `use: jwt-svid` keys. */
  flavour: "oidc" | "spiffe";
  refreshMs: number;
  cooldownMs: number;
  now?: () => number;
  fetchTimeoutMs?: number;
  /** Called after each load attempt (for metrics). */
  onLoad?: (result: "ok" | "error", reason?: string) => void;
}

export interface KeySetStatus {
  name: string;
  keys: number;
  loaded_at: string | null;
  last_error: string | null;
}

export interface KeySet {
  /** Resolves the verification key for a token (jose `JWTVerifyGetKey`). */
  getKey(header: JWTHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey | KeyObject | Uint8Array>;
  /** Loads the set now (used at start-up and by tests). */
  refresh(): Promise<void>;
  status(): KeySetStatus;
  /**
   * Changes whenever a load brings keys different from the ones before (rotation, a key
   * withdrawn): what was verified under an older generation must be verified again.
   */
  generation(): number;
  /** True when never loaded, or when the periodic refresh is due (the next getKey would refresh). */
  refreshDue(): boolean;
}

const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] as const;
const MAX_DOCUMENT_BYTES = 1024 * 1024;
const ASYMMETRIC_KTY = new Set(["RSA", "EC", "OKP"]);

/** Keeps public signature keys only; for SPIFFE, keys whose `use` is `jwt-svid`. */
export function normaliseKeys(doc: unknown, flavour: "oidc" | "spiffe"): JWK[] {
  if (doc === null || typeof doc !== "object" || !Array.isArray((doc as { keys?: unknown }).keys)) {
    throw new Error("not a JWK set (no keys array)");
  }
  const out: JWK[] = [];
  for (const raw of (doc as { keys: unknown[] }).keys) {
    if (raw === null || typeof raw !== "object") continue;
    const jwk = { ...(raw as JWK) };
    if (typeof jwk.kty !== "string" || !ASYMMETRIC_KTY.has(jwk.kty)) continue;
    if (flavour === "spiffe") {
      if (jwk.use !== "jwt-svid") continue;
      jwk.use = "sig";
    } else if (jwk.use !== undefined && jwk.use !== "sig") {
      continue;
    }
    for (const m of PRIVATE_MEMBERS) delete (jwk as Record<string, unknown>)[m];
    delete jwk.x5c; // certificates are not needed to verify a JWT and are never trusted as keys
    out.push(jwk);
  }
  return out;
}

async function fetchJson(url: string, timeoutMs: number): Promise<unknown> {
  const res = await fetch(url, {
    redirect: "error",
    signal: AbortSignal.timeout(timeoutMs),
    headers: { accept: "application/json, application/jwk-set+json" },
  });
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  const len = Number(res.headers.get("content-length") ?? "0");
  if (len > MAX_DOCUMENT_BYTES) throw new Error(`GET ${url}: document too large`);
  // Read at most MAX_DOCUMENT_BYTES even without (or with a lying) Content-Length.
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (res.body) {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.byteLength;
      if (size > MAX_DOCUMENT_BYTES) {
        await res.body.cancel().catch(() => undefined);
        throw new Error(`GET ${url}: document too large`);
      }
      chunks.push(chunk);
    }
  }
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new Error(`GET ${url}: not JSON`);
  }
}

function isAllowedKeyUrl(text: string): boolean {
  try {
    const u = new URL(text);
    return u.protocol === "https:" || (u.protocol === "http:" && ["127.0.0.1", "localhost", "[::1]"].includes(u.hostname));
  } catch {
    return false;
  }
}

async function loadDocument(source: KeySource, timeoutMs: number): Promise<unknown> {
  switch (source.kind) {
    case "file": {
      const text = await readFile(source.path, "utf8");
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new Error(`${source.path}: not JSON`);
      }
    }
    case "url":
      return fetchJson(source.url, timeoutMs);
    case "discovery": {
      const base = source.issuer.replace(/\/+$/, "");
      const meta = (await fetchJson(`${base}/.well-known/openid-configuration`, timeoutMs)) as { issuer?: unknown; jwks_uri?: unknown };
      // OpenID Connect Discovery 1.0 section 4.3: the issuer in the document must be exactly ours.
      if (meta?.issuer !== source.issuer) throw new Error(`discovery document names issuer ${JSON.stringify(meta?.issuer)}, expected ${source.issuer}`);
      if (typeof meta.jwks_uri !== "string" || !isAllowedKeyUrl(meta.jwks_uri)) {
        throw new Error("discovery document has no usable https jwks_uri");
      }
      return fetchJson(meta.jwks_uri, timeoutMs);
    }
  }
}

export function createKeySet(opts: KeySetOptions): KeySet {
  const now = opts.now ?? Date.now;
  const timeoutMs = opts.fetchTimeoutMs ?? 5000;
  let local: ReturnType<typeof createLocalJWKSet> | null = null;
  let keyCount = 0;
  let loadedAt: number | null = null;
  let lastAttempt = -Infinity;
  let lastError: string | null = null;
  let inflight: Promise<void> | null = null;
  let generation = 0;
  let loadedKeys = "";

  function refresh(): Promise<void> {
    if (inflight) return inflight;
    lastAttempt = now();
    inflight = (async () => {
      try {
        const keys = normaliseKeys(await loadDocument(opts.source, timeoutMs), opts.flavour);
        const text = JSON.stringify(keys);
        if (text !== loadedKeys) {
          loadedKeys = text;
          generation++;
        }
        local = createLocalJWKSet({ keys });
        keyCount = keys.length;
        loadedAt = now();
        lastError = null;
        opts.onLoad?.("ok");
      } catch (e) {
        lastError = (e as Error).message;
        opts.onLoad?.("error", lastError);
        throw e;
      } finally {
        inflight = null;
      }
    })();
    return inflight;
  }

  const unavailable = () =>
    new BrokerError("issuer_unavailable", `the keys of issuer ${opts.name} cannot be loaded; try again later`, { reason: "jwks_unavailable" });

  async function getKey(header: JWTHeaderParameters, token: FlattenedJWSInput) {
    if (local === null) {
      // Never loaded: one attempt per cooldown, otherwise fail closed (I7).
      if (now() - lastAttempt >= opts.cooldownMs || inflight) await refresh().catch(() => undefined);
      if (local === null) throw unavailable();
    } else if (loadedAt !== null && now() - loadedAt >= opts.refreshMs && now() - lastAttempt >= opts.cooldownMs) {
      // Periodic refresh; on failure keep serving the last good keys.
      await refresh().catch(() => undefined);
    }
    try {
      return await local!(header, token);
    } catch (e) {
      if (!(e instanceof joseErrors.JWKSNoMatchingKey)) throw e;
      if (now() - lastAttempt < opts.cooldownMs && !inflight) throw e;
      await refresh().catch(() => undefined);
      return local!(header, token);
    }
  }

  return {
    getKey,
    refresh,
    generation: () => generation,
    refreshDue: () => local === null || (loadedAt !== null && now() - loadedAt >= opts.refreshMs && now() - lastAttempt >= opts.cooldownMs),
    status: () => ({
      name: opts.name,
      keys: keyCount,
      loaded_at: loadedAt === null ? null : new Date(loadedAt).toISOString(),
      last_error: lastError,
    }),
  };
}
