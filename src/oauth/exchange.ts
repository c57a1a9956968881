/**
 * RFC 8693 token exchange (docs/ARCHITECTURE.md, Delegation): how a workload gets a narrower copy
 * of a broker credential (delegation) or a credential that acts for a person (on-behalf-of).
 *
 * The caller authenticates with `actor_token`, its own workload token, verified exactly like a
 * bearer token. Then:
 *
 * - **delegation**: `subject_token` is an active broker-issued JWT. The new lease is the actor's,
 *   for the same role and task, a child of the subject's lease; its token keeps the subject's
 *   `sub` and gets `act: {sub: <actor>, act: <the subject token's act>}` (outermost = current
 *   actor). Scope is a subset of the subject token's, the audience one the role allows and the
 *   subject token carries, the expiry no later than the parent's; the chain is at most
 *   `delegation.max_depth` hops deep. Cedar decides `Action::"delegate"` with
 *   `context.delegation = {depth, from, chain}` (from = the parent's holder; chain = every holder
 *   before the actor, root first) and the parent's `context.on_behalf_of`, if any.
 * - **on-behalf-of**: `subject_token` is an ID token of a `use: users` issuer (verified like a
 *   workload token), `role` and `task_id` name what the actor asks for. The lease is the actor's;
 *   its token has `sub` = the person and `act: {sub: <actor>}`; Cedar decides `Action::"request"`
 *   with `context.on_behalf_of = {issuer, subject, claims}`.
 *
 * Every refusal is an `OAuthError` (RFC 6749 section 5.2 `error` plus the broker's stable `code`);
 * nothing is written before the request is known to be no wider than what it derives from. The
 * exchange counts against the actor's rate limit once per authenticated attempt, and the lease
 * against its quota, exactly like `POST /v1/credentials`.
 */
import { decodeJwt } from "jose";
import type { AuditLedger } from "../audit/ledger";
import type { JwtBackend } from "../backends/jwt/backend";
import type { ActClaim } from "../backends/types";
import type { RoleConfig } from "../config/schema";
import { isBrokerError, type ErrorCode } from "../core/errors";
import type { AuthContext } from "../http/app";
import type { Metrics } from "../http/metrics";
import type { TokenVerifier } from "../identity/verify";
import type { WorkloadMatcher } from "../identity/workloads";
import type { RateLimiter } from "../limits/ratelimit";
import type { ExchangeRequest, LeaseService } from "../leases/service";
import { isUnreadable, type LeaseStore, type OnBehalfOf } from "../leases/store";

export const GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange";
export const TOKEN_TYPES = {
  access_token: "urn:ietf:params:oauth:token-type:access_token",
  jwt: "urn:ietf:params:oauth:token-type:jwt",
  id_token: "urn:ietf:params:oauth:token-type:id_token",
} as const;

/** RFC 6749 section 5.2 (and RFC 8707 `invalid_target`) error codes this endpoint answers. */
export type OAuthErrorCode =
  | "invalid_request"
  | "invalid_client"
  | "invalid_target"
  | "invalid_scope"
  | "unauthorized_client"
  | "unsupported_grant_type"
  | "temporarily_unavailable"
  | "server_error";

/** A refused exchange: the RFC 6749 `error`, the broker's `code`, and the HTTP status. */
export class OAuthError extends Error {
  constructor(
    readonly error: OAuthErrorCode,
    readonly code: ErrorCode,
    description: string,
    readonly status = 400,
    readonly headers: Record<string, string> = {},
    readonly reason?: string,
  ) {
    super(description);
    this.name = "OAuthError";
  }
}

/** The RFC 6749 error of a broker error raised while deciding or issuing (same codes as the REST API). */
export function oauthErrorOf(e: unknown): OAuthError {
  if (e instanceof OAuthError) return e;
  if (!isBrokerError(e)) return new OAuthError("server_error", "internal", "internal error; quote the request id when reporting it", 500);
  const headers = e.headers ?? {};
  switch (e.code) {
    case "policy_denied":
      return new OAuthError("unauthorized_client", e.code, e.message, 400, headers, e.reason);
    case "rate_limited":
    case "quota_exceeded":
      return new OAuthError("temporarily_unavailable", e.code, e.message, 429, headers, e.reason);
    case "store_unavailable":
    case "backend_unavailable":
    case "issuer_unavailable":
    case "store_full":
    case "audit_backlog_full":
      return new OAuthError("temporarily_unavailable", e.code, e.message, 503, headers, e.reason);
    case "internal":
      return new OAuthError("server_error", e.code, "internal error; quote the request id when reporting it", 500, headers, e.reason);
    default:
      // invalid_request, invalid_token, token_expired, unknown_workload, unknown_role,
      // task_completed, ttl_too_long, payload_too_large, unsupported_media_type...
      return new OAuthError("invalid_request", e.code, e.message, 400, headers, e.reason);
  }
}

export interface ExchangeParams {
  subject_token: string;
  subject_token_type: string;
  actor_token: string;
  actor_token_type: string;
  requested_token_type?: string;
  resource: string[];
  audience: string[];
  scope?: string;
  ttlMs?: number;
  role?: string;
  task_id?: string;
}

export interface ExchangeAnswer {
  access_token: string;
  issued_token_type: string;
  token_type: "Bearer";
  expires_in: number;
  scope?: string;
  lease_id: string;
}

export interface TokenExchangeOptions {
  verifier: TokenVerifier;
  workloads: Pick<WorkloadMatcher, "match">;
  roles: () => Map<string, RoleConfig>;
  jwt: JwtBackend;
  store: LeaseStore;
  service: LeaseService;
  audit: AuditLedger;
  metrics: Metrics;
  limiter?: RateLimiter;
  requestsPerMinute?: number;
  /** delegation.max_depth */
  maxDepth: number;
  now?: () => number;
}

/** Claims of an ID token that are not the person's attributes (RFC 7519 section 4.1). */
const REGISTERED_CLAIMS = new Set(["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]);
/** The most JSON the person's claims may take (stored with the lease for re-authorization). */
export const MAX_OBO_CLAIMS_BYTES = 4096;

/**
 * `context.on_behalf_of.claims`: the ID token's claims except the registered ones, keeping
 * strings, booleans, integers and lists of strings (other numbers as their decimal text, as
 * Cedar has only integers); anything else is left out.
 */
export function personClaims(payload: Record<string, unknown>): OnBehalfOf["claims"] {
  const out: OnBehalfOf["claims"] = {};
  for (const [k, v] of Object.entries(payload)) {
    if (REGISTERED_CLAIMS.has(k) || k.startsWith("__")) continue;
    if (typeof v === "string" || typeof v === "boolean") out[k] = v;
    else if (typeof v === "number" && Number.isFinite(v)) out[k] = Number.isSafeInteger(v) ? v : String(v);
    else if (Array.isArray(v) && v.every((x): x is string => typeof x === "string")) out[k] = v;
  }
  return out;
}

const spaceList = (s: string | undefined) => (s === undefined ? [] : [...new Set(s.split(" ").filter((x) => x !== ""))]);
const asList = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : typeof v === "string" ? [v] : []);

/** RFC 8707 section 2: an absolute URI without a fragment. */
function checkResource(r: string): void {
  let u: URL;
  try {
    u = new URL(r);
  } catch {
    throw new OAuthError("invalid_target", "invalid_request", `resource: "${r.slice(0, 200)}" is not an absolute URI`);
  }
  if (u.hash !== "" || r.includes("#")) throw new OAuthError("invalid_target", "invalid_request", "resource: must not contain a fragment (RFC 8707)");
}

/**
 * The one audience the new token is for: `resource`/`audience` (all given values must name the
 * same one), which must be among `allowed`; without either, `fallback`.
 */
export function chooseAudience(p: Pick<ExchangeParams, "resource" | "audience">, allowed: string[], fallback: string | string[], what: string): string | string[] {
  for (const r of p.resource) checkResource(r);
  const targets = [...new Set([...p.resource, ...p.audience])];
  if (targets.length === 0) return fallback;
  if (targets.length > 1) throw new OAuthError("invalid_target", "invalid_request", "a token is bound to one resource: resource and audience must name the same single target");
  const t = targets[0]!;
  if (!allowed.includes(t)) throw new OAuthError("invalid_target", "invalid_request", `"${t.slice(0, 200)}" is not an audience ${what} allows`);
  return t;
}

/** The granted scope: the requested one if every value is within `ceiling`, else invalid_scope. */
export function chooseScope(requested: string | undefined, ceiling: string | undefined, what: string): string | undefined {
  if (requested === undefined) return ceiling;
  const want = spaceList(requested);
  const have = new Set(spaceList(ceiling));
  const extra = want.filter((s) => !have.has(s));
  if (want.length === 0) throw new OAuthError("invalid_scope", "invalid_request", "scope: empty");
  if (extra.length > 0) throw new OAuthError("invalid_scope", "invalid_request", `scope ${extra.map((s) => JSON.stringify(s.slice(0, 64))).join(", ")} is not within ${what}`);
  return want.join(" ");
}

export function createTokenExchange(opts: TokenExchangeOptions) {
  const now = opts.now ?? Date.now;
  const at = () => new Date(now()).toISOString();

  /** The caller: its workload token (actor_token), and the bearer header if it sent one too. */
  async function authenticateActor(p: ExchangeParams, bearer: AuthContext | undefined): Promise<AuthContext> {
    if (p.actor_token_type !== TOKEN_TYPES.jwt) throw new OAuthError("invalid_request", "invalid_request", `actor_token_type: must be ${TOKEN_TYPES.jwt}`);
    let auth: AuthContext;
    try {
      const identity = await opts.verifier.verify(p.actor_token, "workloads");
      auth = { identity, workload: opts.workloads.match(identity) };
    } catch (e) {
      if (isBrokerError(e) && (e.status === 401 || e.code === "unknown_workload")) opts.metrics.authFailures.inc({ reason: e.reason ?? e.code });
      const o = oauthErrorOf(e);
      if (o.error !== "invalid_request") throw o;
      throw new OAuthError("invalid_request", o.code, `actor_token: ${o.message}`, 400, o.headers, o.reason);
    }
    if (bearer && bearer.workload.id !== auth.workload.id) {
      throw new OAuthError("invalid_request", "invalid_request", "the bearer token and the actor_token belong to different workloads");
    }
    return auth;
  }

  async function refused(actor: AuthContext, p: ExchangeParams, e: OAuthError): Promise<never> {
    // Decisions and issuance failures are audited by the lease service; these are the refusals
    // before a decision (a widening, an inactive subject), counted by the actor's rate limit.
    if (e.code !== "policy_denied" && e.code !== "rate_limited") {
      opts.audit.record({ type: "token_exchange_refused", at: at(), workload: actor.workload.id, actor: actor.workload.id, error: e.error, code: e.code, reason: e.message, ...(p.task_id ? { task_id: p.task_id } : {}) });
    }
    throw e;
  }

  function isBrokerToken(token: string): boolean {
    try {
      return decodeJwt(token).iss === opts.jwt.issuer;
    } catch {
      return false;
    }
  }

  async function delegation(actor: AuthContext, p: ExchangeParams): Promise<{ exchange: ExchangeRequest; role: RoleConfig; task: Parameters<LeaseService["issue"]>[1]["task"] }> {
    const verified = await opts.jwt.verify(p.subject_token);
    if (!verified) throw new OAuthError("invalid_request", "invalid_token", "subject_token: not a valid, unexpired credential issued by this broker", 400, {}, "bad_subject");
    const read = await opts.store.get(verified.leaseId);
    if (read && isUnreadable(read)) {
      // A malformed record in Redis: nothing is delegated from it (fail closed); the field is named, never its value.
      throw new OAuthError("invalid_request", "lease_unreadable", `subject_token: its lease cannot be read (${read.unreadable}); nothing is delegated from it`, 400, {}, "unreadable_subject");
    }
    const parent = read;
    if (!parent || parent.state !== "active" || parent.expires_ms <= now() || parent.backend !== "jwt") {
      throw new OAuthError("invalid_request", "invalid_request", `subject_token: its lease is ${parent ? parent.state : "gone"}, not active`, 400, {}, "inactive_subject");
    }
    const role = opts.roles().get(parent.role);
    if (!role || role.backend !== "jwt" || !role.jwt) throw new OAuthError("invalid_request", "invalid_request", `subject_token: role ${parent.role} no longer exists as a jwt role`);
    if (p.role !== undefined && p.role !== parent.role) throw new OAuthError("invalid_request", "invalid_request", `role: a delegated credential keeps the subject token's role (${parent.role})`, 400, {}, "other_role");
    if (p.task_id !== undefined && p.task_id !== parent.task_id) throw new OAuthError("invalid_request", "invalid_request", `task_id: a delegated credential keeps the subject token's task (${parent.task_id})`, 400, {}, "other_task");
    const depth = (parent.delegation?.depth ?? 0) + 1;
    if (depth > opts.maxDepth) {
      throw new OAuthError("invalid_request", "invalid_request", `subject_token: the chain would be ${depth} hops deep; delegation.max_depth is ${opts.maxDepth}`, 400, {}, "too_deep");
    }
    const pl = verified.payload;
    const parentAud = asList(pl.aud);
    const allowed = asList(role.jwt.audience).filter((a) => parentAud.includes(a));
    const audience = chooseAudience(p, allowed, parentAud.length === 1 ? parentAud[0]! : parentAud, "the subject token and its role");
    const scope = chooseScope(p.scope, typeof pl.scope === "string" ? pl.scope : undefined, "the subject token's scope");
    const chain = [...(parent.delegation?.chain ?? []), parent.workload];
    const priorAct = pl.act && typeof pl.act === "object" ? (pl.act as ActClaim) : undefined;
    const act: ActClaim = { sub: actor.workload.id, ...(priorAct ? { act: priorAct } : {}) };
    return {
      role,
      task: parent.task,
      exchange: {
        action: "delegate",
        context: { delegation: { depth, from: parent.workload, chain }, ...(parent.obo ? { on_behalf_of: parent.obo } : {}) },
        delegation: { parent: parent.id, depth, ancestors: [...(parent.delegation?.ancestors ?? []), parent.id], chain, parentExpiresMs: parent.expires_ms },
        ...(parent.obo ? { onBehalfOf: parent.obo } : {}),
        token: { subject: typeof pl.sub === "string" ? pl.sub : parent.workload, act, audience, ...(scope !== undefined ? { scope } : {}) },
      },
    };
  }

  async function onBehalfOf(actor: AuthContext, p: ExchangeParams): Promise<{ exchange: ExchangeRequest; role: RoleConfig; task: { id: string } }> {
    let person;
    try {
      person = await opts.verifier.verify(p.subject_token, "users");
    } catch (e) {
      const o = oauthErrorOf(e);
      if (o.error !== "invalid_request") throw o;
      throw new OAuthError("invalid_request", o.code, `subject_token: ${o.message}`, 400, o.headers, o.reason);
    }
    if (p.role === undefined) throw new OAuthError("invalid_request", "invalid_request", "role: required to act on behalf of a person");
    if (p.task_id === undefined) throw new OAuthError("invalid_request", "invalid_request", "task_id: required to act on behalf of a person");
    const role = opts.roles().get(p.role);
    if (!role) throw new OAuthError("invalid_request", "unknown_role", `no role named "${p.role}"`);
    if (role.backend !== "jwt" || !role.jwt) throw new OAuthError("invalid_target", "invalid_request", `role ${role.name} uses backend ${role.backend}; token exchange issues broker JWTs (jwt roles) only`);
    const roleAud = asList(role.jwt.audience);
    const audience = chooseAudience(p, roleAud, role.jwt.audience, `role ${role.name}`);
    const scope = chooseScope(p.scope, role.jwt.scope, `role ${role.name}`);
    const claims = personClaims(person.claims as Record<string, unknown>);
    if (Buffer.byteLength(JSON.stringify(claims)) > MAX_OBO_CLAIMS_BYTES) {
      throw new OAuthError("invalid_request", "invalid_request", `subject_token: its claims take more than ${MAX_OBO_CLAIMS_BYTES} bytes`);
    }
    const obo: OnBehalfOf = { issuer: person.issuer, subject: person.subject, claims };
    return {
      role,
      task: { id: p.task_id },
      exchange: {
        action: "request",
        context: { on_behalf_of: obo },
        onBehalfOf: obo,
        token: { subject: person.subject, act: { sub: actor.workload.id }, audience, ...(scope !== undefined ? { scope } : {}) },
      },
    };
  }

  return {
    /** Runs one exchange; throws OAuthError. `bearer` is the caller's Authorization header identity, if any. */
    async exchange(p: ExchangeParams, bearer?: AuthContext): Promise<ExchangeAnswer> {
      const kind =
        p.subject_token_type === TOKEN_TYPES.id_token
          ? "on_behalf_of"
          : p.subject_token_type === TOKEN_TYPES.access_token
            ? "delegation"
            : p.subject_token_type === TOKEN_TYPES.jwt
              ? isBrokerToken(p.subject_token)
                ? "delegation"
                : "on_behalf_of"
              : null;
      if (kind === null) throw new OAuthError("invalid_request", "invalid_request", `subject_token_type: must be one of ${Object.values(TOKEN_TYPES).join(", ")}`);
      if (p.requested_token_type !== undefined && p.requested_token_type !== TOKEN_TYPES.access_token && p.requested_token_type !== TOKEN_TYPES.jwt) {
        throw new OAuthError("invalid_request", "invalid_request", `requested_token_type: this broker issues ${TOKEN_TYPES.access_token} (a JWT) only`);
      }
      const actor = await authenticateActor(p, bearer);
      // One attempt, one request against the actor's limit, before anything else is read.
      try {
        if (opts.limiter) await opts.limiter.consume(actor.workload.id, actor.workload.limits?.requests_per_minute ?? opts.requestsPerMinute ?? 0);
      } catch (e) {
        throw oauthErrorOf(e);
      }
      let planned;
      try {
        planned = kind === "delegation" ? await delegation(actor, p) : await onBehalfOf(actor, p);
      } catch (e) {
        return refused(actor, p, oauthErrorOf(e));
      }
      let out;
      try {
        out = await opts.service.issue(actor, { role: planned.role.name, task: planned.task, ...(p.ttlMs !== undefined ? { ttlMs: p.ttlMs } : {}), exchange: planned.exchange });
      } catch (e) {
        const o = oauthErrorOf(e);
        if (o.reason === "inactive_subject") return refused(actor, p, o);
        throw o;
      }
      if (out.pending) throw new OAuthError("unauthorized_client", "policy_denied", "the policy requires approval, which a token exchange cannot wait for");
      const credential = out.credential as { type: string; token?: unknown };
      if (credential.type !== "jwt" || typeof credential.token !== "string") throw new OAuthError("server_error", "internal", "the role did not produce a token");
      const scope = planned.exchange.token.scope;
      return {
        access_token: credential.token,
        issued_token_type: p.requested_token_type ?? TOKEN_TYPES.access_token,
        token_type: "Bearer",
        expires_in: Math.max(0, Math.floor((Date.parse(out.lease.expires_at) - now()) / 1000)),
        ...(scope ? { scope } : {}),
        lease_id: out.lease.id,
      };
    },
  };
}

export type TokenExchange = ReturnType<typeof createTokenExchange>;

/** Thrown by the route for a request that is not an exchange at all (kept here with its kin). */
export const unsupportedGrant = (g: unknown) =>
  new OAuthError("unsupported_grant_type", "invalid_request", `grant_type: only ${GRANT_TYPE} is supported${typeof g === "string" ? ` (got "${g.slice(0, 100)}")` : ""}`);
