/**
 * The broker's session with Vault: one node-vault client (TLS, namespace, timeouts), the broker's
 * own token (login, renewal at 2/3 of its TTL, re-login when Vault says it is no longer valid),
 * and the backend's health as /readyz and `jitbroker_vault_up` show it.
 *
 * Secrets (I6): the broker's token, the AppRole secret id and login JWTs live in this closure
 * and in request headers/bodies only, and go to the configured address only: the HTTP transport
 * (transport.ts) never follows a redirect (a 3xx is an error). Failures are never passed on as
 * they come: every failure is rebuilt as a `VaultCallError` from the status code, Vault's own
 * error text with anything that looks like a credential scrubbed (scrub.ts), and the error code.
 * What /readyz shows is shorter still: a generic `reason` (state, status, error code).
 *
 * URLs: every path segment is percent-encoded, and `.`, `..` and empty segments are refused
 * before anything is sent (URL normalisation would turn `auth/token/create/.` into
 * `auth/token/create/`, another endpoint).
 *
 * Wire format (https://developer.hashicorp.com/vault/api-docs): paths under /v1, X-Vault-Token
 * and X-Vault-Namespace headers, JSON bodies, responses `{request_id, lease_id, renewable,
 * lease_duration, data, wrap_info, warnings, auth}`, errors `{errors: [...]}`. Lists are read
 * with `GET <path>?list=true`, which Vault treats exactly like the LIST verb (some proxies and
 * HTTP stacks refuse unknown verbs).
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import nodeVault from "node-vault";
import type { Logger } from "pino";
import { Counter, Gauge, type Registry } from "prom-client";
import type { VaultBackendConfig } from "../../config/schema";
import type { BackendStatus } from "../types";
import { VAULT_DEFAULTS } from "./config";
import { scrubSecrets } from "./scrub";
import { createVaultTransport, VaultRedirectError } from "./transport";
import { repeat, type Repeating } from "../../core/repeat";

/** Vault's response envelope (fields absent when Vault leaves them out). */
export interface VaultResponse {
  request_id?: string;
  lease_id?: string;
  renewable?: boolean;
  lease_duration?: number;
  data?: Record<string, unknown> | null;
  wrap_info?: unknown;
  warnings?: string[] | null;
  auth?: {
    client_token?: string;
    accessor?: string;
    policies?: string[];
    token_policies?: string[];
    lease_duration?: number;
    renewable?: boolean;
    [k: string]: unknown;
  } | null;
}

/** How a call failed, as far as the broker cares. */
export type VaultFailure =
  | "sealed" // 503 "Vault is sealed"
  | "denied" // 403: bad or expired token, or a policy that does not allow the call
  | "bad_request" // 400
  | "not_found" // 404
  | "unsupported" // 405: the endpoint does not support this operation (e.g. POST on database/creds)
  | "rate_limited" // 429
  | "server" // other 5xx
  | "unreachable" // no HTTP answer (connection refused, DNS, TLS verification)
  | "timeout"
  | "redirect" // 3xx: never followed (a standby without request forwarding, a proxy, an attacker)
  | "config"; // a local problem (unreadable secret file, a path with a dot segment)

/**
 * A failed Vault call. The message names the operation and Vault's error text (scrubbed), never
 * a secret; `reason` is the short, generic form /readyz shows (no Vault text, no file path).
 */
export class VaultCallError extends Error {
  readonly reason: string;
  constructor(
    message: string,
    readonly failure: VaultFailure,
    readonly status: number | null,
    reason?: string,
  ) {
    super(message);
    this.name = "VaultCallError";
    this.reason = reason ?? defaultReason(failure, status);
  }

  /** Worth retrying later: Vault is sealed, down, slow, overloaded or answered 5xx. */
  get transient(): boolean {
    return ["sealed", "rate_limited", "server", "unreachable", "timeout"].includes(this.failure);
  }
}

export type HttpMethod = "GET" | "POST" | "PUT";


/** The durations of `backends.vault`, defaults applied. */
export function vaultTimings(cfg: VaultBackendConfig): typeof VAULT_DEFAULTS {
  return {
    request_timeout: cfg.request_timeout ?? VAULT_DEFAULTS.request_timeout,
    health_check_interval: cfg.health_check_interval ?? VAULT_DEFAULTS.health_check_interval,
    reconcile_interval: cfg.reconcile_interval ?? VAULT_DEFAULTS.reconcile_interval,
    reconcile_grace: cfg.reconcile_grace ?? VAULT_DEFAULTS.reconcile_grace,
  };
}

export interface VaultSessionOptions {
  cfg: VaultBackendConfig;
  /** Directory that relative file paths (ca_file, secret_id_file, jwt_file, token_file) are relative to. */
  dir: string;
  logger: Logger;
  registry: Registry;
  now: () => number;
}

export interface VaultSession {
  /** An authenticated call; on 403 for a token that is no longer valid, logs in again and retries once. */
  call(op: string, method: HttpMethod, path: string, body?: Record<string, unknown>): Promise<VaultResponse>;
  /** An authenticated list (`GET path?list=true`); a 404 (nothing under the prefix) is an empty list. */
  list(op: string, path: string): Promise<string[]>;
  /** The first login (started by `start`); resolves either way. */
  ready(): Promise<void>;
  start(): void;
  /** Checks Vault's health (sys/health) and, when needed, logs in again. Never throws. */
  probe(): Promise<void>;
  status(): BackendStatus;
  close(): void;
}

function defaultReason(failure: VaultFailure, status: number | null): string {
  if (failure === "sealed") return "vault is sealed";
  if (failure === "timeout") return "vault does not answer in time";
  if (failure === "unreachable") return "vault is unreachable";
  if (failure === "redirect") return `vault answered ${status ?? "3xx"} (a redirect, not followed)`;
  if (failure === "config") return "a configuration problem";
  return status === null ? "vault call failed" : `vault answered ${status}`;
}

const CAN_RETRY_STATUS: Record<number, VaultFailure> = { 400: "bad_request", 403: "denied", 404: "not_found", 405: "unsupported", 429: "rate_limited" };

/**
 * Vault's own error text: first errors, printable only, credentials scrubbed (a plugin may quote
 * a connection URL with its password), then trimmed.
 */
export function vaultErrorText(body: unknown): string {
  const errors = (body as { errors?: unknown } | null)?.errors;
  if (!Array.isArray(errors) || errors.length === 0) return "";
  const text = errors
    .filter((e): e is string => typeof e === "string")
    .slice(0, 3)
    .join("; ")
    .replace(/[^\x20-\x7e]+/g, " ")
    .slice(0, 2000); // scrubbed whole, then cut: a cut must not leave half a secret unrecognised
  return scrubSecrets(text).slice(0, 300);
}

/** An error code as Node or the transport give it (ECONNREFUSED, ERR_TLS_CERT_ALTNAME_INVALID), nothing else. */
function errorCode(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[A-Z][A-Z0-9_]{1,63}$/.test(code) ? code : "";
}

/** Rebuilds any failure of a call as a VaultCallError (drops the request and anything it carries). */
export function classify(e: unknown, what: string): VaultCallError {
  if (e instanceof VaultCallError) return e;
  if (e instanceof VaultRedirectError) {
    return new VaultCallError(
      `${what}: vault answered ${e.status} (a redirect${e.target ? ` to ${e.target}` : ""}); the broker never follows redirects: set backends.vault.address to a Vault node that answers itself (the active node, or a standby with request forwarding)`,
      "redirect",
      e.status,
    );
  }
  const res = (e as { response?: { statusCode?: unknown; body?: unknown } } | null)?.response;
  if (res && typeof res.statusCode === "number") {
    const status = res.statusCode;
    if (status >= 300 && status < 400) return new VaultCallError(`${what}: vault answered ${status} (a redirect); the broker never follows redirects`, "redirect", status);
    const text = vaultErrorText(res.body);
    if (status === 503 && /sealed/i.test(text)) return new VaultCallError(`${what}: vault is sealed`, "sealed", status);
    const failure: VaultFailure = CAN_RETRY_STATUS[status] ?? (status >= 500 ? "server" : "bad_request");
    return new VaultCallError(`${what}: vault answered ${status}${text ? ` (${text})` : ""}`, failure, status);
  }
  const code = errorCode(e);
  if (code === "ECONNABORTED" || code === "ETIMEDOUT") return new VaultCallError(`${what}: vault did not answer in time`, "timeout", null);
  const reason = `vault is unreachable${code ? ` (${code})` : ""}`;
  return new VaultCallError(`${what}: ${reason}`, "unreachable", null, reason);
}

/**
 * A Vault API path as it goes into the URL: each segment percent-encoded; `.`, `..` and empty
 * segments refused (a trailing `/`, a list prefix, is kept). The query, if any, is the broker's own.
 */
export function encodeVaultPath(p: string): string {
  const q = p.indexOf("?");
  const pathPart = q === -1 ? p : p.slice(0, q);
  const segments = pathPart.split("/");
  const bad = segments.find((s, i) => s === "." || s === ".." || (s === "" && (i !== segments.length - 1 || i === 0)));
  if (bad !== undefined) {
    throw new VaultCallError(`refusing the vault path "${pathPart}": ${bad === "" ? "empty" : `"${bad}"`} segment`, "config", null, "a vault path in the configuration is invalid");
  }
  return segments.map((s) => encodeURIComponent(s)).join("/") + (q === -1 ? "" : p.slice(q));
}

/** Reads a secret or certificate file; the error names the file, never its content. */
async function readSecretFile(file: string, what: string): Promise<string> {
  try {
    const text = (await readFile(file, "utf8")).trim();
    if (text === "") throw Object.assign(new Error("empty"), { code: "empty" });
    return text;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "unreadable";
    throw new VaultCallError(`cannot read the ${what} file ${file} (${code})`, "config", null, `cannot read the ${what} file (${code})`);
  }
}

export function createVaultSession(opts: VaultSessionOptions): VaultSession {
  const { cfg, logger, now } = opts;
  const auth = cfg.auth;
  const timings = vaultTimings(cfg);
  const rel = (p: string) => path.resolve(opts.dir, p);

  // ---- the client: TLS, namespace, timeout; nothing taken from VAULT_* environment variables ----
  const insecure = cfg.tls?.insecure_skip_verify === true;
  let ca: string | undefined;
  if (cfg.tls?.ca_file) {
    // Read once at start: a missing CA file is a configuration error, reported before serving.
    try {
      ca = readFileSync(rel(cfg.tls.ca_file), "utf8");
    } catch (e) {
      throw new Error(`backends.vault.tls.ca_file: cannot read ${rel(cfg.tls.ca_file)} (${(e as NodeJS.ErrnoException).code ?? "error"})`);
    }
  }
  if (insecure) logger.warn({ address: cfg.address }, "vault TLS certificate verification is OFF (tls.insecure_skip_verify); never use this in production");
  // node-vault's own HTTP client (axios) follows redirects and cannot be told not to (its request
  // wrapper does not pass maxRedirects on): its `request-promise` option replaces it with ours.
  const transport = createVaultTransport({ ca, servername: cfg.tls?.server_name, rejectUnauthorized: !insecure, timeoutMs: timings.request_timeout });
  const client = nodeVault({
    apiVersion: "v1",
    endpoint: cfg.address,
    "request-promise": transport.requestPromise,
    // node-vault's debug output (DEBUG=node-vault) prints request bodies: login secrets. Never.
    debug: () => undefined,
  } as nodeVault.VaultOptions);
  // node-vault falls back to VAULT_TOKEN, VAULT_NAMESPACE and VAULT_PREFIX from the environment;
  // the broker uses only its configuration.
  client.token = "";
  (client as unknown as { namespace: string }).namespace = cfg.namespace ?? "";
  (client as unknown as { pathPrefix: string }).pathPrefix = "";

  // ---- metrics ----
  const up = new Gauge({ name: "jitbroker_vault_up", help: "1 when Vault answers and the broker is logged in, 0 when it is sealed, unreachable or refuses the broker", registers: [opts.registry] });
  const requests = new Counter({
    name: "jitbroker_vault_requests_total",
    help: "Vault API calls by operation and outcome",
    labelNames: ["operation", "outcome"],
    registers: [opts.registry],
  });
  const logins = new Counter({ name: "jitbroker_vault_logins_total", help: "Logins of the broker to Vault, by result", labelNames: ["result"], registers: [opts.registry] });
  const renewals = new Counter({ name: "jitbroker_vault_token_renewals_total", help: "Renewals of the broker's own Vault token, by result", labelNames: ["result"], registers: [opts.registry] });

  // ---- health ----
  let state: BackendStatus = { state: "unavailable", detail: "not logged in to vault yet" };
  up.set(0);
  const setState = (next: BackendStatus) => {
    if (next.state !== state.state || next.detail !== state.detail) {
      const log = next.state === "ok" ? logger.info.bind(logger) : logger.warn.bind(logger);
      log({ state: next.state, detail: next.detail, previous: state.state }, next.state === "ok" ? "vault backend available" : "vault backend not available");
    }
    state = next;
    up.set(next.state === "unavailable" ? 0 : 1);
  };
  /** What a failure says about Vault's health (400/404/405 say nothing). Details are generic reasons (unauthenticated /readyz). */
  const observeFailure = (e: VaultCallError) => {
    if (e.failure === "sealed" || e.failure === "unreachable" || e.failure === "timeout" || e.failure === "redirect") setState({ state: "unavailable", detail: e.reason });
    else if (e.failure === "server" || e.failure === "rate_limited") setState({ state: "degraded", detail: e.reason });
  };

  // ---- raw calls ----
  async function raw(op: string, method: HttpMethod, p: string, body: Record<string, unknown> | undefined, token: string | null): Promise<VaultResponse> {
    const headers: Record<string, string> = {};
    if (token) headers["X-Vault-Token"] = token;
    let urlPath: string;
    try {
      urlPath = encodeVaultPath(p);
    } catch (e) {
      requests.inc({ operation: op, outcome: "config" });
      throw new VaultCallError(`${op}: ${(e as Error).message}`, "config", null, (e as VaultCallError).reason);
    }
    try {
      const res = (await client.request({ path: `/${urlPath}`, method, headers, timeout: timings.request_timeout, ...(body ? { json: body } : {}) })) as unknown;
      requests.inc({ operation: op, outcome: "ok" });
      return res !== null && typeof res === "object" ? (res as VaultResponse) : {};
    } catch (e) {
      const err = classify(e, `${op} (${method} ${p.replace(/\?.*$/, "")})`);
      requests.inc({ operation: op, outcome: err.failure });
      observeFailure(err);
      throw err;
    }
  }

  // ---- the broker's token ----
  let token: string | null = null;
  /** When the token expires (ms), or null for a token without expiry (ttl 0). */
  let tokenExpiresAt: number | null = null;
  let loginInFlight: Promise<string> | null = null;
  let timer: NodeJS.Timeout | null = null;
  let healthCheck: Repeating | null = null;
  let closed = false;
  let firstLogin: Promise<void> = Promise.resolve();
  /** Methods that can get a new token by themselves (a token from a file may have been rewritten). */
  const canLogin = auth.method !== "token" || auth.token_file !== undefined;

  const clearTimer = () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  const later = (ms: number, fn: () => Promise<void>) => {
    clearTimer();
    if (closed) return;
    timer = setTimeout(() => void fn().catch(() => undefined), Math.max(250, ms));
    timer.unref();
  };

  /**
   * Plans the token's upkeep: at 2/3 of its TTL, renew it (renewable) or log in again (not
   * renewable, or its renewals are capped by max_ttl and only shrink from here on).
   */
  function plan(ttlSeconds: number, renew: boolean) {
    tokenExpiresAt = ttlSeconds > 0 ? now() + ttlSeconds * 1000 : null;
    if (ttlSeconds <= 0) return clearTimer();
    later((ttlSeconds * 1000 * 2) / 3, () => upkeep(ttlSeconds, renew));
  }

  async function upkeep(grantedSeconds: number, renew: boolean): Promise<void> {
    if (closed) return;
    const used = token;
    if (renew && used) {
      try {
        const res = await raw("renew_self", "POST", "auth/token/renew-self", {}, used);
        renewals.inc({ result: "ok" });
        const ttl = Number(res.auth?.lease_duration ?? 0);
        const renewable = res.auth?.renewable !== false;
        if (state.state !== "ok") setState({ state: "ok" });
        logger.debug({ ttl_seconds: ttl }, "vault token renewed");
        // A renewal that grants less than before is capped by max_ttl: log in again in time.
        plan(ttl, renewable && !(canLogin && ttl < grantedSeconds));
        return;
      } catch (e) {
        renewals.inc({ result: "error" });
        const err = e as VaultCallError;
        logger.warn({ error: err.message }, "vault token renewal failed");
        if (err.failure !== "denied") return retryUpkeep(grantedSeconds, renew);
        token = null; // Vault says the token is gone
      }
    }
    if (!canLogin) {
      if (token === null) setState({ state: "unavailable", detail: "the configured vault token is invalid or expired" });
      else logger.warn({ expires_at: tokenExpiresAt ? new Date(tokenExpiresAt).toISOString() : null }, "the vault token is not renewable; configure a login method (approle, jwt, kubernetes) or a token_file kept fresh by Vault Agent");
      return;
    }
    try {
      await login();
    } catch {
      retryUpkeep(grantedSeconds, false);
    }
  }

  /** Retries the upkeep soon: within a third of what is left of the token, between 1 and 30 s. */
  function retryUpkeep(grantedSeconds: number, renew: boolean) {
    const left = tokenExpiresAt === null ? 30_000 : tokenExpiresAt - now();
    if (left <= 0) token = null;
    later(Math.min(30_000, Math.max(1000, left / 3)), () => upkeep(grantedSeconds, renew && left > 0));
  }

  async function doLogin(): Promise<string> {
    let res: VaultResponse;
    let fresh: string;
    try {
      if (auth.method === "token") {
        fresh = auth.token ?? (await readSecretFile(rel(auth.token_file!), "vault token"));
        if (fresh === "") throw new VaultCallError("backends.vault.auth.token is empty", "config", null, "backends.vault.auth.token is empty");
        res = await raw("lookup_self", "GET", "auth/token/lookup-self", undefined, fresh);
        const d = res.data ?? {};
        plan(Number(d.ttl ?? 0), d.renewable === true);
      } else {
        const body: Record<string, unknown> =
          auth.method === "approle"
            ? { role_id: auth.role_id, secret_id: auth.secret_id ?? (await readSecretFile(rel(auth.secret_id_file!), "approle secret_id")) }
            : { role: auth.role, jwt: await readSecretFile(rel(auth.jwt_file), `${auth.method} login JWT`) };
        if (body.secret_id === "") throw new VaultCallError("backends.vault.auth.secret_id is empty", "config", null, "backends.vault.auth.secret_id is empty");
        res = await raw("login", "POST", `auth/${auth.mount}/login`, body, null);
        const a = res.auth;
        if (!a || typeof a.client_token !== "string" || a.client_token === "") throw new VaultCallError(`login (${auth.method}): vault answered without a client token`, "bad_request", 200);
        fresh = a.client_token;
        plan(Number(a.lease_duration ?? 0), a.renewable === true);
      }
    } catch (e) {
      const err = classify(e, `login (${auth.method})`);
      logins.inc({ result: "error" });
      if (["denied", "bad_request", "config", "not_found", "unsupported", "redirect"].includes(err.failure)) {
        // The reason only (status, code): Vault's text and file paths stay in the logs.
        setState({ state: "unavailable", detail: `vault login failed (${auth.method}): ${err.reason}` });
      }
      throw err;
    }
    logins.inc({ result: "ok" });
    token = fresh;
    setState({ state: "ok" });
    logger.info(
      { method: auth.method, accessor: (res.auth?.accessor ?? res.data?.accessor) as string | undefined, ttl_seconds: tokenExpiresAt === null ? 0 : Math.round((tokenExpiresAt - now()) / 1000) },
      "logged in to vault",
    );
    return fresh;
  }

  /** One login at a time: concurrent callers share it. */
  function login(): Promise<string> {
    loginInFlight ??= doLogin().finally(() => {
      loginInFlight = null;
    });
    return loginInFlight;
  }

  async function currentToken(): Promise<string> {
    if (loginInFlight) return loginInFlight;
    if (token !== null && (tokenExpiresAt === null || now() < tokenExpiresAt || !canLogin)) return token;
    return login();
  }

  /** Whether Vault still takes this token (lookup-self is in Vault's default policy). */
  async function stillValid(t: string): Promise<boolean> {
    try {
      await raw("lookup_self", "GET", "auth/token/lookup-self", undefined, t);
      return true;
    } catch (e) {
      if ((e as VaultCallError).failure === "denied") return false;
      throw e;
    }
  }

  async function call(op: string, method: HttpMethod, p: string, body?: Record<string, unknown>): Promise<VaultResponse> {
    const used = await currentToken();
    try {
      const res = await raw(op, method, p, body, used);
      if (state.state !== "ok") setState({ state: "ok" });
      return res;
    } catch (e) {
      const err = e as VaultCallError;
      if (err.failure !== "denied") throw err;
      // 403: an expired or revoked token, or a policy that does not allow this call.
      let next: string;
      if (loginInFlight) next = await loginInFlight;
      else if (token !== null && token !== used) next = token;
      else if (await stillValid(used)) throw err; // the token is fine: a genuine permission denial
      else {
        token = null;
        if (!canLogin) {
          setState({ state: "unavailable", detail: "the configured vault token is invalid or expired" });
          throw err;
        }
        logger.info({ operation: op }, "vault no longer accepts the broker's token; logging in again");
        next = await login();
      }
      const res = await raw(op, method, p, body, next);
      if (state.state !== "ok") setState({ state: "ok" });
      return res;
    }
  }

  async function list(op: string, p: string): Promise<string[]> {
    try {
      const res = await call(op, "GET", `${p}?list=true`);
      const keys = (res.data as { keys?: unknown } | undefined)?.keys;
      return Array.isArray(keys) ? keys.filter((k): k is string => typeof k === "string") : [];
    } catch (e) {
      if ((e as VaultCallError).failure === "not_found") return []; // Vault answers 404 for an empty list
      throw e;
    }
  }

  async function probe(): Promise<void> {
    if (closed) return;
    try {
      // Unauthenticated; node-vault hands back the body whatever the status (503 when sealed).
      const health = (await raw("health", "GET", "sys/health?standbyok=true&perfstandbyok=true", undefined, null)) as { sealed?: unknown; initialized?: unknown };
      if (health.sealed === true) return setState({ state: "unavailable", detail: "vault is sealed" });
      if (health.initialized === false) return setState({ state: "unavailable", detail: "vault is not initialized" });
      if (typeof health.sealed !== "boolean") return setState({ state: "degraded", detail: "vault health check gave no status" });
      if (token === null || (tokenExpiresAt !== null && now() >= tokenExpiresAt)) {
        if (canLogin || token === null) await login();
        return;
      }
      if (state.state !== "ok") {
        // Vault is back; check that it still takes our token before saying so.
        if (await stillValid(token)) setState({ state: "ok" });
        else if (canLogin) await login();
        else setState({ state: "unavailable", detail: "the configured vault token is invalid or expired" });
      }
    } catch {
      /* the state was updated by the failing call */
    }
  }

  return {
    call,
    list,
    ready: () => firstLogin,
    start() {
      firstLogin = login().then(
        () => undefined,
        (e: VaultCallError) => {
          logger.warn({ error: e.message }, "vault login failed at start; retrying in the background");
        },
      );
      const every = timings.health_check_interval;
      // Probed more often (every 5 s at most) while Vault is not ok.
      if (every > 0) healthCheck = repeat(probe, () => (state.state === "ok" ? every : Math.min(every, 5000)));
    },
    probe,
    status: () => ({ ...state }),
    close() {
      closed = true;
      clearTimer();
      healthCheck?.stop();
      transport.close();
    },
  };
}
