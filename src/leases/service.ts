/**
 * Credential issuance and revocation triggers: the order of operations that makes I1 hold.
 *
 *   authenticate → workload → task open? → Cedar decision → TTL → lease written (issuing,
 *   with the quota and task checks and its expiry schedule entry in the same script) → mint →
 *   handle recorded and lease flipped to active → response.
 *
 * If anything fails after the mint, what was minted is revoked before the error is answered.
 */
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { ApprovalRequest, ApprovalStore } from "../approvals/store";
import type { AuditLedger } from "../audit/ledger";
import type { RateLimiter } from "../limits/ratelimit";
import type { MemoryWatch } from "../limits/memory";
import type { RefusalSampler } from "../limits/refusals";
import { backendErrorCode, type Backend, type MintRequest, type MintResult } from "../backends/types";
import type { RoleConfig } from "../config/schema";
import { BrokerError } from "../core/errors";
import type { AuthContext } from "../authz/principal";
import { principalOf } from "../authz/principal";
import { decisionContext, requestedRoleResource } from "../authz/context";
import { recheckLease } from "../authz/recheck";
import type { WorkloadMatcher } from "../identity/workloads";
import type { Decision, PolicyEngine } from "../policy/engine";
import type { LeaseMetrics } from "./metrics";
import { revokeForPolicyChange } from "./policy-change";
import type { RevocationQueue, Selector } from "./queue";
import type { Revoker } from "./revoker";
import { publicLease, type LeaseDelegation, type LeaseStore, type NewLease, type OnBehalfOf, type StoredLease } from "./store";
import { leaseTtlMs, requestedTtlMs } from "./ttl";
import type { Lease, RevocationTrigger, TaskContext } from "./types";
import type { Durability } from "../redis/durability";
import { describeRedisError } from "../redis/health";

export interface LeaseServiceOptions {
  store: LeaseStore;
  queue: RevocationQueue;
  revoker: Revoker;
  backends: Map<string, Backend>;
  roles: () => Map<string, RoleConfig>;
  policy: () => PolicyEngine;
  audit: AuditLedger;
  metrics: LeaseMetrics;
  logger: Logger;
  quota: number;
  /** Pending approval requests; without it a request needing approval is refused. */
  approvals?: ApprovalStore;
  /** Counts credential requests per workload (limits.requests_per_minute). */
  limiter?: RateLimiter;
  requestsPerMinute?: number;
  /** Refuses new issuance while Redis memory is above redis.max_memory_use (503 store_full). */
  memory?: Pick<MemoryWatch, "assertRoom">;
  /** Refuses new issuance while the audit backlog is at audit.max_backlog (503 audit_backlog_full, src/audit/retention.ts). */
  auditBacklog?: { assertRoom(): void };
  /** Policy denials: counted, sampled into the audit (without it, each is audited). */
  refusals?: RefusalSampler;
  /** The live inventory and its version (bumped by each reload that changed it): a lease minted across a reload is checked again. */
  workloads?: () => Pick<WorkloadMatcher, "get">;
  inventoryVersion?: () => number;
  /** IANA zone of context.time (policy.timezone). */
  timeZone?: string;
  /** redis.durability: replicas that must acknowledge the lease's writes before it is answered (I1). */
  durability?: Durability;
  now?: () => number;
}

export type IssueResult = { lease: Lease; credential: MintResult["credential"]; pending?: undefined } | { pending: ApprovalRequest };

export interface CredentialRequest {
  role: string;
  task: Partial<TaskContext> & { id: string };
  ttlMs?: number;
  /** Backend-specific narrowing (MintRequest.scope), validated by the backend before anything is written. */
  scope?: Record<string, unknown>;
  /** A token exchange (src/oauth, RFC 8693): delegation or on-behalf-of. */
  exchange?: ExchangeRequest;
}

/**
 * What a token exchange adds to a credential request, already checked by src/oauth to be no
 * wider than the parent lease and the role. Differences from a direct request: Cedar decides
 * `action` with `context` added (delegation, on_behalf_of); an explicit TTL longer than the
 * parent's remaining life or the policy's @max_ttl is refused, never clamped; a delegated lease
 * is registered under its parent (and revoked with it); approvals are not available.
 */
export interface ExchangeRequest {
  action: "request" | "delegate";
  context: { delegation?: { depth: number; from: string; chain: string[] }; on_behalf_of?: OnBehalfOf };
  delegation?: LeaseDelegation & { parentExpiresMs: number };
  onBehalfOf?: OnBehalfOf;
  token: NonNullable<MintRequest["token"]>;
}

/**
 * Lease ids: 96 random bits, URL- and BullMQ-safe. Not secrets (every read is authorized), just
 * unique; short enough that an expiry job's options stay in Redis's compact hash encoding.
 */
export const newLeaseId = () => `l_${randomBytes(12).toString("base64url")}`;
export const newOpId = () => `op_${randomBytes(12).toString("base64url")}`;

export function createLeaseService(opts: LeaseServiceOptions) {
  const now = opts.now ?? Date.now;
  const { store, audit, metrics } = opts;
  const at = () => new Date(now()).toISOString();

  function decisionSummary(d: Decision) {
    return { decision: d.decision, policy_ids: d.policyIds, policy_hash: d.policyHash, ...(d.errors.length ? { errors: d.errors } : {}) };
  }

  /** Revokes a credential minted for a lease that must not be handed out. */
  async function undoMint(lease: StoredLease, leaseId: string, backend: Backend, minted: MintResult, why: string) {
    try {
      await backend.revoke(lease, minted.handle);
    } catch (e) {
      opts.logger.error({ lease_id: leaseId, err: { message: (e as Error).message } }, "could not revoke a credential minted for a refused lease; the worker retries");
    }
    // If the lease is still issuing (its activation failed), end it; a triggered one is untouched.
    await store.trigger([leaseId], { trigger: "issue_failed", reason: why }).catch(() => undefined);
    await opts.queue.revokeSoon([leaseId]).catch(() => undefined);
    audit.record({ type: "issue_failed", at: at(), lease_id: leaseId, actor: "system", reason: why });
  }

  /** Retry-After for a full quota: seconds until the workload's soonest lease expires (1..300). */
  async function secondsUntilALeaseEnds(workload: string): Promise<number> {
    try {
      let soonest = Infinity;
      for await (const ids of store.liveIds("workload", workload, 200)) {
        for (const l of await store.getMany(ids)) if (l) soonest = Math.min(soonest, l.expires_ms);
      }
      return Math.min(300, Math.max(1, Math.ceil((soonest - now()) / 1000)));
    } catch {
      return 30;
    }
  }

  return {
    /**
     * Decides a credential request and either issues it (I1) or, when the determining permit
     * says `@approval("required")`, records a pending approval request. `approval` is set when
     * the requester collects an approved request: the decision is then taken again with
     * `context.approved = true` (the policy may have changed since), and the credential is
     * minted now, so its TTL starts at collection.
     */
    async issue(auth: AuthContext, req: CredentialRequest, approval?: { request: ApprovalRequest }): Promise<IssueResult> {
      const started = process.hrtime.bigint();
      const workload = auth.workload.id;
      // A token exchange counted its attempt already (src/oauth), before reading the subject.
      if (!approval && !req.exchange && opts.limiter) await opts.limiter.consume(workload, auth.workload.limits?.requests_per_minute ?? opts.requestsPerMinute ?? 0);
      opts.memory?.assertRoom();
      opts.auditBacklog?.assertRoom();
      // Decide first, then say why (an unknown role, a TTL above the role's max): a caller no
      // policy allows learns neither which roles exist nor their limits. An unknown role is
      // decided as a Role without attributes.
      const role = opts.roles().get(req.role);
      const ex = req.exchange;
      const mintReq: MintRequest = { ...(req.scope === undefined ? {} : { scope: req.scope }), ...(ex ? { token: ex.token } : {}) };
      const task: TaskContext = { id: req.task.id, intent: req.task.intent ?? "", tool: req.task.tool ?? "", destination: req.task.destination ?? "", sensitivity: req.task.sensitivity ?? "" };
      // A delegated lease ends no later than its parent (whole seconds, like every expiry).
      const parentLeftMs = ex?.delegation ? ex.delegation.parentExpiresMs - now() : Number.POSITIVE_INFINITY;

      if (await store.isTaskCompleted(workload, task.id)) throw new BrokerError("task_completed", `task ${task.id} is completed; start a new task`);

      const principal = principalOf(auth);
      const resource = requestedRoleResource(req.role, role);
      const askedSeconds = Math.floor(Math.min(req.ttlMs ?? role?.ttl.default ?? 0, parentLeftMs) / 1000);
      const decision = opts.policy().decide({
        principal,
        action: ex?.action ?? "request",
        resource,
        context: { ...decisionContext({ task, ttlSeconds: askedSeconds, approved: approval !== undefined, atMs: now(), timeZone: opts.timeZone }), ...(ex?.context ?? {}) },
      });
      const inventoryAtStart = opts.inventoryVersion?.() ?? 0;
      metrics.decisions.inc({ action: ex?.action ?? "request", decision: decision.decision });
      const identity = { kind: auth.identity.kind, issuer: auth.identity.issuer, subject: auth.identity.subject };
      const decisionEvent = {
        type: "decision" as const,
        at: at(),
        workload,
        task_id: task.id,
        actor: workload,
        action: ex?.action ?? "request",
        role: req.role,
        identity,
        ...(ex ? exchangeSummary(ex) : {}),
        ...decisionSummary(decision),
        ...(decision.approvalRequired ? { approval_required: true } : {}),
        ...(approval ? { approval_request: approval.request.id, approved_by: approval.request.decided_by } : {}),
      };
      if (decision.decision !== "allow") {
        // A refusal writes nothing permanent per attempt: counted above, sampled into the audit.
        await opts.refusals?.record(workload, ex?.action ?? "request", decisionEvent);
        if (!opts.refusals) await audit.append(decisionEvent);
        throw new BrokerError("policy_denied", `policy does not allow ${workload} to ${ex?.action ?? "request"} ${req.role}`, { extra: { policy_hash: decision.policyHash } });
      }
      await audit.append(decisionEvent);
      if (!role) throw new BrokerError("unknown_role", `no role named "${req.role}"`);
      const backend = opts.backends.get(role.backend);
      if (!backend) throw new BrokerError("backend_unavailable", `backend ${role.backend} is not available in this broker`);
      if (ex && decision.approvalRequired) throw new BrokerError("policy_denied", `the policy requires approval for ${role.name}, which a token exchange cannot wait for; use POST /v1/credentials`);
      if (ex && req.ttlMs !== undefined && decision.maxTtlSeconds !== undefined && req.ttlMs > decision.maxTtlSeconds * 1000) {
        throw new BrokerError("ttl_too_long", `requested ttl ${Math.round(req.ttlMs / 1000)}s exceeds the ${decision.maxTtlSeconds}s the policy allows`, { extra: { max_ttl_seconds: decision.maxTtlSeconds } });
      }
      const ttlIn = { requestedMs: req.ttlMs, roleDefaultMs: role.ttl.default, roleMaxMs: role.ttl.max };
      if (ex?.delegation && req.ttlMs !== undefined && req.ttlMs > parentLeftMs) {
        throw new BrokerError("ttl_too_long", `requested ttl ${Math.round(req.ttlMs / 1000)}s exceeds the ${Math.max(0, Math.floor(parentLeftMs / 1000))}s the subject token's lease has left`, {
          extra: { max_ttl_seconds: Math.max(0, Math.floor(parentLeftMs / 1000)) },
        });
      }
      requestedTtlMs(ttlIn);
      // Backend-specific input is checked only for callers the policy allows: a scope check can be
      // costly and its answers describe the role, which a refused caller must not learn about.
      if (req.scope !== undefined && !backend.checkRequest) throw new BrokerError("invalid_request", `scope: role ${role.name} (backend ${role.backend}) does not accept a scope`);
      backend.checkRequest?.(role, mintReq);

      if (decision.approvalRequired && !approval) {
        if (!opts.approvals) throw new BrokerError("policy_denied", `requesting ${role.name} requires human approval, which is not enabled in this broker`);
        const created = await opts.approvals.create({
          workload,
          role: role.name,
          task,
          ...(req.ttlMs !== undefined ? { ttlMs: req.ttlMs } : {}),
          ...(req.scope !== undefined ? { scope: req.scope } : {}),
          identity,
          policy: { ids: decision.policyIds, hash: decision.policyHash },
        });
        if (created.result === "too_many") {
          throw new BrokerError("quota_exceeded", `workload ${workload} already has the maximum number of requests waiting for approval`, { headers: { "Retry-After": "60" } });
        }
        const r = created.request;
        await audit.append({
          type: "approval_requested",
          at: at(),
          request_id: r.id,
          workload,
          task_id: task.id,
          actor: workload,
          role: role.name,
          identity,
          policy_ids: decision.policyIds,
          policy_hash: decision.policyHash,
          expires_at: new Date(r.deadline_ms).toISOString(),
          task,
        });
        metrics.approvals.inc({ event: "requested" });
        return { pending: r };
      }

      const ttlMs = Math.min(leaseTtlMs({ ...ttlIn, policyMaxMs: decision.maxTtlSeconds === undefined ? undefined : decision.maxTtlSeconds * 1000 }), parentLeftMs);
      const issuedAt = now();
      // Whole seconds: JWT exp and most backends count in seconds; never later than the lease (I2).
      const expiresAt = Math.floor((issuedAt + ttlMs) / 1000) * 1000;
      const id = newLeaseId();
      const draft: NewLease = {
        id,
        role: role.name,
        backend: role.backend,
        workload,
        task,
        issuedAt,
        expiresAt,
        identity,
        policy: { ids: decision.policyIds, hash: decision.policyHash },
        askedTtlSeconds: askedSeconds,
        claims: principal.claims,
        ...(approval ? { approval: { request_id: approval.request.id, approved_by: approval.request.decided_by ?? "" } } : {}),
        ...(ex?.delegation ? { delegation: { parent: ex.delegation.parent, depth: ex.delegation.depth, ancestors: ex.delegation.ancestors, chain: ex.delegation.chain } } : {}),
        ...(ex?.onBehalfOf ? { onBehalfOf: ex.onBehalfOf } : {}),
      };
      const quota = auth.workload.limits?.active_leases ?? opts.quota;
      const created = await store.create(draft, quota);
      if (created === "task_completed") throw new BrokerError("task_completed", `task ${task.id} is completed; start a new task`);
      if (created === "quota_exceeded") {
        const retryAfter = await secondsUntilALeaseEnds(workload);
        throw new BrokerError("quota_exceeded", `workload ${workload} already holds ${quota} active leases; one ends in about ${retryAfter}s`, { headers: { "Retry-After": String(retryAfter) } });
      }
      if (created !== "ok") throw new BrokerError("internal", "lease id collision");
      if (ex?.delegation) {
        // Registered under the parent only while the parent is active: a parent revoked before
        // this refuses the child; one revoked after finds it and revokes it (the cascade).
        let parentState: string;
        try {
          parentState = await store.addChild(ex.delegation.parent, ex.delegation.parentExpiresMs, id);
        } catch (e) {
          await store.trigger([id], { trigger: "issue_failed", reason: "could not register the delegated lease under its parent" }).catch(() => undefined);
          throw e;
        }
        if (parentState !== "ok") {
          await store.trigger([id], { trigger: "issue_failed", reason: `parent lease ${ex.delegation.parent} is ${parentState}` }).catch(() => undefined);
          throw new BrokerError("invalid_request", `subject_token: its lease is ${parentState === "missing" ? "gone" : parentState}, not active`, { reason: "inactive_subject" });
        }
      }

      // I1: the revocation was scheduled before anything is minted: `create` wrote the lease into
      // the expiry schedule ({p}:leases:due, score = expires_at) in the same script as the lease.

      let minted: MintResult;
      try {
        // The lease as just written (no re-read: backends only use its immutable fields).
        minted = await backend.mint(publicLease(store.created(draft)), role, mintReq);
      } catch (e) {
        // Nothing was minted: the lease ends revoked (issue_failed) now, not after a retry loop
        // that would show it as revoke_failed meanwhile; the queue is the fallback.
        await store.trigger([id], { trigger: "issue_failed", reason: "mint failed" }).catch(() => undefined);
        const ended = await opts.revoker.revoke([id]).catch(() => null);
        if (!ended || ended.done.length === 0) await opts.queue.revokeSoon([id]).catch(() => undefined);
        audit.record({ type: "issue_failed", at: at(), lease_id: id, workload, task_id: task.id, actor: "system", reason: (e as Error).message });
        if (e instanceof BrokerError) throw e;
        const code = backendErrorCode(e);
        // The caller's own narrowing was refused: its request, not the backend's health.
        if (code === "invalid_scope") throw new BrokerError("invalid_request", `scope: ${(e as Error).message}`, { reason: "scope", cause: e });
        if (code === "misconfigured" || code === "denied") opts.logger.error({ role: role.name, backend: role.backend, code, err: { message: (e as Error).message } }, "the backend refused to mint as configured: an operator must act");
        throw new BrokerError("backend_unavailable", `backend ${role.backend} could not mint the credential`, { cause: e });
      }

      let state;
      try {
        state = await store.activate(id, minted.handle, minted.backendExpiresAt?.getTime());
      } catch (e) {
        // Redis may be gone: revoke from what we wrote, not from what we could read back.
        await undoMint(store.created(draft), id, backend, minted, "could not record the lease");
        throw e;
      }
      if (state !== "active") {
        const lease = await store.get(id).catch(() => null);
        if (state === "reopened") {
          // The mint outlived worker.mint_timeout and the worker had ended the lease as never
          // minted; the lease is revoking again, with the handle, and the worker retries it.
          await undoMint(lease ?? store.created(draft), id, backend, minted, "the mint took longer than worker.mint_timeout");
          throw new BrokerError("backend_unavailable", `backend ${role.backend} took longer than the mint timeout; what it minted is being revoked`);
        }
        await undoMint(lease ?? store.created(draft), id, backend, minted, `lease was ${state} before the mint completed`);
        if (lease?.revocation?.trigger === "task_completed") throw new BrokerError("task_completed", `task ${task.id} was completed while the credential was being issued`);
        throw new BrokerError("policy_denied", `the lease was revoked (${lease?.revocation?.trigger ?? state}) while the credential was being issued`);
      }
      // "active": the lease is exactly what we wrote plus the handle (see store.activated).
      const lease = store.activated(draft, minted.handle, minted.backendExpiresAt?.getTime());
      // A reload that ran while this credential was being minted re-authorized the leases it could
      // see, not this one (still issuing): check it as the reload would before handing it out.
      const policyNow = opts.policy();
      if (policyNow.set().hash !== decision.policyHash || (opts.inventoryVersion?.() ?? 0) !== inventoryAtStart) {
        const again = recheckLease(lease, { policy: policyNow, roles: opts.roles(), workloads: opts.workloads?.() ?? { get: () => auth.workload }, timeZone: opts.timeZone });
        if (!again.allowed) {
          await revokeForPolicyChange({ store, queue: opts.queue, audit, now }, [lease], again.reason!, "system", policyNow.set().hash).catch(() => undefined);
          throw new BrokerError("policy_denied", `the policy or inventory changed while the credential was being issued: ${again.reason}`, { extra: { policy_hash: policyNow.set().hash } });
        }
      }
      await audit.append({
        type: "mint",
        at: at(),
        lease_id: id,
        workload,
        task_id: task.id,
        actor: workload,
        role: role.name,
        backend: role.backend,
        identity,
        policy_ids: decision.policyIds,
        policy_hash: decision.policyHash,
        expires_at: lease.expires_at,
        ...(lease.backend_expires_at ? { backend_expires_at: lease.backend_expires_at } : {}),
        ...(ex ? { ...exchangeSummary(ex), token_claims: { sub: ex.token.subject, ...(ex.token.act ? { act: ex.token.act } : {}), aud: ex.token.audience, ...(ex.token.scope ? { scope: ex.token.scope } : {}) } } : {}),
        ...(approval
          ? {
              approval: {
                request_id: approval.request.id,
                requested_at: new Date(approval.request.created_ms).toISOString(),
                approved_by: approval.request.decided_by,
                approved_at: approval.request.decided_ms === undefined ? undefined : new Date(approval.request.decided_ms).toISOString(),
              },
            }
          : {}),
        task,
      });
      if (opts.durability && opts.durability.replicas > 0) {
        // I1: the lease record, its schedule and the mint event must be on enough replicas that a
        // failover cannot lose them; otherwise the credential is revoked instead of answered.
        try {
          await opts.durability.confirm();
        } catch (e) {
          const why = describeRedisError(e);
          await undoMint(lease, id, backend, minted, `not acknowledged by replicas (${why})`);
          throw new BrokerError("store_unavailable", `the lease record was not acknowledged by ${opts.durability.replicas} Redis replica(s) in time (${why}); the credential was revoked, nothing was issued`, { cause: e, reason: "durability" });
        }
      }
      metrics.issued.inc({ backend: role.backend, role: role.name });
      metrics.issuance.observe({ backend: role.backend }, Number(process.hrtime.bigint() - started) / 1e9);
      return { lease: publicLease(lease), credential: minted.credential };
    },

    /** Completes a task for the calling workload (I5) and revokes its leases of that task. */
    async completeTask(auth: AuthContext, taskId: string): Promise<{ task_id: string; revoked: number }> {
      const workload = auth.workload.id;
      await store.completeTask(workload, taskId);
      const ids: string[] = [];
      for await (const chunk of store.liveIds("task", taskId)) ids.push(...chunk);
      const mine = (await store.getMany(ids)).filter((l): l is StoredLease => l !== null && l.workload === workload).map((l) => l.id);
      const moved = await store.trigger(mine, { trigger: "task_completed", by: workload });
      await opts.queue.revokeSoon(moved);
      // A completion that revoked nothing keeps only its marker (I9: a flood of completions of
      // made-up tasks must not fill the audit); one that revoked leases is part of their history.
      if (moved.length > 0) {
        await audit.append({ type: "task_completed", at: at(), workload, task_id: taskId, actor: workload, leases: moved });
      }
      return { task_id: taskId, revoked: moved.length };
    },

    /** One lease, revoked by its owner or an operator. */
    async revokeLease(lease: StoredLease, trigger: Extract<RevocationTrigger, "owner" | "operator">, by: string, reason?: string): Promise<Lease> {
      const moved = await store.trigger([lease.id], { trigger, by, reason });
      if (moved.length > 0) {
        await audit.append({ type: "revocation_requested", at: at(), lease_id: lease.id, workload: lease.workload, task_id: lease.task_id, actor: by, trigger, ...(reason ? { reason } : {}) });
        await opts.queue.revokeSoon(moved);
      }
      return publicLease((await store.get(lease.id)) ?? lease);
    },

    /** Starts an asynchronous bulk revocation; returns its id and how many live leases matched. */
    async bulkRevoke(selector: Selector, value: string, by: string, reason: string): Promise<{ id: string; matched: number }> {
      const id = newOpId();
      let matched: number;
      if (selector === "lease") {
        const l = await store.get(value);
        matched = l && (l.state === "issuing" || l.state === "active") ? 1 : 0;
      } else {
        matched = await store.countLive(selector, value);
      }
      await store.createOp(id, { id, selector, value, matched: String(matched), state: "running", by, reason, created_at: at() });
      await audit.append({ type: "bulk_revocation", at: at(), actor: by, op: id, selector, value, matched, reason });
      await opts.queue.bulk({ op: id, selector, value, trigger: "operator", by, reason });
      return { id, matched };
    },
  };
}

export type LeaseService = ReturnType<typeof createLeaseService>;

/** What the audit records of a token exchange (I8: the whole chain and on whose behalf). */
function exchangeSummary(ex: ExchangeRequest) {
  return {
    exchange: ex.delegation ? ("delegation" as const) : ("on_behalf_of" as const),
    ...(ex.delegation ? { parent_lease_id: ex.delegation.parent, depth: ex.delegation.depth, chain: ex.delegation.chain, ancestors: ex.delegation.ancestors } : {}),
    ...(ex.onBehalfOf ? { on_behalf_of: { issuer: ex.onBehalfOf.issuer, subject: ex.onBehalfOf.subject } } : {}),
  };
}
