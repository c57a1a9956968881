/**
 * REST endpoints for credentials, tasks, leases and operators (docs/ARCHITECTURE.md, Request path and Revocation paths). Handlers
 * validate input with zod, call the lease service, and shape responses; nothing else.
 */
import { Router, type Request } from "express";
import type { AuditLedger } from "../audit/ledger";
import { parseTtlMs } from "./ttl";
import { BrokerError } from "../core/errors";
import type { AuthContext } from "../http/app";
import { optionalBody, parse, requireJsonObject } from "../http/app";
import { isOperator as isOperatorOf, requireOperator as requireOperatorOf, type AdminAction } from "../authz/operators";
import type { PolicyEngine } from "../policy/engine";
import type { LeaseMetrics } from "./metrics";
import type { LeaseService } from "./service";
import { isUnreadable, leaseUnreadable, matchesFilter, publicLease, readable, type LeaseRead, type LeaseStore, type StoredLease } from "./store";
import { publicRequest } from "./approval-request";
import { mount } from "../http/api";
import { LEASES_API } from "./api";
import { credentialRequestSchema, leaseListQuery, revocationRequestSchema, revokeBodySchema, taskId } from "./schemas";

function ttlOf(v: string | number | undefined): number | undefined {
  if (v === undefined) return undefined;
  try {
    return parseTtlMs(v);
  } catch (e) {
    throw new BrokerError("invalid_request", `ttl: ${(e as Error).message}`);
  }
}

const leaseId = (v: unknown) => (typeof v === "string" && /^l_[A-Za-z0-9_-]{10,40}$/.test(v) ? v : null);

export interface LeaseRoutesOptions {
  service: LeaseService;
  store: LeaseStore;
  audit: AuditLedger;
  /** Names of the audit sinks: where a lease's events went once retention removed them from Redis. */
  auditSinks?: string[];
  policy: () => PolicyEngine;
  metrics: LeaseMetrics;
  timeZone?: string;
}

export function leaseRoutes(opts: LeaseRoutesOptions): Router {
  const r = Router();
  const { service, store } = opts;

  const check = { policy: opts.policy, metrics: opts.metrics, timeZone: opts.timeZone };
  const requireOperator = (req: Request, action: AdminAction): AuthContext => requireOperatorOf(req.auth!, action, check);
  const isOperator = (auth: AuthContext, action: AdminAction) => isOperatorOf(auth, action, check);
  /**
   * The lease if the caller owns it or is an operator; otherwise 404, revealing nothing. An
   * unreadable lease (a malformed record in Redis) is returned as such: its owner is the workload
   * its record names, and otherwise only operators see it.
   */
  async function visibleLease(req: Request, action: "admin_read" | "admin_revoke"): Promise<{ lease: LeaseRead; operator: boolean }> {
    const id = leaseId(req.params.id);
    const lease = id ? await store.get(id) : null;
    const auth = req.auth!;
    if (lease && lease.workload === auth.workload.id) return { lease, operator: false };
    if (lease && isOperator(auth, action)) return { lease, operator: true };
    throw new BrokerError("not_found", "no such lease");
  }

  mount(r, LEASES_API.requestCredential, requireJsonObject, async (req, res) => {
    const body = parse(credentialRequestSchema, req.body, "body");
    const out = await service.issue(req.auth!, { role: body.role, task: body.task, ttlMs: ttlOf(body.ttl), ...(body.scope ? { scope: body.scope } : {}) });
    if (out.pending) {
      // @approval("required"): nothing is minted until an operator approves and the requester collects.
      res.status(202).setHeader("Location", `/v1/requests/${out.pending.id}`).json({ request: publicRequest(out.pending) });
      return;
    }
    res.status(201).json({ lease: out.lease, credential: out.credential });
  });

  mount(r, LEASES_API.completeTask, async (req, res) => {
    const id = parse(taskId, req.params.task_id, "task_id");
    res.json(await service.completeTask(req.auth!, id));
  });

  mount(r, LEASES_API.getLease, async (req, res) => {
    const { lease } = await visibleLease(req, "admin_read");
    if (isUnreadable(lease)) throw leaseUnreadable(lease);
    res.json({ lease: publicLease(lease) });
  });

  mount(r, LEASES_API.revokeLease, async (req, res) => {
    const { lease, operator } = await visibleLease(req, "admin_revoke");
    const body = optionalBody(revokeBodySchema, req.body);
    // An unreadable lease is revoked all the same (fail closed); the answer then says it cannot be shown.
    const out = await service.revokeLease(lease, operator ? "operator" : "owner", req.auth!.workload.id, body.reason);
    if (isUnreadable(out)) throw leaseUnreadable(out, "its revocation was requested all the same");
    res.json({ lease: out });
  });

  mount(r, LEASES_API.listLeases, async (req, res) => {
    requireOperator(req, "admin_read");
    const q = parse(leaseListQuery, req.query, "query");
    if (q.parent !== undefined) {
      // The children of one lease, oldest first (one set; bounded by quotas and rate limits).
      // An unreadable child is not listed, as in every listing (the store reports it: a warning, a metric).
      const kids = (await store.getMany(await store.children(q.parent))).map(readable).filter((l): l is StoredLease => l !== null && matchesFilter(l, q));
      kids.sort((a, b) => a.issued_ms - b.issued_ms || (a.id < b.id ? -1 : 1));
      res.json({ leases: kids.slice(0, q.limit).map(publicLease), next_cursor: null });
      return;
    }
    const { leases, next } = await store.list(q, q.limit, q.cursor);
    res.json({ leases: leases.map(publicLease), next_cursor: next });
  });

  mount(r, LEASES_API.startRevocation, requireJsonObject, async (req, res) => {
    const auth = requireOperator(req, "admin_revoke");
    const b = parse(revocationRequestSchema, req.body, "body");
    const [selector, value] = (
      [
        ["lease", b.lease_id],
        ["task", b.task_id],
        ["workload", b.workload],
        ["role", b.role],
        ["issuer", b.issuer],
      ] as const
    ).find(([, v]) => v !== undefined)!;
    const out = await service.bulkRevoke(selector, value!, auth.workload.id, b.reason);
    res.status(202).setHeader("Location", `/v1/admin/revocations/${out.id}`).json(out);
  });

  mount(r, LEASES_API.getRevocation, async (req, res) => {
    requireOperator(req, "admin_read");
    const id = typeof req.params.id === "string" && /^op_[A-Za-z0-9_-]{10,30}$/.test(req.params.id) ? req.params.id : null;
    const op = id ? await store.getOp(id) : null;
    if (!op) throw new BrokerError("not_found", "no such revocation");
    const matched = Number(op.matched ?? 0);
    const triggered = Number(op.triggered ?? 0);
    const revoked = Number(op.revoked ?? 0);
    const failed = Number(op.failed ?? 0);
    const done = op.state === "triggered" && revoked + failed >= triggered;
    res.json({
      id: op.id,
      selector: { [op.selector === "lease" ? "lease_id" : op.selector === "task" ? "task_id" : op.selector!]: op.value },
      reason: op.reason,
      by: op.by,
      created_at: op.created_at,
      matched,
      triggered,
      revoked,
      failed,
      state: !done ? "running" : failed > 0 ? "completed_with_failures" : "completed",
      ...(op.finished_at ? { finished_at: op.finished_at } : {}),
    });
  });

  mount(r, LEASES_API.leaseHistory, async (req, res) => {
    requireOperator(req, "admin_read");
    const id = leaseId(req.params.id);
    const lease = id ? await store.get(id) : null;
    if (!lease) throw new BrokerError("not_found", "no such lease");
    if (isUnreadable(lease)) throw leaseUnreadable(lease);
    const { events, trimmed, trimmedThrough, missing } = await opts.audit.leaseHistory(lease.id);
    const sinks = opts.auditSinks ?? [];
    const d = lease.delegation;
    const ancestors = d ? await store.getMany(d.ancestors) : [];
    res.json({
      lease: publicLease(lease),
      // I8 (docs/ARCHITECTURE.md), the four questions; with delegation "who" is the whole chain and for whom.
      requested_by: {
        workload: lease.workload,
        task: lease.task,
        ...(d ? { chain: [...d.chain, lease.workload] } : {}),
        ...(lease.on_behalf_of ? { on_behalf_of: lease.on_behalf_of } : {}),
      },
      ...(d
        ? {
            delegation: {
              parent_lease_id: d.parent,
              depth: d.depth,
              ancestors: d.ancestors.map((id, i) => {
                const a = ancestors[i];
                // An unreadable ancestor shows the stored field that is malformed, no value.
                if (a && isUnreadable(a)) return { id, state: "unreadable", unreadable_field: a.field };
                return a ? { id, workload: a.workload, state: a.state, policy_ids: a.policy.ids } : { id, state: "gone" };
              }),
            },
          }
        : {}),
      identity: lease.identity,
      allowed_by: lease.policy,
      ended: lease.revocation ? { state: lease.state, ...lease.revocation, revoked_at: lease.revoked_at ?? null } : null,
      events,
      // Events past audit.retention left Redis (src/audit/retention.ts): say where the evidence is.
      ...(trimmed > 0 || missing > 0
        ? {
            evidence: {
              events_trimmed: trimmed,
              ...(trimmedThrough ? { trimmed_through: trimmedThrough } : {}),
              ...(missing > 0 ? { events_missing: missing } : {}),
              sinks,
              note:
                (trimmed > 0
                  ? sinks.length > 0
                    ? `${trimmed} older event(s) of this lease left Redis after audit.retention, once every audit sink had them: look them up by lease_id in the sinks ${sinks.join(", ")}.`
                    : `${trimmed} older event(s) of this lease left Redis after audit.retention; no audit sink was configured, so they are kept nowhere else.`
                  : "") +
                (missing > 0 ? `${trimmed > 0 ? " " : ""}${missing} event(s) of this lease are missing from Redis although retention did not remove them: run jitbroker audit verify.` : ""),
            },
          }
        : {}),
    });
  });

  return r;
}

