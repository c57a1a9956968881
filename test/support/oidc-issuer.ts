/**
 * A test OIDC issuer: a real HTTP server on 127.0.0.1 serving a discovery document and a JWKS,
 * signing tokens with its own keys (jose), and recording every request it receives so tests
 * can assert what the broker fetched.
 */
import http from "node:http";
import { writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import { SignJWT, exportJWK, generateKeyPair, type JWK, type JWTHeaderParameters, type JWTPayload, type CryptoKey, type KeyObject } from "jose";

export interface TestKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey | KeyObject;
  publicJwk: JWK;
}

export async function makeKey(alg: "RS256" | "ES256" | "PS256" | "ES384" = "ES256", kid = randomUUID()): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
}

export interface SignOptions {
  key?: TestKey;
  header?: Partial<JWTHeaderParameters> & Record<string, unknown>;
  /** Defaults filled in unless set to undefined explicitly. */
  iss?: string | undefined;
  aud?: string | string[] | undefined;
  exp?: number | undefined;
  iat?: number | undefined;
}

export async function signWith(key: TestKey, payload: JWTPayload, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg: key.alg, kid: key.kid, typ: "JWT", ...header }).sign(key.privateKey);
}

export interface TestIssuer {
  url: string;
  keys: TestKey[];
  /** Paths requested so far (e.g. "/.well-known/openid-configuration", "/jwks"). */
  requests: string[];
  /** Make the JWKS endpoint fail with this status (0 = serve normally). */
  failWith: number;
  addKey(alg?: "RS256" | "ES256"): Promise<TestKey>;
  /** A token from this issuer: iss, aud "jitbroker", iat now, exp in 5 minutes, unless overridden. */
  token(claims?: JWTPayload, opts?: SignOptions): Promise<string>;
  close(): Promise<void>;
}

export async function startTestIssuer(opts: { algs?: ("RS256" | "ES256")[]; audience?: string } = {}): Promise<TestIssuer> {
  const keys: TestKey[] = [];
  for (const alg of opts.algs ?? ["RS256", "ES256"]) keys.push(await makeKey(alg));
  const requests: string[] = [];
  const state = { failWith: 0 };
  let url = "";
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? "");
    if (req.url === "/.well-known/openid-configuration") {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ issuer: url, jwks_uri: `${url}/jwks`, id_token_signing_alg_values_supported: ["RS256", "ES256"] }));
    } else if (req.url === "/jwks") {
      if (state.failWith) {
        res.statusCode = state.failWith;
        res.end("unavailable");
        return;
      }
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ keys: keys.map((k) => k.publicJwk) }));
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const issuer: TestIssuer = {
    url,
    keys,
    requests,
    get failWith() {
      return state.failWith;
    },
    set failWith(v: number) {
      state.failWith = v;
    },
    async addKey(alg = "ES256") {
      const k = await makeKey(alg);
      keys.push(k);
      return k;
    },
    async token(claims = {}, o = {}) {
      const now = Math.floor(Date.now() / 1000);
      const payload: JWTPayload = { ...claims };
      const pick = <K extends keyof SignOptions>(k: K, dflt: SignOptions[K]) => (k in o ? o[k] : dflt);
      const iss = pick("iss", url);
      const aud = pick("aud", opts.audience ?? "jitbroker");
      const iat = pick("iat", now);
      const exp = pick("exp", now + 300);
      if (iss !== undefined) payload.iss = iss;
      if (aud !== undefined) payload.aud = aud;
      if (iat !== undefined) payload.iat = iat;
      if (exp !== undefined) payload.exp = exp;
      return signWith(o.key ?? keys[0]!, payload, o.header ?? {});
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
  return issuer;
}

/** A SPIFFE trust bundle (JWKS whose keys carry `use: "jwt-svid"`) written to `file`. */
export function writeSpiffeBundle(file: string, keys: TestKey[]): void {
  const doc = { keys: keys.map((k) => ({ ...k.publicJwk, use: "jwt-svid" })), spiffe_refresh_hint: 300 };
  writeFileSync(file, JSON.stringify(doc));
}

/** A JWT-SVID: sub is the SPIFFE ID, aud "jitbroker", no iss, 5 minutes. */
export async function signSvid(key: TestKey, spiffeId: string, extra: JWTPayload = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return signWith(key, { sub: spiffeId, aud: "jitbroker", iat: now, exp: now + 300, ...extra });
}
