/**
 * BrokerClient: the REST API (GET /openapi.json; docs/ARCHITECTURE.md, Request path) for agents, CI and operators, on Node 20's
 * global fetch and nothing else.
 *
 * - The workload token is asked from its source before every call; a 401 `token_expired` makes
 *   the client ask the source again and retry once.
 * - 502/503/504 and refused connections are retried with capped, jittered exponential backoff
 *   (bounded attempts; a Retry-After header is honoured up to the cap). Other errors are raised
 *   at once as `BrokerApiError` with the problem's `code`.
 * - A credential request that needs approval (202) either raises `ApprovalError` or, with
 *   `waitForApproval`, polls `GET /v1/requests/{id}` until it is collected, denied or expired.
 */
import { ApprovalError, BrokerApiError, BrokerUnreachableError, type Problem } from "./errors";
import { tokenProvider, type TokenOption, type TokenProvider } from "./token";
import type {
  ApprovalRequest,
  ApprovalState,
  CredentialGrant,
  ExchangeOptions,
  Introspection,
  Lease,
  LeaseFilter,
  LeaseHistory,
  LeasePage,
  PendingRequest,
  RevocationProgress,
  RevocationSelector,
  RevocationStarted,
  TaskCompletion,
  TaskInput,
  TokenExchangeResult,
  WhoAmI,
} from "./types";

const EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE = { jwt: "urn:ietf:params:oauth:token-type:jwt", access_token: "urn:ietf:params:oauth:token-type:access_token", id_token: "urn:ietf:params:oauth:token-type:id_token" };

export interface RetryOptions {
  /** Attempts in all, the first included. Default 4. */
  attempts?: number;
  /** First backoff step. Default 250 ms. */
  baseMs?: number;
  /** Longest wait between attempts. Default 5 s. */
  maxMs?: number;
}

export interface BrokerClientOptions {
  /** The broker's base URL, e.g. https://jitbroker.internal */
  url: string;
  /** The workload token or where to get it (see TokenOption). */
  token: TokenOption;
  fetch?: typeof fetch;
  /** Retries of unavailable answers (502/503/504, connection refused); `false` for none. */
  retry?: RetryOptions | false;
  /** Per HTTP request. Default 30 s. */
  timeoutMs?: number;
  /** Sent as User-Agent. */
  userAgent?: string;
}

export interface WaitForApproval {
  /** Give up (ApprovalError, state pending_approval) after this long. */
  timeoutMs: number;
  /** Between polls. Default 2 s. */
  pollMs?: number;
}

export interface CredentialRequestOptions {
  role: string;
  /** The task id, or the task with its context (intent, tool, destination, sensitivity). */
  task: string | TaskInput;
  /** "5m", or seconds. Default: the role's. */
  ttl?: string | number;
  /** Backend-specific narrowing of the role's access (aws_sts: an IAM policy document). */
  scope?: Record<string, unknown>;
  /** Wait for an operator's approval when the policy asks for one. Without it a 202 raises ApprovalError. */
  waitForApproval?: WaitForApproval;
  /** Called once when the broker answers 202 (approval pending). */
  onPending?: (request: PendingRequest) => void;
}

/** What `withTask` hands to its function: requests bound to that task. */
export interface TaskScope {
  readonly id: string;
  requestCredential(role: string, opts?: Omit<CredentialRequestOptions, "role" | "task">): Promise<CredentialGrant>;
}

interface Reply<T> {
  status: number;
  body: T;
  headers: Headers;
}

interface CallOptions {
  body?: unknown;
  query?: Record<string, string | number | undefined>;
  auth?: boolean;
  /** Safe to resend after the request may have reached the broker. */
  idempotent?: boolean;
}

/** Connection errors that mean nothing was sent: any request may be retried. */
const NOT_SENT = new Set(["ECONNREFUSED", "UND_ERR_CONNECT_TIMEOUT", "EAI_AGAIN", "ENETUNREACH", "EHOSTUNREACH"]);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function errorCode(e: unknown): string {
  const err = e as { name?: string; code?: string; cause?: unknown };
  if (err?.name === "TimeoutError" || err?.name === "AbortError") return "timeout";
  const cause = err?.cause as { code?: string; message?: string; errors?: { code?: string }[] } | undefined;
  return cause?.code ?? cause?.errors?.[0]?.code ?? err?.code ?? cause?.message ?? err?.name ?? "network error";
}

function retryAfterSeconds(h: Headers): number | undefined {
  const v = h.get("retry-after");
  if (v === null) return undefined;
  const n = Number(v);
  if (Number.isFinite(n) && n >= 0) return n;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

function toProblem(status: number, body: unknown): Problem {
  const b = body as Partial<Problem> | null;
  if (b && typeof b === "object" && typeof b.code === "string") {
    // RFC 6749 errors of the token endpoint carry error_description instead of detail.
    const description = (b as { error_description?: unknown }).error_description;
    return { ...b, status: typeof b.status === "number" ? b.status : status, code: b.code, detail: typeof b.detail === "string" ? b.detail : typeof description === "string" ? description : (b.title ?? `HTTP ${status}`) };
  }
  // Not the broker's problem document (a proxy, a load balancer): describe it by status only.
  const code = status === 502 || status === 503 || status === 504 ? "broker_unavailable" : status === 401 ? "invalid_token" : "unexpected_response";
  return { status, code, detail: `HTTP ${status} without a problem document (is the URL the broker's?)` };
}

export class BrokerClient {
  readonly url: string;
  private readonly token: TokenProvider;
  private readonly doFetch: typeof fetch;
  private readonly retry: Required<RetryOptions>;
  private readonly timeoutMs: number;
  private readonly userAgent: string;

  constructor(opts: BrokerClientOptions) {
    let u: URL;
    try {
      u = new URL(opts.url);
    } catch {
      throw new TypeError(`url: not a URL: ${JSON.stringify(opts.url)}`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new TypeError(`url: must be http(s), got ${u.protocol}`);
    this.url = opts.url.replace(/\/+$/, "");
    this.token = tokenProvider(opts.token);
    this.doFetch = opts.fetch ?? fetch;
    this.retry = opts.retry === false ? { attempts: 1, baseMs: 0, maxMs: 0 } : { attempts: Math.max(1, opts.retry?.attempts ?? 4), baseMs: opts.retry?.baseMs ?? 250, maxMs: opts.retry?.maxMs ?? 5000 };
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.userAgent = opts.userAgent ?? "jitbroker-client";
  }

  /** Capped exponential backoff with full jitter; Retry-After (seconds) is honoured up to the cap. */
  private backoff(attempt: number, retryAfter?: number): number {
    const step = Math.min(this.retry.maxMs, this.retry.baseMs * 2 ** (attempt - 1));
    const jittered = Math.round(step / 2 + (Math.random() * step) / 2);
    return retryAfter === undefined ? jittered : Math.max(jittered, Math.min(this.retry.maxMs, retryAfter * 1000));
  }

  private async call<T>(method: string, path: string, opts: CallOptions = {}): Promise<Reply<T>> {
    const auth = opts.auth ?? true;
    const idempotent = opts.idempotent ?? (method === "GET" || method === "DELETE");
    let url = `${this.url}${path}`;
    if (opts.query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(opts.query)) if (v !== undefined) q.set(k, String(v));
      const s = q.toString();
      if (s) url += `?${s}`;
    }
    let refreshed = false;
    for (let attempt = 1; ; attempt++) {
      const headers: Record<string, string> = { accept: "application/json, application/problem+json", "user-agent": this.userAgent };
      if (auth) headers.authorization = `Bearer ${await this.token.get()}`;
      if (opts.body !== undefined) headers["content-type"] = "application/json";
      let res: Response;
      try {
        res = await this.doFetch(url, {
          method,
          headers,
          ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
          signal: AbortSignal.timeout(this.timeoutMs),
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
      let body: unknown = undefined;
      if (text !== "") {
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
      }
      if (res.ok) {
        if (body === undefined) throw new BrokerApiError({ status: res.status, code: "unexpected_response", detail: `HTTP ${res.status} with a body that is not JSON` });
        return { status: res.status, body: body as T, headers: res.headers };
      }
      const problem = toProblem(res.status, body);
      const retryAfter = retryAfterSeconds(res.headers);
      if (res.status === 401 && problem.code === "token_expired" && auth && this.token.refreshable && !refreshed) {
        refreshed = true;
        this.token.invalidate?.();
        attempt--; // a fresh token is not a retry of an unavailable broker
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
  async requestCredential(req: CredentialRequestOptions): Promise<CredentialGrant> {
    const task = typeof req.task === "string" ? { id: req.task } : req.task;
    const body = { role: req.role, task, ...(req.ttl === undefined ? {} : { ttl: req.ttl }), ...(req.scope === undefined ? {} : { scope: req.scope }) };
    const r = await this.call<CredentialGrant | { request: PendingRequest }>("POST", "/v1/credentials", { body });
    if (r.status !== 202) return r.body as CredentialGrant;
    const pending = (r.body as { request: PendingRequest }).request;
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
  async collectRequest(id: string): Promise<CredentialGrant | { request: PendingRequest }> {
    const r = await this.call<CredentialGrant | { request: PendingRequest }>("GET", `/v1/requests/${encodeURIComponent(id)}`, { idempotent: true });
    return r.body;
  }

  /** Polls an approval request until it is collected (resolves) or ends otherwise (ApprovalError). */
  async waitForApproval(request: PendingRequest, wait: WaitForApproval): Promise<CredentialGrant> {
    const deadline = Date.now() + wait.timeoutMs;
    const pollMs = Math.max(50, wait.pollMs ?? 2000);
    let last = request;
    for (;;) {
      let r: CredentialGrant | { request: PendingRequest } | null;
      try {
        r = await this.collectRequest(request.id);
      } catch (e) {
        // Another call of the same workload is collecting it right now: look again.
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
      if (left <= 0) throw new ApprovalError(last, `request ${last.id} is still pending approval after ${Math.round(wait.timeoutMs / 1000)} s`);
      await sleep(Math.min(pollMs, left));
    }
  }

  /** Ends a task: every lease of it held by this workload is revoked, and no new one is issued (I5). */
  async completeTask(taskId: string): Promise<TaskCompletion> {
    return (await this.call<TaskCompletion>("POST", `/v1/tasks/${encodeURIComponent(taskId)}/complete`, { idempotent: true })).body;
  }

  /**
   * Runs `fn` for a task and then completes the task, whether `fn` resolved or threw. `fn`'s own
   * error is rethrown (a failed completion is then not reported: the leases still expire).
   */
  async withTask<T>(task: string | TaskInput, fn: (task: TaskScope) => Promise<T> | T): Promise<T> {
    const t: TaskInput = typeof task === "string" ? { id: task } : task;
    const scope: TaskScope = {
      id: t.id,
      requestCredential: (role, opts = {}) => this.requestCredential({ ...opts, role, task: t }),
    };
    let result: T;
    try {
      result = await fn(scope);
    } catch (e) {
      await this.completeTask(t.id).catch(() => undefined);
      throw e;
    }
    await this.completeTask(t.id);
    return result;
  }

  /** Revokes one lease (its owner, or an operator). */
  async revoke(leaseId: string, reason?: string): Promise<Lease> {
    const r = await this.call<{ lease: Lease }>("DELETE", `/v1/leases/${encodeURIComponent(leaseId)}`, reason === undefined ? {} : { body: { reason } });
    return r.body.lease;
  }

  async getLease(leaseId: string): Promise<Lease> {
    return (await this.call<{ lease: Lease }>("GET", `/v1/leases/${encodeURIComponent(leaseId)}`)).body.lease;
  }

  /** The workload this token maps to, and the identity it was read from. */
  async whoami(): Promise<WhoAmI> {
    return (await this.call<WhoAmI>("GET", "/v1/whoami")).body;
  }

  /** RFC 7662 introspection of a broker-issued JWT (for resource servers); with `resource`, inactive unless bound to it. */
  async introspect(token: string, resource?: string): Promise<Introspection> {
    return (await this.call<Introspection>("POST", "/v1/introspect", { body: { token, ...(resource === undefined ? {} : { resource }) }, idempotent: true })).body;
  }

  private async exchange(params: Record<string, string | number | undefined>): Promise<TokenExchangeResult> {
    const body = Object.fromEntries(Object.entries({ grant_type: EXCHANGE, actor_token: await this.token.get(), actor_token_type: TOKEN_TYPE.jwt, ...params }).filter(([, v]) => v !== undefined));
    return (await this.call<TokenExchangeResult>("POST", "/v1/oauth/token", { body, auth: false })).body;
  }

  /**
   * Delegation (RFC 8693): a narrower copy of a broker credential someone handed this workload
   * (same role and task, scope/resource/TTL no wider). The new lease is this workload's and is
   * revoked with the one it derives from.
   */
  async delegate(subjectToken: string, opts: ExchangeOptions = {}): Promise<TokenExchangeResult> {
    return this.exchange({ subject_token: subjectToken, subject_token_type: TOKEN_TYPE.access_token, scope: opts.scope, resource: opts.resource, audience: opts.audience, ttl: opts.ttl });
  }

  /**
   * On behalf of a person: `idToken` is their ID token (an issuer with `use: users`); the lease
   * is this workload's, its token's `sub` the person and `act` this workload.
   */
  async onBehalfOf(idToken: string, opts: ExchangeOptions & { role: string; task: string }): Promise<TokenExchangeResult> {
    return this.exchange({ subject_token: idToken, subject_token_type: TOKEN_TYPE.id_token, role: opts.role, task_id: opts.task, scope: opts.scope, resource: opts.resource, audience: opts.audience, ttl: opts.ttl });
  }

  // --- operators -----------------------------------------------------------------------------

  /** One page of leases (operators). */
  async listLeases(filter: LeaseFilter & { limit?: number; cursor?: string } = {}): Promise<LeasePage> {
    return (await this.call<LeasePage>("GET", "/v1/admin/leases", { query: { ...filter } })).body;
  }

  /** Every lease matching the filter, following cursors; stops after `max` (default: all). */
  async *leases(filter: LeaseFilter = {}, opts: { max?: number; pageSize?: number } = {}): AsyncGenerator<Lease> {
    let cursor: string | undefined;
    let left = opts.max ?? Infinity;
    while (left > 0) {
      const page = await this.listLeases({ ...filter, limit: Math.min(opts.pageSize ?? 500, left), ...(cursor ? { cursor } : {}) });
      for (const l of page.leases) {
        if (left-- <= 0) return;
        yield l;
      }
      if (!page.next_cursor || page.leases.length === 0) return;
      cursor = page.next_cursor;
    }
  }

  /** Starts a bulk revocation (operators); follow it with `getRevocation`. */
  async startRevocation(selector: RevocationSelector, reason: string): Promise<RevocationStarted> {
    return (await this.call<RevocationStarted>("POST", "/v1/admin/revocations", { body: { ...selector, reason } })).body;
  }

  async getRevocation(id: string): Promise<RevocationProgress> {
    return (await this.call<RevocationProgress>("GET", `/v1/admin/revocations/${encodeURIComponent(id)}`)).body;
  }

  /** Approval requests (operators), newest first; `state: "pending_approval"` for the queue. */
  async listRequests(filter: { state?: ApprovalState; workload?: string; limit?: number; cursor?: string } = {}): Promise<{ requests: ApprovalRequest[]; next_cursor: string | null }> {
    return (await this.call<{ requests: ApprovalRequest[]; next_cursor: string | null }>("GET", "/v1/admin/requests", { query: { ...filter } })).body;
  }

  /** Approves a pending request (operators allowed `approve` on its role; never the requester). */
  async approveRequest(id: string, reason?: string): Promise<ApprovalRequest> {
    return (await this.call<{ request: ApprovalRequest }>("POST", `/v1/admin/requests/${encodeURIComponent(id)}/approve`, { body: reason === undefined ? {} : { reason } })).body.request;
  }

  async denyRequest(id: string, reason?: string): Promise<ApprovalRequest> {
    return (await this.call<{ request: ApprovalRequest }>("POST", `/v1/admin/requests/${encodeURIComponent(id)}/deny`, { body: reason === undefined ? {} : { reason } })).body.request;
  }

  /** Who requested a lease, with which identity, under which policy, and how it ended (I8). */
  async leaseHistory(leaseId: string): Promise<LeaseHistory> {
    return (await this.call<LeaseHistory>("GET", `/v1/admin/leases/${encodeURIComponent(leaseId)}/history`)).body;
  }
}
