/**
 * Credential issuance and revocation triggers: the order of operations that makes I1 hold.
 *
 *   authenticate → workload → task open? → Cedar decision → plan (plan.ts: deny, approval or
 *   grant with TTL and lease) → lease written (issuing, with the quota and task checks and its
 *   expiry schedule entry in the same script) → mint → handle recorded and lease flipped to
 *   active → response. A backend that mints inside this process (`mintsLocally`, the broker's
 *   own JWTs) mints before the lease is written, and the write records it active at once.
 *
 * The decision and the plan are pure (plan.ts); this module runs their effects. If anything
 * fails after the lease is written, the undo step of what was done runs before the error is
 * answered: undoLeaseWrite (nothing minted), undoFailedMint (the mint failed), undoMint (a
 * credential exists: revoke it).
 */
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { ApprovalRequest, ApprovalStore, NewApprovalRequest } from "../approvals/store";
import type { AuditLedger } from "../audit/ledger";
import type { RateLimiter } from "../limits/ratelimit";
import type { MemoryWatch } from "../limits/memory";
import type { RefusalSampler } from "../limits/refusals";
import { backendErrorCode, type Backend, type MintRequest, type MintResult } from "../backends/types";
import type { RoleConfig } from "../config/schema";
import { BrokerError } from "../core/errors";
import type { AuthContext } from "../authz/principal";
import { recheckLease } from "../authz/recheck";
import type { WorkloadMatcher } from "../identity/workloads";
import type { Decision, PolicyEngine } from "../policy/engine";
import type { LeaseMetrics } from "./metrics";
import { issueDecisionRequest, planIssue, taskOf, type CredentialRequest, type ExchangeRequest, type IssueInput, type IssuePlan } from "./plan";
import { revokeForPolicyChange } from "./policy-change";
import type { RevocationQueue, Selector } from "./queue";
import type { Revoker } from "./revoker";
import { isLive, isUnreadable, publicLease, readable, type LeaseRead, type LeaseStore, type NewLease, type StoredLease, type UnreadableLease } from "./store";
import type { Lease, RevocationTrigger } from "./types";
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

export type { CredentialRequest, ExchangeRequest };

/**
 * Lease ids: 96 random bits, URL- and BullMQ-safe. Not secrets (every read is authorized), just
 * unique; short, since each is stored in several sets (the memory budget: docs/BENCHMARKS.md).
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

  // Undo steps of the mint sequence (I1), each named after what it undoes.

  /** Undoes `store.create` when nothing was minted: ends the lease (issue_failed) before it is ever active. */
  async function undoLeaseWrite(id: string, why: string): Promise<void> {
    await store.trigger([id], { trigger: "issue_failed", reason: why }).catch(() => undefined);
  }

  /**
   * Undoes a lease whose mint failed (nothing was minted): it ends revoked (issue_failed) now, not
   * after a retry loop that would show it as revoke_failed meanwhile; the queue is the fallback.
   */
  async function undoFailedMint(id: string, workload: string, taskId: string, e: unknown): Promise<void> {
    await undoLeaseWrite(id, "mint failed");
    const ended = await opts.revoker.revoke([id]).catch(() => null);
    if (!ended || ended.done.length === 0) await opts.queue.revokeSoon([id]).catch(() => undefined);
    audit.record({ type: "issue_failed", at: at(), lease_id: id, workload, task_id: taskId, actor: "system", reason: (e as Error).message });
  }

  /** Undoes a mint: revokes a credential minted for a lease that must not be handed out, and ends the lease. */
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

  /**
   * Mints at a remote backend for a lease already written `issuing`, and records the handle
   * (issuing → active). Every failure runs the undo step of what was done.
   */
  async function mintAndActivate(draft: NewLease, role: RoleConfig, backend: Backend, mintReq: MintRequest): Promise<MintResult> {
    const { id, workload } = draft;
    const task = draft.task;
    let minted: MintResult;
    try {
      // The lease as just written (no re-read: backends only use its immutable fields).
      minted = await backend.mint(publicLease(store.created(draft)), role, mintReq);
    } catch (e) {
      await undoFailedMint(id, workload, task.id, e);
      throw mintFailure(role, e);
    }

    let state;
    try {
      state = await store.activate(id, minted.handle, minted.backendExpiresAt?.getTime(), { issuedAt: draft.issuedAt, expiresAt: draft.expiresAt });
    } catch (e) {
      // Redis may be gone: revoke from what we wrote, not from what we could read back.
      await undoMint(store.created(draft), id, backend, minted, "could not record the lease");
      throw e;
    }
    if (state !== "active") {
      // Unreadable (a malformed record) or unanswered: undo from what we wrote.
      const lease = readable(await store.get(id).catch(() => null));
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
    return minted;
  }

  /** The answer to a failed mint (nothing was minted). */
  function mintFailure(role: RoleConfig, e: unknown): Error {
    if (e instanceof BrokerError) return e;
    const code = backendErrorCode(e);
    // The caller's own narrowing was refused: its request, not the backend's health.
    if (code === "invalid_scope") return new BrokerError("invalid_request", `scope: ${(e as Error).message}`, { reason: "scope", cause: e });
    if (code === "misconfigured" || code === "denied") opts.logger.error({ role: role.name, backend: role.backend, code, err: { message: (e as Error).message } }, "the backend refused to mint as configured: an operator must act");
    return new BrokerError("backend_unavailable", `backend ${role.backend} could not mint the credential`, { cause: e });
  }

  /** Records a request a permit says needs approval (docs/ARCHITECTURE.md, Approvals path). */
  async function requestApproval(request: NewApprovalRequest, decision: Decision): Promise<ApprovalRequest> {
    const created = await opts.approvals!.create(request);
    if (created.result === "too_many") {
      throw new BrokerError("quota_exceeded", `workload ${request.workload} already has the maximum number of requests waiting for approval`, { headers: { "Retry-After": "60" } });
    }
    const r = created.request;
    await audit.append({
      type: "approval_requested",
      at: at(),
      request_id: r.id,
      workload: request.workload,
      task_id: request.task.id,
      actor: request.workload,
      role: request.role,
      identity: request.identity,
      policy_ids: decision.policyIds,
      policy_hash: decision.policyHash,
      expires_at: new Date(r.deadline_ms).toISOString(),
      task: request.task,
    });
    metrics.approvals.inc({ event: "requested" });
    return r;
  }

  /**
   * The mint sequence of a granted plan (I1): write the lease (issuing, with the quota and task
   * checks and its expiry schedule entry in the same script), register it under its parent,
   * mint, record the handle (active), check it again if the policies or the inventory changed meanwhile, audit,
   * and wait for the replicas. Every failure after the write runs the undo step of what was done.
   */
  async function mintLease(
    auth: AuthContext,
    plan: Extract<IssuePlan, { outcome: "grant" }>,
    backend: Backend,
    mintReq: MintRequest,
    decision: Decision,
    inventoryAtStart: number,
    approval: { request: ApprovalRequest } | undefined,
    exchange: ExchangeRequest | undefined,
  ): Promise<{ lease: Lease; credential: MintResult["credential"] }> {
    const { role } = plan;
    const workload = auth.workload.id;
    const task = plan.lease.task;
    // On the workload's shard (redis.shards): the id names its shard, see src/redis/keys.ts.
    const id = store.newId(workload);
    const draft: NewLease = { id, ...plan.lease };
    const quota = auth.workload.limits?.active_leases ?? opts.quota;

    // A backend that mints inside this process (the broker's own JWTs) mints first: the
    // credential exists nowhere until it is answered, and the lease is then written active with
    // its handle by the same script that checks the quota and the task; a refused write drops
    // what was minted (Backend.mintsLocally; docs/ARCHITECTURE.md, I1). One round trip less.
    let early: MintResult | undefined;
    if (backend.mintsLocally) {
      try {
        early = await backend.mint(publicLease(store.created(draft)), role, mintReq);
      } catch (e) {
        audit.record({ type: "issue_failed", at: at(), lease_id: id, workload, task_id: task.id, actor: "system", reason: (e as Error).message });
        throw mintFailure(role, e);
      }
    }
    const created = await store.create(draft, quota, early ? { handle: early.handle, ...(early.backendExpiresAt ? { backendExpiresAt: early.backendExpiresAt.getTime() } : {}) } : undefined);
    if (created === "task_completed") throw new BrokerError("task_completed", `task ${task.id} is completed; start a new task`);
    if (created === "quota_exceeded") {
      const retryAfter = await secondsUntilALeaseEnds(workload);
      throw new BrokerError("quota_exceeded", `workload ${workload} already holds ${quota} active leases; one ends in about ${retryAfter}s`, { headers: { "Retry-After": String(retryAfter) } });
    }
    if (created !== "ok") throw new BrokerError("internal", "lease id collision");
    const parent = exchange?.delegation;
    if (parent) {
      // Registered under the parent only while the parent is active: a parent revoked before
      // this refuses the child; one revoked after finds it and revokes it (the cascade).
      let parentState: string;
      try {
        parentState = await store.addChild(parent.parent, parent.parentExpiresMs, id);
      } catch (e) {
        await undoLeaseWrite(id, "could not register the delegated lease under its parent");
        throw e;
      }
      if (parentState !== "ok") {
        await undoLeaseWrite(id, `parent lease ${parent.parent} is ${parentState}`);
        throw new BrokerError("invalid_request", `subject_token: its lease is ${parentState === "missing" ? "gone" : parentState}, not active`, { reason: "inactive_subject" });
      }
    }

    // I1: the revocation is scheduled before anything leaves the process: `create` wrote the
    // lease into the expiry schedule ({p}:leases:due, score = expires_at) in the same script as
    // the lease, before a remote backend mints and before a local mint's token is answered.
    const minted = early ?? (await mintAndActivate(draft, role, backend, mintReq));
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
      identity: draft.identity,
      policy_ids: decision.policyIds,
      policy_hash: decision.policyHash,
      expires_at: lease.expires_at,
      ...(lease.backend_expires_at ? { backend_expires_at: lease.backend_expires_at } : {}),
      ...(exchange
        ? { ...exchangeSummary(exchange), token_claims: { sub: exchange.token.subject, ...(exchange.token.act ? { act: exchange.token.act } : {}), aud: exchange.token.audience, ...(exchange.token.scope ? { scope: exchange.token.scope } : {}) } }
        : {}),
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
        await opts.durability.confirm(workload);
      } catch (e) {
        const why = describeRedisError(e);
        await undoMint(lease, id, backend, minted, `not acknowledged by replicas (${why})`);
        throw new BrokerError("store_unavailable", `the lease record was not acknowledged by ${opts.durability.replicas} Redis replica(s) in time (${why}); the credential was revoked, nothing was issued`, { cause: e, reason: "durability" });
      }
    }
    return { lease: publicLease(lease), credential: minted.credential };
  }

  /** Retry-After for a full quota: seconds until the workload's soonest lease expires (1..300). */
  async function secondsUntilALeaseEnds(workload: string): Promise<number> {
    try {
      let soonest = Infinity;
      for await (const ids of store.liveIds("workload", workload, 200)) {
        for (const l of await store.getMany(ids)) if (l && !isUnreadable(l)) soonest = Math.min(soonest, l.expires_ms);
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
      const task = taskOf(req.task);
      // The rate limit count and the task check in one round trip (the request connection
      // auto-pipelines them, src/redis/connect.ts); a refusal by the limit wins. A token exchange
      // counted its attempt already (src/oauth), before reading the subject.
      const [counted, completed] = await Promise.allSettled([
        !approval && !req.exchange && opts.limiter ? opts.limiter.consume(workload, auth.workload.limits?.requests_per_minute ?? opts.requestsPerMinute ?? 0) : undefined,
        store.isTaskCompleted(workload, task.id),
      ]);
      if (counted.status === "rejected") throw counted.reason;
      opts.memory?.assertRoom();
      opts.auditBacklog?.assertRoom();
      if (completed.status === "rejected") throw completed.reason;
      if (completed.value) throw new BrokerError("task_completed", `task ${task.id} is completed; start a new task`);
      const role = opts.roles().get(req.role);
      const ex = req.exchange;
      const mintReq: MintRequest = { ...(req.scope === undefined ? {} : { scope: req.scope }), ...(ex ? { token: ex.token } : {}) };

      // One clock reading for the decision (context.time) and the lease (issued_at, expires_at).
      const input: IssueInput = { req, auth, role, ...(approval ? { approval } : {}), nowMs: now(), ...(opts.timeZone !== undefined ? { timeZone: opts.timeZone } : {}) };
      // Decide first, then say why (an unknown role, a TTL above the role's max): see plan.ts.
      const decision = opts.policy().decide(issueDecisionRequest(input));
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
      const backend = role ? opts.backends.get(role.backend) : undefined;
      const plan = planIssue({ ...input, decision, backend: backend ? { checksScope: backend.checkRequest !== undefined } : undefined, approvalsEnabled: opts.approvals !== undefined });
      if (plan.outcome === "deny" && plan.by === "policy") {
        // A refusal writes nothing permanent per attempt: counted above, sampled into the audit.
        await opts.refusals?.record(workload, ex?.action ?? "request", decisionEvent);
        if (!opts.refusals) await audit.append(decisionEvent);
        throw plan.error;
      }
      await audit.append(decisionEvent);
      if (plan.outcome === "deny") throw plan.error;
      // The backend's own check of the request (a scope), only for callers the policy allows.
      backend!.checkRequest?.(plan.role, mintReq);
      if (plan.outcome === "approval") return { pending: await requestApproval(plan.request, decision) };
      const lease = await mintLease(auth, plan, backend!, mintReq, decision, inventoryAtStart, approval, ex);
      metrics.issued.inc({ backend: plan.role.backend, role: plan.role.name });
      metrics.issuance.observe({ backend: plan.role.backend }, Number(process.hrtime.bigint() - started) / 1e9);
      return lease;
    },

    /** Completes a task for the calling workload (I5) and revokes its leases of that task. */
    async completeTask(auth: AuthContext, taskId: string): Promise<{ task_id: string; revoked: number }> {
      const workload = auth.workload.id;
      await store.completeTask(workload, taskId);
      // Read a scan step at a time (a task may hold thousands of leases: one pipeline of all of
      // them could run past the command timeout). A lease whose record is unreadable is revoked
      // with the task when the workload its record names is the caller (fail closed: its fields
      // cannot be trusted to keep it alive).
      const mine: string[] = [];
      for await (const chunk of store.liveIds("task", taskId)) {
        for (const l of await store.getMany(chunk)) if (l !== null && l.workload === workload) mine.push(l.id);
      }
      const moved = await store.trigger(mine, { trigger: "task_completed", by: workload });
      await opts.queue.revokeSoon(moved);
      // A completion that revoked nothing keeps only its marker (I9: a flood of completions of
      // made-up tasks must not fill the audit); one that revoked leases is part of their history.
      if (moved.length > 0) {
        await audit.append({ type: "task_completed", at: at(), workload, task_id: taskId, actor: workload, leases: moved });
      }
      return { task_id: taskId, revoked: moved.length };
    },

    /**
     * One lease, revoked by its owner or an operator; answers the lease as it is now. An unreadable
     * lease (a malformed record) is revoked all the same and answered as unreadable.
     */
    async revokeLease(lease: LeaseRead, trigger: Extract<RevocationTrigger, "owner" | "operator">, by: string, reason?: string): Promise<Lease | UnreadableLease> {
      const moved = await store.trigger([lease.id], { trigger, by, reason });
      if (moved.length > 0) {
        await audit.append({ type: "revocation_requested", at: at(), lease_id: lease.id, workload: lease.workload, task_id: lease.task_id, actor: by, trigger, ...(reason ? { reason } : {}) });
        await opts.queue.revokeSoon(moved);
      }
      const after = (await store.get(lease.id)) ?? lease;
      return isUnreadable(after) ? after : publicLease(after);
    },

    /** Starts an asynchronous bulk revocation; returns its id and how many live leases matched. */
    async bulkRevoke(selector: Selector, value: string, by: string, reason: string): Promise<{ id: string; matched: number }> {
      const id = newOpId();
      let matched: number;
      if (selector === "lease") {
        // An unreadable lease counts when its stored state is live or none of the broker's (its revocation goes by state alone).
        const l = await store.get(value);
        matched = l && isLive(l) ? 1 : 0;
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
