/**
 * The operators' console (docs/ARCHITECTURE.md, Console): sign-in with OpenID Connect
 * (authorization code + PKCE), server-side sessions, and the console's API under /console/api.
 *
 *   GET  /console/              the front end (web/console, built to dist/console-web) for a
 *                               signed-in operator; the sign-in page otherwise
 *   GET  /console/login         starts a sign-in at console.oidc's issuer
 *   GET  /console/callback      redirect URI: redeems the code, verifies the ID token like a
 *                               workload token (aud = client_id), maps it to a `human` workload
 *                               that Cedar allows `admin_read`, opens a session
 *   GET  /console/assets/*      the front end's static files
 *   /console/api/...            JSON for the front end; the session cookie authenticates, and
 *                               every change carries the session's CSRF token (X-CSRF-Token)
 *
 * The console's API re-mounts the API's own lease and approval routes (the same handlers, Cedar
 * checks and audit, with the operator's workload as actor) behind an allowlist of operator
 * paths, and adds the few read views the REST API has no endpoint for (inventory, health, the
 * count a revocation would match).
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import express, { Router, type NextFunction, type Request, type Response } from "express";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { z } from "zod";
import { verifyAuditChain, type AuditLedger, type AuditVerifyOptions } from "../audit/ledger";
import { BrokerError, isBrokerError } from "../core/errors";
import type { AuthContext } from "../http/app";
import { parse } from "../http/app";
import { isOperator, requireOperator, type OperatorCheck } from "../authz/operators";
import { mayBeOperator } from "../authz/refusals";
import type { TokenVerifier } from "../identity/verify";
import type { Workload, WorkloadMatcher } from "../identity/workloads";
import { TASK_ID } from "../leases/schemas";
import { isLive, publicLease, type LeaseStore } from "../leases/store";
import type { OidcClient } from "./oidc";
import { escapeHtml, refusalPage, SECURITY_HEADERS, page, signInPage } from "./pages";
import { randomToken, sameToken, type ConsoleSessions } from "./sessions";

/** Where `npm run build` puts the front end (dist/console-web; the same path from src/ and dist/). */
export const WEB_DIR = path.resolve(__dirname, "../../dist/console-web");

export interface ConsoleRoutesOptions {
  publicUrl: string;
  issuerName: string;
  issuerUrl: string;
  sessionIdleMs: number;
  sessionMaxMs: number;
  oidc: OidcClient;
  /** Verifies ID tokens of the console's issuer with aud = client_id. */
  idTokens: TokenVerifier;
  sessions: ConsoleSessions;
  workloads: () => WorkloadMatcher;
  check: OperatorCheck;
  store: LeaseStore;
  audit: AuditLedger;
  redis: Redis;
  redisMode: string;
  auditKeys: AuditVerifyOptions;
  readiness: () => Promise<unknown>;
  /** The API's own routers, re-mounted under /console/api. */
  apiRouters: Router[];
  logger: Logger;
  now?: () => number;
  webDir?: string;
}

/** The API paths an operator's console may call (method and path after /console/api). */
const PASSTHROUGH: [string, RegExp][] = [
  ["GET", /^\/v1\/admin\/leases$/],
  ["GET", /^\/v1\/leases\/[^/]+$/],
  ["GET", /^\/v1\/admin\/leases\/[^/]+\/history$/],
  ["POST", /^\/v1\/admin\/revocations$/],
  ["GET", /^\/v1\/admin\/revocations\/[^/]+$/],
  ["GET", /^\/v1\/admin\/requests$/],
  ["GET", /^\/v1\/admin\/requests\/[^/]+$/],
  ["POST", /^\/v1\/admin\/requests\/[^/]+\/(approve|deny)$/],
];

const SAFE_METHODS = new Set(["GET", "HEAD"]);
/** Sign-ins that may be started per minute, broker-wide (each holds a small Redis key for 10 min). */
export const LOGINS_PER_MINUTE = 600;

/** Reads one cookie from the Cookie header (no dependency; values are our own base64url tokens). */
export function cookieOf(req: Request, name: string): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const i = part.indexOf("=");
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

const previewQuery = z.strictObject({
  lease_id: z.string().max(64).optional(),
  task_id: z.string().regex(TASK_ID).optional(),
  workload: z.string().max(128).optional(),
  role: z.string().max(128).optional(),
  issuer: z.string().max(64).optional(),
});

export function consoleRoutes(opts: ConsoleRoutesOptions): Router {
  const now = opts.now ?? Date.now;
  const at = () => new Date(now()).toISOString();
  const secure = opts.publicUrl.startsWith("https:");
  const origin = new URL(opts.publicUrl).origin;
  const names = secure
    ? { session: "__Host-jitbroker-console", login: "__Host-jitbroker-console-login", path: "/" }
    : { session: "jitbroker-console", login: "jitbroker-console-login", path: "/console" };
  const redirectUri = `${opts.publicUrl}/console/callback`;
  const webDir = opts.webDir ?? WEB_DIR;
  // Strict: "/console" and "/console/" are different routes (the first redirects to the second).
  const r = Router({ strict: true });

  r.use("/console", (_req, res, next) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    next();
  });

  const html = (res: Response, status: number, body: string) => res.status(status).type("html").send(body);
  const clearSession = (res: Response) => res.clearCookie(names.session, { path: names.path, httpOnly: true, sameSite: "strict", secure });

  /** The operator a verified identity maps to, or a reason to refuse (shown to the person). */
  function operatorOf(identity: Parameters<WorkloadMatcher["match"]>[0]): { workload: Workload } | { refused: string } {
    let w: Workload;
    try {
      w = opts.workloads().match(identity);
    } catch (e) {
      if (isBrokerError(e) && e.code === "unknown_workload") return { refused: "You are not in the broker's inventory: no workload matches your identity." };
      throw e;
    }
    if (!mayBeOperator(w)) return { refused: `Your identity belongs to workload "${w.id}" of kind ${w.kind}; only people (kind human) may use the console.` };
    return { workload: w };
  }

  const authOf = (w: Workload, s: { issuer: string; subject: string; claims: Record<string, unknown>; expiresAt: number }): AuthContext => ({
    workload: w,
    identity: { issuer: s.issuer, kind: "oidc", iss: opts.issuerUrl, subject: s.subject, claims: s.claims, jti: undefined, expiresAt: s.expiresAt },
  });

  // ---- pages -------------------------------------------------------------------------------

  r.get("/console", (_req, res) => res.redirect(301, "/console/"));

  r.get("/console/", async (req, res) => {
    const s = await opts.sessions.get(cookieOf(req, names.session), true);
    if (!s) {
      const had = cookieOf(req, names.session) !== undefined;
      if (had) clearSession(res);
      html(res, had ? 401 : 200, signInPage(opts.issuerName, had ? "Your session has ended (signed out, idle for too long, or past its maximum age). Sign in again." : undefined));
      return;
    }
    const index = path.join(webDir, "index.html");
    if (!existsSync(index)) {
      html(res, 503, page("Console not built", "<p>The console's front end is missing: run <code>npm run build</code>.</p>"));
      return;
    }
    res.type("html").send(readFileSync(index, "utf8"));
  });

  r.use("/console/assets", express.static(path.join(webDir, "assets"), { index: false, fallthrough: false, etag: false, maxAge: 0, dotfiles: "deny" }));

  r.get("/console/login", async (_req, res) => {
    // Anyone may start a sign-in, and each one is a Redis key for 10 minutes: bounded (I9) by a
    // broker-wide budget per minute.
    if (!(await opts.sessions.loginBudget(LOGINS_PER_MINUTE))) {
      html(res, 429, refusalPage("Too many sign-ins", "Too many sign-ins were started in the last minute. Try again in a minute."));
      return;
    }
    let begin: Awaited<ReturnType<OidcClient["begin"]>>;
    try {
      begin = await opts.oidc.begin();
    } catch (e) {
      opts.logger.warn({ err: { message: (e as Error).message, cause: (e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : undefined } }, "console sign-in could not start");
      html(res, 503, refusalPage("Sign-in unavailable", "The identity provider cannot be reached right now. Try again later."));
      return;
    }
    const binding = randomToken();
    await opts.sessions.beginLogin(begin.state, binding, { verifier: begin.verifier, nonce: begin.nonce });
    // Lax: the identity provider sends the browser back with a cross-site top-level GET.
    res.cookie(names.login, binding, { path: names.path, httpOnly: true, sameSite: "lax", secure, maxAge: 600_000 });
    res.redirect(303, begin.url);
  });

  r.get("/console/callback", async (req, res) => {
    res.clearCookie(names.login, { path: names.path, httpOnly: true, sameSite: "lax", secure });
    const q = req.query as Record<string, unknown>;
    if (typeof q.error === "string") {
      html(res, 403, refusalPage("Sign-in refused", `The identity provider answered: ${q.error.slice(0, 100)}.`));
      return;
    }
    const state = typeof q.state === "string" ? q.state : "";
    const tx = await opts.sessions.finishLogin(state, cookieOf(req, names.login));
    if (!tx) {
      html(res, 400, refusalPage("Sign-in expired", "This sign-in is unknown, was already used, or was started in another browser. Start again."));
      return;
    }
    let idToken: string;
    try {
      const url = new URL(redirectUri);
      url.search = new URL(req.originalUrl, "http://x").search;
      idToken = await opts.oidc.finish(url, { state, verifier: tx.verifier, nonce: tx.nonce });
    } catch (e) {
      const err = e as Error & { code?: string; cause?: unknown };
      const cause = err.cause instanceof Error ? err.cause.message : undefined;
      opts.logger.info({ request_id: req.id, err: { message: err.message, code: err.code, cause } }, "console sign-in failed at the code exchange");
      html(res, 403, refusalPage("Sign-in failed", "The identity provider's answer could not be verified."));
      return;
    }
    let identity;
    try {
      identity = await opts.idTokens.verify(idToken);
    } catch (e) {
      opts.logger.info({ request_id: req.id, code: isBrokerError(e) ? e.code : "internal", reason: isBrokerError(e) ? e.reason : undefined }, "console ID token refused");
      html(res, 403, refusalPage("Sign-in refused", "The ID token was not accepted by the broker's checks for this issuer."));
      return;
    }
    const who = operatorOf(identity);
    if ("refused" in who) {
      opts.logger.info({ request_id: req.id, issuer: identity.issuer }, "console sign-in refused: not an operator");
      html(res, 403, refusalPage("Not an operator", who.refused));
      return;
    }
    const claims = Object.fromEntries(
      Object.keys(who.workload.claims)
        .map((c) => [c, identity.claims[c]] as const)
        .filter((kv): kv is [string, string | number | boolean] => ["string", "number", "boolean"].includes(typeof kv[1])),
    );
    const auth = authOf(who.workload, { issuer: identity.issuer, subject: identity.subject, claims, expiresAt: now() + opts.sessionMaxMs });
    if (!isOperator(auth, "admin_read", opts.check)) {
      html(res, 403, refusalPage("Not an operator", `No policy allows workload "${who.workload.id}" to read the broker's state (admin_read).`));
      return;
    }
    const { sid } = await opts.sessions.create({ workload: who.workload.id, issuer: identity.issuer, subject: identity.subject, claims });
    await opts.audit.append({ type: "console_sign_in", at: at(), actor: who.workload.id, workload: who.workload.id, issuer: identity.issuer, subject: identity.subject });
    res.cookie(names.session, sid, { path: names.path, httpOnly: true, sameSite: "strict", secure });
    // A page, not a redirect: after the identity provider's cross-site redirect a Strict cookie
    // is not sent; a same-site navigation from this page carries it.
    html(res, 200, page("Signed in", `<p>Signed in as ${escapeHtml(who.workload.id)}. <a href="/console/">Continue to the console</a>.</p>`, { refreshTo: "/console/" }));
  });

  // ---- the console's API -------------------------------------------------------------------

  const api = Router();
  api.use(async (req: Request, res: Response, next: NextFunction) => {
    const sid = cookieOf(req, names.session);
    // Background refreshes (X-Console-Refresh: 1) do not count as use of the session.
    const s = await opts.sessions.get(sid, req.get("x-console-refresh") !== "1");
    if (!s || sid === undefined) throw new BrokerError("session_required", "sign in to the console: the session is missing, ended or expired");
    if (!SAFE_METHODS.has(req.method)) {
      if (!sameToken(req.get("x-csrf-token"), s.csrf)) throw new BrokerError("csrf_failed", "this change lacks the session's CSRF token (X-CSRF-Token)");
      const o = req.get("origin");
      if (o !== undefined && o !== origin) throw new BrokerError("csrf_failed", "this change comes from another origin");
      if (req.get("sec-fetch-site") !== undefined && req.get("sec-fetch-site") !== "same-origin") throw new BrokerError("csrf_failed", "this change comes from another site");
    }
    // The inventory may have changed since sign-in: the operator must still match, as a human.
    const who = operatorOf({ issuer: s.issuer, subject: s.subject, claims: s.claims });
    if ("refused" in who || who.workload.id !== s.workload) {
      await opts.sessions.end(sid, s.workload);
      throw new BrokerError("session_required", "the signed-in identity no longer maps to this operator; sign in again");
    }
    req.auth = authOf(who.workload, { ...s, expiresAt: s.createdMs + opts.sessionMaxMs });
    res.locals.consoleSession = s;
    next();
  });

  api.get("/session", (req, res) => {
    const s = res.locals.consoleSession as { csrf: string; createdMs: number; lastMs: number };
    const w = req.auth!.workload;
    res.json({
      operator: { id: w.id, kind: w.kind, owner: w.owner, purpose: w.purpose, issuer: req.auth!.identity.issuer },
      csrf_token: s.csrf,
      idle_expires_at: new Date(s.lastMs + opts.sessionIdleMs).toISOString(),
      expires_at: new Date(s.createdMs + opts.sessionMaxMs).toISOString(),
      can: { admin_read: isOperator(req.auth!, "admin_read", opts.check), admin_revoke: isOperator(req.auth!, "admin_revoke", opts.check) },
    });
  });

  api.post("/logout", async (req, res) => {
    const ended = await opts.sessions.endAll(req.auth!.workload.id);
    await opts.audit.append({ type: "console_sign_out", at: at(), actor: req.auth!.workload.id, workload: req.auth!.workload.id, sessions: ended });
    clearSession(res);
    res.json({ signed_out: true, sessions_ended: ended });
  });

  api.get("/workloads", async (req, res) => {
    requireOperator(req.auth!, "admin_read", opts.check);
    const all = opts.workloads().all();
    const live = await Promise.all(all.map((w) => opts.store.countLive("workload", w.id)));
    // Last activity: the newest lease among the 500 most recent (one bounded scan).
    const recent = await opts.store.list({}, 500, undefined, 500);
    const last = new Map<string, string>();
    for (const l of recent.leases) if (!last.has(l.workload)) last.set(l.workload, l.issued_at);
    res.json({
      workloads: all.map((w, i) => ({ id: w.id, kind: w.kind, owner: w.owner, purpose: w.purpose, issuer: w.issuer, live_leases: live[i], last_lease_at: last.get(w.id) ?? null })),
      last_activity_scope: recent.leases.length,
    });
  });

  api.get("/revocations/preview", async (req, res) => {
    requireOperator(req.auth!, "admin_revoke", opts.check);
    const q = parse(previewQuery, req.query, "query");
    const given = (["lease_id", "task_id", "workload", "role", "issuer"] as const).filter((k) => q[k] !== undefined);
    if (given.length !== 1) throw new BrokerError("invalid_request", "give exactly one of lease_id, task_id, workload, role, issuer");
    const key = given[0]!;
    let matched: number;
    if (key === "lease_id") {
      const l = await opts.store.get(q.lease_id!);
      matched = l && isLive(l) ? 1 : 0;
    } else {
      const sel = ({ task_id: "task", workload: "workload", role: "role", issuer: "issuer" } as const)[key];
      matched = await opts.store.countLive(sel, q[key]!);
    }
    res.json({ selector: { [key]: q[key] }, matched });
  });

  api.get("/health", async (req, res) => {
    requireOperator(req.auth!, "admin_read", opts.check);
    const [readiness, counts, failed, role] = await Promise.all([
      opts.readiness(),
      opts.store.counts(),
      opts.store.list({ state: "revoke_failed" }, 100, undefined),
      opts.redis.info("replication").then(
        (t) => /^role:(\w+)/m.exec(t)?.[1] ?? "unknown",
        () => "unreachable",
      ),
    ]);
    res.json({ readiness, redis: { mode: opts.redisMode, role }, leases: counts, revoke_failed: failed.leases.map(publicLease) });
  });

  api.get("/audit/verify", async (req, res) => {
    requireOperator(req.auth!, "admin_read", opts.check);
    const started = now();
    const r = await verifyAuditChain(opts.redis, opts.auditKeys).catch((e: Error) => {
      throw new BrokerError("store_unavailable", "the audit chain could not be read", { cause: e });
    });
    res.json({ ...r, verified_at: at(), ms: now() - started });
  });

  // The API's own handlers, for the operator paths only.
  api.use((req, _res, next) => {
    if (PASSTHROUGH.some(([m, p]) => m === req.method && p.test(req.path))) return next();
    throw new BrokerError("not_found", `no console route ${req.method} ${req.path}`);
  });
  for (const router of opts.apiRouters) api.use(router);

  r.use("/console/api", api);
  return r;
}
