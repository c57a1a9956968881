/**
 * Human approval of credential requests (docs/ARCHITECTURE.md, Approvals path):
 *
 *   GET  /v1/requests/{id}                 the requester sees its request, or collects it once
 *                                          approved (201 {lease, credential, request})
 *   GET  /v1/admin/requests                operators list requests (state, workload, cursor)
 *   GET  /v1/admin/requests/{id}           operators read one request
 *   POST /v1/admin/requests/{id}/approve   an operator allowed `approve` on the Role approves
 *   POST /v1/admin/requests/{id}/deny      ...or denies; {reason?}
 *
 * Approving is decided by Cedar (`Action::"approve"` on the requested `Role`, with the request's
 * task and `context.requester`), and a workload can never approve its own request, whatever the
 * policies say. Every step is audited with the approver's identity.
 */
import { Router, type Request } from "express";
import type { AuditEvent, AuditLedger } from "../audit/ledger";
import type { RoleConfig } from "../config/schema";
import { BrokerError } from "../core/errors";
import { BROKER_RESOURCE, decisionContext, roleResource } from "../authz/context";
import { isOperator as isOperatorCheck, operatorDecision, requireOperator } from "../authz/operators";
import type { AuthContext } from "../authz/principal";
import { isOwnRequest, mayBeOperator } from "../authz/refusals";
import { optionalBody, parse } from "../http/app";
import type { PolicyEngine } from "../policy/engine";
import type { WorkloadMatcher } from "../identity/workloads";
import type { LeaseMetrics } from "../leases/metrics";
import type { LeaseStore } from "../leases/store";
import type { LeaseService } from "../leases/service";
import type { RefusalSampler } from "../limits/refusals";
import { mount } from "../http/api";
import { APPROVALS_API, approvalDecisionSchema, approvalListQuery } from "./api";
import { publicRequest, REQUEST_ID, type ApprovalRequest, type ApprovalState, type ApprovalStore } from "./store";

export interface ApprovalRoutesOptions {
  approvals: ApprovalStore;
  service: LeaseService;
  audit: AuditLedger;
  policy: () => PolicyEngine;
  roles: () => Map<string, RoleConfig>;
  workloads: () => WorkloadMatcher;
  store: LeaseStore;
  metrics: LeaseMetrics;
  /** How long one collection may hold its lock (mint timeout plus a margin). */
  collectLockMs: number;
  timeZone?: string;
  now?: () => number;
  /** Refusals of approve/deny: counted, sampled into the audit (without it, each is audited). */
  refusals?: RefusalSampler;
  /** Counts a collection (it mints) against the requester's write budget. */
  limitCollect?: (auth: AuthContext) => Promise<void>;
}

const notPending = (r: { id: string }, state: string) =>
  new BrokerError("request_not_pending", `request ${r.id} is ${state.replace("now_", "")}`, { extra: { state: state.replace("now_", "") } });

export function approvalRoutes(opts: ApprovalRoutesOptions): Router {
  const r = Router();
  const now = opts.now ?? Date.now;
  const at = () => new Date(now()).toISOString();
  const { approvals, audit } = opts;

  const check = { policy: opts.policy, metrics: opts.metrics, timeZone: opts.timeZone, now };
  const requireReader = (auth: AuthContext) => requireOperator(auth, "admin_read", check);

  async function load(req: Request): Promise<ApprovalRequest> {
    const id = typeof req.params.id === "string" && REQUEST_ID.test(req.params.id) ? req.params.id : null;
    const found = id ? await approvals.get(id) : null;
    if (!found) throw new BrokerError("not_found", "no such request");
    return found;
  }

  /** The approver's identity, as recorded in the audit ledger. */
  const approverOf = (auth: AuthContext) => ({ workload: auth.workload.id, kind: auth.workload.kind, owner: auth.workload.owner, issuer: auth.identity.issuer, subject: auth.identity.subject });

  /** A refused approve/deny, counted and sampled into the audit (I9): the 403 to throw. */
  async function refusal(auth: AuthContext, outcome: "approved" | "denied", extra: Record<string, unknown>, detail: string, policyHash?: string): Promise<BrokerError> {
    // `extra` carries request_id (and the policy when one decided): an approval_refused event.
    const event = { type: "approval_refused", at: at(), actor: auth.workload.id, approver: approverOf(auth), outcome, ...extra } as unknown as AuditEvent;
    if (opts.refusals) await opts.refusals.record(auth.workload.id, "approve", event);
    else audit.record(event);
    return new BrokerError("policy_denied", detail, policyHash ? { extra: { policy_hash: policyHash } } : {});
  }

  async function decideRequest(req: Request, outcome: "approved" | "denied") {
    const auth = req.auth!;
    const body = optionalBody(approvalDecisionSchema, req.body);
    // Decide before saying why: a workload that can never approve (not human) or an operator
    // without admin_read learns nothing about which request ids exist (403, never 404).
    const id = typeof req.params.id === "string" && REQUEST_ID.test(req.params.id) ? req.params.id : null;
    const asked = id ? { request_id: id } : {};
    if (!mayBeOperator(auth.workload)) throw await refusal(auth, outcome, asked, `${auth.workload.id} may not approve or deny requests`);
    const found = id ? await approvals.get(id) : null;
    if (!found) {
      if (!isOperatorCheck(auth, "admin_read", check)) throw await refusal(auth, outcome, asked, `${auth.workload.id} may not approve or deny requests`);
      throw new BrokerError("not_found", "no such request");
    }
    const request = found;
    if (outcome === "approved" && isOwnRequest({ workload: auth.workload.id, identity: auth.identity }, { workload: request.workload, identity: request.identity })) {
      throw new BrokerError("policy_denied", "a workload can never approve its own request");
    }
    const role = opts.roles().get(request.role);
    const requester = { id: request.workload, kind: "", owner: "" };
    const inventory = opts.workloads().get(request.workload);
    if (inventory) Object.assign(requester, { kind: inventory.kind, owner: inventory.owner });
    const d = operatorDecision(
      auth,
      "approve",
      role ? roleResource(role) : BROKER_RESOURCE,
      decisionContext({ task: request.task, ttlSeconds: Math.floor((request.ttl_ms ?? role?.ttl.default ?? 0) / 1000), approved: false, atMs: now(), timeZone: opts.timeZone, requester }),
      check,
    );
    if (!d || d.decision !== "allow") {
      // Nothing permanent per refused attempt (I9): counted, and sampled into the audit.
      throw await refusal(auth, outcome, { request_id: request.id, ...(d ? { policy_ids: d.policyIds, policy_hash: d.policyHash } : {}) }, `${auth.workload.id} may not approve or deny requests for ${request.role}`, d?.policyHash);
    }
    const result = await approvals.decide(request.id, request.workload, outcome, auth.workload.id, body.reason);
    if (result === "now_expired") {
      await audit.append({ type: "approval_expired", at: at(), request_id: request.id, workload: request.workload, task_id: request.task.id, actor: "system", was: "pending_approval" });
      opts.metrics.approvals.inc({ event: "expired" });
    }
    if (result !== "ok") throw notPending(request, result);
    await audit.append({
      type: outcome === "approved" ? "approval_approved" : "approval_denied",
      at: at(),
      request_id: request.id,
      workload: request.workload,
      task_id: request.task.id,
      role: request.role,
      actor: auth.workload.id,
      approver: approverOf(auth),
      policy_ids: d.policyIds,
      policy_hash: d.policyHash,
      ...(body.reason ? { reason: body.reason } : {}),
    });
    opts.metrics.approvals.inc({ event: outcome });
    return publicRequest((await approvals.get(request.id)) ?? request);
  }

  mount(r, APPROVALS_API.collectRequest, async (req, res) => {
    const auth = req.auth!;
    const request = await load(req);
    // Only the requester sees (and collects) its request; anyone else learns nothing.
    if (request.workload !== auth.workload.id) throw new BrokerError("not_found", "no such request");
    const expired = request.state === "pending_approval" || request.state === "approved" ? request.deadline_ms <= now() : false;
    if (request.state !== "approved" || expired) {
      const shown = expired ? { ...request, state: "expired" as ApprovalState } : request;
      res.json({ request: publicRequest(shown) });
      return;
    }
    await opts.limitCollect?.(auth);
    const begun = await approvals.beginCollect(request.id, opts.collectLockMs);
    if (begun === "busy") throw new BrokerError("request_not_pending", `request ${request.id} is being collected by another call`, { extra: { state: "collecting" } });
    if (begun !== "ok") {
      const latest = (await approvals.get(request.id)) ?? request;
      res.json({ request: publicRequest(begun === "expired" ? { ...latest, state: "expired" } : latest) });
      return;
    }
    let out;
    try {
      const issued = await opts.service.issue(
        auth,
        { role: request.role, task: request.task, ...(request.ttl_ms !== undefined ? { ttlMs: request.ttl_ms } : {}), ...(request.scope ? { scope: request.scope } : {}) },
        { request },
      );
      if (issued.pending) throw new BrokerError("internal", "an approved request asked for approval again");
      out = issued;
    } catch (e) {
      await approvals.abortCollect(request.id).catch(() => undefined);
      throw e;
    }
    if (!(await approvals.endCollect(request.id, out.lease.id))) {
      // Cannot happen while the collection lock is held; never hand out an untracked collection.
      // Readable or not (a malformed record), the lease is revoked.
      const stored = await opts.store.get(out.lease.id);
      if (stored) await opts.service.revokeLease(stored, "operator", "system", "approval request changed during collection");
      throw new BrokerError("request_not_pending", `request ${request.id} changed while it was being collected`);
    }
    await audit.append({ type: "approval_collected", at: at(), request_id: request.id, lease_id: out.lease.id, workload: request.workload, task_id: request.task.id, actor: auth.workload.id });
    opts.metrics.approvals.inc({ event: "collected" });
    const collected = (await approvals.get(request.id).catch(() => null)) ?? { ...request, state: "collected" as const, lease_id: out.lease.id };
    res.status(201).json({ lease: out.lease, credential: out.credential, request: publicRequest(collected) });
  });

  mount(r, APPROVALS_API.listApprovalRequests, async (req, res) => {
    requireReader(req.auth!);
    const q = parse(approvalListQuery, req.query, "query");
    const { requests, next } = await approvals.list({ ...(q.state ? { state: q.state } : {}), ...(q.workload ? { workload: q.workload } : {}) }, q.limit, q.cursor);
    res.json({ requests: requests.map(publicRequest), next_cursor: next });
  });

  mount(r, APPROVALS_API.getApprovalRequest, async (req, res) => {
    requireReader(req.auth!);
    res.json({ request: publicRequest(await load(req)) });
  });

  mount(r, APPROVALS_API.approveRequest, async (req, res) => {
    res.json({ request: await decideRequest(req, "approved") });
  });

  mount(r, APPROVALS_API.denyRequest, async (req, res) => {
    res.json({ request: await decideRequest(req, "denied") });
  });

  return r;
}

/** Expires requests past their window and audits each expiry (run periodically by the worker). */
export async function expireApprovals(approvals: ApprovalStore, audit: AuditLedger, metrics: LeaseMetrics, now: () => number = Date.now): Promise<number> {
  let total = 0;
  for (;;) {
    const expired = await approvals.expireDue(500);
    const at = new Date(now()).toISOString();
    if (expired.length > 0) {
      await audit.appendMany(expired.map((e) => ({ type: "approval_expired", at, request_id: e.id, workload: e.workload, task_id: e.task_id, actor: "system", was: e.was })));
      metrics.approvals.inc({ event: "expired" }, expired.length);
    }
    total += expired.length;
    if (expired.length < 500) return total;
  }
}
