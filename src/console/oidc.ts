/**
 * The console's OpenID Connect relying party: authorization code with PKCE (S256), state and
 * nonce, through openid-client (loaded on first sign-in: it is an ES module, and a broker
 * without a console never loads it). openid-client checks the callback (state, issuer, PKCE)
 * and the ID token's claims (iss, aud = client_id, nonce, exp); the console then verifies the
 * ID token again with the broker's own verifier for the configured issuer (its key set, its
 * algorithm allowlist, clock skew and lifetime limits), exactly as a workload token would be.
 */
import type * as OpenIdClient from "openid-client";
import { BrokerError } from "../core/errors";

type Lib = typeof OpenIdClient;
let lib: Promise<Lib> | null = null;
const load = (): Promise<Lib> => (lib ??= import("openid-client"));

export interface OidcClientOptions {
  /** The issuer identifier (`iss` of its ID tokens). */
  issuer: string;
  clientId: string;
  clientSecret?: string;
  redirectUri: string;
  /** Endpoints to use instead of discovery (the dev issuer served by `jitbroker dev`). */
  endpoints?: { authorization: string; token: string };
  /** With `endpoints`: the algorithms the issuer signs ID tokens with. */
  algorithms?: string[];
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);
/** Plain http is allowed only towards loopback (like every URL of the configuration). */
const insecureOk = (urls: string[]) => urls.every((u) => {
  const url = new URL(u);
  return url.protocol === "https:" || (url.protocol === "http:" && LOOPBACK.has(url.hostname));
});

export interface OidcClient {
  /** Where to send the browser, and what to keep for the callback. */
  begin(): Promise<{ url: string; state: string; verifier: string; nonce: string }>;
  /** Redeems the code of the callback URL; returns the ID token (compact JWS). */
  finish(callbackUrl: URL, checks: { state: string; verifier: string; nonce: string }): Promise<string>;
}

export function createOidcClient(opts: OidcClientOptions): OidcClient {
  let config: Promise<OpenIdClient.Configuration> | null = null;

  async function configure(): Promise<OpenIdClient.Configuration> {
    const c = await load();
    const auth = opts.clientSecret ? c.ClientSecretBasic(opts.clientSecret) : c.None();
    const insecure = opts.endpoints ? [opts.issuer, opts.endpoints.authorization, opts.endpoints.token] : [opts.issuer];
    if (!insecureOk(insecure)) throw new Error("console issuer endpoints must be https (http only for loopback)");
    const allowHttp = insecure.some((u) => u.startsWith("http:"));
    if (opts.endpoints) {
      const cfg = new c.Configuration(
        { issuer: opts.issuer, authorization_endpoint: opts.endpoints.authorization, token_endpoint: opts.endpoints.token, code_challenge_methods_supported: ["S256"], id_token_signing_alg_values_supported: opts.algorithms ?? ["RS256"] },
        opts.clientId,
        { redirect_uris: [opts.redirectUri], response_types: ["code"] },
        auth,
      );
      if (allowHttp) c.allowInsecureRequests(cfg);
      return cfg;
    }
    const cfg = await c.discovery(new URL(opts.issuer), opts.clientId, { redirect_uris: [opts.redirectUri], response_types: ["code"] }, auth, allowHttp ? { execute: [c.allowInsecureRequests] } : undefined);
    const endpoints = [cfg.serverMetadata().authorization_endpoint, cfg.serverMetadata().token_endpoint].filter((u): u is string => typeof u === "string");
    if (endpoints.length !== 2 || !insecureOk(endpoints)) throw new Error("the issuer's discovery document lacks https authorization and token endpoints");
    return cfg;
  }

  async function configuration(): Promise<OpenIdClient.Configuration> {
    config ??= configure();
    try {
      return await config;
    } catch (e) {
      config = null; // retried on the next sign-in
      throw new BrokerError("issuer_unavailable", "the console's identity provider cannot be reached or is misconfigured", { cause: e });
    }
  }

  return {
    async begin() {
      const c = await load();
      const cfg = await configuration();
      const verifier = c.randomPKCECodeVerifier();
      const state = c.randomState();
      const nonce = c.randomNonce();
      const url = c.buildAuthorizationUrl(cfg, {
        redirect_uri: opts.redirectUri,
        scope: "openid",
        response_type: "code",
        code_challenge: await c.calculatePKCECodeChallenge(verifier),
        code_challenge_method: "S256",
        state,
        nonce,
      });
      return { url: url.href, state, verifier, nonce };
    },
    async finish(callbackUrl, checks) {
      const c = await load();
      const cfg = await configuration();
      const tokens = await c.authorizationCodeGrant(cfg, callbackUrl, {
        pkceCodeVerifier: checks.verifier,
        expectedState: checks.state,
        expectedNonce: checks.nonce,
        idTokenExpected: true,
      });
      if (typeof tokens.id_token !== "string") throw new Error("no id_token in the token response");
      return tokens.id_token;
    },
  };
}
