/**
 * Errors of `jitbroker/client`. Messages are built from the broker's problem `code` and `detail`
 * (which the broker keeps free of secrets), status codes, ids and names: never from a token or a
 * credential.
 */
import type { ApprovalState, PendingRequest } from "./types";

export class BrokerClientError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** An RFC 9457 problem document as the broker sends it. */
export interface Problem {
  type?: string;
  title?: string;
  status: number;
  detail: string;
  code: string;
  instance?: string;
  request_id?: string;
  [extra: string]: unknown;
}

/** The broker answered with an error: `code` is the problem's stable code (docs/ARCHITECTURE.md, Errors). */
export class BrokerApiError extends BrokerClientError {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly problem: Problem;
  /** Seconds, from a Retry-After header (429, 503). */
  readonly retryAfter: number | undefined;

  constructor(problem: Problem, retryAfter?: number) {
    super(`${problem.code}: ${problem.detail}`);
    this.status = problem.status;
    this.code = problem.code;
    this.detail = problem.detail;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }

  /** The broker or a backend is unavailable (503, or a gateway error in front of the broker). */
  get unavailable(): boolean {
    return this.status >= 500;
  }
}

/** A credential the verifier (`verifyCredential`) does not accept; `reason` says why, never the token. */
export class CredentialRejectedError extends BrokerClientError {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** The broker could not be reached (connection refused, reset, DNS, timeout). */
export class BrokerUnreachableError extends BrokerClientError {
  readonly code = "broker_unreachable";
  constructor(
    readonly url: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`cannot reach the broker at ${url}: ${reason}`, options);
  }
}

/** The workload token could not be obtained from its source (file, CI provider, function). */
export class TokenSourceError extends BrokerClientError {
  /** "unavailable": the source exists but failed (provider down); "config": the source is not set up. */
  constructor(
    message: string,
    readonly kind: "config" | "unavailable" | "refused" = "config",
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * A credential request needs an operator's approval and did not end in a credential: still
 * pending (no wait asked, or the wait timed out), denied, expired, or already collected.
 */
export class ApprovalError extends BrokerClientError {
  readonly requestId: string;
  readonly state: ApprovalState;
  constructor(
    readonly request: PendingRequest,
    message: string,
  ) {
    super(message);
    this.requestId = request.id;
    this.state = request.state;
  }
}
