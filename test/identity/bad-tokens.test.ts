/**
 * Hostile and malformed workload tokens through real HTTP (docs/ARCHITECTURE.md, Request path; a public contract).
 *
 * One broker trusts five issuers: OIDC A (discovery, RS256+ES256), OIDC B (jwks_uri), OIDC C
 * (jwks_uri, single_use), SPIFFE prod.example.org and SPIFFE other.example.org (bundle files).
 * Every bad token must get 401 with the exact problem code, a problem+json body, a request id and
 * a `WWW-Authenticate: Bearer error="invalid_token"` header; each case also checks that exactly
 * the expected `jitbroker_auth_failures_total{reason}` counter moved, so a token refused for the
 * wrong reason (say, "malformed" instead of "bad_audience") fails the test.
 */
import { createHmac, createPublicKey, randomUUID, sign as cryptoSign, type webcrypto, KeyObject } from "node:crypto";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { CompactEncrypt, FlattenedSign, GeneralSign, generateKeyPair, type JWTPayload } from "jose";
import { getJson, startTestBroker, type TestBroker } from "../support/broker";
import { startRecordingServer } from "../support/http-server";
import { makeKey, signSvid, signWith, startTestIssuer, writeSpiffeBundle, type TestIssuer, type TestKey } from "../support/oidc-issuer";

const b64u = (x: string | Buffer | Uint8Array): string => Buffer.from(x).toString("base64url");
const enc = new TextEncoder();
const nowSec = (): number => Math.floor(Date.now() / 1000);

/** A compact JWS built by hand: header and payload as given, signature as given (may be empty). */
function rawJws(header: Record<string, unknown>, payload: Record<string, unknown>, signature = ""): string {
  return `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}.${signature}`;
}

/** HS256 over header.payload with `secret` as the HMAC key: the classic RS256→HS256 confusion. */
function hs256(secret: string | Buffer, header: Record<string, unknown>, payload: Record<string, unknown>): string {
  const input = `${b64u(JSON.stringify({ alg: "HS256", typ: "JWT", ...header }))}.${b64u(JSON.stringify(payload))}`;
  return `${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`;
}

/** jose 6 makes CryptoKeys; node:crypto deprecates being handed one (DEP0203). */
const toKeyObject = (k: TestKey["privateKey"]): KeyObject => (k instanceof KeyObject ? k : KeyObject.from(k as CryptoKey));

/** ES256 signed with node:crypto, for headers jose refuses to produce. */
function es256ByHand(key: TestKey, header: Record<string, unknown>, payload: Record<string, unknown>): string {
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
  return `${input}.${b64u(cryptoSign("sha256", Buffer.from(input), { key: toKeyObject(key.privateKey), dsaEncoding: "ieee-p1363" }))}`;
}

/** A local HTTP server that must never be contacted (jku / x5u targets). */
function startTrap(body: unknown) {
  return startRecordingServer((_req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(body));
  });
}

/** `jitbroker_auth_failures_total` by reason, read from the broker's /metrics. */
async function authFailures(b: TestBroker): Promise<Record<string, number>> {
  const res = await fetch(`${b.url}/metrics`);
  expect(res.status).toBe(200);
  const out: Record<string, number> = {};
  for (const m of (await res.text()).matchAll(/^jitbroker_auth_failures_total\{reason="([^"]+)"\} (\d+(?:\.\d+)?)$/gm)) {
    out[m[1]!] = Number(m[2]);
  }
  return out;
}

function diff(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v !== (before[k] ?? 0)) out[k] = v - (before[k] ?? 0);
  return out;
}

interface BadCase {
  name: string;
  /** The bearer token; or use `authorization` for the raw header (null = no header at all). */
  token?: () => Promise<string> | string;
  authorization?: () => string | null;
  code?: "invalid_token" | "token_expired";
  /** Acceptable `reason` labels; exactly one counter must move, by one, and be in this list. */
  reasons: string[];
}

describe("hostile workload tokens are refused (docs/ARCHITECTURE.md, Request path)", () => {
  let A: TestIssuer; // oidc, discovery
  let B: TestIssuer; // oidc, jwks_uri
  let C: TestIssuer; // oidc, jwks_uri, single_use
  let prodKey: TestKey;
  let otherKey: TestKey;
  let attackerKey: TestKey;
  let trap: Awaited<ReturnType<typeof startTrap>>;
  let b: TestBroker;
  let startedAt = 0;
  /** A valid token of issuer A, presented with the wrong scheme. */
  let validA = "";
  /** Every token string presented during the suite, for the log scan. */
  const presented = new Set<string>();

  const SUB_A = "repo:acme/a";
  const SUB_B = "repo:acme/b";
  const SUB_C = "job:acme/c";
  const SVID_PROD = "spiffe://prod.example.org/agents/support";
  const SVID_OTHER = "spiffe://other.example.org/agents/x";

  const rsaA = () => A.keys.find((k) => k.alg === "RS256")!;
  const esA = () => A.keys.find((k) => k.alg === "ES256")!;
  const rsaB = () => B.keys.find((k) => k.alg === "RS256")!;
  const esB = () => B.keys.find((k) => k.alg === "ES256")!;
  /** Valid claims for issuer A (without signature). */
  const claimsA = (extra: JWTPayload = {}): JWTPayload => ({ iss: A.url, aud: "jitbroker", sub: SUB_A, iat: nowSec(), exp: nowSec() + 300, ...extra });
  /** A's RSA public key, as an attacker would download it from the issuer's JWKS. */
  const rsaPublicA = () => createPublicKey({ key: rsaA().publicJwk as webcrypto.JsonWebKey, format: "jwk" });

  beforeAll(async () => {
    [A, B, C] = await Promise.all([startTestIssuer(), startTestIssuer(), startTestIssuer()]);
    [prodKey, otherKey, attackerKey] = await Promise.all([makeKey("ES256"), makeKey("ES256"), makeKey("RS256")]);
    trap = await startTrap({ keys: [attackerKey.publicJwk] });
    const dir = mkdtempSync(path.join(os.tmpdir(), "jit-bad-tokens-"));
    writeSpiffeBundle(path.join(dir, "prod.json"), [prodKey]);
    writeSpiffeBundle(path.join(dir, "other.json"), [otherKey]);
    const common = { max_token_lifetime: "1h", clock_skew: "30s", jwks_cooldown: "30s" };
    startedAt = Date.now();
    b = await startTestBroker({
      server: { public_url: "http://127.0.0.1:8080", audience: "jitbroker" },
      identity: {
        issuers: [
          { name: "a", type: "oidc", issuer: A.url, discovery: true, algorithms: ["RS256", "ES256"], ...common },
          { name: "b", type: "oidc", issuer: B.url, jwks_uri: `${B.url}/jwks`, algorithms: ["RS256", "ES256"], ...common },
          { name: "c", type: "oidc", issuer: C.url, jwks_uri: `${C.url}/jwks`, algorithms: ["RS256", "ES256"], single_use: true, ...common },
          { name: "prod", type: "spiffe", trust_domain: "prod.example.org", bundle_file: path.join(dir, "prod.json"), ...common },
          { name: "other", type: "spiffe", trust_domain: "other.example.org", bundle_file: path.join(dir, "other.json"), ...common },
        ],
      },
      workloads: [
        { id: "wl-a", kind: "ci", owner: "a@example.com", purpose: "p", issuer: "a", subject: SUB_A },
        { id: "wl-b", kind: "ci", owner: "b@example.com", purpose: "p", issuer: "b", subject: SUB_B },
        { id: "wl-c", kind: "ci", owner: "c@example.com", purpose: "p", issuer: "c", subject: SUB_C },
        { id: "wl-prod", kind: "agent", owner: "p@example.com", purpose: "p", issuer: "prod", subject: SVID_PROD },
        { id: "wl-other", kind: "agent", owner: "o@example.com", purpose: "p", issuer: "other", subject: SVID_OTHER },
      ],
    });
    validA = await A.token({ sub: SUB_A });
  });

  afterAll(async () => {
    await b?.close();
    await Promise.all([A?.close(), B?.close(), C?.close(), trap?.close()]);
  });

  async function whoami(auth: string | null) {
    return getJson(`${b.url}/v1/whoami`, undefined, { headers: auth === null ? {} : { authorization: auth } });
  }

  async function present(token: string) {
    presented.add(token);
    return whoami(`Bearer ${token}`);
  }

  describe("valid controls are accepted", () => {
    const controls: [string, () => Promise<string>, string][] = [
      ["issuer A (discovery), RS256", () => A.token({ sub: SUB_A }, { key: rsaA() }), "wl-a"],
      ["issuer A (discovery), ES256", () => A.token({ sub: SUB_A }, { key: esA() }), "wl-a"],
      ["issuer A, aud array containing jitbroker", () => A.token({ sub: SUB_A }, { aud: ["other", "jitbroker"] }), "wl-a"],
      ["issuer A, expired 10s ago (within 30s skew)", () => A.token({ sub: SUB_A }, { iat: nowSec() - 300, exp: nowSec() - 10 }), "wl-a"],
      ["issuer A, nbf and iat 10s ahead (within skew)", () => A.token({ sub: SUB_A, nbf: nowSec() + 10 }, { iat: nowSec() + 10 }), "wl-a"],
      ["issuer A, lifetime exactly 1h", () => A.token({ sub: SUB_A }, { iat: nowSec(), exp: nowSec() + 3600 }), "wl-a"],
      ["issuer A, ES256 signed by hand (node:crypto)", async () => es256ByHand(esA(), { alg: "ES256", typ: "JWT", kid: esA().kid }, claimsA()), "wl-a"],
      ["issuer B (jwks_uri), RS256", () => B.token({ sub: SUB_B }, { key: rsaB() }), "wl-b"],
      ["issuer B (jwks_uri), ES256", () => B.token({ sub: SUB_B }, { key: esB() }), "wl-b"],
      ["issuer C (single_use) with a fresh jti", () => C.token({ sub: SUB_C, jti: randomUUID() }), "wl-c"],
      ["SPIFFE prod.example.org", () => signSvid(prodKey, SVID_PROD), "wl-prod"],
      ["SPIFFE other.example.org", () => signSvid(otherKey, SVID_OTHER), "wl-other"],
    ];
    it.each(controls)("%s → 200", async (_name, make, workload) => {
      const r = await present(await make());
      expect(r.status).toBe(200);
      expect(r.body.workload.id).toBe(workload);
    });
  });

  const cases: BadCase[] = [
    // --- alg none, in every casing, with an empty signature (and one with a bogus signature)
    ...["none", "None", "NONE", "nOnE"].map((alg): BadCase => ({
      name: `alg ${alg}, empty signature`,
      token: () => rawJws({ alg, typ: "JWT", kid: rsaA().kid }, claimsA()),
      reasons: ["alg_none"],
    })),
    ...["none", "NONE"].map((alg): BadCase => ({
      name: `alg ${alg}, junk signature`,
      token: () => rawJws({ alg, typ: "JWT", kid: rsaA().kid }, claimsA(), b64u("junk")),
      reasons: ["alg_none"],
    })),
    { name: "alg none, SPIFFE subject, empty signature", token: () => rawJws({ alg: "none" }, { sub: SVID_PROD, aud: "jitbroker", exp: nowSec() + 60 }), reasons: ["alg_none"] },

    // --- HMAC with the issuer's public key material as the secret (algorithm confusion)
    { name: "HS256 keyed with A's RSA public key (SPKI PEM)", token: () => hs256(rsaPublicA().export({ type: "spki", format: "pem" }) as string, { kid: rsaA().kid }, claimsA()), reasons: ["alg_not_allowed"] },
    { name: "HS256 keyed with A's RSA public key (PKCS#1 PEM)", token: () => hs256(rsaPublicA().export({ type: "pkcs1", format: "pem" }) as string, { kid: rsaA().kid }, claimsA()), reasons: ["alg_not_allowed"] },
    { name: "HS256 keyed with A's RSA public key (SPKI DER)", token: () => hs256(rsaPublicA().export({ type: "spki", format: "der" }), { kid: rsaA().kid }, claimsA()), reasons: ["alg_not_allowed"] },
    { name: "HS256 keyed with A's JWK n (text)", token: () => hs256(rsaA().publicJwk.n!, { kid: rsaA().kid }, claimsA()), reasons: ["alg_not_allowed"] },
    { name: "HS256 keyed with A's JWK n (bytes)", token: () => hs256(Buffer.from(rsaA().publicJwk.n!, "base64url"), { kid: rsaA().kid }, claimsA()), reasons: ["alg_not_allowed"] },
    { name: "HS256 keyed with A's JWK (JSON)", token: () => hs256(JSON.stringify(rsaA().publicJwk), { kid: rsaA().kid }, claimsA()), reasons: ["alg_not_allowed"] },
    { name: "HS512 keyed with A's SPKI PEM, no kid", token: () => {
        const payload = claimsA();
        const input = `${b64u(JSON.stringify({ alg: "HS512", typ: "JWT" }))}.${b64u(JSON.stringify(payload))}`;
        return `${input}.${createHmac("sha512", rsaPublicA().export({ type: "spki", format: "pem" }) as string).update(input).digest("base64url")}`;
      }, reasons: ["alg_not_allowed"] },
    { name: "HS256 on a SPIFFE SVID keyed with the bundle key's x", token: () => hs256(prodKey.publicJwk.x!, { kid: prodKey.kid }, { sub: SVID_PROD, aud: "jitbroker", iat: nowSec(), exp: nowSec() + 60 }), reasons: ["alg_not_allowed"] },
    { name: "PS256 (not in A's allowlist)", token: async () => signWith(await makeKey("PS256"), claimsA()), reasons: ["alg_not_allowed"] },

    // --- keys: unknown kid, another issuer's key
    { name: "unknown kid (random key)", token: async () => signWith(await makeKey("ES256"), claimsA()), reasons: ["unknown_kid"] },
    { name: "A's kid, signed by another key", token: async () => signWith({ ...(await makeKey("ES256")), kid: esA().kid }, claimsA()), reasons: ["bad_signature"] },
    { name: "B's key and kid, iss A", token: () => signWith(esB(), claimsA()), reasons: ["unknown_kid"] },
    { name: "B's key with A's kid, iss A", token: () => signWith({ ...esB(), kid: esA().kid }, claimsA()), reasons: ["bad_signature"] },
    { name: "A's key and kid, iss B", token: () => signWith(rsaA(), { ...claimsA(), iss: B.url, sub: SUB_B }), reasons: ["unknown_kid"] },
    { name: "A's key with B's kid, iss B", token: () => signWith({ ...rsaA(), kid: rsaB().kid }, { ...claimsA(), iss: B.url, sub: SUB_B }), reasons: ["bad_signature"] },
    { name: "A's key, iss C (single-use issuer)", token: () => signWith(rsaA(), { ...claimsA(), iss: C.url, sub: SUB_C, jti: randomUUID() }), reasons: ["unknown_kid"] },

    // --- key-reference headers: never followed
    { name: "jku header pointing at a local JWKS", token: () => signWith(attackerKey, claimsA(), { jku: `${trap.url}/jwks.json` }), reasons: ["key_reference_header"] },
    { name: "jku header, A's kid, attacker key", token: () => signWith({ ...attackerKey, kid: rsaA().kid }, claimsA(), { jku: `${trap.url}/jwks.json` }), reasons: ["key_reference_header"] },
    { name: "x5u header pointing at a local URL", token: () => signWith(attackerKey, claimsA(), { x5u: `${trap.url}/cert.pem` }), reasons: ["key_reference_header"] },
    { name: "embedded jwk header (attacker's own key)", token: () => signWith(attackerKey, claimsA(), { jwk: { kty: attackerKey.publicJwk.kty, n: attackerKey.publicJwk.n, e: attackerKey.publicJwk.e } }), reasons: ["key_reference_header"] },
    { name: "embedded x5c header", token: () => {
        const der = createPublicKey({ key: attackerKey.publicJwk as webcrypto.JsonWebKey, format: "jwk" }).export({ type: "spki", format: "der" });
        return signWith(attackerKey, claimsA(), { x5c: [der.toString("base64")] });
      }, reasons: ["key_reference_header"] },
    { name: "jku header on a SPIFFE SVID", token: () => signWith(attackerKey, { sub: SVID_PROD, aud: "jitbroker", iat: nowSec(), exp: nowSec() + 60 }, { jku: `${trap.url}/bundle` }), reasons: ["key_reference_header"] },

    // --- audience and issuer
    { name: "wrong aud", token: () => A.token({ sub: SUB_A }, { aud: "someone-else" }), reasons: ["bad_audience"] },
    { name: "aud differing only in case", token: () => A.token({ sub: SUB_A }, { aud: "JITBROKER" }), reasons: ["bad_audience"] },
    { name: "missing aud", token: () => A.token({ sub: SUB_A }, { aud: undefined }), reasons: ["bad_audience"] },
    { name: "aud array without jitbroker", token: () => A.token({ sub: SUB_A }, { aud: ["a", "b", "jitbroker2"] }), reasons: ["bad_audience"] },
    { name: "empty aud array", token: () => A.token({ sub: SUB_A }, { aud: [] }), reasons: ["bad_audience"] },
    { name: "SVID with wrong aud", token: () => signSvid(prodKey, SVID_PROD, { aud: "other" }), reasons: ["bad_audience"] },
    { name: "unknown iss", token: () => A.token({ sub: SUB_A }, { iss: "https://evil.example.com" }), reasons: ["unknown_issuer"] },
    { name: "iss with a trailing slash", token: () => A.token({ sub: SUB_A }, { iss: `${A.url}/` }), reasons: ["unknown_issuer"] },
    { name: "missing iss (not a SPIFFE sub)", token: () => A.token({ sub: SUB_A }, { iss: undefined }), reasons: ["unknown_issuer"] },

    // --- time
    { name: "expired 2 minutes ago", code: "token_expired", token: () => A.token({ sub: SUB_A }, { iat: nowSec() - 600, exp: nowSec() - 120 }), reasons: ["expired"] },
    { name: "expired SVID", code: "token_expired", token: () => signSvid(prodKey, SVID_PROD, { iat: nowSec() - 600, exp: nowSec() - 120 }), reasons: ["expired"] },
    { name: "nbf 2 minutes ahead", token: () => A.token({ sub: SUB_A, nbf: nowSec() + 120 }), reasons: ["not_yet_valid"] },
    { name: "iat 2 minutes ahead", token: () => A.token({ sub: SUB_A }, { iat: nowSec() + 120, exp: nowSec() + 300 }), reasons: ["issued_in_future"] },
    { name: "lifetime 2h (iat now, exp now+2h)", token: () => A.token({ sub: SUB_A }, { iat: nowSec(), exp: nowSec() + 7200 }), reasons: ["lifetime_too_long"] },
    { name: "lifetime 2h without iat", token: () => A.token({ sub: SUB_A }, { iat: undefined, exp: nowSec() + 7200 }), reasons: ["lifetime_too_long"] },
    { name: "iat 10h ago, exp in 5 minutes", token: () => A.token({ sub: SUB_A }, { iat: nowSec() - 36000, exp: nowSec() + 300 }), reasons: ["lifetime_too_long"] },
    { name: "exp more than 1h from now (iat 25s ahead, within skew; exp = iat + 1h)", token: () => A.token({ sub: SUB_A }, { iat: nowSec() + 25, exp: nowSec() + 25 + 3600 }), reasons: ["lifetime_too_long"] },
    { name: "missing exp", token: () => A.token({ sub: SUB_A }, { exp: undefined }), reasons: ["missing_exp"] },
    { name: "exp as a string", token: () => signWith(esA(), { ...claimsA(), exp: String(nowSec() + 300) } as unknown as JWTPayload), reasons: ["missing_exp"] },
    { name: "SVID lifetime 2h", token: () => signSvid(prodKey, SVID_PROD, { iat: nowSec(), exp: nowSec() + 7200 }), reasons: ["lifetime_too_long"] },

    // --- serialisations other than compact JWS
    { name: "JWE (RSA-OAEP-256, 5 parts)", token: async () => {
        const inner = await A.token({ sub: SUB_A });
        const { publicKey } = await generateKeyPair("RSA-OAEP-256");
        const jwe = await new CompactEncrypt(enc.encode(inner)).setProtectedHeader({ alg: "RSA-OAEP-256", enc: "A256GCM", cty: "JWT" }).encrypt(publicKey);
        expect(jwe.split(".")).toHaveLength(5);
        return jwe;
      }, reasons: ["jwe"] },
    { name: "JWE (dir, empty encrypted key)", token: async () => {
        const inner = await A.token({ sub: SUB_A });
        return new CompactEncrypt(enc.encode(inner)).setProtectedHeader({ alg: "dir", enc: "A256GCM", cty: "JWT" }).encrypt(new Uint8Array(32).fill(7));
      }, reasons: ["jwe"] },
    { name: "JWS JSON serialization (flattened), validly signed", token: async () => {
        const jws = await new FlattenedSign(enc.encode(JSON.stringify(claimsA()))).setProtectedHeader({ alg: "ES256", kid: esA().kid }).sign(esA().privateKey);
        return JSON.stringify(jws);
      }, reasons: ["json_serialization"] },
    { name: "JWS JSON serialization (general), validly signed", token: async () => {
        const jws = await new GeneralSign(enc.encode(JSON.stringify(claimsA()))).addSignature(esA().privateKey).setProtectedHeader({ alg: "ES256", kid: esA().kid }).done().sign();
        return JSON.stringify(jws);
      }, reasons: ["json_serialization"] },

    // --- garbage
    { name: "empty token (\"Bearer \")", authorization: () => "Bearer ", reasons: ["missing_token"] },
    { name: "abc", token: () => "abc", reasons: ["malformed"] },
    { name: "a.b", token: () => "a.b", reasons: ["malformed"] },
    { name: "a.b.c", token: () => "a.b.c", reasons: ["malformed"] },
    { name: "a..c", token: () => "a..c", reasons: ["malformed"] },
    { name: "....", token: () => "....", reasons: ["malformed", "jwe"] },
    { name: "base64 of non-JSON header", token: () => `${b64u("not json")}.${b64u(JSON.stringify(claimsA()))}.${b64u("sig")}`, reasons: ["malformed"] },
    { name: "base64 of non-JSON payload", token: () => `${b64u(JSON.stringify({ alg: "ES256", kid: esA().kid }))}.${b64u("not json")}.${b64u("sig")}`, reasons: ["malformed"] },
    { name: "JSON array payload", token: () => `${b64u(JSON.stringify({ alg: "ES256", kid: esA().kid }))}.${b64u("[1,2]")}.${b64u("sig")}`, reasons: ["malformed"] },
    { name: "unencoded payload (b64: false, crit b64), validly signed", token: () =>
        // jose 6 only makes b64:false signatures in the flattened form; the compact form of
        // RFC 7797 is the same three parts joined with dots.
        new FlattenedSign(enc.encode(b64u(JSON.stringify(claimsA())))).setProtectedHeader({ alg: "ES256", kid: esA().kid, b64: false, crit: ["b64"] }).sign(esA().privateKey)
          .then((f) => `${f.protected}.${f.payload}.${f.signature}`),
      reasons: ["malformed"] },
    { name: "crit naming an unknown extension, validly signed", token: () => es256ByHand(esA(), { alg: "ES256", kid: esA().kid, crit: ["x-extension"], "x-extension": 1 }, claimsA()), reasons: ["unsupported", "malformed"] },
    { name: "header without alg", token: () => rawJws({ typ: "JWT", kid: esA().kid }, claimsA(), b64u("sig")), reasons: ["malformed"] },
    { name: "standard base64 (with + / =) instead of base64url", token: async () => {
        const t = await A.token({ sub: SUB_A });
        return t.split(".").map((p) => Buffer.from(p, "base64url").toString("base64")).join(".") + "==";
      }, reasons: ["malformed"] },
    { name: "oversized (> 8 KiB) validly signed token", token: async () => {
        const t = await A.token({ sub: SUB_A, blob: "x".repeat(7000) });
        expect(t.length).toBeGreaterThan(8192);
        expect(t.length).toBeLessThan(14000); // below Node's 16 KiB header limit: the broker, not HTTP, refuses it
        return t;
      }, reasons: ["oversized"] },

    // --- integrity
    { name: "tampered payload (signature of the original)", token: async () => {
        const [h, , s] = (await A.token({ sub: "repo:acme/someone-else" })).split(".");
        return `${h}.${b64u(JSON.stringify(claimsA()))}.${s}`;
      }, reasons: ["bad_signature"] },
    { name: "tampered signature (one bit flipped)", token: async () => {
        const [h, p, s] = (await A.token({ sub: SUB_A }, { key: rsaA() })).split(".");
        const sig = Buffer.from(s!, "base64url");
        sig[10] = sig[10]! ^ 1;
        return `${h}.${p}.${b64u(sig)}`;
      }, reasons: ["bad_signature"] },
    { name: "signature stripped from a valid token", token: async () => {
        const [h, p] = (await A.token({ sub: SUB_A })).split(".");
        return `${h}.${p}.`;
      }, reasons: ["malformed"] },
    { name: "header swapped to a different alg of the same issuer", token: async () => {
        const [, p, s] = (await A.token({ sub: SUB_A }, { key: rsaA() })).split(".");
        return `${b64u(JSON.stringify({ alg: "PS256", kid: rsaA().kid }))}.${p}.${s}`;
      }, reasons: ["alg_not_allowed"] },

    // --- SPIFFE
    { name: "SVID in other.example.org signed with prod's key", token: () => signSvid(prodKey, SVID_OTHER), reasons: ["unknown_kid"] },
    { name: "SVID in other.example.org signed with prod's key under other's kid", token: () => signSvid({ ...prodKey, kid: otherKey.kid }, SVID_OTHER), reasons: ["bad_signature"] },
    { name: "SVID in prod.example.org signed with other's key", token: () => signSvid(otherKey, SVID_PROD), reasons: ["unknown_kid"] },
    { name: "SVID in an untrusted trust domain", token: () => signSvid(prodKey, "spiffe://evil.example.org/agents/support"), reasons: ["unknown_trust_domain"] },
    { name: "SVID sub without a path (spiffe://prod.example.org)", token: () => signSvid(prodKey, "spiffe://prod.example.org"), reasons: ["invalid_spiffe_id"] },
    { name: "SVID sub with a trailing slash only", token: () => signSvid(prodKey, "spiffe://prod.example.org/"), reasons: ["invalid_spiffe_id"] },
    { name: "SVID sub with a dot-dot segment", token: () => signSvid(prodKey, "spiffe://prod.example.org/a/../b"), reasons: ["invalid_spiffe_id"] },
    { name: "SVID sub with a dot segment", token: () => signSvid(prodKey, "spiffe://prod.example.org/agents/./support"), reasons: ["invalid_spiffe_id"] },
    { name: "SVID sub with an empty segment", token: () => signSvid(prodKey, "spiffe://prod.example.org/agents//support"), reasons: ["invalid_spiffe_id"] },
    { name: "SVID sub with an uppercase trust domain", token: () => signSvid(prodKey, "spiffe://PROD.example.org/x"), reasons: ["unknown_trust_domain"] },
    { name: "SVID sub with an empty trust domain", token: () => signSvid(prodKey, "spiffe:///agents/support"), reasons: ["unknown_trust_domain", "unknown_issuer"] },
    { name: "SVID sub with a query", token: () => signSvid(prodKey, "spiffe://prod.example.org/a?x=1"), reasons: ["invalid_spiffe_id"] },
    { name: "SVID sub with a fragment", token: () => signSvid(prodKey, "spiffe://prod.example.org/a#x"), reasons: ["invalid_spiffe_id"] },
    { name: "SVID sub with a port", token: () => signSvid(prodKey, "spiffe://prod.example.org:443/agents/support"), reasons: ["unknown_trust_domain"] },
    { name: "SVID sub with user info", token: () => signSvid(prodKey, "spiffe://u@prod.example.org/agents/support"), reasons: ["unknown_trust_domain"] },
    { name: "SVID sub with a percent-encoded slash", token: () => signSvid(prodKey, "spiffe://prod.example.org/agents%2Fsupport"), reasons: ["invalid_spiffe_id"] },
    { name: "SVID signed with PS256 (not in the allowlist)", token: async () => signSvid(await makeKey("PS256"), SVID_PROD), reasons: ["alg_not_allowed"] },

    // --- single-use issuer
    { name: "single-use issuer, missing jti", token: () => C.token({ sub: SUB_C }), reasons: ["missing_jti"] },
    { name: "single-use issuer, empty jti", token: () => C.token({ sub: SUB_C, jti: "" }), reasons: ["missing_jti"] },

    // --- Authorization header shapes
    { name: "no Authorization header", authorization: () => null, reasons: ["missing_token"] },
    { name: "Basic scheme", authorization: () => `Basic ${Buffer.from("user:pass").toString("base64")}`, reasons: ["missing_token"] },
    { name: "Basic scheme carrying a valid JWT", authorization: () => `Basic ${validA}`, reasons: ["missing_token"] },
    { name: "valid JWT without a scheme", authorization: () => validA, reasons: ["missing_token"] },
    { name: "\"Bearer\" with no token", authorization: () => "Bearer", reasons: ["missing_token"] },
    { name: "\"Bearer a b\"", authorization: () => "Bearer a b", reasons: ["missing_token"] },
    { name: "Token scheme", authorization: () => "Token abc.def.ghi", reasons: ["missing_token"] },
    { name: "Bearer with two JWTs separated by a comma-space", authorization: () => "Bearer x.y.z, Bearer p.q.r", reasons: ["missing_token"] },
  ];

  describe("each bad token → 401 with the right problem and reason", () => {

    it.each(cases.map((c) => [c.name, c] as const))("%s", async (_name, c) => {
      let auth: string | null;
      let token: string | undefined;
      if (c.authorization) {
        auth = c.authorization();
      } else {
        token = await c.token!();
        auth = `Bearer ${token}`;
      }
      if (auth !== null) for (const part of auth.split(/\s+/)) presented.add(part);
      if (token !== undefined) presented.add(token);

      const before = await authFailures(b);
      const r = await whoami(auth);
      const after = await authFailures(b);

      expect({ status: r.status, code: r.body?.code }).toEqual({ status: 401, code: c.code ?? "invalid_token" });
      expect(r.headers.get("content-type")).toMatch(/^application\/problem\+json/);
      expect(r.body).toMatchObject({ status: 401, code: c.code ?? "invalid_token", type: expect.stringContaining(c.code ?? "invalid_token") });
      expect(typeof r.body.request_id).toBe("string");
      expect(r.body.request_id).toBe(r.headers.get("x-request-id"));
      expect(r.headers.get("www-authenticate")).toMatch(/^Bearer error="invalid_token"/);
      // Nothing identity-related leaks into the refusal.
      expect(r.body.workload).toBeUndefined();
      if (token !== undefined && token.length >= 8) expect(JSON.stringify(r.body)).not.toContain(token);

      const moved = diff(before, after);
      expect(Object.values(moved)).toEqual([1]);
      expect(c.reasons).toContain(Object.keys(moved)[0]);
    });
  });

  describe("single-use issuer", () => {
    it("accepts a jti once, then refuses the replay with 401 replayed_jti", async () => {
      const token = await C.token({ sub: SUB_C, jti: randomUUID() });
      const first = await present(token);
      expect(first.status).toBe(200);
      expect(first.body.workload.id).toBe("wl-c");
      const before = await authFailures(b);
      for (let i = 0; i < 3; i++) {
        const again = await present(token);
        expect(again.status).toBe(401);
        expect(again.body.code).toBe("invalid_token");
        expect(again.headers.get("www-authenticate")).toMatch(/^Bearer error="invalid_token"/);
      }
      expect(diff(before, await authFailures(b))).toEqual({ replayed_jti: 3 });
    });

    it("lets only one of many concurrent presentations of the same jti through", async () => {
      const token = await C.token({ sub: SUB_C, jti: randomUUID() });
      const results = await Promise.all(Array.from({ length: 10 }, () => present(token)));
      expect(results.map((r) => r.status).sort()).toEqual([200, 401, 401, 401, 401, 401, 401, 401, 401, 401]);
    });

    it("remembers a jti across different tokens (re-signed with a new exp)", async () => {
      const jti = randomUUID();
      expect((await present(await C.token({ sub: SUB_C, jti }))).status).toBe(200);
      const r = await present(await C.token({ sub: SUB_C, jti }, { exp: nowSec() + 600 }));
      expect(r.status).toBe(401);
      expect(r.body.code).toBe("invalid_token");
    });

    it("does not burn a jti on a token that fails verification", async () => {
      const jti = randomUUID();
      // Same jti, wrong audience: refused before the jti is recorded...
      expect((await present(await C.token({ sub: SUB_C, jti }, { aud: "other" }))).status).toBe(401);
      // ...so the genuine token with that jti still works once.
      expect((await present(await C.token({ sub: SUB_C, jti }))).status).toBe(200);
    });
  });

  describe("no key is ever fetched from a URL in a token, and unknown kids do not hammer issuers", () => {
    it("the jku / x5u targets received zero requests", () => {
      expect(trap.hits).toEqual([]);
    });

    it("a parallel flood of unknown kids causes at most one JWKS refresh of issuer A", async () => {
      const jwksBefore = A.requests.filter((p) => p === "/jwks").length;
      const keys = await Promise.all(Array.from({ length: 30 }, () => makeKey("ES256")));
      const tokens = await Promise.all(keys.map((k) => signWith(k, claimsA())));
      const results = await Promise.all(tokens.map((t) => present(t)));
      for (const r of results) {
        expect(r.status).toBe(401);
        expect(r.body.code).toBe("invalid_token");
      }
      const jwksAfter = A.requests.filter((p) => p === "/jwks").length;
      expect(jwksAfter - jwksBefore).toBeLessThanOrEqual(1);
      // Over the whole suite, despite dozens of unknown kids: the start-up load plus at most one
      // refresh per 30 s cooldown window that has elapsed since (normally the suite takes a few
      // seconds, so this is 2).
      const bound = 2 + Math.floor((Date.now() - startedAt) / 30_000);
      expect(A.requests.filter((p) => p === "/jwks").length).toBeLessThanOrEqual(bound);
      expect(A.requests.filter((p) => p === "/.well-known/openid-configuration").length).toBeLessThanOrEqual(bound);
      expect(B.requests.filter((p) => p === "/jwks").length).toBeLessThanOrEqual(bound);
      expect(C.requests.filter((p) => p === "/jwks").length).toBeLessThanOrEqual(bound);
      // And A still works.
      expect((await present(await A.token({ sub: SUB_A }))).status).toBe(200);
    });
  });

  describe("observability", () => {
    it("counts refusals in jitbroker_auth_failures_total by reason", async () => {
      const m = await authFailures(b);
      const expected = ["alg_none", "alg_not_allowed", "unknown_kid", "bad_signature", "key_reference_header", "bad_audience", "unknown_issuer", "expired", "not_yet_valid", "issued_in_future", "lifetime_too_long", "missing_exp", "jwe", "json_serialization", "malformed", "oversized", "invalid_spiffe_id", "unknown_trust_domain", "missing_jti", "replayed_jti", "missing_token"];
      expect(expected.filter((reason) => !((m[reason] ?? 0) > 0))).toEqual([]);
      expect(m.replayed_jti).toBeGreaterThanOrEqual(3);
    });

    it("never writes a presented token to the logs", () => {
      const logs = b.logs.join("\n");
      expect(b.logs.length).toBeGreaterThan(50); // the access log really was captured
      const checked = [...presented].filter((t) => t.length >= 16);
      expect(checked.length).toBeGreaterThan(50);
      for (const t of checked) {
        if (logs.includes(t)) throw new Error(`a presented token appears in the logs: ${t.slice(0, 40)}…`);
        // Nor its signature on its own.
        const sig = t.split(".")[2];
        if (sig !== undefined && sig.length >= 16 && logs.includes(sig)) throw new Error(`a token signature appears in the logs: ${sig.slice(0, 20)}…`);
      }
    });
  });
});
