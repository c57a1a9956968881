import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { generateKeyPairSync } from "node:crypto";
import os from "node:os";
import path from "node:path";
import {
  SignJWT,
  base64url,
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  FlattenedSign,
} from "jose";
import type { RoleConfig } from "../../config/schema";
import type { Lease } from "../../leases/types";
import { BackendError } from "../types";
import { createJwtBackend } from "./backend";
import { loadOrCreateSigningKeys, rotateSigningKey, SigningKeyFileError, MAX_PREVIOUS } from "./keys";
import { openidConfiguration } from "./oidc";

const ISSUER = "http://127.0.0.1:8080";
const T0 = Date.parse("2030-01-01T00:00:00.000Z");

let dir: string;
let keyFile: string;
let clock: number;
const now = () => clock;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "jitbroker-jwt-"));
  keyFile = path.join(dir, "state", "signing-key.json");
  clock = T0;
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function lease(over: Partial<Lease> = {}): Lease {
  return {
    id: "lease-0001",
    role: "orders-read",
    backend: "jwt",
    workload: "support-agent",
    task_id: "ticket:42",
    state: "issuing",
    issued_at: new Date(T0).toISOString(),
    expires_at: new Date(T0 + 300_700).toISOString(), // sub-second part: exp must round down
    revocation_kind: "revocable",
    identity: { kind: "spiffe", issuer: "mesh", subject: "spiffe://prod.example.org/agents/support" },
    policy: { ids: ["p1"], hash: "h" },
    task: { id: "ticket:42", intent: "", tool: "", destination: "", sensitivity: "" },
    ttl_seconds: 300,
    ...over,
  };
}

function role(jwt: RoleConfig["jwt"] = { audience: "https://orders.internal", scope: "orders:read" }): RoleConfig {
  return { name: "orders-read", backend: "jwt", ttl: { default: 300_000, max: 900_000 }, labels: {}, jwt };
}

async function setup() {
  const keys = await loadOrCreateSigningKeys(keyFile, now);
  const backend = createJwtBackend({ keys, issuer: ISSUER, now });
  return { keys, backend };
}

async function mintToken(backend: ReturnType<typeof createJwtBackend>, l = lease()): Promise<string> {
  const res = await backend.mint(l, role());
  return res.credential.token as string;
}

const b64json = (v: unknown) => base64url.encode(JSON.stringify(v));

describe("signing keys", () => {
  it("creates the key file on first start (0600, directory 0700) and reuses it on the next load", async () => {
    const first = await loadOrCreateSigningKeys(keyFile, now);
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    expect((await stat(path.dirname(keyFile))).mode & 0o777).toBe(0o700);
    const doc = JSON.parse(await readFile(keyFile, "utf8"));
    expect(doc.current).toMatchObject({ kty: "EC", crv: "P-256", alg: "ES256", kid: first.current.kid, created_at: "2030-01-01T00:00:00.000Z" });
    expect(typeof doc.current.d).toBe("string");
    expect(doc.previous).toEqual([]);
    expect(await readdir(path.dirname(keyFile))).toEqual(["signing-key.json"]); // no temp file left

    const second = await loadOrCreateSigningKeys(keyFile, now);
    expect(second.current.kid).toBe(first.current.kid);
    expect(second.jwks()).toEqual(first.jwks());
  });

  it("publishes a JWKS with no private members", async () => {
    await loadOrCreateSigningKeys(keyFile, now);
    const keys = await rotateSigningKey(keyFile, now);
    const jwks = keys.jwks();
    expect(jwks.keys).toHaveLength(2);
    for (const k of jwks.keys) {
      expect(Object.keys(k).sort()).toEqual(["alg", "crv", "kid", "kty", "use", "x", "y"]);
      expect(k).toMatchObject({ use: "sig", alg: "ES256", kty: "EC", crv: "P-256" });
      expect(k).not.toHaveProperty("d");
    }
    // callers get a copy: mutating it changes nothing
    (jwks.keys[0] as unknown as Record<string, unknown>).d = "x";
    expect(keys.jwks().keys[0]).not.toHaveProperty("d");
  });

  it("rotation keeps previous keys published and their tokens verifying, at most MAX_PREVIOUS of them", async () => {
    const { keys: k1, backend: b1 } = await setup();
    const oldToken = await mintToken(b1);

    const k2 = await rotateSigningKey(keyFile, now);
    expect(k2.current.kid).not.toBe(k1.current.kid);
    expect(k2.jwks().keys.map((k) => k.kid)).toEqual([k2.current.kid, k1.current.kid]);
    const b2 = createJwtBackend({ keys: k2, issuer: ISSUER, now });
    expect((await b2.verify(oldToken))?.leaseId).toBe("lease-0001");
    const newToken = await mintToken(b2, lease({ id: "lease-0002" }));
    expect(decodeProtectedHeader(newToken).kid).toBe(k2.current.kid);
    expect((await b2.verify(newToken))?.leaseId).toBe("lease-0002");

    // a fresh load of the rotated file sees the same thing
    const reloaded = await loadOrCreateSigningKeys(keyFile, now);
    expect(reloaded.current.kid).toBe(k2.current.kid);
    expect((await createJwtBackend({ keys: reloaded, issuer: ISSUER, now }).verify(oldToken))?.leaseId).toBe("lease-0001");
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);

    let last = k2;
    for (let i = 0; i < MAX_PREVIOUS; i++) last = await rotateSigningKey(keyFile, now);
    expect(last.jwks().keys).toHaveLength(1 + MAX_PREVIOUS);
    expect(last.verificationKey(k1.current.kid)).toBeUndefined();
    expect(await createJwtBackend({ keys: last, issuer: ISSUER, now }).verify(oldToken)).toBeNull();
    expect(JSON.parse(await readFile(keyFile, "utf8")).previous).toHaveLength(MAX_PREVIOUS);
  });

  it("refuses a group/world readable key file and says which chmod fixes it", async () => {
    await loadOrCreateSigningKeys(keyFile, now);
    await chmod(keyFile, 0o644);
    const err = await loadOrCreateSigningKeys(keyFile, now).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SigningKeyFileError);
    expect((err as Error).message).toContain(`chmod 600 ${keyFile}`);
    await chmod(keyFile, 0o640);
    await expect(loadOrCreateSigningKeys(keyFile, now)).rejects.toThrow(/chmod 600/);
    await expect(rotateSigningKey(keyFile, now)).rejects.toThrow(/chmod 600/);
    await chmod(keyFile, 0o600);
    await expect(loadOrCreateSigningKeys(keyFile, now)).resolves.toBeDefined();
  });

  it("refuses an invalid key file without echoing key material", async () => {
    await loadOrCreateSigningKeys(keyFile, now);
    const good = JSON.parse(await readFile(keyFile, "utf8"));
    const write = (v: unknown) => writeFile(keyFile, typeof v === "string" ? v : JSON.stringify(v), { mode: 0o600 });

    await write("not json");
    await expect(loadOrCreateSigningKeys(keyFile, now)).rejects.toThrow(/not valid JSON/);

    await write({ previous: [] });
    await expect(loadOrCreateSigningKeys(keyFile, now)).rejects.toThrow(/current is not a JWK object/);

    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" });
    await write({ current: { ...rsa, alg: "RS256", kid: "r", created_at: good.current.created_at }, previous: [] });
    await expect(loadOrCreateSigningKeys(keyFile, now)).rejects.toThrow(/only ES256/);

    const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey.export({ format: "jwk" });
    await write({ current: { ...p384, alg: "ES256", kid: "p", created_at: good.current.created_at }, previous: [] });
    await expect(loadOrCreateSigningKeys(keyFile, now)).rejects.toThrow(/P-256/);

    const { d: _d, ...publicOnly } = good.current;
    await write({ current: publicOnly, previous: [] });
    await expect(loadOrCreateSigningKeys(keyFile, now)).rejects.toThrow(/private part/);

    const other = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" });
    await write({ current: { ...good.current, d: other.d }, previous: [] });
    const err = (await loadOrCreateSigningKeys(keyFile, now).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(SigningKeyFileError);
    expect(err.message).toMatch(/do not belong/);
    expect(err.message).not.toContain(other.d);

    await write({ current: good.current, previous: [good.current] });
    await expect(loadOrCreateSigningKeys(keyFile, now)).rejects.toThrow(/used twice/);

    await write({ current: good.current, previous: {} });
    await expect(loadOrCreateSigningKeys(keyFile, now)).rejects.toThrow(/previous is not an array/);
  });

  it("refuses to rotate a key file that does not exist", async () => {
    await expect(rotateSigningKey(keyFile, now)).rejects.toThrow(/does not exist/);
  });

  it("concurrent first starts agree on one key", async () => {
    const all = await Promise.all([1, 2, 3, 4].map(() => loadOrCreateSigningKeys(keyFile, now)));
    expect(new Set(all.map((k) => k.current.kid)).size).toBe(1);
    expect(await readdir(path.dirname(keyFile))).toEqual(["signing-key.json"]);
  });
});

describe("jwt backend", () => {
  it("is a revocable jwt backend whose revoke is a harmless no-op", async () => {
    const { backend } = await setup();
    expect(backend.kind).toBe("jwt");
    expect(backend.revocation).toBe("revocable");
    await expect(backend.revoke(lease(), { jti: "lease-0001" })).resolves.toBeUndefined();
    await expect(backend.revoke(lease(), { jti: "lease-0001" })).resolves.toBeUndefined();
  });

  it("mints exactly the specified header and claims; exp is the lease expiry", async () => {
    const { keys, backend } = await setup();
    const l = lease();
    const res = await backend.mint(l, role());
    expect(res.handle).toEqual({ jti: "lease-0001" });
    expect(res.backendExpiresAt).toBeUndefined();
    expect(res.credential).toEqual({ type: "jwt", token: expect.any(String), expires_at: l.expires_at });
    const token = res.credential.token as string;
    expect(JSON.stringify(res.handle)).not.toContain(token);

    expect(decodeProtectedHeader(token)).toEqual({ alg: "ES256", kid: keys.current.kid, typ: "at+jwt" });
    const nowSec = T0 / 1000;
    const exp = Math.floor(Date.parse(l.expires_at) / 1000);
    expect(decodeJwt(token)).toEqual({
      iss: ISSUER,
      sub: "support-agent",
      aud: "https://orders.internal",
      scope: "orders:read",
      jti: "lease-0001",
      task_id: "ticket:42",
      iat: nowSec,
      nbf: nowSec,
      exp,
    });
    expect(exp).toBe(nowSec + 300);
    expect(exp * 1000).toBeLessThanOrEqual(Date.parse(l.expires_at)); // I2
  });

  it("omits scope when the role sets none and keeps a list audience", async () => {
    const { backend } = await setup();
    const res = await backend.mint(lease(), role({ audience: ["https://a.internal", "https://b.internal"] }));
    const claims = decodeJwt(res.credential.token as string);
    expect(claims).not.toHaveProperty("scope");
    expect(claims.aud).toEqual(["https://a.internal", "https://b.internal"]);
  });

  it("refuses to mint for an expired lease, a bad expires_at or a role without jwt", async () => {
    const { backend } = await setup();
    await expect(backend.mint(lease({ expires_at: new Date(T0 + 500).toISOString() }), role())).rejects.toBeInstanceOf(BackendError);
    await expect(backend.mint(lease({ expires_at: "soon" }), role())).rejects.toThrow(/invalid expires_at/);
    await expect(backend.mint(lease(), { ...role(), jwt: undefined })).rejects.toThrow(/no jwt section/);
  });

  it("verifies its own token and returns the lease id", async () => {
    const { backend } = await setup();
    const token = await mintToken(backend);
    const v = await backend.verify(token);
    expect(v?.leaseId).toBe("lease-0001");
    expect(v?.payload.task_id).toBe("ticket:42");
    // a peer instance a little behind still accepts it (nbf skew)
    clock = T0 - 3000;
    expect((await backend.verify(token))?.leaseId).toBe("lease-0001");
  });

  it("the minted token verifies with jose's createLocalJWKSet over jwks()", async () => {
    const { keys, backend } = await setup();
    const token = await mintToken(backend);
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(keys.jwks()), {
      issuer: ISSUER,
      audience: "https://orders.internal",
      algorithms: ["ES256"],
      typ: "at+jwt",
      currentDate: new Date(T0),
    });
    expect(payload.jti).toBe("lease-0001");
    expect(protectedHeader.kid).toBe(keys.current.kid);
  });

  it("returns null for expired, tampered, garbage, foreign, alg none and HS256 tokens", async () => {
    const { keys, backend } = await setup();
    const token = await mintToken(backend);
    const [h, p, s] = token.split(".") as [string, string, string];
    const claims = decodeJwt(token);
    const header = decodeProtectedHeader(token);

    // expired: at exp exactly, and later
    clock = (claims.exp as number) * 1000;
    expect(await backend.verify(token)).toBeNull();
    clock = (claims.exp as number) * 1000 + 2000;
    expect(await backend.verify(token)).toBeNull();
    clock = (claims.exp as number) * 1000 - 1000;
    expect(await backend.verify(token)).not.toBeNull();
    clock = T0;

    // tampered payload (another lease id) and tampered signature
    expect(await backend.verify(`${h}.${b64json({ ...claims, jti: "lease-9999" })}.${s}`)).toBeNull();
    const flipped = s.slice(0, 10) + (s[10] === "A" ? "B" : "A") + s.slice(11);
    expect(await backend.verify(`${h}.${p}.${flipped}`)).toBeNull();

    // garbage
    for (const g of ["", "abc", "a.b.c", "...", `${h}.${p}`, `${h}.${p}.${s}.x.y`, "x".repeat(10_000), `${token} `]) {
      expect(await backend.verify(g)).toBeNull();
    }
    expect(await backend.verify(undefined as unknown as string)).toBeNull();
    expect(await backend.verify({} as unknown as string)).toBeNull();

    // JWS JSON serialization of a validly signed payload
    const flat = await new FlattenedSign(new TextEncoder().encode(JSON.stringify(claims)))
      .setProtectedHeader(header)
      .sign(keys.current.key);
    expect(await backend.verify(JSON.stringify(flat))).toBeNull();

    // other issuer, same keys
    const foreign = createJwtBackend({ keys, issuer: "https://other.example", now });
    expect(await backend.verify(await mintToken(foreign))).toBeNull();

    // alg none
    expect(await backend.verify(`${b64json({ alg: "none", kid: header.kid, typ: "at+jwt" })}.${p}.`)).toBeNull();
    expect(await backend.verify(`${b64json({ alg: "none", kid: header.kid, typ: "at+jwt" })}.${p}.${s}`)).toBeNull();

    // HS256 with the public key as the HMAC secret (algorithm confusion)
    const pub = keys.jwks().keys[0]!;
    for (const secret of [new TextEncoder().encode(JSON.stringify(pub)), base64url.decode(pub.x)]) {
      const hs = await new SignJWT(claims).setProtectedHeader({ alg: "HS256", kid: pub.kid, typ: "at+jwt" }).sign(secret);
      expect(await backend.verify(hs)).toBeNull();
    }

    // a valid ES256 signature by a key we do not own, claiming our kid
    const stranger = await generateKeyPair("ES256");
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: pub.kid, typ: "at+jwt" }).sign(stranger.privateKey);
    expect(await backend.verify(forged)).toBeNull();

    // ... or pointing at its own key in the header
    const withJwk = await new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: pub.kid, typ: "at+jwt", jwk: await exportJWK(stranger.publicKey) })
      .sign(keys.current.key);
    expect(await backend.verify(withJwk)).toBeNull();

    // our key, but not an access token (wrong typ) or no jti
    const plainJwt = await new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: pub.kid, typ: "JWT" }).sign(keys.current.key);
    expect(await backend.verify(plainJwt)).toBeNull();
    const { jti: _jti, ...noJti } = claims;
    const jtiLess = await new SignJWT(noJti).setProtectedHeader({ alg: "ES256", kid: pub.kid, typ: "at+jwt" }).sign(keys.current.key);
    expect(await backend.verify(jtiLess)).toBeNull();

    // unknown kid
    const unknownKid = await new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: "nope", typ: "at+jwt" }).sign(keys.current.key);
    expect(await backend.verify(unknownKid)).toBeNull();

    // still fine afterwards
    expect((await backend.verify(token))?.leaseId).toBe("lease-0001");
  });
});

describe("openid configuration", () => {
  it("describes broker-issued JWTs under the issuer", () => {
    expect(openidConfiguration(ISSUER)).toEqual({
      issuer: ISSUER,
      jwks_uri: `${ISSUER}/.well-known/jwks.json`,
      introspection_endpoint: `${ISSUER}/v1/introspect`,
      response_types_supported: [],
      grant_types_supported: [],
      subject_types_supported: ["public"],
      id_token_signing_alg_values_supported: ["ES256"],
      claims_supported: ["iss", "sub", "aud", "scope", "jti", "task_id", "iat", "nbf", "exp"],
    });
    const withSlash = openidConfiguration("https://broker.example/");
    expect(withSlash.issuer).toBe("https://broker.example/");
    expect(withSlash.jwks_uri).toBe("https://broker.example/.well-known/jwks.json");
  });
});
