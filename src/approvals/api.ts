/**
 * The approval routes' specs: request schemas the handlers (./routes.ts) validate with and
 * response schemas the tests check real answers against (test/openapi).
 */
import { z } from "zod";
import { apiComponent, defineRoutes, text } from "../http/api";
import { freeText } from "../http/text";
import { APPROVAL_STATES, approvalRequestSchema, pendingRequestSchema } from "../leases/approval-request";
import { credentialSchema, ISSUE_ERRORS, leaseSchema } from "../leases/schemas";

export { approvalRequestSchema, pendingRequestSchema };

export const approvalListQuery = z.strictObject({
  state: z.enum(APPROVAL_STATES).optional(),
  workload: z.string().max(128).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().max(128).optional(),
});

export const approvalDecisionSchema = z.strictObject({ reason: freeText(500, 1).optional() });

export const collectedGrantSchema = apiComponent("CollectedCredential", z.strictObject({ lease: leaseSchema, credential: credentialSchema, request: approvalRequestSchema }));
export const approvalPageSchema = apiComponent("ApprovalRequestPage", z.strictObject({ requests: z.array(approvalRequestSchema), next_cursor: text.nullable() }));

apiComponent("ApprovalDecision", approvalDecisionSchema, "input");

const requestIdParam = { id: { schema: z.string().describe("rq_…"), description: "Approval request id" } };

export const APPROVALS_API = defineRoutes({
  collectRequest: {
      method: "get",
      path: "/v1/requests/:id",
      operationId: "collectRequest",
      summary: "The requester sees its approval request, or collects the credential once approved",
      description: "Collecting mints the credential (its TTL starts then) and works once; afterwards the request is collected.",
      tags: ["approvals"],
      auth: "workload",
      params: requestIdParam,
      responses: {
        200: { description: "Not collectable: pending_approval, denied, expired or collected", schema: pendingRequestSchema },
        201: { description: "Approved and collected now: the lease and the credential (shown once)", schema: collectedGrantSchema },
      },
      errors: ["not_found", "request_not_pending", ...ISSUE_ERRORS],
    },
  listApprovalRequests: {
      method: "get",
      path: "/v1/admin/requests",
      operationId: "listApprovalRequests",
      summary: "List approval requests (operators), newest first",
      tags: ["approvals", "operators"],
      auth: "workload",
      query: approvalListQuery,
      responses: { 200: { description: "One page; follow next_cursor", schema: approvalPageSchema } },
      errors: ["invalid_request", "policy_denied"],
    },
  getApprovalRequest: {
      method: "get",
      path: "/v1/admin/requests/:id",
      operationId: "getApprovalRequest",
      summary: "One approval request (operators)",
      tags: ["approvals", "operators"],
      auth: "workload",
      params: requestIdParam,
      responses: { 200: { description: "The request", schema: pendingRequestSchema } },
      errors: ["not_found", "policy_denied"],
    },
  approveRequest: {
      method: "post",
      path: "/v1/admin/requests/:id/approve",
      operationId: "approveRequest",
      summary: "Approve a pending request (an operator the policy allows to approve; never the requester)",
      tags: ["approvals", "operators"],
      auth: "workload",
      params: requestIdParam,
      body: approvalDecisionSchema,
      bodyOptional: true,
      responses: { 200: { description: "The request, approved", schema: pendingRequestSchema } },
      errors: ["invalid_request", "not_found", "policy_denied", "request_not_pending", "rate_limited"],
    },
  denyRequest: {
      method: "post",
      path: "/v1/admin/requests/:id/deny",
      operationId: "denyRequest",
      summary: "Deny a pending request (operators)",
      tags: ["approvals", "operators"],
      auth: "workload",
      params: requestIdParam,
      body: approvalDecisionSchema,
      bodyOptional: true,
      responses: { 200: { description: "The request, denied", schema: pendingRequestSchema } },
      errors: ["invalid_request", "not_found", "policy_denied", "request_not_pending", "rate_limited"],
    },
});
