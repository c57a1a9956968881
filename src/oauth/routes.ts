/**
 * The OAuth surface of the broker (docs/ARCHITECTURE.md, Delegation):
 *
 *   POST /v1/oauth/token                         RFC 8693 token exchange, form-encoded or JSON;
 *                                                authenticated by actor_token (not the /v1
 *                                                bearer middleware); errors are RFC 6749
 *                                                `{error, error_description, code}`
 *   GET  /.well-known/oauth-authorization-server RFC 8414 metadata
 *
 * Both are mounted on the app itself, before the bearer authentication of /v1, together with an
 * error handler for the token path, so even a body that does not parse is answered the RFC 6749
 * way.
 */
import express, { type Express, type NextFunction, type Request, type Response } from "express";
import type { Logger } from "pino";
import { z } from "zod";
import { isBrokerError } from "../core/errors";
import type { AuthContext } from "../http/app";
import type { Metrics } from "../http/metrics";
import type { TokenVerifier } from "../identity/verify";
import type { WorkloadMatcher } from "../identity/workloads";
import { TASK_ID } from "../leases/schemas";
import { parseTtlMs } from "../leases/ttl";
import { mount } from "../http/api";
import { authorizationServerMetadata } from "./metadata";
import { oauthRoute } from "./openapi";
import { GRANT_TYPE, OAuthError, oauthErrorOf, unsupportedGrant, type ExchangeParams, type TokenExchange } from "./exchange";

export const TOKEN_PATH = "/v1/oauth/token";

export interface OAuthRoutesOptions {
  exchange: TokenExchange;
  verifier: TokenVerifier;
  workloads: Pick<WorkloadMatcher, "match">;
  metrics: Metrics;
  logger: Logger;
  /** server.public_url */
  issuer: string;
  bodyLimit: string;
}

const token = z.string().min(1).max(8192);
const one = (schema: z.ZodType<string>) => schema.optional();
const many = z.union([z.string().min(1).max(2048), z.array(z.string().min(1).max(2048)).max(8)]).optional();

/** RFC 8693 section 2.1 parameters plus the broker's (`ttl`, `role`, `task_id`). Unknown ones are ignored (RFC 6749 section 3.2). */
export const tokenRequestSchema = z.object({
  grant_type: z.string().max(200),
  subject_token: token,
  subject_token_type: z.string().max(200),
  actor_token: token.optional(),
  actor_token_type: one(z.string().max(200)),
  requested_token_type: one(z.string().max(200)),
  resource: many,
  audience: many,
  scope: one(z.string().min(1).max(1024)),
  ttl: z.union([z.string().max(16), z.number().int().min(2).max(7 * 24 * 3600)]).optional(),
  role: one(z.string().min(1).max(128)),
  task_id: one(z.string().regex(TASK_ID, "must be 1-128 characters of [A-Za-z0-9._:@-]")),
});

const SINGLE = ["grant_type", "subject_token", "subject_token_type", "actor_token", "actor_token_type", "requested_token_type", "scope", "ttl", "role", "task_id"];

/** Validates the parameters; every problem is one invalid_request naming the parameter. */
export function parseTokenRequest(body: unknown): ExchangeParams {
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw new OAuthError("invalid_request", "invalid_request", "send the parameters form-encoded or as a JSON object");
  const b = body as Record<string, unknown>;
  // RFC 6749 section 3.2: parameters must not be repeated (resource and audience may be, RFC 8693).
  for (const k of SINGLE) if (Array.isArray(b[k])) throw new OAuthError("invalid_request", "invalid_request", `${k}: given more than once`);
  if (b.grant_type !== undefined && b.grant_type !== GRANT_TYPE) throw unsupportedGrant(b.grant_type);
  const r = tokenRequestSchema.safeParse(b);
  if (!r.success) {
    const msg = r.error.issues.map((i) => `${i.path.length ? i.path.join(".") : "body"}: ${i.message}`).join("; ");
    throw new OAuthError("invalid_request", "invalid_request", msg);
  }
  const p = r.data;
  if (p.actor_token === undefined) throw new OAuthError("invalid_request", "invalid_request", "actor_token: required (the caller's own workload token)");
  let ttlMs: number | undefined;
  if (p.ttl !== undefined) {
    try {
      ttlMs = parseTtlMs(typeof p.ttl === "string" && /^\d+$/.test(p.ttl) ? Number(p.ttl) : p.ttl);
    } catch (e) {
      throw new OAuthError("invalid_request", "invalid_request", `ttl: ${(e as Error).message}`);
    }
  }
  const list = (v: string | string[] | undefined) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
  return {
    subject_token: p.subject_token,
    subject_token_type: p.subject_token_type,
    actor_token: p.actor_token,
    actor_token_type: p.actor_token_type ?? "",
    ...(p.requested_token_type !== undefined ? { requested_token_type: p.requested_token_type } : {}),
    resource: list(p.resource),
    audience: list(p.audience),
    ...(p.scope !== undefined ? { scope: p.scope } : {}),
    ...(ttlMs !== undefined ? { ttlMs } : {}),
    ...(p.role !== undefined ? { role: p.role } : {}),
    ...(p.task_id !== undefined ? { task_id: p.task_id } : {}),
  };
}

function sendOAuthError(res: Response, e: OAuthError): void {
  for (const [k, v] of Object.entries(e.headers)) res.setHeader(k, v);
  if (e.status === 401) res.setHeader("WWW-Authenticate", `Bearer error="invalid_token", error_description="${e.message.replace(/["\\]/g, "")}"`);
  res.setHeader("Pragma", "no-cache");
  res.status(e.status).json({ error: e.error, error_description: e.message, code: e.code });
}

export function mountOAuthRoutes(app: Express, opts: OAuthRoutesOptions): void {
  const metadata = authorizationServerMetadata(opts.issuer);
  mount(app, oauthRoute("authorizationServerMetadata"), (_req, res) => {
    res.setHeader("Cache-Control", "public, max-age=300");
    res.json(metadata);
  });

  const form = express.urlencoded({ extended: false, limit: opts.bodyLimit, parameterLimit: 40 });
  mount(app, oauthRoute("tokenExchange"), form, async (req: Request, res: Response) => {
    if (!req.is(["application/x-www-form-urlencoded", "application/json", "application/*+json"])) {
      throw new OAuthError("invalid_request", "unsupported_media_type", "send the parameters as application/x-www-form-urlencoded or application/json", 415);
    }
    const params = parseTokenRequest(req.body);
    // A bearer token, if sent as well, is a workload token like anywhere else, and must be the actor's.
    let bearer: AuthContext | undefined;
    const header = req.get("authorization");
    if (header !== undefined) {
      const m = /^Bearer ([^\s]+)$/i.exec(header.trim());
      try {
        if (!m) throw new OAuthError("invalid_client", "invalid_token", "Authorization: send Bearer <workload JWT>, or leave it out and authenticate with actor_token", 401);
        const identity = await opts.verifier.verify(m[1]!, "workloads");
        bearer = { identity, workload: opts.workloads.match(identity) };
        req.auth = bearer;
      } catch (e) {
        if (e instanceof OAuthError) throw e;
        if (isBrokerError(e) && (e.status === 401 || e.code === "unknown_workload")) opts.metrics.authFailures.inc({ reason: e.reason ?? e.code });
        const o = oauthErrorOf(e);
        throw o.error === "invalid_request" ? new OAuthError("invalid_client", o.code, `Authorization: ${o.message}`, 401) : o;
      }
    }
    const answer = await opts.exchange.exchange(params, bearer);
    res.setHeader("Pragma", "no-cache");
    res.json(answer);
  });
  // Every error on the token path (a body that did not parse included) is an RFC 6749 answer.
  app.use(TOKEN_PATH, (err: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(err);
    let e: OAuthError;
    const t = err as { type?: string };
    if (err instanceof OAuthError) e = err;
    else if (t?.type === "entity.too.large") e = new OAuthError("invalid_request", "payload_too_large", "request body exceeds the size limit", 413);
    else if (t?.type === "entity.parse.failed") e = new OAuthError("invalid_request", "invalid_request", "request body does not parse");
    else if (t?.type === "encoding.unsupported" || t?.type === "charset.unsupported") e = new OAuthError("invalid_request", "unsupported_media_type", "request body encoding is not supported", 415);
    else e = oauthErrorOf(err);
    if (e.status >= 500) opts.logger.error({ request_id: req.id, code: e.code, err: isBrokerError(err) ? (err.cause ?? err) : err }, "token exchange failed");
    else opts.logger.info({ request_id: req.id, code: e.code, error: e.error, reason: e.reason }, "token exchange refused");
    sendOAuthError(res, e);
  });
}
