/**
 * The dev issuer's sign-in for the console (`jitbroker dev` only): an OpenID Connect
 * authorization endpoint (authorization code with PKCE S256 required) and a token endpoint that
 * answers with an ID token signed by the dev OIDC key. The sign-in page offers one button per
 * `human` workload of the dev issuer; it also offers the other workloads of that issuer and a
 * person absent from the inventory, so that the console's refusal can be seen.
 *
 *   GET  /dev/oidc/authorize   the sign-in page (validates client_id, redirect_uri, PKCE)
 *   POST /dev/oidc/authorize   the chosen identity: 303 to redirect_uri with code and state
 *   POST /dev/oidc/token       grant_type=authorization_code: code + code_verifier -> ID token
 *
 * Codes live in this process's memory for 60 seconds and are single use.
 */
import { createHash, randomBytes } from "node:crypto";
import express, { Router, type Response } from "express";
import type { LoadedConfig } from "../config/load";
import type { DevSignIn } from "../console/mount";
import type { Workload, WorkloadMatcher } from "../identity/workloads";
import { escapeHtml, page, SECURITY_HEADERS } from "../console/pages";
import { DEV_OIDC_ISSUER, signDevToken } from "./issuer";

export const UNKNOWN_PERSON = "mallory@example.com";

export interface DevAuthorizeOptions {
  keyFile: string;
  clientId: string;
  redirectUri: string;
  /** The name of the dev OIDC issuer in the configuration. */
  issuerName: string;
  workloads: () => WorkloadMatcher;
  now?: () => number;
}

/** The console's sign-in at the dev issuer, under `jitbroker dev` (a `dev` section); else none. */
export function devConsoleSignIn(cfg: Pick<LoadedConfig, "dev">, deps: Pick<DevAuthorizeOptions, "workloads" | "now">): DevSignIn | undefined {
  const dev = cfg.dev;
  if (!dev) return undefined;
  return { issuer: DEV_OIDC_ISSUER, routes: (o) => devAuthorizeRoutes({ keyFile: dev.issuer_key_file, ...o, ...deps }) };
}

interface Grant {
  subject: string;
  claims: Record<string, unknown>;
  challenge: string;
  nonce: string | undefined;
  expiresMs: number;
}

const CHALLENGE = /^[A-Za-z0-9_-]{43}$/;
const VERIFIER = /^[A-Za-z0-9._~-]{43,128}$/;

export function devAuthorizeRoutes(opts: DevAuthorizeOptions): Router {
  const now = opts.now ?? Date.now;
  const codes = new Map<string, Grant>();
  const r = Router();
  r.use("/dev/oidc", (_req, res, next) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    next();
  });
  const form = express.urlencoded({ extended: false, limit: "8kb" });
  const refuse = (res: Response, msg: string) => res.status(400).type("html").send(page("Dev sign-in refused", `<p role="alert">${escapeHtml(msg)}</p>`));

  /** The authorization request's parameters, checked; a string is the reason to refuse. */
  function check(p: Record<string, unknown>): { state: string; nonce: string | undefined; challenge: string } | string {
    if (p.response_type !== "code") return "response_type must be code";
    if (p.client_id !== opts.clientId) return "unknown client_id";
    if (p.redirect_uri !== opts.redirectUri) return "redirect_uri is not the console's callback";
    if (p.code_challenge_method !== "S256" || typeof p.code_challenge !== "string" || !CHALLENGE.test(p.code_challenge)) return "PKCE with S256 is required";
    if (typeof p.state !== "string" || p.state.length === 0 || p.state.length > 512) return "state is required";
    if (p.nonce !== undefined && (typeof p.nonce !== "string" || p.nonce.length > 512)) return "nonce is invalid";
    return { state: p.state, nonce: p.nonce as string | undefined, challenge: p.code_challenge };
  }

  const ofIssuer = () => opts.workloads().all().filter((w) => w.issuer === opts.issuerName);
  const subjectOf = (w: Workload) => w.subject ?? `dev:${w.id}`;
  const claimsOf = (w: Workload) => Object.fromEntries(Object.entries(w.claims).map(([k, v]) => [k, v[0]]));

  r.get("/dev/oidc/authorize", (req, res) => {
    const q = req.query as Record<string, unknown>;
    const ok = check(q);
    if (typeof ok === "string") return refuse(res, ok);
    const hidden = ["response_type", "client_id", "redirect_uri", "code_challenge", "code_challenge_method", "state", "nonce", "scope"]
      .filter((k) => typeof q[k] === "string")
      .map((k) => `<input type="hidden" name="${k}" value="${escapeHtml(q[k] as string)}">`)
      .join("\n");
    const button = (value: string, label: string, cls = "") => `<button type="submit" name="who" value="${escapeHtml(value)}"${cls ? ` class="${cls}"` : ""}>${escapeHtml(label)}</button>`;
    const humans = ofIssuer().filter((w) => w.kind === "human");
    const others = ofIssuer().filter((w) => w.kind !== "human");
    res.type("html").send(
      page(
        "Dev issuer: sign in",
        `<p>This is the dev identity issuer of <code>jitbroker dev</code>. Choose who signs in to the console.</p>
<form method="post" action="/dev/oidc/authorize">
${hidden}
<h2>Operators (human workloads)</h2>
<ul class="choices">${humans.map((w) => `<li>${button(`w:${w.id}`, `Sign in as ${w.id}`, "primary")} <span>${escapeHtml(w.owner)} · ${escapeHtml(w.purpose)}</span></li>`).join("")}</ul>
<h2>See a refusal</h2>
<ul class="choices">${others.map((w) => `<li>${button(`w:${w.id}`, `Sign in as ${w.id} (${w.kind})`)}</li>`).join("")}
<li>${button("unknown", `Sign in as ${UNKNOWN_PERSON} (not in the inventory)`)}</li></ul>
</form>`,
      ),
    );
  });

  r.post("/dev/oidc/authorize", form, (req, res) => {
    const b = (req.body ?? {}) as Record<string, unknown>;
    const ok = check(b);
    if (typeof ok === "string") return refuse(res, ok);
    let subject: string;
    let claims: Record<string, unknown> = {};
    if (b.who === "unknown") subject = UNKNOWN_PERSON;
    else {
      const id = typeof b.who === "string" && b.who.startsWith("w:") ? b.who.slice(2) : "";
      const w = ofIssuer().find((x) => x.id === id);
      if (!w) return refuse(res, "choose one of the offered identities");
      subject = subjectOf(w);
      claims = claimsOf(w);
    }
    for (const [c, g] of codes) if (g.expiresMs <= now()) codes.delete(c);
    if (codes.size > 1000) return refuse(res, "too many sign-ins in progress");
    const code = randomBytes(32).toString("base64url");
    codes.set(code, { subject, claims, challenge: ok.challenge, nonce: ok.nonce, expiresMs: now() + 60_000 });
    const to = new URL(opts.redirectUri);
    to.searchParams.set("code", code);
    to.searchParams.set("state", ok.state);
    to.searchParams.set("iss", DEV_OIDC_ISSUER);
    res.redirect(303, to.href);
  });

  r.post("/dev/oidc/token", form, async (req, res) => {
    res.setHeader("Cache-Control", "no-store");
    const b = (req.body ?? {}) as Record<string, unknown>;
    const fail = (error: string, description: string) => res.status(400).json({ error, error_description: description });
    if (b.grant_type !== "authorization_code") return fail("unsupported_grant_type", "only authorization_code");
    // Public client (PKCE); a client_secret_basic header is accepted but not required.
    const basic = /^Basic (.+)$/.exec(req.get("authorization") ?? "");
    const clientId = basic ? decodeURIComponent(Buffer.from(basic[1]!, "base64").toString().split(":")[0] ?? "") : b.client_id;
    if (clientId !== opts.clientId) return fail("invalid_client", "unknown client");
    if (b.redirect_uri !== opts.redirectUri) return fail("invalid_grant", "redirect_uri does not match");
    const code = typeof b.code === "string" ? b.code : "";
    const grant = codes.get(code);
    codes.delete(code);
    if (!grant || grant.expiresMs <= now()) return fail("invalid_grant", "unknown, used or expired code");
    if (typeof b.code_verifier !== "string" || !VERIFIER.test(b.code_verifier)) return fail("invalid_grant", "code_verifier required");
    if (createHash("sha256").update(b.code_verifier).digest("base64url") !== grant.challenge) return fail("invalid_grant", "PKCE verification failed");
    const idToken = await signDevToken({
      keyFile: opts.keyFile,
      kind: "oidc",
      issuer: DEV_OIDC_ISSUER,
      subject: grant.subject,
      audience: opts.clientId,
      claims: { ...grant.claims, ...(grant.nonce ? { nonce: grant.nonce } : {}) },
      ttlSeconds: 300,
      now: now(),
    });
    res.json({ access_token: randomBytes(32).toString("base64url"), token_type: "Bearer", expires_in: 300, id_token: idToken, scope: "openid" });
  });

  return r;
}
