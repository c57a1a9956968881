/**
 * The lease routes' specs (credentials, tasks, leases, operators' listing, bulk revocation and
 * history), mounted by ./routes.ts; their schemas are in ./schemas.ts.
 */
import { z } from "zod";
import { pendingRequestSchema } from "./approval-request";
import { defineRoutes } from "../http/api";
import { credentialGrantSchema, credentialRequestSchema, ISSUE_ERRORS, leaseEnvelopeSchema, leaseHistorySchema, leaseListQuery, leasePageSchema, revocationProgressSchema, revocationRequestSchema, revocationStartedSchema, revokeBodySchema, TASK_ID, taskCompletionSchema } from "./schemas";

const leaseIdParam = { id: { schema: z.string().describe("l_…"), description: "Lease id" } };

export const LEASES_API = defineRoutes({
  requestCredential: {
      method: "post",
      path: "/v1/credentials",
      operationId: "requestCredential",
      summary: "Request a credential for one task",
      description: "Authorized by the policy at request time. 201 with the lease and the credential, or 202 when the policy requires an operator's approval.",
      tags: ["credentials"],
      auth: "workload",
      body: credentialRequestSchema,
      responses: {
        201: { description: "The lease and the credential (shown once)", schema: credentialGrantSchema },
        202: {
          description: "An operator must approve (@approval(\"required\")); collect at the Location",
          schema: pendingRequestSchema,
          headers: { Location: { description: "/v1/requests/{id}", schema: z.string() } },
        },
      },
      errors: ["invalid_request", "unsupported_media_type", "payload_too_large", ...ISSUE_ERRORS],
    },
  completeTask: {
      method: "post",
      path: "/v1/tasks/:task_id/complete",
      operationId: "completeTask",
      summary: "Complete a task: revoke the caller's leases of it; no new lease is issued for it",
      tags: ["credentials"],
      auth: "workload",
      params: { task_id: { schema: z.string().regex(TASK_ID), description: "Task id" } },
      responses: { 200: { description: "How many leases were revoked", schema: taskCompletionSchema } },
      errors: ["invalid_request", "rate_limited"],
    },
  getLease: {
      method: "get",
      path: "/v1/leases/:id",
      operationId: "getLease",
      summary: "One lease (its owner or an operator)",
      tags: ["leases"],
      auth: "workload",
      params: leaseIdParam,
      responses: { 200: { description: "The lease", schema: leaseEnvelopeSchema } },
      errors: ["not_found", "lease_unreadable"],
    },
  revokeLease: {
      method: "delete",
      path: "/v1/leases/:id",
      operationId: "revokeLease",
      summary: "Revoke one lease (its owner or an operator)",
      tags: ["leases"],
      auth: "workload",
      params: leaseIdParam,
      body: revokeBodySchema,
      bodyOptional: true,
      responses: { 200: { description: "The lease, revoking or already ended", schema: leaseEnvelopeSchema } },
      errors: ["not_found", "invalid_request", "rate_limited", "lease_unreadable"],
    },
  listLeases: {
      method: "get",
      path: "/v1/admin/leases",
      operationId: "listLeases",
      summary: "List leases (operators), newest first",
      tags: ["operators"],
      auth: "workload",
      query: leaseListQuery,
      responses: { 200: { description: "One page; follow next_cursor", schema: leasePageSchema } },
      errors: ["invalid_request", "policy_denied"],
    },
  startRevocation: {
      method: "post",
      path: "/v1/admin/revocations",
      operationId: "startRevocation",
      summary: "Revoke every live lease of a lease id, task, workload, role or issuer (operators)",
      description: "The body names exactly one of lease_id, task_id, workload, role, issuer, and a reason.",
      tags: ["operators"],
      auth: "workload",
      body: revocationRequestSchema,
      responses: {
        202: {
          description: "Started; follow it at the Location",
          schema: revocationStartedSchema,
          headers: { Location: { description: "/v1/admin/revocations/{id}", schema: z.string() } },
        },
      },
      errors: ["invalid_request", "unsupported_media_type", "policy_denied", "rate_limited"],
    },
  getRevocation: {
      method: "get",
      path: "/v1/admin/revocations/:id",
      operationId: "getRevocation",
      summary: "Progress of a bulk revocation (operators)",
      tags: ["operators"],
      auth: "workload",
      params: { id: { schema: z.string().describe("op_…"), description: "Revocation id" } },
      responses: { 200: { description: "Progress", schema: revocationProgressSchema } },
      errors: ["not_found", "policy_denied"],
    },
  leaseHistory: {
      method: "get",
      path: "/v1/admin/leases/:id/history",
      operationId: "leaseHistory",
      summary: "Who requested a lease, with which identity, under which policy, and how it ended (operators)",
      tags: ["operators"],
      auth: "workload",
      params: leaseIdParam,
      responses: { 200: { description: "The four questions of I8, and the lease's audit events", schema: leaseHistorySchema } },
      errors: ["not_found", "policy_denied", "lease_unreadable"],
    },
});
