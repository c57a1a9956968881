/**
 * A credential backend (docs/ARCHITECTURE.md, How to add a backend): mints one credential for one lease and revokes it.
 * `mint` must give the credential a backend-native expiry no later than the lease's expires_at
 * (I2), or report the later `backendExpiresAt`. `revoke` must be idempotent: "already gone"
 * is success (I4), or a `BackendError` with code `gone`. Failures are thrown as `BackendError`
 * with the code that says what the revoker and the service should do (below).
 */
import type { RoleConfig } from "../config/schema";
import type { Lease } from "../leases/types";

/** The part of a lease a backend's `revoke` sees. */
export type RevocationTarget = Pick<Lease, "id" | "workload" | "task_id" | "backend">;

export type RevocationKind = "revocable" | "deny_by_session" | "expiry_only";

export interface MintResult {
  /** Returned to the caller once, never stored (I6). */
  credential: Record<string, unknown> & { type: string };
  /** What revocation needs later (lease id, Vault lease id, accessor, session name). Not secret. */
  handle: Record<string, string>;
  /** Set when the backend cannot expire the credential as early as the lease. */
  backendExpiresAt?: Date;
}

/** What a credential request may add for its backend (validated by `checkRequest`). */
export interface MintRequest {
  /**
   * A narrowing of the role's access asked for by the caller (aws_sts: an IAM policy document
   * inside the role's session policy). Never wider than the role allows.
   */
  scope?: Record<string, unknown>;
  /**
   * jwt backend only, set by the token exchange (src/oauth, RFC 8693): the token's `sub` (the
   * chain's subject instead of the lease's workload), its `act` claim, the audience(s) and the
   * scope (space-separated; "" = none), each already checked to be within the role and parent.
   */
  token?: { subject: string; act?: ActClaim; audience: string | string[]; scope?: string };
}

/** RFC 8693 section 4.1: the current actor, with the prior actors nested in `act`. */
export interface ActClaim {
  sub: string;
  act?: ActClaim;
}

/** A backend's own health, shown in /readyz; "unavailable" never makes the broker unready. */
export interface BackendStatus {
  state: "ok" | "degraded" | "unavailable";
  detail?: string;
}

export interface Backend {
  kind: "jwt" | "vault" | "aws_sts";
  revocation: RevocationKind;
  /**
   * Validates request-specific input before any lease is written or any approval is asked;
   * throws BrokerError("invalid_request"). A backend without it accepts no `scope`.
   */
  checkRequest?(role: RoleConfig, req: MintRequest): void;
  mint(lease: Lease, role: RoleConfig, req?: MintRequest): Promise<MintResult>;
  /**
   * True when `mint` has no effect outside this process (the broker's own JWTs: a signature with
   * a local key). The credential then exists nowhere until it is answered, so the issuance path
   * mints first and writes the lease `active` with its handle in the one script that checks the
   * quota and the task (src/leases/service.ts): a refused write simply drops what was minted.
   * Never set it for a backend that creates anything remotely (Vault, STS): those are minted
   * only after their lease is written, so that a crash can always be revoked (I1).
   */
  readonly mintsLocally?: boolean;
  /**
   * Revokes the credential with its handle. Only the lease's id, workload, task and backend are
   * given (the revoker reads no more of the lease than revocation needs, src/leases/store.ts).
   */
  revoke(lease: RevocationTarget, handle: Record<string, string>): Promise<void>;
  status?(): BackendStatus;
  /** Stops timers and connections (reconciliation, token renewal). */
  close?(): Promise<void>;
}

/**
 * What went wrong at a backend, as the revoker and the issuance path branch on it
 * (docs/ARCHITECTURE.md, How to add a backend):
 * - `unavailable`: unreachable, slow, throttled, 5xx, a lock lost: the same call may succeed
 *   later. Revocations retry with backoff; a mint answers 503 backend_unavailable.
 * - `denied`: the backend refused the broker's own credentials or permissions (403,
 *   AccessDenied). An operator must act; revocations keep retrying with backoff so that the fix
 *   takes effect by itself, and count in `jitbroker_backend_errors_total{code="denied"}`.
 * - `misconfigured`: the role's configuration, or the lease's stored handle, can never work as it
 *   is (a path without leases, a role of another account, a handle missing a field). Retrying at
 *   the usual pace cannot help: the lease shows revoke_failed at once, an alert metric counts it,
 *   and the next attempt is an hour later (or sooner by a reload, see the revoker).
 * - `gone`: the credential no longer exists at the backend. For a revocation that is success (I4).
 * - `invalid_scope`: the caller's narrowing of the role was refused (a mint answers 400).
 * - `invalid_response`: the backend answered something the broker cannot use (incomplete
 *   credentials); nothing usable was minted; revocations retry with backoff.
 */
export type BackendErrorCode = "unavailable" | "denied" | "misconfigured" | "gone" | "invalid_scope" | "invalid_response";

export class BackendError extends Error {
  /** A short phrase safe to show unauthenticated (/readyz): no account ids, ARNs or backend messages. */
  readonly publicDetail: string | undefined;
  /**
   * Whether the very same call may succeed when simply repeated, without anyone acting: true for
   * `unavailable`; a backend may say so for another code (vault: a 403 from an expired broker
   * token clears itself, the session logs in again). The revoker branches on `code`.
   */
  readonly retryable: boolean;

  constructor(
    message: string,
    readonly code: BackendErrorCode,
    options?: { cause?: unknown; publicDetail?: string; retryable?: boolean },
  ) {
    super(message, options);
    this.name = "BackendError";
    this.publicDetail = options?.publicDetail;
    this.retryable = options?.retryable ?? code === "unavailable";
  }
}

/** The code of any error thrown by a backend: an untyped one (a bug, a library's own error) counts as unavailable. */
export function backendErrorCode(e: unknown): BackendErrorCode {
  return e instanceof BackendError ? e.code : "unavailable";
}

/** Whole seconds left until the lease's expires_at: the longest a credential minted now may live (I2). */
export function remainingSeconds(lease: Pick<Lease, "expires_at">, nowMs: number): number {
  return Math.floor((Date.parse(lease.expires_at) - nowMs) / 1000);
}
