/**
 * The dev identity issuer: two local signing keys (an OIDC issuer and a SPIFFE trust domain)
 * kept under the dev directory, their public key sets written where the dev config reads them,
 * and a signer that mints workload tokens for `jitbroker token dev`. Dev mode only: nothing in
 * `serve` reads the private key.
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync, existsSync, renameSync } from "node:fs";
import path from "node:path";
import { SignJWT, exportJWK, generateKeyPair, importJWK, type JWK } from "jose";

export const DEV_OIDC_ISSUER = "https://dev-issuer.jitbroker.invalid";
export const DEV_TRUST_DOMAIN = "dev.jitbroker.local";

interface DevKeyFile {
  oidc: JWK;
  spiffe: JWK;
}

function writeFileAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, file);
}

async function newKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  return { ...(await exportJWK(privateKey)), alg: "ES256", kid: randomUUID() };
}

const publicPart = ({ d: _d, ...pub }: JWK): JWK => pub;

/**
 * Creates the dev keys if absent and (re)writes the public key sets next to them:
 * `dev-jwks.json` (OIDC) and `dev-bundle.json` (SPIFFE bundle, `use: jwt-svid`).
 */
export async function ensureDevIssuer(dir: string): Promise<{ keyFile: string }> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keyFile = path.join(dir, "dev-issuer-keys.json");
  if (!existsSync(keyFile)) {
    const keys: DevKeyFile = { oidc: await newKey(), spiffe: await newKey() };
    writeFileAtomic(keyFile, JSON.stringify(keys, null, 2), 0o600);
  }
  const keys = JSON.parse(readFileSync(keyFile, "utf8")) as DevKeyFile;
  writeFileAtomic(path.join(dir, "dev-jwks.json"), JSON.stringify({ keys: [{ ...publicPart(keys.oidc), use: "sig" }] }, null, 2), 0o644);
  writeFileAtomic(
    path.join(dir, "dev-bundle.json"),
    JSON.stringify({ keys: [{ ...publicPart(keys.spiffe), use: "jwt-svid" }], spiffe_refresh_hint: 300 }, null, 2),
    0o644,
  );
  return { keyFile };
}

export interface DevTokenRequest {
  keyFile: string;
  kind: "oidc" | "spiffe";
  issuer?: string;
  subject: string;
  audience: string;
  claims: Record<string, unknown>;
  ttlSeconds: number;
  now?: number;
}

export async function signDevToken(req: DevTokenRequest): Promise<string> {
  const keys = JSON.parse(readFileSync(req.keyFile, "utf8")) as DevKeyFile;
  const jwk = req.kind === "oidc" ? keys.oidc : keys.spiffe;
  const key = await importJWK(jwk, "ES256");
  const nowSec = Math.floor((req.now ?? Date.now()) / 1000);
  const jwt = new SignJWT({ ...req.claims })
    .setProtectedHeader({ alg: "ES256", kid: jwk.kid!, typ: "JWT" })
    .setSubject(req.subject)
    .setAudience(req.audience)
    .setIssuedAt(nowSec)
    .setExpirationTime(nowSec + req.ttlSeconds)
    .setJti(randomUUID());
  if (req.issuer !== undefined) jwt.setIssuer(req.issuer);
  return jwt.sign(key);
}
