/**
 * The `aws_sts` credential backend: one STS AssumeRole session per lease, and revocation that
 * really cuts access although STS sessions cannot be revoked one by one.
 *
 * Single account: a session is revoked by a deny written on its role with IAM, and IAM's role
 * APIs act on the caller's own account. So before minting, the broker checks (STS
 * GetCallerIdentity, cached) that the role's account (and partition) is the one of its own AWS
 * credentials, and refuses (non-retryable BackendError, 503 backend_unavailable) to mint a
 * session it could not revoke. Revocation checks the same, and that GetRole answers with exactly
 * the role's ARN (path included) before writing anything.
 *
 * Mint (AssumeRole on the role's `role_arn`):
 * - RoleSessionName = the lease id; SourceIdentity = the workload id; session tags
 *   `jitbroker:workload`, `jitbroker:owner`, `jitbroker:task`, `jitbroker:lease` (names.ts), no
 *   transitive tags; ExternalId when the role sets one;
 * - DurationSeconds = the seconds left on the lease, but at least 900 (the STS minimum): a lease
 *   shorter than that gets `backend_expires_at` and revocation covers the gap (I2);
 * - Policy = the role's session policy, or the request's scope when it is a sound narrowing of
 *   it (scope.ts), checked with the 2,048-character limit before anything is written;
 * - the broker's own AWS credentials come from the SDK's default provider chain.
 * The credential is returned once; the lease keeps only the handle: role ARN, session name,
 * `aws:userid` of the session (`<RoleId>:<session name>`, from AssumedRoleId), and upper bounds
 * of its issue and expiry times (I6: never a key or token).
 *
 * Revocation (`deny_by_session`): an inline policy (`revocation_policy_name`, default
 * `jitbroker-revocations`) on the target role denies everything to the revoked sessions
 * (deny.ts). Revocations of one role are queued and applied in batches, one at a time per role
 * in a process and, through a Redis lock (lock.ts), across replicas. Under the lock, the batch is
 * first added to the Redis record of the role's revoked sessions (revoked.ts), then the policy
 * is written from that record united with what GetRolePolicy returned: a stale read (IAM is
 * eventually consistent) or another replica's late write cannot drop a recorded revocation for
 * good, because a delayed re-read after each write, and a periodic check on the worker, rewrite
 * the policy when IAM's copy misses recorded sessions. The locked section has a deadline (half
 * the lock's ttl) that bounds every IAM call in it.
 *
 * No deny is needed for a session that ends within NOT_WORTH_DENYING_MS, counted with the clock
 * skew margin (its end was computed on another broker's clock and AWS's), nor for a role that no
 * longer exists: a NoSuchEntity is believed only when seen again at least `roleGoneConfirmMs`
 * later (a retryable error until then). Each deny is audited per lease (`aws_deny_attached`,
 * saying when it was attached, that IAM takes a short while to apply it, and until when the
 * session would otherwise have lived); a size-limit fallback is audited per role
 * (`aws_revocation_fallback`); a gone role per lease (`aws_session_ended`).
 */
import { GetRoleCommand, GetRolePolicyCommand, IAMClient, PutRolePolicyCommand } from "@aws-sdk/client-iam";
import { AssumeRoleCommand, GetCallerIdentityCommand, STSClient, type AssumeRoleCommandInput, type STSClientConfig } from "@aws-sdk/client-sts";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { Counter, Gauge, type Registry } from "prom-client";
import type { AuditEvent, AuditLedger } from "../../audit/ledger";
import type { LoadedConfig } from "../../config/load";
import type { RoleConfig } from "../../config/schema";
import { BrokerError } from "../../core/errors";
import type { Lease } from "../../leases/types";
import type { Keyspace } from "../../redis/keys";
import type { BackendDeps } from "../registry";
import { AWS_STS_DEFAULTS } from "./config";
import { BackendError, remainingSeconds, type Backend, type BackendStatus, type MintRequest, type MintResult, type RevocationTarget } from "../types";
import { GC_GRACE_MS, fitDenyPolicy, mergeDenyState, parseDenyPolicy, stateDenies, type FitResult, type RevokedSession } from "./deny";
import { createRoleLock, type LockGuard } from "./lock";
import { roleAccountOf, roleNameOf, sessionNameOf, sessionTags, sourceIdentityOf } from "./names";
import { createRevokedRecord } from "./revoked";
import { checkScope, effectiveSessionPolicy } from "./scope";
import { repeat } from "../../core/repeat";

/** STS limits for DurationSeconds (API reference; the role's MaxSessionDuration may be lower). */
export const MIN_SESSION_SECONDS = 900;
export const MAX_SESSION_SECONDS = 43_200;
/** A session ending this soon (plus the clock skew margin) is left to die: a deny could not take effect before it anyway. */
export const NOT_WORTH_DENYING_MS = 5_000;
/** Default `clock_skew_margin`: how far another broker's or AWS's clock may be from this one. */
export const DEFAULT_CLOCK_SKEW_MARGIN_MS = AWS_STS_DEFAULTS.clock_skew_margin;
/** A role's NoSuchEntity is believed when seen again at least this much later. */
export const ROLE_GONE_CONFIRM_MS = 10_000;
/** After each PutRolePolicy, IAM's copy is re-read this much later and repaired if it misses recorded sessions. */
export const REPAIR_DELAY_MS = 30_000;
/** On the worker, every role with recorded revocations is checked this often. */
export const REPAIR_INTERVAL_MS = 60_000;
/** Revocations of one role applied in one PutRolePolicy, at most. */
const MAX_BATCH = 200;
const ROLE_CACHE_MS = 10 * 60_000;
const HANDLE_FIELDS = ["role_arn", "session_name", "user_id", "issued_at", "expires_at"] as const;

/**
 * The per-role lock's ttl: 60 s, or more when one IAM call with all its SDK attempts could take
 * longer, so that the locked section (half the ttl) fits one such call.
 */
export function lockTtlFor(maxAttempts: number, requestTimeoutMs: number): number {
  return Math.max(60_000, 2 * (maxAttempts * requestTimeoutMs + 5_000));
}

export interface AwsStsBackendOptions {
  region: string;
  /** STS endpoint override (tests, VPC endpoints). */
  endpoint?: string;
  /** IAM endpoint override. */
  iamEndpoint?: string;
  /** SDK attempts per call (the SDK retries throttling and 5xx with backoff). */
  maxAttempts: number;
  requestTimeoutMs: number;
  /** Name of the inline revocation policy on target roles. */
  policyName: string;
  /** Characters the revocation policy may use (IAM: 10,240 for all inline policies of a role). */
  policyMaxChars: number;
  /** How far other brokers' and AWS's clocks may be from this one (default 60 s). */
  clockSkewMarginMs?: number;
  /** Tests only: fixed credentials instead of the default provider chain. */
  credentials?: STSClientConfig["credentials"];
  /** A workload's owner, for the session tag. */
  ownerOf: (workload: string) => string | undefined;
  redis: Redis;
  /** The keyspace: the per-role lock's and the record's keys. */
  keys: Pick<Keyspace, "awsLock" | "awsRevoked" | "awsRoles">;
  audit: Pick<AuditLedger, "append" | "appendMany">;
  logger: Logger;
  registry: Registry;
  now?: () => number;
  /** Default: lockTtlFor(maxAttempts, requestTimeoutMs). */
  lockTtlMs?: number;
  lockWaitMs?: number;
  /** Default ROLE_GONE_CONFIRM_MS. */
  roleGoneConfirmMs?: number;
  /** Delay of the re-read after each write (default REPAIR_DELAY_MS; 0 = none). */
  repairDelayMs?: number;
  /** Period of the check of every role with recorded revocations (default 0 = none; the worker sets REPAIR_INTERVAL_MS). */
  repairIntervalMs?: number;
}

interface SessionHandle {
  roleArn: string;
  sessionName: string;
  session: RevokedSession;
}

interface Pending {
  lease: RevocationTarget;
  handle: SessionHandle;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export interface RepairReport {
  /** Roles with recorded revocations that were checked. */
  roles: number;
  /** Roles whose policy missed recorded sessions and was rewritten. */
  rewritten: number;
  failed: number;
}

export interface AwsStsBackend extends Backend {
  kind: "aws_sts";
  revocation: "deny_by_session";
  /** Compares each role's revocation policy with the Redis record now, rewriting what misses sessions (the worker runs it periodically). */
  checkRevocationPolicies(): Promise<RepairReport>;
}

interface AwsErrorInfo {
  code: string;
  status: number | undefined;
  message: string;
  retryable: boolean;
  /** What the revoker and the service make of it (src/backends/types.ts BackendErrorCode). */
  kind: "unavailable" | "denied" | "misconfigured";
}

const DENIED = new Set(["AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch", "RegionDisabledException"]);
const FOREIGN_ROLE = "a role of another account than the broker's";
const THROTTLING = new Set(["Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException", "RequestThrottled", "SlowDown"]);

/** What an SDK error says, without anything but its code, status and AWS's own message. */
export function awsError(e: unknown): AwsErrorInfo {
  const err = e as { name?: string; Code?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number }; $retryable?: { throttling?: boolean } };
  const status = err.$metadata?.httpStatusCode;
  // `Code` is the error code on the wire (NoSuchEntity); `name` may be the SDK's class name (NoSuchEntityException).
  const code = (status !== undefined ? (err.Code ?? err.name) : (err.code ?? err.name)) ?? "Error";
  const message = String(err.message ?? "").replace(/\s+/g, " ").slice(0, 300);
  const retryable = status === undefined || status >= 500 || THROTTLING.has(code) || err.$retryable?.throttling === true;
  // Refusals of the broker's own credentials or permissions, by AWS's documented error codes.
  const kind = retryable ? "unavailable" : status === 401 || status === 403 || DENIED.has(code) ? "denied" : "misconfigured";
  return { code, status, message, retryable, kind };
}

/** `p`, or a rejection with the signal's reason as soon as it aborts (not waiting for `p`'s retries and backoff). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

const iso = (ms: number) => new Date(ms).toISOString();

export function createAwsStsBackend(opts: AwsStsBackendOptions): AwsStsBackend {
  const now = opts.now ?? Date.now;
  const skewMargin = opts.clockSkewMarginMs ?? DEFAULT_CLOCK_SKEW_MARGIN_MS;
  const roleGoneConfirmMs = opts.roleGoneConfirmMs ?? ROLE_GONE_CONFIRM_MS;
  const repairDelayMs = opts.repairDelayMs ?? REPAIR_DELAY_MS;
  const common = {
    region: opts.region,
    maxAttempts: opts.maxAttempts,
    requestHandler: { requestTimeout: opts.requestTimeoutMs, connectionTimeout: Math.min(opts.requestTimeoutMs, 5000) },
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
  };
  const sts = new STSClient({ ...common, ...(opts.endpoint ? { endpoint: opts.endpoint } : {}) });
  const iam = new IAMClient({ ...common, ...(opts.iamEndpoint ? { endpoint: opts.iamEndpoint } : {}) });
  const lock = createRoleLock(opts.redis, opts.keys, { ttlMs: opts.lockTtlMs ?? lockTtlFor(opts.maxAttempts, opts.requestTimeoutMs), waitMs: opts.lockWaitMs ?? 20_000 });
  const record = createRevokedRecord(opts.redis, opts.keys);
  const log = opts.logger.child({ backend: "aws_sts" });
  /** Record entries and statements that live until at or before this are garbage (deny.ts isDead). */
  const deadAt = () => now() - GC_GRACE_MS - skewMargin;

  const metrics = {
    calls: new Counter({ name: "jitbroker_aws_sts_calls_total", help: "STS and IAM calls by operation and result (ok or the AWS error code)", labelNames: ["operation", "result"], registers: [opts.registry] }),
    denyWrites: new Counter({ name: "jitbroker_aws_sts_deny_policy_writes_total", help: "Revocation policy writes (PutRolePolicy)", registers: [opts.registry] }),
    repairs: new Counter({ name: "jitbroker_aws_sts_deny_policy_repairs_total", help: "Revocation policies rewritten because IAM's copy missed sessions recorded in Redis", registers: [opts.registry] }),
    fallbacks: new Counter({ name: "jitbroker_aws_sts_revocation_fallbacks_total", help: "Times the revocation policy fell back to an aws:TokenIssueTime cut-off", registers: [opts.registry] }),
    denied: new Gauge({ name: "jitbroker_aws_sts_denied_sessions", help: "Sessions named in a role's revocation policy after the last write", labelNames: ["role"], registers: [opts.registry] }),
  };
  let lastFailure: { at: number; detail: string } | null = null;
  let closed = false;

  async function call<T>(operation: string, target: string, op: (o: { abortSignal?: AbortSignal }) => Promise<T>, signal?: AbortSignal): Promise<T> {
    try {
      const out = await (signal ? untilAborted(op({ abortSignal: signal }), signal) : op({}));
      metrics.calls.inc({ operation, result: "ok" });
      return out;
    } catch (e) {
      if (signal?.aborted) {
        metrics.calls.inc({ operation, result: "deadline" });
        const late = operation === "PutRolePolicy" ? " (IAM may still apply it; the check of the policy against the recorded revocations repairs what it drops)" : "";
        throw new BackendError(`${operation} abandoned: ${(signal.reason as Error).message}${late}`, "unavailable", { cause: e, publicDetail: "IAM call abandoned at its deadline" });
      }
      const info = awsError(e);
      metrics.calls.inc({ operation, result: info.code });
      const err = new BackendError(`${operation} on ${target} failed: ${info.code}${info.status ? ` (HTTP ${info.status})` : ""}: ${info.message}`, info.kind, { cause: e });
      (err as BackendError & { aws: AwsErrorInfo }).aws = info;
      throw err;
    }
  }
  const codeOf = (e: unknown): string | undefined => (e as { aws?: AwsErrorInfo }).aws?.code;
  // /readyz is unauthenticated: its detail names the kind of failure (the AWS error code), never
  // account ids, role ARNs or AWS's own message; those are in the log and the lease's last_error.
  const noteFailure = (e: unknown) => {
    const reason = codeOf(e) ?? (e instanceof BackendError ? e.publicDetail : undefined) ?? "error";
    lastFailure = { at: now(), detail: reason };
  };

  // ---- the broker's own account ------------------------------------------------------------

  let caller: { account: string; partition: string; at: number } | null = null;
  let callerInFlight: Promise<{ account: string; partition: string }> | null = null;
  /** Account and partition of the broker's AWS credentials (STS GetCallerIdentity, cached). */
  async function callerIdentity(): Promise<{ account: string; partition: string }> {
    if (caller && now() - caller.at < ROLE_CACHE_MS) return caller;
    callerInFlight ??= (async () => {
      try {
        const out = await call("GetCallerIdentity", "the broker's AWS credentials", (o) => sts.send(new GetCallerIdentityCommand({}), o));
        const partition = /^arn:(aws[a-z-]*):/.exec(out.Arn ?? "")?.[1];
        if (!out.Account || !partition) throw new BackendError("GetCallerIdentity returned no account or ARN", "invalid_response");
        caller = { account: out.Account, partition, at: now() };
        return caller;
      } finally {
        callerInFlight = null;
      }
    })();
    return callerInFlight;
  }

  /** Why the broker cannot write a deny on this role (another account or partition), or null. */
  async function foreignRole(roleArn: string): Promise<string | null> {
    const own = await callerIdentity();
    const role = roleAccountOf(roleArn);
    if (role.account === own.account && role.partition === own.partition) return null;
    const where = (x: { account: string; partition: string }) => `account ${x.account}${x.partition !== "aws" || role.partition !== own.partition ? ` (partition ${x.partition})` : ""}`;
    return `role ${roleArn} is in ${where(role)}, but the broker's AWS credentials are in ${where(own)}: a session is revoked by a deny policy written on its role with IAM, which reaches only roles of the broker's own account`;
  }

  // ---- mint -------------------------------------------------------------------------------

  /**
   * Scopes this backend checked, with the role they were checked for and the document they
   * make: `mint` sends that document without a second check when it is handed the same scope
   * for the same role and the document is still the same (the service checks, then mints).
   */
  const checkedScopes = new WeakMap<object, { role: RoleConfig; sent: string }>();

  /** Checks the scope for the role (BrokerError invalid_request) and returns the document to send. */
  function checkScopeFor(role: RoleConfig, scope: Record<string, unknown>): string {
    const { problems, sent } = checkScope(role.aws_sts?.session_policy, scope);
    if (problems.length || sent === undefined) throw new BrokerError("invalid_request", problems.join("; "), { reason: "scope" });
    checkedScopes.set(scope, { role, sent });
    return sent;
  }

  function checkRequest(role: RoleConfig, req: MintRequest): void {
    if (req.scope === undefined) return;
    checkScopeFor(role, req.scope);
  }

  /** The document to send for a scope: the one checkRequest checked, or checked now (defence in depth). */
  function scopedPolicy(role: RoleConfig, scope: Record<string, unknown>): string {
    const seen = checkedScopes.get(scope);
    if (seen !== undefined && seen.role === role) {
      const sent = effectiveSessionPolicy(role.aws_sts?.session_policy, scope);
      if (sent === seen.sent) return sent;
    }
    return checkScopeFor(role, scope);
  }

  const roleCache = new Map<string, { roleId: string; at: number }>();
  /** When each role was first answered NoSuchEntity, since its last successful GetRole. */
  const missingSince = new Map<string, number>();

  /**
   * A NoSuchEntity for the role: null (the role is gone) when one was already seen at least
   * roleGoneConfirmMs earlier, else a retryable error (IAM is eventually consistent).
   */
  function roleMissing(roleArn: string, operation: string): null {
    roleCache.delete(roleArn);
    const t = now();
    const first = missingSince.get(roleArn);
    if (first !== undefined && t - first >= roleGoneConfirmMs) {
      missingSince.delete(roleArn);
      return null;
    }
    if (first === undefined) missingSince.set(roleArn, t);
    throw new BackendError(
      `${operation} on ${roleArn}: the role was not found (NoSuchEntity); IAM is eventually consistent, so the broker believes it only when an attempt at least ${Math.round(roleGoneConfirmMs / 1000)} s later says so too; will retry`,
      "unavailable",
    );
  }

  /**
   * The role's RoleId (GetRole, cached), after checking that IAM answered for exactly this ARN
   * (path included); null when the role is confirmed gone.
   */
  async function verifiedRoleId(roleArn: string, signal?: AbortSignal): Promise<string | null> {
    const hit = roleCache.get(roleArn);
    if (hit && now() - hit.at < ROLE_CACHE_MS) return hit.roleId;
    const roleName = roleNameOf(roleArn);
    let out;
    try {
      out = await call("GetRole", roleArn, (o) => iam.send(new GetRoleCommand({ RoleName: roleName }), o), signal);
    } catch (e) {
      if (codeOf(e) === "NoSuchEntity") return roleMissing(roleArn, "GetRole");
      throw e;
    }
    const arn = out.Role?.Arn;
    const roleId = out.Role?.RoleId;
    if (!arn || !roleId) throw new BackendError(`GetRole on ${roleArn} returned no Arn or RoleId`, "invalid_response");
    if (arn !== roleArn) {
      throw new BackendError(
        `GetRole for the name ${roleName} answered with ${arn}, not ${roleArn}: that is another role (another path or account), so no deny is written to it; correct the role's role_arn (the session stays valid until it expires)`,
        "misconfigured",
      );
    }
    missingSince.delete(roleArn);
    roleCache.set(roleArn, { roleId, at: now() });
    return roleId;
  }

  async function mint(lease: Lease, role: RoleConfig, req: MintRequest = {}): Promise<MintResult> {
    const cfg = role.aws_sts;
    if (cfg === undefined) throw new BackendError(`role ${role.name} has no aws_sts section`, "misconfigured");
    const policy = req.scope === undefined ? effectiveSessionPolicy(cfg.session_policy, undefined) : scopedPolicy(role, req.scope);
    // Never mint a session this broker could not revoke.
    let foreign: string | null;
    try {
      foreign = await foreignRole(cfg.role_arn);
    } catch (e) {
      noteFailure(e);
      throw e;
    }
    if (foreign !== null) {
      const err = new BackendError(`${foreign}, so it mints no session of that role (nothing was minted); use a broker whose AWS credentials are in the role's account`, "misconfigured", { publicDetail: FOREIGN_ROLE });
      noteFailure(err);
      throw err;
    }
    const remaining = remainingSeconds(lease, now());
    if (!(remaining >= 1)) throw new BackendError(`lease ${lease.id} expires before a session could be valid`, "misconfigured");
    if (remaining > MAX_SESSION_SECONDS) throw new BackendError(`lease ${lease.id} is longer than STS's ${MAX_SESSION_SECONDS} s maximum session`, "misconfigured");
    const duration = Math.max(MIN_SESSION_SECONDS, remaining);
    const sessionName = sessionNameOf(lease.id);
    const input: AssumeRoleCommandInput = {
      RoleArn: cfg.role_arn,
      RoleSessionName: sessionName,
      DurationSeconds: duration,
      SourceIdentity: sourceIdentityOf(lease.workload),
      Tags: sessionTags({ workload: lease.workload, owner: opts.ownerOf(lease.workload), task: lease.task_id, lease: lease.id }),
      ...(policy !== undefined ? { Policy: policy } : {}),
      ...(cfg.external_id !== undefined ? { ExternalId: cfg.external_id } : {}),
    };
    let out;
    try {
      out = await call("AssumeRole", cfg.role_arn, (o) => sts.send(new AssumeRoleCommand(input), o));
    } catch (e) {
      const code = codeOf(e);
      if (req.scope !== undefined && (code === "PackedPolicyTooLarge" || code === "MalformedPolicyDocument")) {
        // The caller's scope, not the backend's health.
        throw new BrokerError("invalid_request", `scope: STS refused the session policy (${code}): ${(e as { aws?: AwsErrorInfo }).aws?.message ?? ""}`.trim(), { reason: "scope", cause: e });
      }
      noteFailure(e);
      throw e;
    }
    const receivedAt = now();
    const c = out.Credentials;
    if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken || !(c.Expiration instanceof Date)) {
      throw new BackendError(`AssumeRole on ${cfg.role_arn} returned no complete credentials`, "invalid_response");
    }
    const awsExpiry = c.Expiration.getTime();
    let userId = out.AssumedRoleUser?.AssumedRoleId;
    if (!userId || !userId.endsWith(`:${sessionName}`)) {
      // Not expected from STS; derive it the documented way (RoleId:session name).
      const roleId = await verifiedRoleId(cfg.role_arn).catch((e: unknown) => {
        throw new BackendError(`AssumeRole on ${cfg.role_arn} returned no AssumedRoleId, and the role's id could not be read: ${(e as Error).message}`, "invalid_response", { cause: e });
      });
      if (!roleId) throw new BackendError(`role ${cfg.role_arn} does not exist`, "misconfigured");
      userId = `${roleId}:${sessionName}`;
    }
    // Upper bounds: TokenIssueTime (AWS clock, second precision) and the session's end on either clock.
    const issuedAt = awsExpiry - duration * 1000 + 1000;
    const sessionEnd = Math.max(awsExpiry, receivedAt + duration * 1000);
    lastFailure = null;
    const handle: Record<string, string> = {
      role_arn: cfg.role_arn,
      session_name: sessionName,
      user_id: userId,
      issued_at: iso(issuedAt),
      expires_at: iso(sessionEnd),
    };
    return {
      credential: {
        type: "aws",
        access_key_id: c.AccessKeyId,
        secret_access_key: c.SecretAccessKey,
        session_token: c.SessionToken,
        expiration: iso(awsExpiry),
        ...(out.AssumedRoleUser?.Arn ? { assumed_role_arn: out.AssumedRoleUser.Arn } : {}),
      },
      handle,
      ...(duration > remaining ? { backendExpiresAt: new Date(sessionEnd) } : {}),
    };
  }

  // ---- revoke -----------------------------------------------------------------------------

  function readHandle(lease: RevocationTarget, h: Record<string, string>): SessionHandle {
    for (const f of HANDLE_FIELDS) {
      if (typeof h[f] !== "string" || h[f] === "") throw new BackendError(`lease ${lease.id}: its aws_sts handle has no ${f}`, "misconfigured");
    }
    const issuedAt = Date.parse(h.issued_at!);
    const expiresAt = Date.parse(h.expires_at!);
    if (!Number.isFinite(issuedAt) || !Number.isFinite(expiresAt)) throw new BackendError(`lease ${lease.id}: its aws_sts handle has invalid times`, "misconfigured");
    try {
      roleAccountOf(h.role_arn!);
    } catch {
      throw new BackendError(`lease ${lease.id}: its aws_sts handle has an invalid role_arn`, "misconfigured");
    }
    return { roleArn: h.role_arn!, sessionName: h.session_name!, session: { userId: h.user_id!, issuedAt, expiresAt } };
  }

  const queues = new Map<string, Pending[]>();

  async function revoke(lease: RevocationTarget, handle: Record<string, string>): Promise<void> {
    const h = readHandle(lease, handle);
    // It dies on its own (I2), even if our clock is behind AWS's or the minting broker's by the margin.
    if (h.session.expiresAt + skewMargin - now() <= NOT_WORTH_DENYING_MS) return;
    await new Promise<void>((resolve, reject) => {
      let q = queues.get(h.roleArn);
      if (!q) {
        q = [];
        queues.set(h.roleArn, q);
        // Next macrotask: revocations arriving together (a bulk revoke, an expiry batch) share a write.
        setImmediate(() => void drain(h.roleArn));
      }
      q.push({ lease, handle: h, resolve, reject });
    });
  }

  /** Per role in this process, one read-modify-write at a time (batches and repairs). */
  const chains = new Map<string, Promise<void>>();
  function serial<T>(roleArn: string, fn: () => Promise<T>): Promise<T> {
    const run = (chains.get(roleArn) ?? Promise.resolve()).then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    chains.set(roleArn, tail);
    void tail.then(() => {
      if (chains.get(roleArn) === tail) chains.delete(roleArn);
    });
    return run;
  }

  async function drain(roleArn: string): Promise<void> {
    for (;;) {
      const q = queues.get(roleArn)!;
      if (q.length === 0) {
        queues.delete(roleArn);
        return;
      }
      const batch = q.splice(0, MAX_BATCH);
      try {
        await serial(roleArn, () => applyBatch(roleArn, batch));
        lastFailure = null;
        for (const p of batch) p.resolve();
      } catch (e) {
        noteFailure(e);
        log.warn({ role_arn: roleArn, leases: batch.length, err: { message: (e as Error).message } }, "revocation policy update failed");
        for (const p of batch) p.reject(e);
      }
    }
  }

  const budgets = new Map<string, number>();

  type Written = { gone: true } | { gone: false; wrote: boolean; missing: number; fit: FitResult | null; budget: number; at: number };

  /**
   * Under the role's lock: reads IAM's copy of the policy and writes the one built from it and
   * `sessions` (the Redis record), shrinking the budget on LimitExceeded. With `onlyIfMissing`,
   * writes only when IAM's copy misses live sessions of the record.
   */
  async function writeUnion(guard: LockGuard, roleArn: string, sessions: RevokedSession[], onlyIfMissing: boolean): Promise<Written> {
    const roleName = roleNameOf(roleArn);
    const current = await readPolicy(roleArn, roleName, guard.signal);
    const parsed = parseDenyPolicySafe(roleArn, current);
    const t0 = now();
    const missing = sessions.filter((s) => s.expiresAt + skewMargin > t0 && !stateDenies(parsed, s)).length;
    if (onlyIfMissing && missing === 0) return { gone: false, wrote: false, missing, fit: null, budget: budgets.get(roleArn) ?? opts.policyMaxChars, at: t0 };
    const merged = mergeDenyState(parsed, sessions, t0, skewMargin);
    let budget = budgets.get(roleArn) ?? opts.policyMaxChars;
    for (let attempt = 1; ; attempt++) {
      let fit;
      try {
        fit = fitDenyPolicy(merged, budget);
      } catch (e) {
        throw new BackendError(`revocation policy of ${roleArn}: ${(e as Error).message}`, "misconfigured");
      }
      const at = now();
      let wrote = false;
      // (Null only when every recorded session is dead: nothing to deny, the policy is left as it is.)
      if (fit.document !== null && fit.document !== current) {
        try {
          await write(guard, roleArn, roleName, fit.document);
          wrote = true;
        } catch (e) {
          if (codeOf(e) === "NoSuchEntity") {
            roleMissing(roleArn, "PutRolePolicy");
            return { gone: true };
          }
          if (codeOf(e) === "LimitExceeded" && attempt < 8) {
            // Other inline policies on the role share IAM's aggregate limit: use less.
            budget = Math.floor(Math.min(budget, fit.size) * 0.75);
            budgets.set(roleArn, budget);
            log.warn({ role_arn: roleArn, budget }, "role inline policies at IAM's size limit; shrinking the revocation policy");
            continue;
          }
          throw e;
        }
      }
      metrics.denied.set({ role: roleName }, fit.state.sessions.length);
      return { gone: false, wrote, missing, fit, budget, at };
    }
  }

  async function applyBatch(roleArn: string, batch: Pending[]): Promise<void> {
    const foreign = await foreignRole(roleArn);
    if (foreign !== null) {
      const until = iso(Math.max(...batch.map((p) => p.handle.session.expiresAt)));
      throw new BackendError(`${foreign}, so this broker cannot deny its sessions: they stay valid until they expire (at the latest ${until})`, "misconfigured");
    }
    const result = await lock.withLock(roleArn, async (guard): Promise<Written> => {
      const roleId = await verifiedRoleId(roleArn, guard.signal);
      if (roleId === null) return { gone: true };
      for (const p of batch) {
        if (!p.handle.session.userId.startsWith(`${roleId}:`)) {
          log.warn({ role_arn: roleArn, lease_id: p.lease.id }, "session belongs to an earlier role of the same name; denying it anyway");
        }
      }
      // The record first: whatever IAM answers or whoever writes last, these revocations are kept.
      const recorded = await record.sync(roleArn, batch.map((p) => p.handle.session), deadAt());
      return writeUnion(guard, roleArn, recorded, false);
    });
    if (result.gone) return roleGone(roleArn, batch);
    const fit = result.fit!;
    log.info({ role_arn: roleArn, policy: opts.policyName, leases: batch.length, sessions: fit.state.sessions.length, size: fit.size, wrote: result.wrote, cutoff: fit.state.cutoff ? iso(fit.state.cutoff.before) : undefined }, "revocation policy updated");
    if (fit.fallback) await auditFallback(roleArn, fit.fallback, fit.size, result.budget, batch, result.at);
    // One append for the batch (up to MAX_BATCH events, in batch order): the callers' revocations wait for it.
    await opts.audit.appendMany(
      batch.map((p) => {
        const how = fit.state.cutoff && !fit.state.sessions.some((s) => s.userId === p.handle.session.userId) ? "issued_before" : "session";
        return denyEvent(p, roleArn, how, fit.state.cutoff?.before, result.at);
      }),
    );
  }

  function parseDenyPolicySafe(roleArn: string, text: string | null) {
    try {
      return parseDenyPolicy(text);
    } catch (e) {
      throw new BackendError(`inline policy ${opts.policyName} of ${roleArn}: ${(e as Error).message}`, "misconfigured");
    }
  }

  async function readPolicy(roleArn: string, roleName: string, signal: AbortSignal): Promise<string | null> {
    try {
      const out = await call("GetRolePolicy", roleArn, (o) => iam.send(new GetRolePolicyCommand({ RoleName: roleName, PolicyName: opts.policyName }), o), signal);
      // IAM returns the document URL-encoded (RFC 3986).
      return out.PolicyDocument === undefined ? null : decodeURIComponent(out.PolicyDocument);
    } catch (e) {
      if (codeOf(e) === "NoSuchEntity") return null;
      throw e;
    }
  }

  async function write(guard: LockGuard, roleArn: string, roleName: string, document: string): Promise<void> {
    await guard.refresh();
    // From here the request may reach IAM whatever happens to this call: re-read it later.
    scheduleRepair(roleArn);
    await call("PutRolePolicy", roleArn, (o) => iam.send(new PutRolePolicyCommand({ RoleName: roleName, PolicyName: opts.policyName, PolicyDocument: document }), o), guard.signal);
    metrics.denyWrites.inc();
  }

  // ---- repair: IAM's copy against the Redis record -----------------------------------------

  const repairTimers = new Map<string, NodeJS.Timeout>();

  function scheduleRepair(roleArn: string, tries = 0): void {
    if (closed || repairDelayMs <= 0) return;
    const prev = repairTimers.get(roleArn);
    if (prev) clearTimeout(prev);
    const timer = setTimeout(() => {
      repairTimers.delete(roleArn);
      void serial(roleArn, () => repairRole(roleArn)).then(
        () => {
          lastFailure = null;
        },
        (e: unknown) => {
          noteFailure(e);
          log.warn({ role_arn: roleArn, err: { message: (e as Error).message } }, "check of the revocation policy against the recorded revocations failed");
          if (tries < 3) scheduleRepair(roleArn, tries + 1);
        },
      );
    }, repairDelayMs);
    timer.unref();
    repairTimers.set(roleArn, timer);
  }

  /** Rewrites the role's policy when IAM's copy misses live sessions of the record; true when it did. */
  async function repairRole(roleArn: string): Promise<boolean> {
    if (closed) return false;
    if ((await record.sync(roleArn, [], deadAt())).length === 0) return false;
    const foreign = await foreignRole(roleArn);
    if (foreign !== null) throw new BackendError(`${foreign}; its recorded revocations cannot be checked`, "misconfigured");
    const result = await lock.withLock(roleArn, async (guard): Promise<Written> => {
      const roleId = await verifiedRoleId(roleArn, guard.signal);
      if (roleId === null) return { gone: true };
      const sessions = await record.sync(roleArn, [], deadAt());
      if (sessions.length === 0) return { gone: false, wrote: false, missing: 0, fit: null, budget: 0, at: now() };
      return writeUnion(guard, roleArn, sessions, true);
    });
    if (result.gone) {
      await record.forget(roleArn);
      return false;
    }
    if (result.missing > 0) {
      metrics.repairs.inc();
      log.warn({ role_arn: roleArn, policy: opts.policyName, missing: result.missing, wrote: result.wrote }, "revocation policy missed revoked sessions recorded in Redis (IAM eventual consistency or a late write); rewritten");
      if (result.fit?.fallback) await auditFallback(roleArn, result.fit.fallback, result.fit.size, result.budget, [], result.at);
    }
    return result.wrote;
  }

  async function checkRevocationPolicies(): Promise<RepairReport> {
    const roles = await record.roles(deadAt());
    const report: RepairReport = { roles: roles.length, rewritten: 0, failed: 0 };
    for (const roleArn of roles) {
      try {
        if (await serial(roleArn, () => repairRole(roleArn))) report.rewritten++;
      } catch (e) {
        report.failed++;
        noteFailure(e);
        log.warn({ role_arn: roleArn, err: { message: (e as Error).message } }, "check of the revocation policy against the recorded revocations failed");
      }
    }
    if (report.roles > 0 && report.failed === 0) lastFailure = null;
    return report;
  }

  const every = opts.repairIntervalMs ?? 0;
  const periodic =
    every > 0
      ? repeat(
          () => checkRevocationPolicies(),
          () => every,
          (e) => log.warn({ err: { message: e.message } }, "periodic check of the revocation policies failed"),
        )
      : null;

  async function roleGone(roleArn: string, batch: Pending[]): Promise<void> {
    roleCache.delete(roleArn);
    await record.forget(roleArn).catch(() => undefined);
    const at = iso(now());
    await opts.audit.appendMany(
      batch.map((p) => ({
        type: "aws_session_ended",
        at,
        lease_id: p.lease.id,
        workload: p.lease.workload,
        task_id: p.lease.task_id,
        actor: "system",
        role_arn: roleArn,
        session: p.handle.session.userId,
        note: `the role ${roleArn} no longer exists (IAM NoSuchEntity, seen again at least ${Math.round(roleGoneConfirmMs / 1000)} s after the first time), so its sessions have no permissions left; no deny was needed`,
      })),
    );
  }

  function denyEvent(p: Pending, roleArn: string, how: "session" | "issued_before", cutoffBefore: number | undefined, at: number): AuditEvent {
    const until = iso(p.handle.session.expiresAt);
    return {
      type: "aws_deny_attached",
      at: iso(at),
      lease_id: p.lease.id,
      workload: p.lease.workload,
      task_id: p.lease.task_id,
      actor: "system",
      role_arn: roleArn,
      policy_name: opts.policyName,
      session: p.handle.session.userId,
      deny: how === "session" ? "aws:userid" : `aws:TokenIssueTime before ${iso(cutoffBefore!)}`,
      session_expires_at: until,
      note: `deny attached at ${iso(at)} to role ${roleArn} (inline policy ${opts.policyName}); AWS may take a short while to apply it (IAM is eventually consistent); the session would otherwise have lived until ${until}`,
    };
  }

  async function auditFallback(roleArn: string, fb: { cutoff: { before: number; until: number }; sessions: string[] }, size: number, budget: number, batch: Pending[], at: number): Promise<void> {
    metrics.fallbacks.inc();
    log.warn({ role_arn: roleArn, issued_before: iso(fb.cutoff.before), until: iso(fb.cutoff.until), sessions: fb.sessions.length }, "revocation policy fell back to a role-wide aws:TokenIssueTime deny");
    await opts.audit.append({
      type: "aws_revocation_fallback",
      at: iso(at),
      actor: "system",
      role_arn: roleArn,
      policy_name: opts.policyName,
      issued_before: iso(fb.cutoff.before),
      until: iso(fb.cutoff.until),
      revoked_sessions_covered: fb.sessions.length,
      leases: batch.map((p) => p.lease.id),
      policy_size: size,
      budget,
      note: `naming every revoked session would exceed ${budget} characters (IAM limits a role's inline policies to 10,240 in all); every session of ${roleArn} issued before ${iso(fb.cutoff.before)} is now denied until ${iso(fb.cutoff.until)}, including sessions of leases that were not revoked`,
    });
  }

  function status(): BackendStatus {
    return lastFailure ? { state: "degraded", detail: `last STS/IAM call failed at ${iso(lastFailure.at)}: ${lastFailure.detail}` } : { state: "ok" };
  }

  return {
    kind: "aws_sts",
    revocation: "deny_by_session",
    checkRequest,
    mint,
    revoke,
    status,
    checkRevocationPolicies,
    async close() {
      closed = true;
      periodic?.stop();
      for (const t of repairTimers.values()) clearTimeout(t);
      repairTimers.clear();
      sts.destroy();
      iam.destroy();
    },
  };
}

/** The backend as configured (`backends.aws_sts`), for the registry. */
export function createAwsStsBackendFromConfig(
  cfg: LoadedConfig,
  deps: { logger: Logger; registry: Registry; now: () => number; audit: Pick<AuditLedger, "append" | "appendMany">; redis: Redis; keys: Keyspace; workloads: BackendDeps["workloads"]; parts?: { worker: boolean } },
): AwsStsBackend {
  const b = cfg.backends.aws_sts;
  if (!b) throw new Error("backends.aws_sts is not configured");
  return createAwsStsBackend({
    region: b.region,
    endpoint: b.endpoint,
    iamEndpoint: b.iam_endpoint,
    maxAttempts: b.max_attempts ?? AWS_STS_DEFAULTS.max_attempts,
    requestTimeoutMs: b.request_timeout ?? AWS_STS_DEFAULTS.request_timeout,
    policyName: b.revocation_policy_name ?? AWS_STS_DEFAULTS.revocation_policy_name,
    policyMaxChars: b.revocation_policy_max_chars ?? AWS_STS_DEFAULTS.revocation_policy_max_chars,
    clockSkewMarginMs: b.clock_skew_margin ?? AWS_STS_DEFAULTS.clock_skew_margin,
    // The live inventory: a reload's workloads count from the next mint.
    ownerOf: (w) => deps.workloads().get(w)?.owner,
    redis: deps.redis,
    keys: deps.keys,
    audit: deps.audit,
    logger: deps.logger,
    registry: deps.registry,
    now: deps.now,
    // The periodic check runs with the worker (the delayed re-read after a write runs wherever the write was).
    repairIntervalMs: deps.parts?.worker === false ? 0 : REPAIR_INTERVAL_MS,
  });
}
