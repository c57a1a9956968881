/**
 * A credential backend (docs/ARCHITECTURE.md, How to add a backend): mints one credential for one lease and revokes it.
 * `mint` must give the credential a backend-native expiry no later than the lease's expires_at
 * (I2), or report the later `backendExpiresAt`. `revoke` must be idempotent: "already gone"
 * is success (I4). Errors that are worth retrying are thrown as `BackendError` with
 * `retryable: true`.
 */
import type { RoleConfig } from "../config/schema";
import type { Lease } from "../leases/types";

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
  revoke(lease: Lease, handle: Record<string, string>): Promise<void>;
  status?(): BackendStatus;
  /** Stops timers and connections (reconciliation, token renewal). */
  close?(): Promise<void>;
}

export class BackendError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "BackendError";
  }
}

/** Whole seconds left until the lease's expires_at: the longest a credential minted now may live (I2). */
export function remainingSeconds(lease: Pick<Lease, "expires_at">, nowMs: number): number {
  return Math.floor((Date.parse(lease.expires_at) - nowMs) / 1000);
}
