/**
 * The `aws_sts` credential backend: one STS AssumeRole session per lease, and revocation that
 * really cuts access although STS sessions cannot be revoked one by one.
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
 * (deny.ts). Revocations of one role are queued and applied in batches, one read-modify-write at
 * a time per process and, through a Redis lock (lock.ts), across replicas. A session that ends
 * within NOT_WORTH_DENYING_MS needs no deny (a lease expiring with its session), nor does a
 * session of a role that no longer exists (IAM NoSuchEntity). Each deny is audited per lease
 * (`aws_deny_attached`, saying when it was attached, that IAM takes a short while to apply it, and
 * until when the session would otherwise have lived); a size-limit fallback is audited per role
 * (`aws_revocation_fallback`).
 */
import { GetRoleCommand, GetRolePolicyCommand, IAMClient, PutRolePolicyCommand } from "@aws-sdk/client-iam";
import { AssumeRoleCommand, STSClient, type AssumeRoleCommandInput, type STSClientConfig } from "@aws-sdk/client-sts";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { Counter, Gauge, type Registry } from "prom-client";
import type { AuditLedger } from "../../audit/ledger";
import type { LoadedConfig } from "../../config/load";
import type { RoleConfig } from "../../config/schema";
import { BrokerError } from "../../core/errors";
import type { Lease } from "../../leases/types";
import type { Keyspace } from "../../redis/keys";
import { BackendError, type Backend, type BackendStatus, type MintRequest, type MintResult } from "../types";
import { fitDenyPolicy, mergeDenyState, parseDenyPolicy, type RevokedSession } from "./deny";
import { createRoleLock, type LockGuard } from "./lock";
import { roleNameOf, sessionNameOf, sessionTags, sourceIdentityOf } from "./names";
import { effectiveSessionPolicy, scopeProblems } from "./scope";

/** STS limits for DurationSeconds (API reference; the role's MaxSessionDuration may be lower). */
export const MIN_SESSION_SECONDS = 900;
export const MAX_SESSION_SECONDS = 43_200;
/** A session ending this soon is left to die: a deny could not take effect before it anyway. */
export const NOT_WORTH_DENYING_MS = 5_000;
/** Revocations of one role applied in one PutRolePolicy, at most. */
const MAX_BATCH = 200;
const ROLE_CACHE_MS = 10 * 60_000;
const HANDLE_FIELDS = ["role_arn", "session_name", "user_id", "issued_at", "expires_at"] as const;

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
  /** Tests only: fixed credentials instead of the default provider chain. */
  credentials?: STSClientConfig["credentials"];
  /** A workload's owner, for the session tag. */
  ownerOf: (workload: string) => string | undefined;
  redis: Redis;
  /** The keyspace's hash tag (`{p}`). */
  keyTag: string;
  audit: Pick<AuditLedger, "append">;
  logger: Logger;
  registry: Registry;
  now?: () => number;
  lockTtlMs?: number;
  lockWaitMs?: number;
}

interface SessionHandle {
  roleArn: string;
  sessionName: string;
  session: RevokedSession;
}

interface Pending {
  lease: Lease;
  handle: SessionHandle;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export interface AwsStsBackend extends Backend {
  kind: "aws_sts";
  revocation: "deny_by_session";
}

interface AwsErrorInfo {
  code: string;
  status: number | undefined;
  message: string;
  retryable: boolean;
}

const THROTTLING = new Set(["Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException", "RequestThrottled", "SlowDown"]);

/** What an SDK error says, without anything but its code, status and AWS's own message. */
export function awsError(e: unknown): AwsErrorInfo {
  const err = e as { name?: string; Code?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number }; $retryable?: { throttling?: boolean } };
  const status = err.$metadata?.httpStatusCode;
  // `Code` is the error code on the wire (NoSuchEntity); `name` may be the SDK's class name (NoSuchEntityException).
  const code = (status !== undefined ? (err.Code ?? err.name) : (err.code ?? err.name)) ?? "Error";
  const message = String(err.message ?? "").replace(/\s+/g, " ").slice(0, 300);
  const retryable = status === undefined || status >= 500 || THROTTLING.has(code) || err.$retryable?.throttling === true;
  return { code, status, message, retryable };
}

const iso = (ms: number) => new Date(ms).toISOString();

export function createAwsStsBackend(opts: AwsStsBackendOptions): AwsStsBackend {
  const now = opts.now ?? Date.now;
  const common = {
    region: opts.region,
    maxAttempts: opts.maxAttempts,
    requestHandler: { requestTimeout: opts.requestTimeoutMs, connectionTimeout: Math.min(opts.requestTimeoutMs, 5000) },
    ...(opts.credentials ? { credentials: opts.credentials } : {}),
  };
  const sts = new STSClient({ ...common, ...(opts.endpoint ? { endpoint: opts.endpoint } : {}) });
  const iam = new IAMClient({ ...common, ...(opts.iamEndpoint ? { endpoint: opts.iamEndpoint } : {}) });
  const lock = createRoleLock(opts.redis, opts.keyTag, { ttlMs: opts.lockTtlMs ?? 60_000, waitMs: opts.lockWaitMs ?? 20_000 });
  const log = opts.logger.child({ backend: "aws_sts" });

  const metrics = {
    calls: new Counter({ name: "jitbroker_aws_sts_calls_total", help: "STS and IAM calls by operation and result (ok or the AWS error code)", labelNames: ["operation", "result"], registers: [opts.registry] }),
    denyWrites: new Counter({ name: "jitbroker_aws_sts_deny_policy_writes_total", help: "Revocation policy writes (PutRolePolicy)", registers: [opts.registry] }),
    fallbacks: new Counter({ name: "jitbroker_aws_sts_revocation_fallbacks_total", help: "Times the revocation policy fell back to an aws:TokenIssueTime cut-off", registers: [opts.registry] }),
    denied: new Gauge({ name: "jitbroker_aws_sts_denied_sessions", help: "Sessions named in a role's revocation policy after the last write", labelNames: ["role"], registers: [opts.registry] }),
  };
  let lastFailure: { at: number; detail: string } | null = null;

  async function call<T>(operation: string, target: string, op: () => Promise<T>): Promise<T> {
    try {
      const out = await op();
      metrics.calls.inc({ operation, result: "ok" });
      return out;
    } catch (e) {
      const info = awsError(e);
      metrics.calls.inc({ operation, result: info.code });
      const err = new BackendError(`${operation} on ${target} failed: ${info.code}${info.status ? ` (HTTP ${info.status})` : ""}: ${info.message}`, info.retryable, { cause: e });
      (err as BackendError & { aws: AwsErrorInfo }).aws = info;
      throw err;
    }
  }
  const codeOf = (e: unknown): string | undefined => (e as { aws?: AwsErrorInfo }).aws?.code;
  const noteFailure = (e: unknown) => {
    lastFailure = { at: now(), detail: (e as Error).message };
  };

  // ---- mint -------------------------------------------------------------------------------

  function checkRequest(role: RoleConfig, req: MintRequest): void {
    if (req.scope === undefined) return;
    const problems = scopeProblems(role.aws_sts?.session_policy, req.scope);
    if (problems.length) throw new BrokerError("invalid_request", problems.join("; "), { reason: "scope" });
  }

  const roleCache = new Map<string, { roleId: string; at: number }>();
  /** The role's RoleId (GetRole, cached), or null when the role does not exist. */
  async function roleIdOf(roleArn: string): Promise<string | null> {
    const hit = roleCache.get(roleArn);
    if (hit && now() - hit.at < ROLE_CACHE_MS) return hit.roleId;
    try {
      const out = await call("GetRole", roleArn, () => iam.send(new GetRoleCommand({ RoleName: roleNameOf(roleArn) })));
      const roleId = out.Role?.RoleId;
      if (!roleId) throw new BackendError(`GetRole on ${roleArn} returned no RoleId`, true);
      roleCache.set(roleArn, { roleId, at: now() });
      return roleId;
    } catch (e) {
      if (codeOf(e) === "NoSuchEntity") {
        roleCache.delete(roleArn);
        return null;
      }
      throw e;
    }
  }

  async function mint(lease: Lease, role: RoleConfig, req: MintRequest = {}): Promise<MintResult> {
    const cfg = role.aws_sts;
    if (cfg === undefined) throw new BackendError(`role ${role.name} has no aws_sts section`, false);
    checkRequest(role, req);
    const expiresMs = Date.parse(lease.expires_at);
    const start = now();
    const remaining = Math.floor((expiresMs - start) / 1000);
    if (!(remaining >= 1)) throw new BackendError(`lease ${lease.id} expires before a session could be valid`, false);
    if (remaining > MAX_SESSION_SECONDS) throw new BackendError(`lease ${lease.id} is longer than STS's ${MAX_SESSION_SECONDS} s maximum session`, false);
    const duration = Math.max(MIN_SESSION_SECONDS, remaining);
    const sessionName = sessionNameOf(lease.id);
    const policy = effectiveSessionPolicy(cfg.session_policy, req.scope);
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
      out = await call("AssumeRole", cfg.role_arn, () => sts.send(new AssumeRoleCommand(input)));
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
      throw new BackendError(`AssumeRole on ${cfg.role_arn} returned no complete credentials`, false);
    }
    const awsExpiry = c.Expiration.getTime();
    let userId = out.AssumedRoleUser?.AssumedRoleId;
    if (!userId || !userId.endsWith(`:${sessionName}`)) {
      // Not expected from STS; derive it the documented way (RoleId:session name).
      const roleId = await roleIdOf(cfg.role_arn);
      if (!roleId) throw new BackendError(`role ${cfg.role_arn} does not exist`, false);
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

  function readHandle(lease: Lease, h: Record<string, string>): SessionHandle {
    for (const f of HANDLE_FIELDS) {
      if (typeof h[f] !== "string" || h[f] === "") throw new BackendError(`lease ${lease.id}: its aws_sts handle has no ${f}`, false);
    }
    const issuedAt = Date.parse(h.issued_at!);
    const expiresAt = Date.parse(h.expires_at!);
    if (!Number.isFinite(issuedAt) || !Number.isFinite(expiresAt)) throw new BackendError(`lease ${lease.id}: its aws_sts handle has invalid times`, false);
    return { roleArn: h.role_arn!, sessionName: h.session_name!, session: { userId: h.user_id!, issuedAt, expiresAt } };
  }

  const queues = new Map<string, Pending[]>();

  async function revoke(lease: Lease, handle: Record<string, string>): Promise<void> {
    const h = readHandle(lease, handle);
    if (h.session.expiresAt - now() <= NOT_WORTH_DENYING_MS) return; // it dies on its own (I2)
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

  async function drain(roleArn: string): Promise<void> {
    for (;;) {
      const q = queues.get(roleArn)!;
      if (q.length === 0) {
        queues.delete(roleArn);
        return;
      }
      const batch = q.splice(0, MAX_BATCH);
      try {
        await applyBatch(roleArn, batch);
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

  async function applyBatch(roleArn: string, batch: Pending[]): Promise<void> {
    const roleName = roleNameOf(roleArn);
    await lock.withLock(roleArn, async (guard) => {
      const roleId = await roleIdOf(roleArn);
      if (roleId === null) return roleGone(roleArn, batch);
      for (const p of batch) {
        if (!p.handle.session.userId.startsWith(`${roleId}:`)) {
          log.warn({ role_arn: roleArn, lease_id: p.lease.id }, "session belongs to an earlier role of the same name; denying it anyway");
        }
      }
      const current = await readPolicy(roleArn, roleName);
      const merged = mergeDenyState(parseDenyPolicySafe(roleArn, current), batch.map((p) => p.handle.session), now());
      let budget = budgets.get(roleArn) ?? opts.policyMaxChars;
      for (let attempt = 1; ; attempt++) {
        let fit;
        try {
          fit = fitDenyPolicy(merged, budget);
        } catch (e) {
          throw new BackendError(`revocation policy of ${roleArn}: ${(e as Error).message}`, false);
        }
        const at = now();
        // (Never null here: the batch's own sessions are alive. Dead statements of a role linger
        // until its next revocation, which drops them.)
        if (fit.document !== null && fit.document !== current) {
          try {
            await write(guard, roleArn, roleName, fit.document);
          } catch (e) {
            if (codeOf(e) === "NoSuchEntity") return roleGone(roleArn, batch);
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
        log.info({ role_arn: roleArn, policy: opts.policyName, leases: batch.length, sessions: fit.state.sessions.length, size: fit.size, cutoff: fit.state.cutoff ? iso(fit.state.cutoff.before) : undefined }, "revocation policy updated");
        if (fit.fallback) await auditFallback(roleArn, fit.fallback, fit.size, budget, batch, at);
        for (const p of batch) await auditDeny(p, roleArn, fit.state.cutoff && !fit.state.sessions.some((s) => s.userId === p.handle.session.userId) ? "issued_before" : "session", fit.state.cutoff?.before, at);
        return;
      }
    });
  }

  function parseDenyPolicySafe(roleArn: string, text: string | null) {
    try {
      return parseDenyPolicy(text);
    } catch (e) {
      throw new BackendError(`inline policy ${opts.policyName} of ${roleArn}: ${(e as Error).message}`, false);
    }
  }

  async function readPolicy(roleArn: string, roleName: string): Promise<string | null> {
    try {
      const out = await call("GetRolePolicy", roleArn, () => iam.send(new GetRolePolicyCommand({ RoleName: roleName, PolicyName: opts.policyName })));
      // IAM returns the document URL-encoded (RFC 3986).
      return out.PolicyDocument === undefined ? null : decodeURIComponent(out.PolicyDocument);
    } catch (e) {
      if (codeOf(e) === "NoSuchEntity") return null;
      throw e;
    }
  }

  async function write(guard: LockGuard, roleArn: string, roleName: string, document: string): Promise<void> {
    await guard.refresh();
    await call("PutRolePolicy", roleArn, () => iam.send(new PutRolePolicyCommand({ RoleName: roleName, PolicyName: opts.policyName, PolicyDocument: document })));
    metrics.denyWrites.inc();
  }

  async function roleGone(roleArn: string, batch: Pending[]): Promise<void> {
    roleCache.delete(roleArn);
    const at = iso(now());
    for (const p of batch) {
      await opts.audit.append({
        type: "aws_session_ended",
        at,
        lease_id: p.lease.id,
        workload: p.lease.workload,
        task_id: p.lease.task_id,
        actor: "system",
        role_arn: roleArn,
        session: p.handle.session.userId,
        note: `the role ${roleArn} no longer exists (IAM NoSuchEntity), so its sessions have no permissions left; no deny was needed`,
      });
    }
  }

  async function auditDeny(p: Pending, roleArn: string, how: "session" | "issued_before", cutoffBefore: number | undefined, at: number): Promise<void> {
    const until = iso(p.handle.session.expiresAt);
    await opts.audit.append({
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
    });
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
    async close() {
      sts.destroy();
      iam.destroy();
    },
  };
}

/** The backend as configured (`backends.aws_sts`), for the registry. */
export function createAwsStsBackendFromConfig(
  cfg: LoadedConfig,
  deps: { logger: Logger; registry: Registry; now: () => number; audit: Pick<AuditLedger, "append">; redis: Redis; keys: Keyspace },
): AwsStsBackend {
  const b = cfg.backends.aws_sts;
  if (!b) throw new Error("backends.aws_sts is not configured");
  const owners = new Map(cfg.workloads.map((w) => [w.id, w.owner]));
  return createAwsStsBackend({
    region: b.region,
    endpoint: b.endpoint,
    iamEndpoint: b.iam_endpoint,
    maxAttempts: b.max_attempts ?? 3,
    requestTimeoutMs: b.request_timeout ?? 10_000,
    policyName: b.revocation_policy_name ?? "jitbroker-revocations",
    policyMaxChars: b.revocation_policy_max_chars ?? 10_240,
    ownerOf: (w) => owners.get(w),
    redis: deps.redis,
    keyTag: deps.keys.tag,
    audit: deps.audit,
    logger: deps.logger,
    registry: deps.registry,
    now: deps.now,
  });
}
