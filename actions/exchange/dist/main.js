// Built by scripts/release from src/action (do not edit; a test checks this copy is up to date).
"use strict";

// src/action/runner.ts
var import_node_fs = require("node:fs");

// src/client/errors.ts
var BrokerClientError = class extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
};
var BrokerApiError = class extends BrokerClientError {
  status;
  code;
  detail;
  problem;
  /** Seconds, from a Retry-After header (429, 503). */
  retryAfter;
  constructor(problem, retryAfter) {
    super(`${problem.code}: ${problem.detail}`);
    this.status = problem.status;
    this.code = problem.code;
    this.detail = problem.detail;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
  /** The broker or a backend is unavailable (503, or a gateway error in front of the broker). */
  get unavailable() {
    return this.status >= 500;
  }
};
var BrokerUnreachableError = class extends BrokerClientError {
  constructor(url, reason, options) {
    super(`cannot reach the broker at ${url}: ${reason}`, options);
    this.url = url;
    this.reason = reason;
  }
  url;
  reason;
  code = "broker_unreachable";
};
var TokenSourceError = class extends BrokerClientError {
  /** "unavailable": the source exists but failed (provider down); "config": the source is not set up. */
  constructor(message, kind = "config", options) {
    super(message, options);
    this.kind = kind;
  }
  kind;
};
var ApprovalError = class extends BrokerClientError {
  constructor(request, message) {
    super(message);
    this.request = request;
    this.requestId = request.id;
    this.state = request.state;
  }
  request;
  requestId;
  state;
};

// src/client/token.ts
var import_promises = require("node:fs/promises");
var clean = (token, where) => {
  const t = token.trim();
  if (t === "") throw new TokenSourceError(`${where} is empty`);
  if (/\s/.test(t)) throw new TokenSourceError(`${where} does not hold a single token (it contains whitespace)`);
  return t;
};
function fileToken(file) {
  return {
    refreshable: true,
    async get() {
      let text;
      try {
        text = await (0, import_promises.readFile)(file, "utf8");
      } catch (e) {
        const code = e.code;
        throw new TokenSourceError(`cannot read the token file ${file}: ${code === "ENOENT" ? "no such file" : code ?? e.message}`, "config", { cause: e });
      }
      return clean(text, `token file ${file}`);
    }
  };
}
function envToken(name, env = process.env) {
  return {
    refreshable: true,
    async get() {
      const v = env[name];
      if (v === void 0 || v === "") throw new TokenSourceError(`environment variable ${name} is not set`);
      return clean(v, `environment variable ${name}`);
    }
  };
}
function expiryMs(jwt) {
  try {
    const payload = JSON.parse(Buffer.from(jwt.split(".")[1] ?? "", "base64url").toString("utf8"));
    return typeof payload.exp === "number" ? payload.exp * 1e3 : void 0;
  } catch {
    return void 0;
  }
}
function githubActionsToken(opts = {}) {
  const env = opts.env ?? process.env;
  const audience = opts.audience ?? "jitbroker";
  const doFetch = opts.fetch ?? fetch;
  const refreshBefore = opts.refreshBeforeMs ?? 6e4;
  let cached = null;
  return {
    refreshable: true,
    invalidate() {
      cached = null;
    },
    async get() {
      if (cached && cached.exp - refreshBefore > Date.now()) return cached.token;
      const base = env.ACTIONS_ID_TOKEN_REQUEST_URL;
      const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
      if (!base || !requestToken) {
        throw new TokenSourceError(
          "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: run inside GitHub Actions with `permissions: id-token: write`"
        );
      }
      const url = `${base}${base.includes("?") ? "&" : "?"}audience=${encodeURIComponent(audience)}`;
      let res;
      try {
        res = await doFetch(url, {
          headers: { authorization: `Bearer ${requestToken}`, accept: "application/json" },
          signal: AbortSignal.timeout(opts.timeoutMs ?? 3e4)
        });
      } catch (e) {
        const cause = e.cause?.code ?? e.name;
        throw new TokenSourceError(`cannot reach the GitHub Actions token endpoint: ${cause}`, "unavailable", { cause: e });
      }
      const text = await res.text().catch(() => "");
      if (!res.ok) {
        throw new TokenSourceError(`the GitHub Actions token endpoint answered HTTP ${res.status}`, res.status >= 500 || res.status === 429 ? "unavailable" : "refused");
      }
      let value;
      try {
        value = JSON.parse(text).value;
      } catch {
        value = void 0;
      }
      if (typeof value !== "string" || value === "") throw new TokenSourceError('the GitHub Actions token endpoint answered without a token (no "value")', "unavailable");
      const token = clean(value, "the GitHub Actions ID token");
      const exp = expiryMs(token);
      cached = exp === void 0 ? null : { token, exp };
      return token;
    }
  };
}
function tokenProvider(opt) {
  if (typeof opt === "string") {
    const t = clean(opt, "the token");
    return { refreshable: false, get: async () => t };
  }
  if (typeof opt === "function") {
    return {
      refreshable: true,
      async get() {
        let v;
        try {
          v = await opt();
        } catch (e) {
          throw new TokenSourceError(`the token function failed: ${e.message ?? String(e)}`, "unavailable", { cause: e });
        }
        if (typeof v !== "string") throw new TokenSourceError("the token function did not return a string");
        return clean(v, "the token function's result");
      }
    };
  }
  if ("get" in opt && typeof opt.get === "function") return opt;
  if ("file" in opt && typeof opt.file === "string") return fileToken(opt.file);
  if ("env" in opt && typeof opt.env === "string") return envToken(opt.env);
  throw new TokenSourceError("token: give a string, a function, {file}, {env} or a token provider");
}

// src/client/client.ts
var EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
var TOKEN_TYPE = { jwt: "urn:ietf:params:oauth:token-type:jwt", access_token: "urn:ietf:params:oauth:token-type:access_token", id_token: "urn:ietf:params:oauth:token-type:id_token" };
var NOT_SENT = /* @__PURE__ */ new Set(["ECONNREFUSED", "UND_ERR_CONNECT_TIMEOUT", "EAI_AGAIN", "ENETUNREACH", "EHOSTUNREACH"]);
var sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function errorCode(e) {
  const err = e;
  if (err?.name === "TimeoutError" || err?.name === "AbortError") return "timeout";
  const cause = err?.cause;
  return cause?.code ?? cause?.errors?.[0]?.code ?? err?.code ?? cause?.message ?? err?.name ?? "network error";
}
function retryAfterSeconds(h) {
  const v = h.get("retry-after");
  if (v === null) return void 0;
  const n = Number(v);
  if (Number.isFinite(n) && n >= 0) return n;
  const at = Date.parse(v);
  return Number.isNaN(at) ? void 0 : Math.max(0, Math.ceil((at - Date.now()) / 1e3));
}
function toProblem(status, body) {
  const b = body;
  if (b && typeof b === "object" && typeof b.code === "string") {
    const description = b.error_description;
    return { ...b, status: typeof b.status === "number" ? b.status : status, code: b.code, detail: typeof b.detail === "string" ? b.detail : typeof description === "string" ? description : b.title ?? `HTTP ${status}` };
  }
  const code = status === 502 || status === 503 || status === 504 ? "broker_unavailable" : status === 401 ? "invalid_token" : "unexpected_response";
  return { status, code, detail: `HTTP ${status} without a problem document (is the URL the broker's?)` };
}
var BrokerClient = class {
  url;
  token;
  doFetch;
  retry;
  timeoutMs;
  userAgent;
  constructor(opts) {
    let u;
    try {
      u = new URL(opts.url);
    } catch {
      throw new TypeError(`url: not a URL: ${JSON.stringify(opts.url)}`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new TypeError(`url: must be http(s), got ${u.protocol}`);
    this.url = opts.url.replace(/\/+$/, "");
    this.token = tokenProvider(opts.token);
    this.doFetch = opts.fetch ?? fetch;
    this.retry = opts.retry === false ? { attempts: 1, baseMs: 0, maxMs: 0 } : { attempts: Math.max(1, opts.retry?.attempts ?? 4), baseMs: opts.retry?.baseMs ?? 250, maxMs: opts.retry?.maxMs ?? 5e3 };
    this.timeoutMs = opts.timeoutMs ?? 3e4;
    this.userAgent = opts.userAgent ?? "jitbroker-client";
  }
  /** Capped exponential backoff with full jitter; Retry-After (seconds) is honoured up to the cap. */
  backoff(attempt, retryAfter) {
    const step = Math.min(this.retry.maxMs, this.retry.baseMs * 2 ** (attempt - 1));
    const jittered = Math.round(step / 2 + Math.random() * step / 2);
    return retryAfter === void 0 ? jittered : Math.max(jittered, Math.min(this.retry.maxMs, retryAfter * 1e3));
  }
  async call(method, path, opts = {}) {
    const auth = opts.auth ?? true;
    const idempotent = opts.idempotent ?? (method === "GET" || method === "DELETE");
    let url = `${this.url}${path}`;
    if (opts.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(opts.query)) if (v !== void 0) q.set(k, String(v));
      const s = q.toString();
      if (s) url += `?${s}`;
    }
    let refreshed = false;
    for (let attempt = 1; ; attempt++) {
      const headers = { accept: "application/json, application/problem+json", "user-agent": this.userAgent };
      if (auth) headers.authorization = `Bearer ${await this.token.get()}`;
      if (opts.body !== void 0) headers["content-type"] = "application/json";
      let res;
      try {
        res = await this.doFetch(url, {
          method,
          headers,
          ...opts.body === void 0 ? {} : { body: JSON.stringify(opts.body) },
          signal: AbortSignal.timeout(this.timeoutMs)
        });
      } catch (e) {
        const code = errorCode(e);
        if (attempt < this.retry.attempts && (NOT_SENT.has(code) || idempotent)) {
          await sleep(this.backoff(attempt));
          continue;
        }
        throw new BrokerUnreachableError(this.url, code, { cause: e });
      }
      const text = await res.text().catch(() => "");
      let body = void 0;
      if (text !== "") {
        try {
          body = JSON.parse(text);
        } catch {
          body = void 0;
        }
      }
      if (res.ok) {
        if (body === void 0) throw new BrokerApiError({ status: res.status, code: "unexpected_response", detail: `HTTP ${res.status} with a body that is not JSON` });
        return { status: res.status, body, headers: res.headers };
      }
      const problem = toProblem(res.status, body);
      const retryAfter = retryAfterSeconds(res.headers);
      if (res.status === 401 && problem.code === "token_expired" && auth && this.token.refreshable && !refreshed) {
        refreshed = true;
        this.token.invalidate?.();
        attempt--;
        continue;
      }
      if ((res.status === 502 || res.status === 503 || res.status === 504) && attempt < this.retry.attempts) {
        await sleep(this.backoff(attempt, retryAfter));
        continue;
      }
      throw new BrokerApiError(problem, retryAfter);
    }
  }
  /**
   * Asks for a credential for one task. Resolves with the lease and the credential; the
   * credential is shown once and is not kept by the broker.
   */
  async requestCredential(req) {
    const task = typeof req.task === "string" ? { id: req.task } : req.task;
    const body = { role: req.role, task, ...req.ttl === void 0 ? {} : { ttl: req.ttl }, ...req.scope === void 0 ? {} : { scope: req.scope } };
    const r = await this.call("POST", "/v1/credentials", { body });
    if (r.status !== 202) return r.body;
    const pending = r.body.request;
    req.onPending?.(pending);
    if (!req.waitForApproval) {
      throw new ApprovalError(pending, `request ${pending.id} for role ${req.role} needs an operator's approval; it is pending`);
    }
    return this.waitForApproval(pending, req.waitForApproval);
  }
  /**
   * Collects an approval request once: the credential when it was approved (it is minted now,
   * and only once), or the request with its state (pending_approval, denied, expired, collected).
   */
  async collectRequest(id) {
    const r = await this.call("GET", `/v1/requests/${encodeURIComponent(id)}`, { idempotent: true });
    return r.body;
  }
  /** Polls an approval request until it is collected (resolves) or ends otherwise (ApprovalError). */
  async waitForApproval(request, wait) {
    const deadline = Date.now() + wait.timeoutMs;
    const pollMs = Math.max(50, wait.pollMs ?? 2e3);
    let last = request;
    for (; ; ) {
      let r;
      try {
        r = await this.collectRequest(request.id);
      } catch (e) {
        if (!(e instanceof BrokerApiError && e.code === "request_not_pending" && e.problem.state === "collecting")) throw e;
        r = null;
      }
      if (r && "lease" in r) return r;
      if (r) last = { ...last, ...r.request };
      if (last.state !== "pending_approval" && last.state !== "approved") {
        const why = last.state === "denied" ? "was denied" : last.state === "expired" ? "expired before it was approved and collected" : last.state === "collected" ? "was already collected" : `is ${last.state}`;
        throw new ApprovalError(last, `request ${last.id} ${why}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new ApprovalError(last, `request ${last.id} is still pending approval after ${Math.round(wait.timeoutMs / 1e3)} s`);
      await sleep(Math.min(pollMs, left));
    }
  }
  /** Ends a task: every lease of it held by this workload is revoked, and no new one is issued (I5). */
  async completeTask(taskId) {
    return (await this.call("POST", `/v1/tasks/${encodeURIComponent(taskId)}/complete`, { idempotent: true })).body;
  }
  /**
   * Runs `fn` for a task and then completes the task, whether `fn` resolved or threw. `fn`'s own
   * error is rethrown (a failed completion is then not reported: the leases still expire).
   */
  async withTask(task, fn) {
    const t = typeof task === "string" ? { id: task } : task;
    const scope = {
      id: t.id,
      requestCredential: (role, opts = {}) => this.requestCredential({ ...opts, role, task: t })
    };
    let result;
    try {
      result = await fn(scope);
    } catch (e) {
      await this.completeTask(t.id).catch(() => void 0);
      throw e;
    }
    await this.completeTask(t.id);
    return result;
  }
  /** Revokes one lease (its owner, or an operator). */
  async revoke(leaseId, reason) {
    const r = await this.call("DELETE", `/v1/leases/${encodeURIComponent(leaseId)}`, reason === void 0 ? {} : { body: { reason } });
    return r.body.lease;
  }
  async getLease(leaseId) {
    return (await this.call("GET", `/v1/leases/${encodeURIComponent(leaseId)}`)).body.lease;
  }
  /** The workload this token maps to, and the identity it was read from. */
  async whoami() {
    return (await this.call("GET", "/v1/whoami")).body;
  }
  /** RFC 7662 introspection of a broker-issued JWT (for resource servers); with `resource`, inactive unless bound to it. */
  async introspect(token, resource) {
    return (await this.call("POST", "/v1/introspect", { body: { token, ...resource === void 0 ? {} : { resource } }, idempotent: true })).body;
  }
  async exchange(params) {
    const body = Object.fromEntries(Object.entries({ grant_type: EXCHANGE, actor_token: await this.token.get(), actor_token_type: TOKEN_TYPE.jwt, ...params }).filter(([, v]) => v !== void 0));
    return (await this.call("POST", "/v1/oauth/token", { body, auth: false })).body;
  }
  /**
   * Delegation (RFC 8693): a narrower copy of a broker credential someone handed this workload
   * (same role and task, scope/resource/TTL no wider). The new lease is this workload's and is
   * revoked with the one it derives from.
   */
  async delegate(subjectToken, opts = {}) {
    return this.exchange({ subject_token: subjectToken, subject_token_type: TOKEN_TYPE.access_token, scope: opts.scope, resource: opts.resource, audience: opts.audience, ttl: opts.ttl });
  }
  /**
   * On behalf of a person: `idToken` is their ID token (an issuer with `use: users`); the lease
   * is this workload's, its token's `sub` the person and `act` this workload.
   */
  async onBehalfOf(idToken, opts) {
    return this.exchange({ subject_token: idToken, subject_token_type: TOKEN_TYPE.id_token, role: opts.role, task_id: opts.task, scope: opts.scope, resource: opts.resource, audience: opts.audience, ttl: opts.ttl });
  }
  // --- operators -----------------------------------------------------------------------------
  /** One page of leases (operators). */
  async listLeases(filter = {}) {
    return (await this.call("GET", "/v1/admin/leases", { query: { ...filter } })).body;
  }
  /** Every lease matching the filter, following cursors; stops after `max` (default: all). */
  async *leases(filter = {}, opts = {}) {
    let cursor;
    let left = opts.max ?? Infinity;
    while (left > 0) {
      const page = await this.listLeases({ ...filter, limit: Math.min(opts.pageSize ?? 500, left), ...cursor ? { cursor } : {} });
      for (const l of page.leases) {
        if (left-- <= 0) return;
        yield l;
      }
      if (!page.next_cursor || page.leases.length === 0) return;
      cursor = page.next_cursor;
    }
  }
  /** Starts a bulk revocation (operators); follow it with `getRevocation`. */
  async startRevocation(selector, reason) {
    return (await this.call("POST", "/v1/admin/revocations", { body: { ...selector, reason } })).body;
  }
  async getRevocation(id) {
    return (await this.call("GET", `/v1/admin/revocations/${encodeURIComponent(id)}`)).body;
  }
  /** Approval requests (operators), newest first; `state: "pending_approval"` for the queue. */
  async listRequests(filter = {}) {
    return (await this.call("GET", "/v1/admin/requests", { query: { ...filter } })).body;
  }
  /** Approves a pending request (operators allowed `approve` on its role; never the requester). */
  async approveRequest(id, reason) {
    return (await this.call("POST", `/v1/admin/requests/${encodeURIComponent(id)}/approve`, { body: reason === void 0 ? {} : { reason } })).body.request;
  }
  async denyRequest(id, reason) {
    return (await this.call("POST", `/v1/admin/requests/${encodeURIComponent(id)}/deny`, { body: reason === void 0 ? {} : { reason } })).body.request;
  }
  /** Who requested a lease, with which identity, under which policy, and how it ended (I8). */
  async leaseHistory(leaseId) {
    return (await this.call("GET", `/v1/admin/leases/${encodeURIComponent(leaseId)}/history`)).body;
  }
};

// src/cli/client/output.ts
var import_node_crypto = require("node:crypto");

// src/core/text.ts
var UNSAFE_TEXT_CLASS = "\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2069\\ufeff";
var SAFE_TEXT = new RegExp(`^[^${UNSAFE_TEXT_CLASS}]*$`);

// src/cli/text.ts
var CONTROL = new RegExp(`[${UNSAFE_TEXT_CLASS}]|\\p{Cs}`, "gu");
var CONTROL_EXCEPT_LAYOUT = new RegExp(`[${UNSAFE_TEXT_CLASS.replace("\\u0000-\\u001f", "\\u0000-\\u0008\\u000b-\\u001f")}]|\\p{Cs}`, "gu");
function escapeChar(c) {
  if (c === "\n") return "\\n";
  if (c === "\r") return "\\r";
  if (c === "	") return "\\t";
  const code = c.codePointAt(0);
  return code <= 255 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`;
}
function visible(value) {
  const s = typeof value === "string" ? value : value === void 0 || value === null ? "" : String(value);
  return s.replace(CONTROL, escapeChar);
}

// src/cli/client/output.ts
var OutputError = class extends Error {
};
var SHELL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
var SECRET_PREFIX = "JITBROKER_SECRET_";
var SAFE_FIELD = /^[A-Za-z0-9_-]{1,64}$/;
function envName(field) {
  if (!SAFE_FIELD.test(field)) return null;
  return `${SECRET_PREFIX}${field.toUpperCase().replace(/-/g, "_")}`;
}
var str = (v) => typeof v === "string" ? v : v === null || v === void 0 ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
function credentialVars(grant, onSkip = () => void 0) {
  const c = grant.credential;
  const vars = [];
  const secret = (name, value) => vars.push({ name, value: str(value), secret: true });
  if (c.type === "jwt") {
    secret("JITBROKER_TOKEN", c.token);
  } else if (c.type === "aws") {
    secret("AWS_ACCESS_KEY_ID", c.access_key_id);
    secret("AWS_SECRET_ACCESS_KEY", c.secret_access_key);
    secret("AWS_SESSION_TOKEN", c.session_token);
    if (c.expiration !== void 0) vars.push({ name: "AWS_CREDENTIAL_EXPIRATION", value: str(c.expiration), secret: false });
  } else if (c.type === "vault") {
    const data = c.data ?? {};
    if (c.lease_id === void 0 && typeof data.token === "string" && typeof data.accessor === "string") secret("VAULT_TOKEN", data.token);
    else {
      const fields = Object.entries(data);
      if (fields.length === 0) throw new OutputError("the vault credential has no data fields to export");
      for (const [k, v] of fields) {
        const name = envName(k);
        if (name === null || !SHELL_NAME.test(name)) {
          onSkip(`vault secret field "${visible(k.slice(0, 64))}" not exported: a field name must be 1-64 of letters, digits, _ and - (use --format json for every field)`);
          continue;
        }
        secret(name, v);
      }
      if (!vars.some((v) => v.name.startsWith(SECRET_PREFIX))) throw new OutputError("no field of the vault secret can be exported as an environment variable; use --format json");
    }
  } else {
    throw new OutputError(`credential type ${JSON.stringify(c.type)} has no environment form; use --format json`);
  }
  vars.push({ name: "JITBROKER_LEASE_ID", value: grant.lease.id, secret: false });
  vars.push({ name: "JITBROKER_EXPIRES_AT", value: grant.lease.expires_at, secret: false });
  const seen = /* @__PURE__ */ new Set();
  for (const v of vars) {
    if (seen.has(v.name)) throw new OutputError(`two credential fields map to the environment variable ${v.name}; use --format json`);
    seen.add(v.name);
    if (v.value.includes("\0")) throw new OutputError(`the value of ${v.name} contains a NUL byte and cannot be an environment variable; use --format json`);
  }
  return vars;
}
function commandData(s) {
  return s.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}
function maskCommands(vars) {
  const out = [];
  for (const v of vars) {
    if (!v.secret || v.value === "") continue;
    out.push(`::add-mask::${commandData(v.value)}`);
    const lines = v.value.split(/\r?\n/).filter((l) => l.trim() !== "");
    if (lines.length > 1) for (const l of lines) out.push(`::add-mask::${commandData(l)}`);
  }
  return out.map((l) => `${l}
`).join("");
}
function githubFileCommands(vars, random = () => (0, import_node_crypto.randomBytes)(16).toString("hex")) {
  return vars.map((v) => {
    let delimiter;
    do
      delimiter = `ghadelimiter_${random()}`;
    while (v.value.includes(delimiter) || v.name.includes(delimiter));
    return `${v.name}<<${delimiter}
${v.value}
${delimiter}
`;
  }).join("");
}

// src/action/runner.ts
var ActionError = class extends Error {
};
function input(env, name, opts = {}) {
  const v = (env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] ?? "").trim();
  if (v !== "") return v;
  if (opts.required) throw new ActionError(`input ${name} is required`);
  return opts.default ?? "";
}
function commandData2(s) {
  return s.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A").replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g, "?");
}
function fileCommand(env, which, vars) {
  const file = env[which];
  if (!file) throw new ActionError(`${which} is not set: this runs as a step of a GitHub Actions job`);
  if (vars.length) (0, import_node_fs.appendFileSync)(file, githubFileCommands(vars), { encoding: "utf8" });
}
function maskedJobToken(r, audience) {
  const inner = githubActionsToken({ env: r.env, audience });
  return {
    refreshable: true,
    invalidate: () => inner.invalidate?.(),
    async get() {
      const t = await inner.get();
      r.log(`::add-mask::${commandData2(t)}`);
      return t;
    }
  };
}
function brokerClient(r, url, audience) {
  try {
    return new BrokerClient({ url, token: maskedJobToken(r, audience), retry: { attempts: 3 }, userAgent: "jitbroker-github-action" });
  } catch (e) {
    throw new ActionError(`broker-url ${url}: ${e.message.replace(/^url: /, "")}`);
  }
}
function failureText(e) {
  if (e instanceof ActionError) return e.message;
  if (e instanceof BrokerApiError) return `${e.code}: ${e.detail}`;
  if (e instanceof BrokerUnreachableError) return `broker_unreachable: ${e.message}`;
  if (e instanceof TokenSourceError) return `token_source: ${e.message}`;
  if (e instanceof ApprovalError) return `approval_${e.state}: ${e.message}`;
  return e?.message ?? String(e);
}
function runStep(fn) {
  const r = { env: process.env, log: (line) => process.stdout.write(`${line}
`) };
  fn(r).then(
    () => void 0,
    (e) => {
      r.log(`::error title=jitbroker::${commandData2(failureText(e))}`);
      process.exitCode = 1;
    }
  );
}

// src/action/steps.ts
var import_node_fs2 = require("node:fs");
var TASK_ID = /^[A-Za-z0-9._:@-]{1,128}$/;
function defaultTask(env) {
  const run = env.GITHUB_RUN_ID;
  if (!run) throw new ActionError("input task is required (GITHUB_RUN_ID is not set, so no default task can be named)");
  const parts = ["gha", env.GITHUB_REPOSITORY_ID, run, env.GITHUB_RUN_ATTEMPT ?? "1", env.GITHUB_JOB].filter((p) => !!p);
  return parts.join("-").replace(/[^A-Za-z0-9._:@-]/g, "-").slice(0, 128);
}
function requireFile(env, name) {
  const f = env[name];
  if (!f) throw new ActionError(`${name} is not set: this runs as a step of a GitHub Actions job`);
  if (!(0, import_node_fs2.existsSync)(f)) throw new ActionError(`${name} names ${f}, which does not exist`);
}
var plain = (name, value) => ({ name, value, secret: false });
async function exchangeStep(r) {
  const url = input(r.env, "broker-url", { required: true });
  const role = input(r.env, "role", { required: true });
  const task = input(r.env, "task") || defaultTask(r.env);
  if (!TASK_ID.test(task)) throw new ActionError(`input task ${JSON.stringify(task)}: 1-128 characters of [A-Za-z0-9._:@-]`);
  const ttlText = input(r.env, "ttl");
  const ttl = ttlText === "" ? void 0 : /^\d+$/.test(ttlText) ? Number(ttlText) : ttlText;
  const audience = input(r.env, "audience", { default: "jitbroker" });
  for (const f of ["GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_STATE"]) requireFile(r.env, f);
  const client = brokerClient(r, url, audience);
  fileCommand(r.env, "GITHUB_STATE", [plain("task", task), plain("broker_url", url), plain("audience", audience)]);
  const grant = await client.requestCredential({ role, task: { id: task }, ...ttl === void 0 ? {} : { ttl } });
  const giveBack = (why) => client.revoke(grant.lease.id, `not delivered by the jitbroker action: ${why}`).catch(() => void 0);
  let vars;
  try {
    vars = credentialVars(grant);
  } catch (e) {
    if (!(e instanceof OutputError)) throw e;
    await giveBack(e.message);
    throw new ActionError(`${e.message} (lease ${grant.lease.id} revoked)`);
  }
  const masks = maskCommands(vars).trimEnd();
  if (masks) r.log(masks);
  try {
    fileCommand(r.env, "GITHUB_ENV", vars);
    fileCommand(r.env, "GITHUB_OUTPUT", [...vars, plain("lease-id", grant.lease.id), plain("expires-at", grant.lease.expires_at), plain("task", task)]);
    fileCommand(r.env, "GITHUB_STATE", [plain("lease_id", grant.lease.id)]);
  } catch (e) {
    await giveBack("could not write the runner's files");
    throw new ActionError(`cannot write GITHUB_ENV/GITHUB_OUTPUT: ${e.code ?? e.message} (lease ${grant.lease.id} revoked)`);
  }
  r.log(
    commandData2(
      `jitbroker: lease ${grant.lease.id} (${grant.lease.role}, task ${task}) until ${grant.lease.expires_at}; set ${vars.map((v) => v.name).join(", ")} in the job's environment; the post step completes the task`
    )
  );
}

// src/action/main.ts
runStep(exchangeStep);
