/**
 * The public shape of an approval request: how POST /v1/credentials's 202 answer and every
 * approvals route show it (`publicRequest`, and its response schemas). It lives with issuance,
 * below the approvals folder, which builds on leases (collecting an approved request issues a
 * lease): docs/ARCHITECTURE.md, Feature folders (the dependency rule).
 */
import { z } from "zod";
import type { ApprovalRequest } from "../approvals/store";
import { apiComponent, text, time } from "../http/api";
import { identitySchema, policySchema, taskContext } from "./schemas";

export const APPROVAL_STATES = ["pending_approval", "approved", "denied", "expired", "collected"] as const;
export type ApprovalState = (typeof APPROVAL_STATES)[number];

export const approvalRequestSchema = apiComponent(
  "ApprovalRequest",
  z
    .strictObject({
      id: text.describe("rq_…"),
      state: z.enum(APPROVAL_STATES),
      workload: text.describe("The requester"),
      role: text,
      task_id: text,
      task: taskContext,
      ttl_seconds: z.number().int().optional().describe("The TTL asked for (absent: the role's default)"),
      identity: identitySchema,
      policy: policySchema.describe("The decision that asked for approval"),
      created_at: time,
      expires_at: time.optional().describe("pending_approval: it expires then unless approved or denied"),
      collect_by: time.optional().describe("approved: the requester must collect it by then"),
      decided_by: text.optional(),
      decided_at: time.optional(),
      reason: text.optional(),
      lease_id: text.optional().describe("collected: the lease issued for it"),
      collected_at: time.optional(),
    })
    .describe("A credential request waiting for (or decided by) an operator"),
);

export const pendingRequestSchema = apiComponent("ApprovalRequestEnvelope", z.strictObject({ request: approvalRequestSchema }));

/** The request as the API shows it. */
export function publicRequest(r: ApprovalRequest) {
  const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());
  return {
    id: r.id,
    state: r.state,
    workload: r.workload,
    role: r.role,
    task_id: r.task.id,
    task: r.task,
    ...(r.ttl_ms !== undefined ? { ttl_seconds: Math.floor(r.ttl_ms / 1000) } : {}),
    identity: r.identity,
    policy: r.policy,
    created_at: iso(r.created_ms)!,
    ...(r.state === "pending_approval" ? { expires_at: iso(r.deadline_ms) } : {}),
    ...(r.state === "approved" ? { collect_by: iso(r.deadline_ms) } : {}),
    ...(r.decided_by ? { decided_by: r.decided_by } : {}),
    ...(r.decided_ms !== undefined ? { decided_at: iso(r.decided_ms) } : {}),
    ...(r.reason ? { reason: r.reason } : {}),
    ...(r.lease_id ? { lease_id: r.lease_id } : {}),
    ...(r.collected_ms !== undefined ? { collected_at: iso(r.collected_ms) } : {}),
  };
}
