/**
 * The verified-token cache (src/identity/token-cache.ts) in front of the real verifier and a real
 * key set read from a file. Each test names the attack or mistake it stops: a cached answer must
 * never accept what the full check would refuse.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";
import type { IssuerConfig } from "../../src/config/schema";
import { createKeySet, type KeySet } from "../../src/identity/keyset";
import { createVerifiedTokenCache, type VerifiedTokenCache } from "../../src/identity/token-cache";
import { createTokenVerifier, type ReplayGuard, type TokenVerifier } from "../../src/identity/verify";

const ISS = "https://idp.cache.test";
const AUD = "jitbroker";

interface Key {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}
async function makeKey(kid: string): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" } };
}

let clock = Date.now();
const now = () => clock;
const sec = () => Math.floor(clock / 1000);

function sign(key: Key, claims: Record<string, unknown> = {}, over: { sub?: string; exp?: number; kid?: string } = {}) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "ES256", kid: over.kid ?? key.kid })
    .setIssuer(ISS)
    .setAudience(AUD)
    .setSubject(over.sub ?? "agent-1")
    .setIssuedAt(sec())
    .setExpirationTime(over.exp ?? sec() + 600)
    .sign(key.privateKey);
}

interface Setup {
  verifier: TokenVerifier;
  cache: VerifiedTokenCache;
  keySet: KeySet;
  writeKeys: (keys: Key[]) => void;
  claims: string[];
}

async function setup(keys: Key[], opts: { singleUse?: boolean; maxEntries?: number; refreshMs?: number } = {}): Promise<Setup> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "jit-token-cache-"));
  const file = path.join(dir, "jwks.json");
  const writeKeys = (ks: Key[]) => writeFileSync(file, JSON.stringify({ keys: ks.map((k) => k.jwk) }));
  writeKeys(keys);
  const keySet = createKeySet({ name: "idp", source: { kind: "file", path: file }, flavour: "oidc", refreshMs: opts.refreshMs ?? 600_000, cooldownMs: 0, now });
  await keySet.refresh();
  const issuer = {
    name: "idp",
    type: "oidc",
    issuer: ISS,
    jwks_file: file,
    algorithms: ["ES256"],
    clock_skew: 0,
    max_token_lifetime: 3600_000,
    single_use: opts.singleUse ?? false,
    jwks_refresh: opts.refreshMs ?? 600_000,
    jwks_cooldown: 0,
    use: "workloads",
  } as unknown as IssuerConfig;
  const claims: string[] = [];
  const seen = new Set<string>();
  const replayGuard: ReplayGuard = {
    claim: async (_iss, jti) => {
      claims.push(jti);
      if (seen.has(jti)) return false;
      seen.add(jti);
      return true;
    },
  };
  const cache = createVerifiedTokenCache(opts.maxEntries ?? 100);
  const verifier = createTokenVerifier({ issuers: [issuer], keySets: new Map([["idp", keySet]]), audience: AUD, replayGuard, cache, now });
  return { verifier, cache, keySet, writeKeys, claims };
}

const code = (p: Promise<unknown>) =>
  p.then(
    () => "accepted",
    (e: { code?: string; reason?: string }) => `${e.code}:${e.reason ?? ""}`,
  );

beforeEach(() => {
  clock = Date.now();
});

describe("verified-token cache", () => {
  it("answers a token presented again from the cache, with the same (frozen) identity", async () => {
    const k = await makeKey("k1");
    const s = await setup([k]);
    const t = await sign(k);
    const first = await s.verifier.verify(t);
    const again = await s.verifier.verify(t);
    expect(again).toBe(first);
    expect(s.cache.stats()).toMatchObject({ hits: 1, misses: 1, entries: 1 });
    expect(Object.isFrozen(again) && Object.isFrozen(again.claims)).toBe(true);
  });

  it("a forged token carrying exactly the claims of a cached one is not a hit (keyed by the whole token)", async () => {
    const k = await makeKey("k1");
    const attacker = await makeKey("k1"); // same kid, another private key
    const s = await setup([k]);
    const good = await sign(k);
    await s.verifier.verify(good);
    const [h, p] = good.split(".");
    // Same header and payload, the attacker's signature; and the good signature cut short.
    const forged = `${h}.${p}.${(await sign(attacker)).split(".")[2]}`;
    expect(await code(s.verifier.verify(forged))).toBe("invalid_token:bad_signature");
    expect(await code(s.verifier.verify(`${h}.${p}.${good.split(".")[2]!.slice(0, -4)}`))).toMatch(/^invalid_token:/);
    expect(s.cache.stats().hits).toBe(0);
  });

  it("never serves a token at or after its exp, even though the entry is still in the cache", async () => {
    const k = await makeKey("k1");
    const s = await setup([k]);
    const t = await sign(k, {}, { exp: sec() + 5 });
    await s.verifier.verify(t);
    expect(await code(s.verifier.verify(t))).toBe("accepted");
    clock = (sec() + 6) * 1000;
    expect(await code(s.verifier.verify(t))).toBe("token_expired:expired");
    expect(s.cache.stats()).toMatchObject({ hits: 1, entries: 0 });
  });

  it("drops the entries of an issuer whose keys changed (rotation: the signing key withdrawn)", async () => {
    const k1 = await makeKey("k1");
    const k2 = await makeKey("k2");
    const s = await setup([k1]);
    const t = await sign(k1);
    await s.verifier.verify(t);
    const before = s.keySet.generation();
    s.writeKeys([k2]);
    await s.keySet.refresh();
    expect(s.keySet.generation()).toBe(before + 1);
    expect(await code(s.verifier.verify(t))).toBe("invalid_token:unknown_kid");
    expect(s.cache.stats()).toMatchObject({ hits: 0, entries: 0 });
    // A reload with the same keys keeps the generation: entries stay valid.
    const t2 = await sign(k2);
    await s.verifier.verify(t2);
    await s.keySet.refresh();
    expect(await code(s.verifier.verify(t2))).toBe("accepted");
    expect(s.cache.stats().hits).toBe(1);
  });

  it("does not answer from the cache while the periodic key refresh is due: the full check refreshes and sees a withdrawn key", async () => {
    const k1 = await makeKey("k1");
    const k2 = await makeKey("k2");
    const s = await setup([k1], { refreshMs: 60_000 });
    const t = await sign(k1, {}, { exp: sec() + 3000 });
    await s.verifier.verify(t);
    s.writeKeys([k2]); // the issuer withdrew k1; nobody told the broker
    clock += 61_000;
    expect(await code(s.verifier.verify(t))).toBe("invalid_token:unknown_kid");
    expect(s.cache.stats().hits).toBe(0);
  });

  it("never caches a single-use token: its jti is claimed, and refused, on every presentation", async () => {
    const k = await makeKey("k1");
    const s = await setup([k], { singleUse: true });
    const t = await sign(k, { jti: "once" });
    expect(await code(s.verifier.verify(t))).toBe("accepted");
    expect(await code(s.verifier.verify(t))).toBe("invalid_token:replayed_jti");
    expect(s.claims).toEqual(["once", "once"]);
    expect(s.cache.stats().entries).toBe(0);
  });

  it("a workload token cached for workloads is not an answer when presented as a person's ID token", async () => {
    const k = await makeKey("k1");
    const s = await setup([k]);
    const t = await sign(k);
    await s.verifier.verify(t, "workloads");
    expect(await code(s.verifier.verify(t, "users"))).toBe("invalid_token:not_a_users_token");
  });

  it("is bounded: the least recently used entry goes first; max_entries 0 caches nothing", async () => {
    const k = await makeKey("k1");
    const s = await setup([k], { maxEntries: 2 });
    const [a, b, c] = await Promise.all(["a", "b", "c"].map((sub) => sign(k, {}, { sub })));
    await s.verifier.verify(a!);
    await s.verifier.verify(b!);
    await s.verifier.verify(a!); // a is now the most recent
    await s.verifier.verify(c!); // evicts b
    expect(s.cache.stats()).toMatchObject({ entries: 2, hits: 1 });
    await s.verifier.verify(a!);
    expect(s.cache.stats().hits).toBe(2);
    await s.verifier.verify(b!);
    expect(s.cache.stats().hits).toBe(2);

    const off = await setup([k], { maxEntries: 0 });
    await off.verifier.verify(a!);
    await off.verifier.verify(a!);
    expect(off.cache.stats()).toMatchObject({ hits: 0, entries: 0 });
  });

  it("keeps no token in memory, only its SHA-256", async () => {
    const k = await makeKey("k1");
    const s = await setup([k]);
    const t = await sign(k);
    expect(s.cache.key(t)).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(s.cache.key(t)).not.toContain(t.slice(0, 20));
  });
});
