/**
 * An HTTP test server that follows Vault's documented API for the endpoints the broker uses
 * (https://developer.hashicorp.com/vault/api-docs): paths under /v1; `X-Vault-Token` checked on
 * every authenticated path (403 `{"errors":["permission denied"]}` for a missing, unknown or
 * expired token); `X-Vault-Namespace` required when the server has a namespace; JSON bodies;
 * response envelopes `{request_id, lease_id, renewable, lease_duration, data, wrap_info,
 * warnings, auth}`; errors `{errors: [...]}`; a sealed Vault answers 503 `{"errors":["Vault is
 * sealed"]}` (and sys/health 503 with `sealed: true`).
 *
 * Endpoints: sys/health; auth/<approle>/login, auth/<jwt>/login, auth/<kubernetes>/login;
 * auth/token/lookup-self, renew-self, create/<role>, revoke, revoke-accessor; dynamic-secret
 * engines at configured paths (GET; POST/PUT with `ttl` only where the engine takes it, else 405
 * "unsupported operation" as database/creds does); sys/leases/revoke, sys/leases/lookup (read
 * one) and `sys/leases/lookup/<prefix>` lists (404 with no keys). Lists are `GET ?list=true`
 * (Vault's equivalent of the LIST verb; Node's HTTP parser does not accept LIST itself).
 *
 * Failures on demand: sealed, any status on matching requests (500, 429, 404...), redirects
 * (3xx with a Location, as a standby without request forwarding or a proxy would send), slow
 * answers, expired tokens. Every request is recorded (method, path, token, namespace, body).
 */
import { randomBytes, randomUUID } from "node:crypto";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";

export interface RecordedRequest {
  method: string;
  /** Path below /v1/, without the query. */
  path: string;
  query: URLSearchParams;
  token: string | undefined;
  namespace: string | undefined;
  body: Record<string, unknown>;
  /** The status answered (set once answered). */
  status?: number;
}

interface TokenEntry {
  token: string;
  accessor: string;
  policies: string[];
  meta: Record<string, string>;
  displayName: string;
  /** Seconds granted at creation (and by each renewal, capped by the max). */
  creationTtl: number;
  issuedAt: number;
  /** ms; null = never expires (root). */
  expiresAt: number | null;
  /** ms; the hard limit renewals cannot pass (max_ttl or explicit_max_ttl). */
  maxExpiresAt: number | null;
  renewable: boolean;
  kind: "root" | "login" | "child";
  role?: string;
}

interface LeaseEntry {
  id: string;
  issuedAt: number;
  expiresAt: number;
}

export interface EngineConfig {
  /** Whether POST/PUT with `ttl` is supported (aws/creds) or refused with 405 (database/creds). */
  ttlParam: boolean;
  /** Lease seconds when no ttl is given (the engine role's default_ttl). */
  defaultTtl: number;
  maxTtl?: number;
  /** false: a static secret (kv), answered without a lease. */
  leased?: boolean;
}

export interface LoginConfig {
  mount?: string;
  /** Token lifetime (s) and hard maximum (s) of tokens from this login. */
  ttl: number;
  maxTtl?: number;
  renewable?: boolean;
  policies?: string[];
}

export interface VaultServerOptions {
  rootToken?: string;
  namespace?: string;
  tls?: { key: string; cert: string };
  approle?: LoginConfig & { roleId: string; secretId: string };
  /** JWT/OIDC auth: `jwts` are the login JWTs it accepts (e.g. the contents of a projected token file). */
  jwt?: LoginConfig & { role: string; jwts: string[] };
  kubernetes?: LoginConfig & { role: string; jwts: string[] };
  tokenRoles?: Record<string, { allowedPolicies: string[]; orphan?: boolean }>;
  engines?: Record<string, EngineConfig>;
}

interface FailureRule {
  status: number;
  errors: string[];
  match: (r: RecordedRequest) => boolean;
  times: number;
  /** A redirect: the Location sent (with the status, no body). */
  location?: (r: RecordedRequest, rawUrl: string) => string;
}

export interface VaultTestServer {
  url: string;
  rootToken: string;
  requests: RecordedRequest[];
  /** Requests matching a method and a path (exact string, or a RegExp). */
  hits(method: string, path: string | RegExp): RecordedRequest[];
  seal(): void;
  unseal(): void;
  /** Answers `status` to matching requests (`times` times; Infinity until `clearFailures`). */
  fail(status: number, opts?: { match?: string | RegExp | ((r: RecordedRequest) => boolean); times?: number; errors?: string[] }): void;
  /**
   * Answers matching requests with a redirect (`status`, default 307) to `location`: a base URL
   * (the request's /v1/... path and query are appended) or a function of the request.
   */
  redirect(location: string | ((r: RecordedRequest) => string), opts?: { match?: string | RegExp | ((r: RecordedRequest) => boolean); times?: number; status?: number }): void;
  /** Ends failures and redirects. */
  clearFailures(): void;
  /** Holds every answer this long (ms) before sending it. */
  setDelay(ms: number): void;
  /** Makes a token expire now (Vault then answers 403 for it). */
  expireToken(token: string): void;
  /** Tokens Vault handed out through a login (newest last). */
  loginTokens(): string[];
  /** Live leases (by id). */
  leases(): string[];
  leaseInfo(id: string): { issuedAt: number; expiresAt: number } | undefined;
  /** A lease created behind the broker's back (an orphan), issued `ageMs` ago. */
  addLease(path: string, ageMs: number): string;
  /** Forgets a lease, as Vault does when it expires. */
  dropLease(id: string): void;
  token(accessor: string): { token: string; expiresAt: number | null; meta: Record<string, string>; policies: string[]; renewable: boolean; displayName: string } | undefined;
  /** Every secret this server handed out or holds (root token, tokens, passwords, secret ids). */
  secrets(): string[];
  close(): Promise<void>;
}

const DENIED = ["permission denied"];

function parseTtl(v: unknown): number | null {
  if (typeof v === "number" && Number.isFinite(v)) return Math.floor(v);
  if (typeof v !== "string" || v === "") return null;
  const m = /^(\d+)(s|m|h)?$/.exec(v);
  if (!m) return NaN;
  return Number(m[1]) * (m[2] === "h" ? 3600 : m[2] === "m" ? 60 : 1);
}

export async function startVaultServer(opts: VaultServerOptions = {}): Promise<VaultTestServer> {
  const rootToken = opts.rootToken ?? `hvs.root${randomBytes(12).toString("hex")}`;
  const tokens = new Map<string, TokenEntry>();
  const accessors = new Map<string, string>();
  const leases = new Map<string, LeaseEntry>();
  const requests: RecordedRequest[] = [];
  const issuedSecrets = new Set<string>([rootToken]);
  if (opts.approle) issuedSecrets.add(opts.approle.secretId);
  for (const j of [...(opts.jwt?.jwts ?? []), ...(opts.kubernetes?.jwts ?? [])]) issuedSecrets.add(j);
  let failures: FailureRule[] = [];
  let sealed = false;
  let delayMs = 0;
  const delayed = new Set<NodeJS.Timeout>();
  const loginTokens: string[] = [];

  const addToken = (e: Omit<TokenEntry, "token" | "accessor">, token = `hvs.${randomBytes(18).toString("base64url")}`): TokenEntry => {
    const entry: TokenEntry = { ...e, token, accessor: randomBytes(12).toString("base64url") };
    tokens.set(entry.token, entry);
    accessors.set(entry.accessor, entry.token);
    issuedSecrets.add(entry.token);
    return entry;
  };
  addToken({ policies: ["root"], meta: {}, displayName: "root", creationTtl: 0, issuedAt: Date.now(), expiresAt: null, maxExpiresAt: null, renewable: false, kind: "root" }, rootToken);

  const live = (t: string | undefined): TokenEntry | null => {
    if (!t) return null;
    const e = tokens.get(t);
    if (!e) return null;
    if (e.expiresAt !== null && e.expiresAt <= Date.now()) return null;
    return e;
  };
  const purgeLeases = () => {
    const now = Date.now();
    for (const [id, l] of leases) if (l.expiresAt <= now) leases.delete(id);
  };

  const envelope = (fields: Partial<Record<"lease_id" | "renewable" | "lease_duration" | "data" | "warnings" | "auth", unknown>>) => ({
    request_id: randomUUID(),
    lease_id: "",
    renewable: false,
    lease_duration: 0,
    data: null,
    wrap_info: null,
    warnings: null,
    auth: null,
    ...fields,
  });

  const authEnvelope = (e: TokenEntry, warnings: string[] | null = null) =>
    envelope({
      warnings,
      auth: {
        client_token: e.token,
        accessor: e.accessor,
        policies: e.policies,
        token_policies: e.policies,
        metadata: e.meta,
        lease_duration: e.expiresAt === null ? 0 : Math.round((e.expiresAt - Date.now()) / 1000),
        renewable: e.renewable,
        entity_id: "",
        token_type: "service",
        orphan: e.kind !== "child",
        mfa_requirement: null,
        num_uses: 0,
      },
    });

  const login = (cfg: LoginConfig, meta: Record<string, string>) => {
    const now = Date.now();
    const e = addToken({
      policies: ["default", ...(cfg.policies ?? ["jitbroker"])],
      meta,
      displayName: cfg.mount ?? "login",
      creationTtl: cfg.ttl,
      issuedAt: now,
      expiresAt: now + cfg.ttl * 1000,
      maxExpiresAt: cfg.maxTtl ? now + cfg.maxTtl * 1000 : null,
      renewable: cfg.renewable ?? true,
      kind: "login",
    });
    loginTokens.push(e.token);
    return authEnvelope(e);
  };

  type Reply = { status: number; body?: unknown; location?: string };
  const err = (status: number, errors: string[]): Reply => ({ status, body: { errors } });
  const ok = (body: unknown): Reply => ({ status: 200, body });
  const noContent: Reply = { status: 204 };

  function route(r: RecordedRequest): Reply {
    const { method, path: p, body } = r;
    const isWrite = method === "POST" || method === "PUT";
    if (p === "sys/health") {
      if (sealed) return { status: 503, body: { initialized: true, sealed: true, standby: true, version: "1.17.0-test" } };
      return ok({ initialized: true, sealed: false, standby: false, performance_standby: false, version: "1.17.0-test", cluster_name: "vault-test" });
    }
    if (sealed) return err(503, ["Vault is sealed"]);

    // ---- logins (no token) ----
    const logins: [LoginConfig & { role?: string; jwts?: string[]; roleId?: string; secretId?: string }, string][] = [];
    if (opts.approle) logins.push([opts.approle, opts.approle.mount ?? "approle"]);
    if (opts.jwt) logins.push([opts.jwt, opts.jwt.mount ?? "jwt"]);
    if (opts.kubernetes) logins.push([opts.kubernetes, opts.kubernetes.mount ?? "kubernetes"]);
    for (const [cfg, mount] of logins) {
      if (p !== `auth/${mount}/login`) continue;
      if (!isWrite) return err(405, ["unsupported operation"]);
      if (opts.namespace && r.namespace !== opts.namespace) return err(400, ["invalid role or secret ID"]);
      if (cfg.roleId !== undefined) {
        if (body.role_id !== cfg.roleId) return err(400, ["invalid role ID"]);
        if (body.secret_id !== cfg.secretId) return err(400, ["invalid secret id"]);
        return ok(login(cfg, { role_name: "jitbroker" }));
      }
      if (body.role !== cfg.role) return err(400, [`role "${String(body.role)}" could not be found`]);
      if (typeof body.jwt !== "string" || !cfg.jwts!.includes(body.jwt)) return err(400, ["error validating token: invalid signature"]);
      return ok(login(cfg, { role: cfg.role! }));
    }

    // ---- everything else needs a live token (in the right namespace) ----
    const caller = live(r.token);
    if (!caller || (opts.namespace && r.namespace !== opts.namespace)) return err(403, DENIED);

    if (p === "auth/token/lookup-self") {
      if (method !== "GET" && !isWrite) return err(405, ["unsupported operation"]);
      const ttl = caller.expiresAt === null ? 0 : Math.round((caller.expiresAt - Date.now()) / 1000);
      return ok(
        envelope({
          data: {
            accessor: caller.accessor,
            creation_time: Math.floor(caller.issuedAt / 1000),
            creation_ttl: caller.creationTtl,
            display_name: caller.displayName,
            expire_time: caller.expiresAt === null ? null : new Date(caller.expiresAt).toISOString(),
            explicit_max_ttl: 0,
            id: caller.token,
            meta: caller.meta,
            num_uses: 0,
            orphan: caller.kind !== "child",
            path: "auth/token/lookup-self",
            policies: caller.policies,
            renewable: caller.renewable,
            ttl,
            type: "service",
          },
        }),
      );
    }
    if (p === "auth/token/renew-self") {
      if (!isWrite) return err(405, ["unsupported operation"]);
      if (!caller.renewable) return err(400, ["lease is not renewable"]);
      const now = Date.now();
      const inc = parseTtl(body.increment) ?? caller.creationTtl;
      let next = now + inc * 1000;
      const warnings: string[] = [];
      if (caller.maxExpiresAt !== null && next > caller.maxExpiresAt) {
        next = caller.maxExpiresAt;
        warnings.push("TTL of the token exceeded the effective max_ttl; TTL value is capped accordingly");
      }
      caller.expiresAt = next;
      return ok(authEnvelope(caller, warnings.length ? warnings : null));
    }
    const create = /^auth\/token\/create\/([^/]+)$/.exec(p);
    if (create) {
      if (!isWrite) return err(405, ["unsupported operation"]);
      const roleName = create[1]!;
      const role = opts.tokenRoles?.[roleName];
      if (!role) return err(400, [`unknown role ${roleName}`]);
      const policies = body.policies === undefined ? role.allowedPolicies : body.policies;
      if (!Array.isArray(policies) || policies.some((x) => typeof x !== "string")) return err(400, ["policies must be a list of strings"]);
      const bad = (policies as string[]).filter((x) => !role.allowedPolicies.includes(x));
      if (bad.length) return err(400, [`token policies (${bad.join(", ")}) must be subset of the role's allowed policies`]);
      const ttl = parseTtl(body.ttl);
      const maxTtl = parseTtl(body.explicit_max_ttl);
      if (Number.isNaN(ttl) || Number.isNaN(maxTtl)) return err(400, ["error parsing ttl"]);
      if (body.meta !== undefined && (typeof body.meta !== "object" || body.meta === null || Object.values(body.meta).some((v) => typeof v !== "string"))) {
        return err(400, ["meta: expected a map of strings"]);
      }
      const now = Date.now();
      const life = Math.min(ttl ?? 2764800, maxTtl ?? 2764800);
      const e = addToken({
        policies: ["default", ...(policies as string[])],
        meta: (body.meta as Record<string, string>) ?? {},
        displayName: `token-${typeof body.display_name === "string" ? body.display_name : ""}`,
        creationTtl: life,
        issuedAt: now,
        expiresAt: now + life * 1000,
        maxExpiresAt: maxTtl ? now + maxTtl * 1000 : null,
        renewable: body.renewable !== false,
        kind: role.orphan ? "login" : "child",
        role: roleName,
      });
      return ok(authEnvelope(e));
    }
    if (p === "auth/token/revoke-accessor") {
      if (!isWrite) return err(405, ["unsupported operation"]);
      if (typeof body.accessor !== "string" || body.accessor === "") return err(400, ["missing accessor"]);
      const t = accessors.get(body.accessor);
      if (t === undefined) return err(400, ["invalid accessor"]);
      tokens.delete(t);
      accessors.delete(body.accessor);
      return noContent;
    }
    if (p === "auth/token/revoke") {
      if (!isWrite) return err(405, ["unsupported operation"]);
      const e = typeof body.token === "string" ? tokens.get(body.token) : undefined;
      if (e) {
        tokens.delete(e.token);
        accessors.delete(e.accessor);
      }
      return noContent;
    }

    // ---- leases ----
    purgeLeases();
    if (p === "sys/leases/revoke" || p.startsWith("sys/leases/revoke/")) {
      if (!isWrite) return err(405, ["unsupported operation"]);
      const id = typeof body.lease_id === "string" && body.lease_id !== "" ? body.lease_id : p.slice("sys/leases/revoke/".length);
      if (!id) return err(400, ["lease_id must be specified"]);
      leases.delete(id); // an unknown lease is nothing to revoke: 204 as well
      return noContent;
    }
    if (p === "sys/leases/lookup" && isWrite) {
      const l = typeof body.lease_id === "string" ? leases.get(body.lease_id) : undefined;
      if (!l) return err(400, ["invalid lease"]);
      return ok(
        envelope({
          data: {
            id: l.id,
            // Vault's format: nanoseconds and the server's UTC offset (here +02:00).
            issue_time: new Date(l.issuedAt + 2 * 3600_000).toISOString().replace("Z", "456789+02:00"),
            expire_time: new Date(l.expiresAt).toISOString(),
            last_renewal: null,
            renewable: true,
            ttl: Math.round((l.expiresAt - Date.now()) / 1000),
          },
        }),
      );
    }
    if (p.startsWith("sys/leases/lookup/")) {
      if (!(method === "GET" && ["true", "1"].includes(r.query.get("list") ?? ""))) return err(405, ["unsupported operation"]);
      const prefix = p.slice("sys/leases/lookup/".length);
      const keys = new Set<string>();
      for (const id of leases.keys()) {
        if (!id.startsWith(prefix)) continue;
        const rest = id.slice(prefix.length);
        const slash = rest.indexOf("/");
        keys.add(slash === -1 ? rest : rest.slice(0, slash + 1));
      }
      if (keys.size === 0) return err(404, []);
      return ok(envelope({ data: { keys: [...keys].sort() } }));
    }

    // ---- dynamic-secret engines ----
    const engine = opts.engines?.[p];
    if (engine) {
      let ttl = engine.defaultTtl;
      if (isWrite) {
        if (!engine.ttlParam) return err(405, ["unsupported operation"]);
        const asked = parseTtl(body.ttl);
        if (Number.isNaN(asked)) return err(400, ["error parsing ttl"]);
        if (asked) ttl = asked;
      } else if (method !== "GET") return err(405, ["unsupported operation"]);
      if (engine.maxTtl) ttl = Math.min(ttl, engine.maxTtl);
      if (engine.leased === false) return ok(envelope({ lease_duration: 2764800, data: { value: "static" } }));
      const id = `${p}/${randomBytes(12).toString("base64url")}`;
      const now = Date.now();
      leases.set(id, { id, issuedAt: now, expiresAt: now + ttl * 1000 });
      const password = `A1a-${randomBytes(15).toString("base64url")}`;
      issuedSecrets.add(password);
      return ok(envelope({ lease_id: id, renewable: true, lease_duration: ttl, data: { username: `v-jit-${randomBytes(4).toString("hex")}`, password } }));
    }
    return err(404, [`no handler for route "${p}". route entry not found.`]);
  }

  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://vault");
      const text = Buffer.concat(chunks).toString("utf8");
      let body: Record<string, unknown> = {};
      let badJson = false;
      if (text !== "") {
        try {
          const parsed = JSON.parse(text) as unknown;
          if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
          else badJson = true;
        } catch {
          badJson = true;
        }
      }
      const header = (n: string) => (typeof req.headers[n] === "string" ? (req.headers[n] as string) : undefined);
      const r: RecordedRequest = {
        method: req.method ?? "GET",
        path: url.pathname.replace(/^\/v1\//, ""),
        query: url.searchParams,
        token: header("x-vault-token"),
        namespace: header("x-vault-namespace"),
        body,
      };
      requests.push(r);
      let reply: Reply;
      const rule = failures.find((f) => f.times > 0 && f.match(r));
      if (!url.pathname.startsWith("/v1/")) reply = err(404, ["not found"]);
      else if (badJson) reply = err(400, ["failed to parse JSON input"]);
      else if (rule) {
        rule.times--;
        reply = rule.location ? { status: rule.status, location: rule.location(r, req.url ?? "/") } : err(rule.status, rule.errors);
      } else reply = route(r);
      r.status = reply.status;
      const send = () => {
        if (reply.location !== undefined) {
          res.writeHead(reply.status, { location: reply.location, "content-length": 0 }).end();
          return;
        }
        if (reply.status === 204 || reply.body === undefined) {
          res.writeHead(reply.status).end();
          return;
        }
        const out = JSON.stringify(reply.body);
        res.writeHead(reply.status, { "content-type": "application/json", "content-length": Buffer.byteLength(out) }).end(out);
      };
      if (delayMs > 0) {
        // A delayed answer whose client gave up must not keep the test process alive (Jest's
        // "worker process has failed to exit gracefully"): close() clears what is still pending.
        const t = setTimeout(() => {
          delayed.delete(t);
          send();
        }, delayMs);
        delayed.add(t);
      } else send();
    });
  };

  const server = opts.tls ? https.createServer({ key: opts.tls.key, cert: opts.tls.cert }, handler) : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const url = `${opts.tls ? "https" : "http"}://127.0.0.1:${port}`;

  const matcher = (m: string | RegExp | ((r: RecordedRequest) => boolean) | undefined): ((r: RecordedRequest) => boolean) => {
    if (m === undefined) return () => true;
    if (typeof m === "function") return m;
    if (typeof m === "string") return (r) => r.path === m;
    return (r) => m.test(r.path);
  };

  return {
    url,
    rootToken,
    requests,
    hits: (method, p) => requests.filter((r) => r.method === method && (typeof p === "string" ? r.path === p : p.test(r.path))),
    seal: () => void (sealed = true),
    unseal: () => void (sealed = false),
    fail(status, o = {}) {
      failures.push({ status, errors: o.errors ?? (status >= 500 ? ["internal error"] : status === 429 ? ["rate limit quota exceeded"] : ["error"]), match: matcher(o.match), times: o.times ?? Infinity });
    },
    redirect(location, o = {}) {
      const to = typeof location === "function" ? (r: RecordedRequest) => location(r) : (_r: RecordedRequest, rawUrl: string) => `${location.replace(/\/$/, "")}${rawUrl}`;
      failures.push({ status: o.status ?? 307, errors: [], match: matcher(o.match), times: o.times ?? Infinity, location: to });
    },
    clearFailures: () => void (failures = []),
    setDelay: (ms) => void (delayMs = ms),
    expireToken(t) {
      const e = tokens.get(t);
      if (e) e.expiresAt = Date.now() - 1;
    },
    loginTokens: () => [...loginTokens],
    leases: () => {
      purgeLeases();
      return [...leases.keys()];
    },
    leaseInfo: (id) => {
      const l = leases.get(id);
      return l && { issuedAt: l.issuedAt, expiresAt: l.expiresAt };
    },
    addLease(p, ageMs) {
      const id = `${p}/${randomBytes(12).toString("base64url")}`;
      const issuedAt = Date.now() - ageMs;
      leases.set(id, { id, issuedAt, expiresAt: Date.now() + 3600_000 });
      return id;
    },
    dropLease: (id) => void leases.delete(id),
    token(accessor) {
      const t = accessors.get(accessor);
      const e = t === undefined ? undefined : tokens.get(t);
      return e && { token: e.token, expiresAt: e.expiresAt, meta: e.meta, policies: e.policies, renewable: e.renewable, displayName: e.displayName };
    },
    secrets: () => [...issuedSecrets],
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of delayed) clearTimeout(t);
        delayed.clear();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
