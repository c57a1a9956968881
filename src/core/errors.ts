/**
 * The broker's single error type. Every failure a caller can see carries a stable `code`
 * (docs/ARCHITECTURE.md, Errors); the HTTP status is derived from the code in exactly one place.
 * `detail` is shown to callers, so it must never contain secret material: build it from
 * names and ids, never from token or credential values.
 */
export const ERROR_STATUS = {
  invalid_request: 400,
  invalid_token: 401,
  token_expired: 401,
  session_required: 401,
  unknown_workload: 403,
  policy_denied: 403,
  csrf_failed: 403,
  unknown_role: 404,
  not_found: 404,
  task_completed: 409,
  request_not_pending: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  ttl_too_long: 422,
  policy_invalid: 422,
  rate_limited: 429,
  quota_exceeded: 429,
  internal: 500,
  lease_unreadable: 500,
  store_unavailable: 503,
  backend_unavailable: 503,
  issuer_unavailable: 503,
  store_full: 503,
  audit_backlog_full: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export const ERROR_TITLES: Record<ErrorCode, string> = {
  invalid_request: "Invalid request",
  invalid_token: "Invalid workload token",
  token_expired: "Workload token expired",
  session_required: "Console session required",
  unknown_workload: "Unknown workload",
  policy_denied: "Denied by policy",
  csrf_failed: "CSRF token missing or wrong",
  unknown_role: "Unknown role",
  not_found: "Not found",
  task_completed: "Task already completed",
  request_not_pending: "Request not in a state that allows this",
  payload_too_large: "Payload too large",
  unsupported_media_type: "Unsupported media type",
  ttl_too_long: "TTL too long",
  policy_invalid: "Policy set refused",
  rate_limited: "Rate limited",
  quota_exceeded: "Quota exceeded",
  internal: "Internal error",
  lease_unreadable: "Lease record unreadable",
  store_unavailable: "Lease store unavailable",
  backend_unavailable: "Credential backend unavailable",
  issuer_unavailable: "Identity issuer unavailable",
  store_full: "Lease store full",
  audit_backlog_full: "Audit backlog full",
};

export interface BrokerErrorOptions {
  /** Machine-readable sub-reason, used for metrics labels and logs (e.g. "bad_signature"). */
  reason?: string;
  /** Extra members added to the problem document (must be safe to show). */
  extra?: Record<string, unknown>;
  /** Response headers to set (e.g. Retry-After). */
  headers?: Record<string, string>;
  cause?: unknown;
}

export class BrokerError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly reason: string | undefined;
  readonly extra: Record<string, unknown> | undefined;
  readonly headers: Record<string, string> | undefined;

  constructor(code: ErrorCode, detail: string, opts: BrokerErrorOptions = {}) {
    super(detail, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "BrokerError";
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.reason = opts.reason;
    this.extra = opts.extra;
    this.headers = opts.headers;
  }
}

export function isBrokerError(e: unknown): e is BrokerError {
  return e instanceof BrokerError;
}

/** Shorthand constructors keep call sites readable: `throw invalidToken("expired", "...")`. */
export const invalidToken = (reason: string, detail: string): BrokerError =>
  new BrokerError("invalid_token", detail, { reason });
