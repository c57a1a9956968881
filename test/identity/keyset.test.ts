/**
 * Key sets of trusted issuers (src/identity/keyset.ts) with an injected clock, against real
 * local HTTP servers that count every JWKS fetch. docs/ARCHITECTURE.md, Request path: an unknown kid triggers at
 * most one refresh per cooldown; keys come only from the configured source; a key set that was
 * never loaded fails closed with `issuer_unavailable` (I7).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { errors as joseErrors, exportJWK, generateKeyPair, jwtVerify, type JWK } from "jose";
import { BrokerError } from "../../src/core/errors";
import { createKeySet, normaliseKeys, type KeySet, type KeySetOptions } from "../../src/identity/keyset";
import { getJson, startTestBroker } from "../support/broker";
import { startRecordingServer } from "../support/http-server";
import { makeKey, signWith, startTestIssuer, type TestIssuer, type TestKey } from "../support/oidc-issuer";

const COOLDOWN = 30_000;
const REFRESH = 600_000;

/** A controllable clock: starts at an arbitrary epoch, moves only when told. */
function clock(start = 1_700_000_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

const jwksFetches = (iss: TestIssuer) => iss.requests.filter((p) => p === "/jwks").length;

/** Asks the key set for the key of `kid` the way jose would (alg from the header). */
const keyFor = (ks: KeySet, kid: string, alg = "ES256") => ks.getKey({ alg, kid }, { payload: "", signature: "" });

/** Verifies a real token with the key set as the key resolver. */
const verifyWith = (ks: KeySet, token: string) => jwtVerify(token, ks.getKey);

async function expectUnknownKid(p: Promise<unknown>) {
  await expect(p).rejects.toBeInstanceOf(joseErrors.JWKSNoMatchingKey);
}

async function expectUnavailable(p: Promise<unknown>) {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(BrokerError);
  expect((e as BrokerError).code).toBe("issuer_unavailable");
  expect((e as BrokerError).status).toBe(503);
}

const startServer = startRecordingServer;

/** A loopback URL on which nothing listens (connection refused). */
async function deadUrl(): Promise<string> {
  const s = await startServer((_q, res) => res.end());
  await s.close();
  return s.url;
}

describe("createKeySet", () => {
  let issuer: TestIssuer;
  let clk: ReturnType<typeof clock>;
  const loads: string[] = [];

  function urlKeySet(over: Partial<KeySetOptions> = {}): KeySet {
    return createKeySet({
      name: "test",
      source: { kind: "url", url: `${issuer.url}/jwks` },
      flavour: "oidc",
      refreshMs: REFRESH,
      cooldownMs: COOLDOWN,
      now: clk.now,
      fetchTimeoutMs: 2000,
      onLoad: (result, reason) => loads.push(reason ? `${result}:${reason}` : result),
      ...over,
    });
  }

  let baseKeys: TestKey[];

  // One issuer (RSA key generation is slow); every test starts from its two original keys, a
  // healthy JWKS endpoint, an empty request log and a fresh clock.
  beforeAll(async () => {
    issuer = await startTestIssuer();
    baseKeys = [...issuer.keys];
  });
  beforeEach(() => {
    issuer.keys.splice(0, issuer.keys.length, ...baseKeys);
    issuer.requests.length = 0;
    issuer.failWith = 0;
    clk = clock();
    loads.length = 0;
  });
  afterAll(async () => {
    await issuer.close();
  });

  it("loads once and then serves known kids from the cache until refreshMs", async () => {
    const ks = urlKeySet();
    await ks.refresh();
    expect(jwksFetches(issuer)).toBe(1);
    for (let i = 0; i < 20; i++) {
      await keyFor(ks, issuer.keys[1]!.kid, "ES256");
      await keyFor(ks, issuer.keys[0]!.kid, "RS256");
      clk.advance((REFRESH - 1) / 20);
    }
    expect(jwksFetches(issuer)).toBe(1);
    expect(ks.status()).toMatchObject({ name: "test", keys: 2, last_error: null });
    expect(ks.status().loaded_at).toBe(new Date(1_700_000_000_000).toISOString());
    expect(loads).toEqual(["ok"]);
  });

  it("shares one in-flight request between concurrent refreshes", async () => {
    const ks = urlKeySet();
    await Promise.all(Array.from({ length: 10 }, () => ks.refresh()));
    expect(jwksFetches(issuer)).toBe(1);
  });

  it("does not refresh for unknown kids within the cooldown of the initial load", async () => {
    const ks = urlKeySet();
    await ks.refresh();
    clk.advance(COOLDOWN - 1);
    for (let i = 0; i < 20; i++) await expectUnknownKid(keyFor(ks, randomUUID()));
    expect(jwksFetches(issuer)).toBe(1);
  });

  it("a parallel flood of 50 random kids triggers at most one refresh per cooldown window", async () => {
    const ks = urlKeySet();
    await ks.refresh();
    clk.advance(COOLDOWN);
    const results = await Promise.allSettled(Array.from({ length: 50 }, () => keyFor(ks, randomUUID())));
    for (const r of results) {
      expect(r.status).toBe("rejected");
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(joseErrors.JWKSNoMatchingKey);
    }
    expect(jwksFetches(issuer)).toBe(2);

    // A second parallel wave, still inside the same window: nothing.
    clk.advance(COOLDOWN - 1);
    await Promise.allSettled(Array.from({ length: 50 }, () => keyFor(ks, randomUUID())));
    expect(jwksFetches(issuer)).toBe(2);

    // The window has passed: exactly one more, however many kids arrive at once.
    clk.advance(1);
    await Promise.allSettled(Array.from({ length: 50 }, () => keyFor(ks, randomUUID())));
    expect(jwksFetches(issuer)).toBe(3);
  });

  it("a sequential flood of 50 random kids triggers at most one refresh per cooldown window", async () => {
    const ks = urlKeySet();
    await ks.refresh();
    clk.advance(COOLDOWN);
    for (let i = 0; i < 50; i++) {
      await expectUnknownKid(keyFor(ks, randomUUID()));
      clk.advance(100); // 50 × 100 ms = 5 s: all inside one window
    }
    expect(jwksFetches(issuer)).toBe(2);
    clk.advance(COOLDOWN);
    for (let i = 0; i < 50; i++) await expectUnknownKid(keyFor(ks, randomUUID()));
    expect(jwksFetches(issuer)).toBe(3);
    // Known kids keep working throughout and never cause a fetch.
    await keyFor(ks, issuer.keys[1]!.kid);
    expect(jwksFetches(issuer)).toBe(3);
  });

  it("the cooldown window is measured from the last attempt, over a long flood", async () => {
    const ks = urlKeySet();
    await ks.refresh();
    // 10 minutes (just under refreshMs) of one unknown kid per second: one refresh per 30 s at most.
    for (let s = 1; s < REFRESH / 1000; s++) {
      clk.advance(1000);
      await expectUnknownKid(keyFor(ks, randomUUID()));
    }
    const fetches = jwksFetches(issuer);
    expect(fetches).toBeGreaterThanOrEqual(2);
    expect(fetches).toBeLessThanOrEqual(1 + Math.ceil(REFRESH / COOLDOWN));
  });

  it("rotation: a key added at the issuer is usable after the cooldown-limited refresh, not before", async () => {
    const ks = urlKeySet();
    await ks.refresh();
    const oldToken = await issuer.token({ sub: "s" }, { key: issuer.keys[1] });
    const added = await issuer.addKey("ES256");
    const newToken = await issuer.token({ sub: "s" }, { key: added });

    clk.advance(5_000);
    await expect(verifyWith(ks, newToken)).rejects.toBeInstanceOf(joseErrors.JWKSNoMatchingKey);
    expect(jwksFetches(issuer)).toBe(1);

    clk.advance(COOLDOWN - 5_000);
    const { payload } = await verifyWith(ks, newToken);
    expect(payload.sub).toBe("s");
    expect(jwksFetches(issuer)).toBe(2);
    // The old key still verifies, and neither needs another fetch.
    await verifyWith(ks, oldToken);
    await verifyWith(ks, newToken);
    expect(jwksFetches(issuer)).toBe(2);
    expect(ks.status().keys).toBe(3);
  });

  it("refreshes periodically after refreshMs, and a key removed at the issuer stops verifying", async () => {
    const ks = urlKeySet();
    await ks.refresh();
    const removed = issuer.keys[1]!;
    const token = await issuer.token({ sub: "s" }, { key: removed });
    issuer.keys.splice(1, 1);

    clk.advance(REFRESH - 1);
    await verifyWith(ks, token); // still cached
    expect(jwksFetches(issuer)).toBe(1);

    clk.advance(1);
    await expect(verifyWith(ks, token)).rejects.toBeInstanceOf(joseErrors.JWKSNoMatchingKey);
    expect(jwksFetches(issuer)).toBe(2);
    expect(ks.status().keys).toBe(1);
    expect(ks.status().loaded_at).toBe(new Date(clk.now()).toISOString());

    // The next periodic refresh is counted from this load.
    clk.advance(REFRESH - 1);
    await keyFor(ks, issuer.keys[0]!.kid, "RS256");
    expect(jwksFetches(issuer)).toBe(2);
    clk.advance(1);
    await keyFor(ks, issuer.keys[0]!.kid, "RS256");
    expect(jwksFetches(issuer)).toBe(3);
  });

  it("a failing periodic refresh (HTTP 500) keeps the last good keys and retries once per cooldown", async () => {
    const ks = urlKeySet();
    await ks.refresh();
    const token = await issuer.token({ sub: "s" }, { key: issuer.keys[0] });
    issuer.failWith = 500;

    clk.advance(REFRESH);
    await verifyWith(ks, token);
    expect(jwksFetches(issuer)).toBe(2);
    expect(ks.status()).toMatchObject({ keys: 2, loaded_at: new Date(clk.now() - REFRESH).toISOString() });
    expect(ks.status().last_error).toMatch(/HTTP 500/);
    expect(loads).toEqual(["ok", expect.stringMatching(/^error:.*HTTP 500/)]);

    // Still failing: no retry inside the cooldown, one per window after it; keys keep working.
    for (let i = 0; i < 10; i++) await verifyWith(ks, token);
    expect(jwksFetches(issuer)).toBe(2);
    clk.advance(COOLDOWN);
    await verifyWith(ks, token);
    expect(jwksFetches(issuer)).toBe(3);

    // The issuer recovers: the next attempt (after the cooldown) succeeds and clears the error.
    issuer.failWith = 0;
    clk.advance(COOLDOWN);
    await verifyWith(ks, token);
    expect(jwksFetches(issuer)).toBe(4);
    expect(ks.status()).toMatchObject({ keys: 2, last_error: null, loaded_at: new Date(clk.now()).toISOString() });
  });

  it("a failing unknown-kid refresh keeps the last good keys", async () => {
    const ks = urlKeySet();
    await ks.refresh();
    issuer.failWith = 500;
    clk.advance(COOLDOWN);
    await expectUnknownKid(keyFor(ks, randomUUID()));
    expect(jwksFetches(issuer)).toBe(2);
    await keyFor(ks, issuer.keys[1]!.kid);
    expect(ks.status().keys).toBe(2);
  });

  it.each([
    ["not JSON", "<html>oops</html>"],
    ["no keys array", JSON.stringify({ kid: "x" })],
    ["keys not an array", JSON.stringify({ keys: { a: 1 } })],
  ])("a refresh returning %s keeps the last good keys", async (_name, body) => {
    let broken = false;
    const good = JSON.stringify({ keys: issuer.keys.map((k) => k.publicJwk) });
    const srv = await startServer((_req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(broken ? body : good);
    });
    try {
      const ks = urlKeySet({ source: { kind: "url", url: `${srv.url}/jwks` } });
      await ks.refresh();
      broken = true;
      clk.advance(REFRESH);
      await keyFor(ks, issuer.keys[1]!.kid);
      expect(srv.hits).toHaveLength(2);
      expect(ks.status().keys).toBe(2);
      expect(ks.status().last_error).not.toBeNull();
    } finally {
      await srv.close();
    }
  });

  it("refuses a JWKS document larger than 1 MiB", async () => {
    const srv = await startServer((_req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ keys: issuer.keys.map((k) => k.publicJwk), padding: "x".repeat(1024 * 1024) }));
    });
    try {
      const ks = urlKeySet({ source: { kind: "url", url: `${srv.url}/jwks` } });
      await expect(ks.refresh()).rejects.toThrow(/too large/);
      await expectUnavailable(keyFor(ks, issuer.keys[1]!.kid));
    } finally {
      await srv.close();
    }
  });

  it("never follows a redirect from the JWKS URL", async () => {
    const target = await startServer((_req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ keys: issuer.keys.map((k) => k.publicJwk) }));
    });
    const redirector = await startServer((_req, res) => {
      res.statusCode = 302;
      res.setHeader("location", `${target.url}/jwks`);
      res.end();
    });
    try {
      const ks = urlKeySet({ source: { kind: "url", url: `${redirector.url}/jwks` } });
      await expect(ks.refresh()).rejects.toThrow();
      await expectUnavailable(keyFor(ks, issuer.keys[1]!.kid));
      expect(redirector.hits).toEqual(["/jwks"]);
      expect(target.hits).toEqual([]);
    } finally {
      await Promise.all([target.close(), redirector.close()]);
    }
  });

  describe("a key set that was never loaded", () => {
    it("fails closed with issuer_unavailable when the issuer refuses connections", async () => {
      const ks = urlKeySet({ source: { kind: "url", url: `${await deadUrl()}/jwks` } });
      await expectUnavailable(keyFor(ks, randomUUID()));
      expect(ks.status()).toMatchObject({ keys: 0, loaded_at: null });
      expect(ks.status().last_error).not.toBeNull();
    });

    it("fails closed with issuer_unavailable on HTTP errors, tries once per cooldown, and recovers", async () => {
      issuer.failWith = 503;
      const ks = urlKeySet();
      const kid = issuer.keys[1]!.kid;

      // Parallel first requests share one attempt.
      const first = await Promise.allSettled(Array.from({ length: 20 }, () => keyFor(ks, kid)));
      for (const r of first) {
        expect(r.status).toBe("rejected");
        expect(((r as PromiseRejectedResult).reason as BrokerError).code).toBe("issuer_unavailable");
      }
      expect(jwksFetches(issuer)).toBe(1);

      // Within the cooldown: still unavailable, no further attempts (the issuer is not hammered).
      for (let i = 0; i < 20; i++) {
        clk.advance(1000);
        await expectUnavailable(keyFor(ks, kid));
      }
      expect(jwksFetches(issuer)).toBe(1);

      // The issuer comes back; the set stays unavailable until the cooldown has passed...
      issuer.failWith = 0;
      clk.advance(COOLDOWN - 20_000 - 1);
      await expectUnavailable(keyFor(ks, kid));
      expect(jwksFetches(issuer)).toBe(1);
      // ...then one attempt loads it.
      clk.advance(1);
      await keyFor(ks, kid);
      expect(jwksFetches(issuer)).toBe(2);
      expect(ks.status()).toMatchObject({ keys: 2, last_error: null });
    });

    it("a failing start-up refresh counts as the attempt of its cooldown window", async () => {
      issuer.failWith = 500;
      const ks = urlKeySet();
      await expect(ks.refresh()).rejects.toThrow(/HTTP 500/);
      issuer.failWith = 0;
      await expectUnavailable(keyFor(ks, issuer.keys[1]!.kid));
      expect(jwksFetches(issuer)).toBe(1);
      clk.advance(COOLDOWN);
      await keyFor(ks, issuer.keys[1]!.kid);
      expect(jwksFetches(issuer)).toBe(2);
    });
  });

  describe("file sources", () => {
    it("reads a JWKS file and re-reads it on an unknown-kid refresh after the cooldown", async () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), "jit-keyset-"));
      const file = path.join(dir, "jwks.json");
      const k1 = await makeKey("ES256");
      const k2 = await makeKey("ES256");
      writeFileSync(file, JSON.stringify({ keys: [k1.publicJwk] }));
      const ks = urlKeySet({ source: { kind: "file", path: file } });
      await ks.refresh();
      await keyFor(ks, k1.kid);
      writeFileSync(file, JSON.stringify({ keys: [k1.publicJwk, k2.publicJwk] }));
      await expectUnknownKid(keyFor(ks, k2.kid));
      clk.advance(COOLDOWN);
      await keyFor(ks, k2.kid);
    });

    it("a SPIFFE bundle file keeps only jwt-svid keys", async () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), "jit-keyset-"));
      const file = path.join(dir, "bundle.json");
      const svid = await makeKey("ES256");
      const x509 = await makeKey("ES256");
      writeFileSync(file, JSON.stringify({ keys: [{ ...svid.publicJwk, use: "jwt-svid" }, { ...x509.publicJwk, use: "x509-svid" }] }));
      const ks = urlKeySet({ source: { kind: "file", path: file }, flavour: "spiffe" });
      await ks.refresh();
      expect(ks.status().keys).toBe(1);
      const token = await signWith(svid, { sub: "spiffe://prod.example.org/x", exp: Math.floor(Date.now() / 1000) + 60 });
      await verifyWith(ks, token);
      await expectUnknownKid(keyFor(ks, x509.kid));
    });
  });
});

describe("OIDC discovery", () => {
  const clk = clock();
  const discoveryKeySet = (issuerUrl: string) =>
    createKeySet({ name: "disc", source: { kind: "discovery", issuer: issuerUrl }, flavour: "oidc", refreshMs: REFRESH, cooldownMs: COOLDOWN, now: clk.now });

  it("loads the JWKS named by the discovery document", async () => {
    const iss = await startTestIssuer();
    try {
      const ks = discoveryKeySet(iss.url);
      await ks.refresh();
      expect(iss.requests).toEqual(["/.well-known/openid-configuration", "/jwks"]);
      await verifyWith(ks, await iss.token({ sub: "s" }));
    } finally {
      await iss.close();
    }
  });

  /** A discovery endpoint serving `doc(url)`, plus a JWKS that must not be fetched. */
  async function discoveryServer(doc: (url: string) => Record<string, unknown>) {
    const key = await makeKey("ES256");
    return startServer((req, res, url) => {
      res.setHeader("content-type", "application/json");
      if (req.url === "/.well-known/openid-configuration") res.end(JSON.stringify(doc(url)));
      else if (req.url === "/jwks") res.end(JSON.stringify({ keys: [key.publicJwk] }));
      else {
        res.statusCode = 404;
        res.end();
      }
    });
  }

  it.each([
    ["a different issuer", () => "https://evil.example.com"],
    ["the issuer with a trailing slash", (url: string) => `${url}/`],
    ["the issuer in another case", (url: string) => url.toUpperCase()],
    ["no issuer", () => undefined],
  ])("rejects a document naming %s, and never fetches its jwks_uri", async (_name, issuerOf) => {
    const srv = await discoveryServer((url) => ({ issuer: issuerOf(url), jwks_uri: `${url}/jwks` }));
    try {
      const ks = discoveryKeySet(srv.url);
      await expect(ks.refresh()).rejects.toThrow(/discovery document names issuer/);
      expect(srv.hits).toEqual(["/.well-known/openid-configuration"]);
      expect(ks.status().keys).toBe(0);
      await expectUnavailable(keyFor(ks, randomUUID()));
    } finally {
      await srv.close();
    }
  });

  it.each([
    ["plain http to a remote host", "http://jwks.example.com/keys"],
    ["a file URL", "file:///etc/passwd"],
    ["not a URL", "jwks"],
    ["missing", undefined],
  ])("rejects a jwks_uri that is %s", async (_name, jwksUri) => {
    const srv = await discoveryServer((url) => ({ issuer: url, jwks_uri: jwksUri }));
    try {
      const ks = discoveryKeySet(srv.url);
      await expect(ks.refresh()).rejects.toThrow(/jwks_uri/);
      expect(srv.hits).toEqual(["/.well-known/openid-configuration"]);
    } finally {
      await srv.close();
    }
  });
});

describe("normaliseKeys", () => {
  let rsa: JWK;
  let rsaPrivate: JWK;
  let ec: JWK;
  let ed: JWK;

  beforeAll(async () => {
    const r = await generateKeyPair("RS256", { extractable: true });
    rsa = { ...(await exportJWK(r.publicKey)), kid: "rsa", alg: "RS256" };
    rsaPrivate = { ...(await exportJWK(r.privateKey)), kid: "rsa-priv", alg: "RS256" };
    ec = { ...(await exportJWK((await generateKeyPair("ES256")).publicKey)), kid: "ec" };
    ed = { ...(await exportJWK((await generateKeyPair("EdDSA")).publicKey)), kid: "ed" };
  });

  const kids = (keys: JWK[]) => keys.map((k) => k.kid);

  it("keeps public signature keys (use sig or absent) of kty RSA, EC and OKP", () => {
    const out = normaliseKeys({ keys: [rsa, { ...ec, use: "sig" }, ed] }, "oidc");
    expect(kids(out)).toEqual(["rsa", "ec", "ed"]);
  });

  it("drops oct (symmetric) keys, whatever they claim", () => {
    const out = normaliseKeys(
      {
        keys: [
          { kty: "oct", k: "c2VjcmV0", kid: "oct", alg: "HS256" },
          { kty: "oct", k: "c2VjcmV0", kid: "oct-sig", use: "sig" },
          rsa,
        ],
      },
      "oidc",
    );
    expect(kids(out)).toEqual(["rsa"]);
    expect(JSON.stringify(out)).not.toContain("c2VjcmV0");
  });

  it("drops encryption keys (use enc) and keys of unknown kty or use", () => {
    const out = normaliseKeys(
      { keys: [{ ...rsa, kid: "enc", use: "enc" }, { ...ec, kid: "weird", use: "jwt-svid" }, { ...ec, kid: "nokty", kty: undefined }, { ...ec, kid: "bogus", kty: "XYZ" }, ec] },
      "oidc",
    );
    expect(kids(out)).toEqual(["ec"]);
  });

  it("removes private members (d, p, q, dp, dq, qi, oth, k) and x5c", () => {
    expect(rsaPrivate.d).toBeDefined();
    const out = normaliseKeys({ keys: [{ ...rsaPrivate, oth: [{ r: "x" }], x5c: ["MIIB"] }, { ...ec, d: "secret-d" }] }, "oidc");
    expect(kids(out)).toEqual(["rsa-priv", "ec"]);
    for (const k of out) {
      for (const m of ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "x5c"]) expect(k).not.toHaveProperty(m);
    }
    expect(out[0]).toMatchObject({ kty: "RSA", n: rsa.n, e: rsa.e });
    expect(JSON.stringify(out)).not.toContain(rsaPrivate.d!);
  });

  it("does not mutate the input document", () => {
    const doc = { keys: [{ ...rsaPrivate }] };
    normaliseKeys(doc, "oidc");
    expect(doc.keys[0]!.d).toBe(rsaPrivate.d);
  });

  it("for SPIFFE keeps only use: jwt-svid keys", () => {
    const out = normaliseKeys(
      {
        keys: [
          { ...ec, kid: "svid", use: "jwt-svid" },
          { ...ec, kid: "x509", use: "x509-svid", x5c: ["MIIB"] },
          { ...ec, kid: "sig", use: "sig" },
          { ...ec, kid: "none" },
          { kty: "oct", k: "c2VjcmV0", kid: "oct", use: "jwt-svid" },
          { ...rsaPrivate, kid: "svid-rsa", use: "jwt-svid" },
        ],
        spiffe_refresh_hint: 300,
      },
      "spiffe",
    );
    expect(kids(out)).toEqual(["svid", "svid-rsa"]);
    expect(out[1]).not.toHaveProperty("d");
  });

  it("skips entries that are not objects and rejects documents without a keys array", () => {
    expect(kids(normaliseKeys({ keys: [null, 1, "x", [], ec] }, "oidc"))).toEqual(["ec"]);
    for (const doc of [null, 1, "keys", [], {}, { keys: {} }, { keys: "x" }]) {
      expect(() => normaliseKeys(doc, "oidc")).toThrow(/not a JWK set/);
    }
  });

  it("a JWKS that publishes a private key still yields a usable public key (never the private one)", async () => {
    const iss = { ...(await makeKey("RS256")), kid: "leaky" };
    const priv = { ...(await exportJWK(iss.privateKey)), kid: "leaky", alg: "RS256", use: "sig" };
    const srv = await startServer((_req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ keys: [priv] }));
    });
    try {
      const ks = createKeySet({ name: "leaky", source: { kind: "url", url: `${srv.url}/jwks` }, flavour: "oidc", refreshMs: REFRESH, cooldownMs: COOLDOWN, now: clock().now });
      await ks.refresh();
      const key = await keyFor(ks, "leaky", "RS256");
      expect((key as { type?: string }).type).toBe("public");
      await verifyWith(ks, await signWith(iss, { sub: "s", exp: Math.floor(Date.now() / 1000) + 60 }));
    } finally {
      await srv.close();
    }
  });
});

describe("HTTP: a broker whose issuer is down", () => {
  let issuer: TestIssuer;
  let offset = 0;

  beforeAll(async () => {
    issuer = await startTestIssuer();
  });
  afterAll(async () => {
    await issuer.close();
  });

  it("answers 503 issuer_unavailable without hammering the issuer, and recovers after the cooldown", async () => {
    issuer.failWith = 503;
    const b = await startTestBroker(
      {
        server: { public_url: "http://127.0.0.1:8080", audience: "jitbroker" },
        identity: {
          issuers: [{ name: "ci", type: "oidc", issuer: issuer.url, discovery: true, algorithms: ["RS256", "ES256"], jwks_cooldown: "30s", jwks_refresh: "10m" }],
        },
        workloads: [{ id: "deployer", kind: "ci", owner: "o@example.com", purpose: "p", issuer: "ci", subject: "repo:acme/payments" }],
      },
      { now: () => Date.now() + offset },
    );
    try {
      expect(jwksFetches(issuer)).toBe(1); // the start-up attempt
      const token = await issuer.token({ sub: "repo:acme/payments" });

      for (let i = 0; i < 5; i++) {
        const r = await getJson(`${b.url}/v1/whoami`, token);
        expect(r.status).toBe(503);
        expect(r.headers.get("content-type")).toMatch(/^application\/problem\+json/);
        expect(r.body).toMatchObject({ status: 503, code: "issuer_unavailable" });
        expect(r.body.request_id).toBe(r.headers.get("x-request-id"));
        expect(r.headers.get("www-authenticate")).toBeNull();
      }
      expect(jwksFetches(issuer)).toBe(1);

      issuer.failWith = 0;
      expect((await getJson(`${b.url}/v1/whoami`, token)).status).toBe(503); // still inside the cooldown
      expect(jwksFetches(issuer)).toBe(1);

      offset = 31_000;
      const ok = await getJson(`${b.url}/v1/whoami`, token);
      expect(ok.status).toBe(200);
      expect(ok.body.workload.id).toBe("deployer");
      expect(jwksFetches(issuer)).toBe(2);

      // An unavailable issuer is not a bad token: no auth failure was counted, and the token is not logged.
      const metrics = await (await fetch(`${b.url}/metrics`)).text();
      expect(metrics).not.toMatch(/jitbroker_auth_failures_total\{/);
      expect(metrics).toMatch(/jitbroker_jwks_loads_total\{issuer="ci",result="error"\} 1/);
      expect(metrics).toMatch(/jitbroker_jwks_loads_total\{issuer="ci",result="ok"\} 1/);
      expect(b.logs.join("\n")).not.toContain(token);
    } finally {
      await b.close();
    }
  });
});
