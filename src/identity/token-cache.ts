/**
 * A bounded cache of verified workload tokens (docs/ARCHITECTURE.md, Request path), so a workload
 * that presents the same token on every call pays for its signature check once.
 *
 * What keeps it safe:
 *   - Keyed by SHA-256 of the whole compact token (header, payload and signature), never by the
 *     token itself (no secret is kept in memory longer than a request) and never by its claims:
 *     a different token with the same claims (another signature, a forged one) is a miss and
 *     is verified from scratch.
 *   - An entry never outlives the token's `exp` (a hit needs now < exp, without the clock skew
 *     the full check tolerates).
 *   - An entry is bound to the generation of its issuer's key set: when a refresh of the set
 *     changes its keys (rotation, a key withdrawn), every entry of that issuer is dropped; and
 *     while a periodic refresh of the set is due, entries are not used, so the full check runs
 *     and performs the refresh (a withdrawn key is noticed exactly as without the cache).
 *   - Tokens of single-use issuers are never cached: their `jti` must be claimed every time.
 *   - Only successful verifications are stored; a refusal is never cached.
 *   - Least recently used entries are evicted beyond `maxEntries` (0 turns the cache off).
 */
import { hash } from "node:crypto";
import type { Identity, TokenUse } from "./verify";

interface Entry {
  identity: Identity;
  use: TokenUse;
  /** The key-set generation it was verified under. */
  generation: number;
  /** `exp` in ms: no hit at or after it. */
  expiresAt: number;
}

export interface TokenCacheStats {
  hits: number;
  misses: number;
  entries: number;
}

export interface VerifiedTokenCache {
  /** The digest a token is known by. */
  key(token: string): string;
  /**
   * The cached identity, if present, unexpired, of `use`, and verified under the current
   * generation of its issuer's keys (`generationOf` answers null while a refresh is due).
   */
  get(key: string, use: TokenUse, nowMs: number, generationOf: (issuer: string) => number | null): Identity | undefined;
  set(key: string, use: TokenUse, identity: Identity, generation: number): void;
  /** Drops every entry of one issuer (its key set changed). */
  dropIssuer(issuer: string): void;
  stats(): TokenCacheStats;
}

/** Freezes a verified identity so no caller can change what later hits return. */
function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === "object" && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as Record<string, unknown>)) deepFreeze(x);
  }
  return v;
}

export function createVerifiedTokenCache(maxEntries: number): VerifiedTokenCache {
  // A Map iterates in insertion order: re-inserting on a hit keeps the least recently used first.
  const entries = new Map<string, Entry>();
  let hits = 0;
  let misses = 0;

  function dropIssuer(issuer: string): void {
    for (const [k, e] of entries) if (e.identity.issuer === issuer) entries.delete(k);
  }

  return {
    // One-shot digest (crypto.hash): no Hash object per token.
    key: (token) => hash("sha256", token, "base64url"),

    get(key, use, nowMs, generationOf) {
      if (maxEntries <= 0) return undefined;
      const e = entries.get(key);
      if (!e) {
        misses++;
        return undefined;
      }
      const generation = generationOf(e.identity.issuer);
      if (generation === null) {
        // A refresh of the issuer's keys is due: the full check runs (and refreshes).
        misses++;
        return undefined;
      }
      if (generation !== e.generation) {
        // The issuer's keys changed since (or it is no longer configured): every entry of it is stale.
        dropIssuer(e.identity.issuer);
        misses++;
        return undefined;
      }
      if (nowMs >= e.expiresAt || e.use !== use) {
        if (nowMs >= e.expiresAt) entries.delete(key);
        misses++;
        return undefined;
      }
      entries.delete(key);
      entries.set(key, e);
      hits++;
      return e.identity;
    },

    set(key, use, identity, generation) {
      if (maxEntries <= 0) return;
      entries.delete(key);
      entries.set(key, { identity: deepFreeze(identity), use, generation, expiresAt: identity.expiresAt });
      while (entries.size > maxEntries) entries.delete(entries.keys().next().value!);
    },

    dropIssuer,
    stats: () => ({ hits, misses, entries: entries.size }),
  };
}
