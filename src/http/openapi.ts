/**
 * The OpenAPI 3.1 description of the REST API, served at `GET /openapi.json`.
 *
 * It is generated, not written: request bodies and query strings are the very zod schemas the
 * handlers validate with (src/leases/routes.ts), and responses are zod schemas below that the
 * tests check real responses against (test/openapi). JSON Schema comes from zod 4's
 * `z.toJSONSchema` (draft 2020-12, the dialect of OpenAPI 3.1).
 *
 * Feature modules contribute routes as `ApiRoute` entries (and named schemas with
 * `apiComponent`); the composition root passes all of them to `buildOpenApiDocument`. A test
 * walks the express router and fails on any route without an entry here, and the reverse.
 */
import { z } from "zod";
import { ERROR_STATUS, ERROR_TITLES, type ErrorCode } from "../core/errors";
import { approvalDecisionSchema, approvalListQuery } from "../approvals/routes";
import { credentialRequestSchema, leaseListQuery, revocationRequestSchema, revokeBodySchema, TASK_ID } from "../leases/routes";
import { PROBLEM_TYPE_BASE } from "./problem";
import { APPROVAL_STATES } from "../approvals/store";
import { LEASE_STATES, type RevocationTrigger } from "../leases/types";
import { oauthApiRoutes } from "../oauth/openapi";

export type HttpMethod = "get" | "post" | "put" | "patch" | "delete";

export interface ApiResponse {
  description: string;
  /** Body schema (omit for no body). Named with `apiComponent`, or named after the operation. */
  schema?: z.ZodType;
  /** Default application/json. */
  contentType?: string;
  headers?: Record<string, { description: string; schema: z.ZodType }>;
}

export interface ApiRoute {
  method: HttpMethod;
  /** Express syntax: `/v1/leases/:id`. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  /** "workload": `Authorization: Bearer <workload JWT>` (default for /v1); "none": public. */
  auth: "workload" | "none";
  params?: Record<string, { schema: z.ZodType; description: string }>;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** The body may be omitted (DELETE with an optional reason). */
  bodyOptional?: boolean;
  /** Media types the body may come in (default application/json). */
  bodyMediaTypes?: string[];
  responses: Record<number, ApiResponse>;
  /** Problem codes this operation answers besides the ones every authenticated call may. */
  errors?: ErrorCode[];
}

/** Problems any authenticated call can answer. */
const AUTH_ERRORS: ErrorCode[] = ["invalid_token", "token_expired", "unknown_workload", "issuer_unavailable", "store_unavailable", "internal"];
const PUBLIC_ERRORS: ErrorCode[] = ["internal"];

// --- named schemas ------------------------------------------------------------------------------

const components = new Map<z.ZodType, { name: string; io: "input" | "output" }>();

/** Names a schema in `components.schemas` (output: responses; input: request bodies). */
export function apiComponent<T extends z.ZodType>(name: string, schema: T, io: "input" | "output" = "output"): T {
  for (const [s, c] of components) if (c.name === name && s !== schema) throw new Error(`OpenAPI component ${name} is defined twice`);
  components.set(schema, { name, io });
  return schema;
}

const time = z.iso.datetime().describe("RFC 3339, UTC");
const text = z.string();

const REVOCATION_TRIGGERS = ["expiry", "task_completed", "owner", "operator", "policy_change", "issue_failed", "parent_revoked"] as const satisfies readonly RevocationTrigger[];

export const problemSchema = apiComponent(
  "Problem",
  z
    .looseObject({
      type: z.string().describe(`${PROBLEM_TYPE_BASE}<code>`),
      title: text,
      status: z.number().int(),
      detail: text.describe("What went wrong, safe to show; never contains secret material"),
      code: z.enum(Object.keys(ERROR_STATUS) as [ErrorCode, ...ErrorCode[]]).describe("Stable machine-readable code (docs/ARCHITECTURE.md, Errors)"),
      instance: text.optional(),
      request_id: text.optional().describe("Also in the X-Request-Id header; quote it when reporting a problem"),
      errors: z.array(z.strictObject({ field: text, message: text })).optional().describe("invalid_request: one entry per invalid field"),
    })
    .describe("RFC 9457 problem details; extension members may follow"),
);

const taskContext = z.strictObject({ id: text, intent: text, tool: text, destination: text, sensitivity: text }).describe("The task a credential is for; absent context fields are empty strings");

export const leaseSchema = apiComponent(
  "Lease",
  z.strictObject({
    id: text.describe("l_…"),
    role: text,
    backend: z.enum(["jwt", "vault", "aws_sts"]),
    workload: text,
    task_id: text,
    state: z.enum(LEASE_STATES),
    issued_at: time,
    expires_at: time,
    backend_expires_at: time.optional().describe("When the backend credential itself expires, if later than the lease (AWS STS: 900 s minimum)"),
    revoked_at: time.optional(),
    revocation: z
      .strictObject({ trigger: z.enum(REVOCATION_TRIGGERS), by: text.optional(), reason: text.optional(), at: time.optional() })
      .optional()
      .describe("What ended (or is ending) the lease, who, why, when it was triggered"),
    revocation_kind: z.enum(["revocable", "deny_by_session", "expiry_only"]),
    identity: z.strictObject({ kind: z.enum(["oidc", "spiffe"]), issuer: text, subject: text }).describe("I8: the identity the workload presented"),
    policy: z.strictObject({ ids: z.array(text), hash: text }).describe("I8: the policies that allowed it and the policy-set hash"),
    task: taskContext,
    ttl_seconds: z.number().int(),
    approval: z.strictObject({ request_id: text, approved_by: text }).optional().describe("Set when an operator approved the request"),
    parent_lease_id: text.optional().describe("Delegation (RFC 8693): the lease this one was exchanged from; revoking it revokes this one (trigger parent_revoked)"),
    on_behalf_of: z.strictObject({ issuer: text, subject: text }).optional().describe("The person the chain acts for: the users issuer (config name) and the subject of their ID token"),
    last_error: text.optional().describe("The last revocation error (revoke_failed)"),
    revoke_attempts: z.number().int().optional(),
  }),
);

export const credentialSchema = apiComponent(
  "Credential",
  z
    .discriminatedUnion("type", [
      apiComponent("JwtCredential", z.strictObject({ type: z.literal("jwt"), token: text.describe("ES256 JWT signed by the broker"), expires_at: time })),
      apiComponent(
        "VaultCredential",
        z.strictObject({
          type: z.literal("vault"),
          data: z.record(z.string(), z.unknown()).describe("Dynamic secrets: the secret's fields; token roles: {token, accessor, policies}"),
          lease_id: text.optional().describe("The Vault lease of a dynamic secret (absent for child tokens)"),
          lease_duration: z.number().int(),
        }),
      ),
      apiComponent(
        "AwsCredential",
        z.strictObject({ type: z.literal("aws"), access_key_id: text, secret_access_key: text, session_token: text, expiration: time, assumed_role_arn: text.optional() }),
      ),
    ])
    .describe("Shown once; the broker keeps no copy"),
);

export const credentialGrantSchema = apiComponent("CredentialGrant", z.strictObject({ lease: leaseSchema, credential: credentialSchema }));

const identitySchema = z.strictObject({ kind: z.enum(["oidc", "spiffe"]), issuer: text, subject: text });
const policySchema = z.strictObject({ ids: z.array(text), hash: text });


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
export const collectedGrantSchema = apiComponent("CollectedCredential", z.strictObject({ lease: leaseSchema, credential: credentialSchema, request: approvalRequestSchema }));
export const approvalPageSchema = apiComponent("ApprovalRequestPage", z.strictObject({ requests: z.array(approvalRequestSchema), next_cursor: text.nullable() }));

export const leaseEnvelopeSchema = apiComponent("LeaseEnvelope", z.strictObject({ lease: leaseSchema }));
export const taskCompletionSchema = apiComponent("TaskCompletion", z.strictObject({ task_id: text, revoked: z.number().int().describe("Leases whose revocation this call triggered") }));

export const whoamiSchema = apiComponent(
  "WhoAmI",
  z.strictObject({
    workload: z.strictObject({ id: text, kind: text, owner: text, purpose: text }),
    identity: z.strictObject({
      kind: z.enum(["oidc", "spiffe"]),
      issuer: text.describe("The configured issuer's name"),
      iss: text.nullable(),
      subject: text,
      matched_claims: z.record(z.string(), z.unknown()).describe("Only the claims the inventory matched on"),
      expires_at: time,
    }),
  }),
);

export const introspectionSchema = apiComponent(
  "Introspection",
  z
    .union([
      z.strictObject({ active: z.literal(false) }),
      z.looseObject({ active: z.literal(true), token_type: text, iss: text, sub: text, jti: text, task_id: text, exp: z.number().int(), lease_id: text, role: text }),
    ])
    .describe("RFC 7662; inactive once the lease is revoked or expired"),
);

export const leasePageSchema = apiComponent("LeasePage", z.strictObject({ leases: z.array(leaseSchema), next_cursor: text.nullable().describe("Pass as cursor for the next page; null at the end") }));
export const revocationStartedSchema = apiComponent("RevocationStarted", z.strictObject({ id: text.describe("op_…"), matched: z.number().int().describe("Live leases the selector matched") }));
export const revocationProgressSchema = apiComponent(
  "RevocationProgress",
  z.strictObject({
    id: text,
    selector: z.record(z.string(), text),
    reason: text,
    by: text,
    created_at: time,
    matched: z.number().int(),
    triggered: z.number().int(),
    revoked: z.number().int(),
    failed: z.number().int().describe("Leases in revoke_failed; the worker keeps retrying them"),
    state: z.enum(["running", "completed", "completed_with_failures"]),
    finished_at: time.optional(),
  }),
);

export const auditEventSchema = apiComponent(
  "AuditEvent",
  z.looseObject({ type: text, at: time, actor: text.optional(), seq: text.describe("Position in the hash chain"), hash: text, prev: text }).describe("An event of the hash-chained audit ledger"),
);

export const leaseHistorySchema = apiComponent(
  "LeaseHistory",
  z.strictObject({
    lease: leaseSchema,
    requested_by: z
      .strictObject({
        workload: text,
        task: taskContext,
        chain: z.array(text).optional().describe("Delegated leases: every workload that held the chain, root first, ending with this lease's"),
        on_behalf_of: z.strictObject({ issuer: text, subject: text }).optional().describe("The person the chain acts for"),
      })
      .describe("I8: who requested it (with delegation: the whole chain, and on whose behalf)"),
    delegation: z
      .strictObject({
        parent_lease_id: text,
        depth: z.number().int(),
        ancestors: z.array(z.strictObject({ id: text, workload: text.optional(), state: text.describe("a lease state, or gone once past retention"), policy_ids: z.array(text).optional() })),
      })
      .optional()
      .describe("Delegated leases: the leases this one derives from, root first"),
    identity: z.strictObject({ kind: z.enum(["oidc", "spiffe"]), issuer: text, subject: text }).describe("I8: which identity"),
    allowed_by: z.strictObject({ ids: z.array(text), hash: text }).describe("I8: which policy"),
    ended: z
      .strictObject({ state: z.enum(LEASE_STATES), trigger: z.enum(REVOCATION_TRIGGERS), by: text.optional(), reason: text.optional(), at: time.optional(), revoked_at: time.nullable() })
      .nullable()
      .describe("I8: how, when and by whom it was revoked (null while nothing ended it)"),
    events: z.array(auditEventSchema),
  }),
);

export const policyReloadSchema = apiComponent(
  "PolicyReload",
  z.strictObject({
    policy: z.strictObject({ changed: z.boolean(), hash: text.describe("sha256 of the policy set now in force"), policies: z.number().int() }),
    inventory: z.strictObject({
      changed: z.boolean(),
      workloads: z.number().int(),
      roles: z.number().int(),
      restart_required: z.array(text).describe("Changed configuration sections that only take effect after a restart"),
    }),
    reauthorization: z
      .union([
        z.strictObject({ state: z.literal("completed"), policy_hash: text, reevaluated: z.number().int(), revoked: z.number().int(), kept: z.number().int(), skipped: z.number().int() }),
        z.strictObject({ state: z.literal("running"), policy_hash: text }),
      ])
      .describe(
        "Active leases decided again under the new policies; those no longer allowed are revoked (trigger policy_change). Still running after the broker's wait (202): the report lands in the audit ledger as a reauthorization event",
      ),
  }),
);

const openApiDocumentSchema = apiComponent("OpenApiDocument", z.looseObject({ openapi: z.string() }));
const healthSchema = apiComponent("Health", z.strictObject({ status: z.literal("ok") }));
const backendStates = z.array(z.looseObject({ name: text, state: z.enum(["ok", "degraded", "unavailable"]), detail: text.optional() }));
const readinessSchema = apiComponent(
  "Readiness",
  z
    .strictObject({
      status: z.enum(["ready", "unavailable"]),
      redis: z.enum(["ok", "unreachable"]),
      issuers: z.array(z.strictObject({ name: text, state: z.enum(["ok", "degraded", "unavailable"]), keys: z.number().int(), loaded_at: time.nullable() })),
      backends: backendStates,
    })
    .describe("Unauthenticated: states only, never an issuer's error, file path or URL (operators: GET /v1/admin/readiness)"),
);
const operatorReadinessSchema = apiComponent(
  "OperatorReadiness",
  z.strictObject({
    status: z.enum(["ready", "unavailable"]),
    redis: z
      .enum(["ok", "unreachable", "readonly", "moved", "clusterdown", "timeout", "auth", "loading", "oom", "no_primary", "durability", "other"])
      .describe("ok, or why the broker's keys are not writable from here with the configured durability (I10)"),
    redis_error: text.optional().describe("What is wrong with Redis, when redis is not ok"),
    issuers: z.array(z.strictObject({ name: text, keys: z.number().int(), loaded_at: time.nullable(), last_error: text.nullable() })),
    backends: backendStates,
    audit_sinks: z
      .array(
        z.strictObject({
          name: text,
          type: z.enum(["file", "http", "syslog"]),
          state: z.enum(["ok", "failing", "starting", "standby"]),
          position: text.nullable().describe("Last seq the sink confirmed"),
          lag_seconds: z.number().describe("Age of the oldest event the sink has not confirmed"),
          consecutive_failures: z.number().int(),
          last_error: text.optional(),
        }),
      )
      .optional()
      .describe("Delivery of audit events to each configured sink (worker processes only); a failing sink does not make the broker unready"),
  }),
);
const jwksSchema = apiComponent(
  "Jwks",
  z.strictObject({ keys: z.array(z.strictObject({ kty: z.literal("EC"), crv: z.literal("P-256"), x: text, y: text, kid: text, alg: z.literal("ES256"), use: z.literal("sig") })) }),
);
const openidConfigurationSchema = apiComponent(
  "OpenIdConfiguration",
  z.strictObject({
    issuer: text,
    jwks_uri: text,
    introspection_endpoint: text,
    response_types_supported: z.array(text),
    grant_types_supported: z.array(text),
    subject_types_supported: z.array(text),
    id_token_signing_alg_values_supported: z.array(text),
    claims_supported: z.array(text),
  }),
);

export const introspectionRequestSchema = apiComponent(
  "IntrospectionRequest",
  z.strictObject({ token: z.string().min(1).describe("A broker-issued JWT"), resource: z.string().min(1).max(2048).optional().describe("RFC 8707: inactive unless the token's audience includes it") }),
  "input",
);
apiComponent("CredentialRequest", credentialRequestSchema, "input");
apiComponent("RevocationRequest", revocationRequestSchema, "input");
apiComponent("RevokeLeaseRequest", revokeBodySchema, "input");
apiComponent("ApprovalDecision", approvalDecisionSchema, "input");

// --- the routes of the core API -----------------------------------------------------------------

const leaseIdParam = { id: { schema: z.string().describe("l_…"), description: "Lease id" } };

const requestIdParam = { id: { schema: z.string().describe("rq_…"), description: "Approval request id" } };

/** Problems issuing a credential can answer (POST /v1/credentials, and collecting an approved request). */
const ISSUE_ERRORS: ErrorCode[] = ["unknown_role", "policy_denied", "task_completed", "ttl_too_long", "rate_limited", "quota_exceeded", "backend_unavailable", "store_full"];

/** Every route of the broker's API. */
export function apiRoutes(): ApiRoute[] {
  return [
    { method: "get", path: "/healthz", operationId: "health", summary: "Liveness", tags: ["operations"], auth: "none", responses: { 200: { description: "The process is alive", schema: healthSchema } } },
    {
      method: "get",
      path: "/readyz",
      operationId: "readiness",
      summary: "Readiness: Redis reachable; issuers' and backends' status",
      tags: ["operations"],
      auth: "none",
      responses: { 200: { description: "Ready", schema: readinessSchema }, 503: { description: "Redis is unreachable: nothing is issued (fail closed)", schema: readinessSchema } },
    },
    {
      method: "get",
      path: "/metrics",
      operationId: "metrics",
      summary: "Prometheus metrics",
      tags: ["operations"],
      auth: "none",
      responses: { 200: { description: "Prometheus text exposition format", schema: z.string(), contentType: "text/plain" } },
    },
    {
      method: "get",
      path: "/openapi.json",
      operationId: "openapi",
      summary: "This document",
      tags: ["operations"],
      auth: "none",
      responses: { 200: { description: "OpenAPI 3.1", schema: openApiDocumentSchema } },
    },
    {
      method: "get",
      path: "/.well-known/jwks.json",
      operationId: "jwks",
      summary: "Public keys of broker-issued JWTs (current and previous)",
      tags: ["tokens"],
      auth: "none",
      responses: { 200: { description: "JWK set", schema: jwksSchema } },
    },
    {
      method: "get",
      path: "/.well-known/openid-configuration",
      operationId: "openidConfiguration",
      summary: "Discovery metadata of broker-issued JWTs",
      tags: ["tokens"],
      auth: "none",
      responses: { 200: { description: "OpenID Connect Discovery / RFC 8414 shape", schema: openidConfigurationSchema } },
    },
    {
      method: "post",
      path: "/v1/introspect",
      operationId: "introspect",
      summary: "RFC 7662 introspection of a broker-issued JWT",
      tags: ["tokens"],
      auth: "workload",
      body: introspectionRequestSchema,
      responses: { 200: { description: "active is false once the lease is revoked or expired", schema: introspectionSchema } },
      errors: ["invalid_request", "unsupported_media_type", "payload_too_large"],
    },
    {
      method: "get",
      path: "/v1/whoami",
      operationId: "whoami",
      summary: "The workload the token maps to, and the identity it was read from",
      tags: ["identity"],
      auth: "workload",
      responses: { 200: { description: "The workload and identity", schema: whoamiSchema } },
    },
    {
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
    {
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
    {
      method: "get",
      path: "/v1/leases/:id",
      operationId: "getLease",
      summary: "One lease (its owner or an operator)",
      tags: ["leases"],
      auth: "workload",
      params: leaseIdParam,
      responses: { 200: { description: "The lease", schema: leaseEnvelopeSchema } },
      errors: ["not_found"],
    },
    {
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
      errors: ["not_found", "invalid_request", "rate_limited"],
    },
    {
      method: "get",
      path: "/v1/admin/readiness",
      operationId: "operatorReadiness",
      summary: "Readiness with each issuer's last key-set error (operators)",
      tags: ["operators"],
      auth: "workload",
      responses: { 200: { description: "The same checks as /readyz, with details", schema: operatorReadinessSchema } },
      errors: ["policy_denied"],
    },
    {
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
    {
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
    {
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
    {
      method: "get",
      path: "/v1/admin/leases/:id/history",
      operationId: "leaseHistory",
      summary: "Who requested a lease, with which identity, under which policy, and how it ended (operators)",
      tags: ["operators"],
      auth: "workload",
      params: leaseIdParam,
      responses: { 200: { description: "The four questions of I8, and the lease's audit events", schema: leaseHistorySchema } },
      errors: ["not_found", "policy_denied"],
    },
    {
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
    {
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
    {
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
    {
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
    {
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
    {
      method: "post",
      path: "/v1/admin/policy/reload",
      operationId: "reloadPolicy",
      summary: "Reload policies and inventory now, and re-authorize active leases (operators allowed admin_revoke)",
      description: "A policy set or configuration that does not load is refused (422 policy_invalid, with every problem) and the running one stays in force.",
      tags: ["operators"],
      auth: "workload",
      responses: {
        200: { description: "What changed, and what the re-authorization did", schema: policyReloadSchema },
        202: { description: "What changed; the re-authorization of active leases is still running", schema: policyReloadSchema },
      },
      errors: ["policy_denied", "policy_invalid", "rate_limited"],
    },
    ...oauthApiRoutes(),
  ];
}

// --- the document -------------------------------------------------------------------------------

type JsonSchema = Record<string, unknown>;

/** `/v1/leases/:id` → `/v1/leases/{id}` */
export function openApiPath(expressPath: string): string {
  return expressPath.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

function strip(schema: JsonSchema): JsonSchema {
  const { $schema: _s, $id: _i, ...rest } = schema;
  return rest;
}

function inline(schema: z.ZodType, io: "input" | "output"): JsonSchema {
  return strip(z.toJSONSchema(schema, { target: "draft-2020-12", io, unrepresentable: "any" }) as JsonSchema);
}

export interface OpenApiOptions {
  version?: string;
  /** `server.public_url`. */
  serverUrl?: string;
}

export function buildOpenApiDocument(routes: ApiRoute[], opts: OpenApiOptions = {}): Record<string, unknown> {
  const inputs = z.registry<{ id: string }>();
  const outputs = z.registry<{ id: string }>();
  const names = new Map<z.ZodType, string>();
  const used = new Set<string>();
  const register = (schema: z.ZodType, fallback: string, io: "input" | "output"): string => {
    const known = components.get(schema);
    const name = known?.name ?? names.get(schema) ?? fallback;
    if (!names.has(schema)) {
      if (used.has(name)) throw new Error(`OpenAPI component name ${name} is used by two schemas`);
      used.add(name);
      names.set(schema, name);
      (io === "input" ? inputs : outputs).add(schema, { id: name });
    }
    return name;
  };
  // Every named component is documented, used by a route or not (feature modules may name more).
  for (const [schema, c] of components) register(schema, c.name, c.io);

  const paths: Record<string, Record<string, unknown>> = {};
  const operationIds = new Set<string>();
  for (const r of routes) {
    if (operationIds.has(r.operationId)) throw new Error(`operationId ${r.operationId} is used twice`);
    operationIds.add(r.operationId);
    const p = openApiPath(r.path);
    const parameters: Record<string, unknown>[] = [];
    for (const name of [...r.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]!)) {
      const param = r.params?.[name];
      parameters.push({ name, in: "path", required: true, description: param?.description ?? name, schema: param ? inline(param.schema, "input") : { type: "string" } });
    }
    if (r.query) {
      const q = inline(r.query, "input") as { properties?: Record<string, JsonSchema>; required?: string[] };
      for (const [name, schema] of Object.entries(q.properties ?? {})) {
        const { description, ...s } = schema;
        parameters.push({ name, in: "query", required: (q.required ?? []).includes(name) && !("default" in s), ...(description ? { description } : {}), schema: s });
      }
    }
    const responses: Record<string, unknown> = {};
    for (const [status, res] of Object.entries(r.responses)) {
      responses[status] = {
        description: res.description,
        ...(res.headers ? { headers: Object.fromEntries(Object.entries(res.headers).map(([h, d]) => [h, { description: d.description, schema: inline(d.schema, "output") }])) } : {}),
        ...(res.schema
          ? {
              content: {
                [res.contentType ?? "application/json"]: {
                  schema: res.contentType && res.contentType !== "application/json" ? inline(res.schema, "output") : ref(register(res.schema, `${r.operationId}Response${status}`, "output")),
                },
              },
            }
          : {}),
      };
    }
    const byStatus = new Map<number, ErrorCode[]>();
    for (const code of [...new Set([...(r.auth === "workload" ? AUTH_ERRORS : PUBLIC_ERRORS), ...(r.errors ?? [])])]) {
      const st = ERROR_STATUS[code];
      byStatus.set(st, [...(byStatus.get(st) ?? []), code]);
    }
    for (const [st, codes] of [...byStatus].sort(([a], [b]) => a - b)) {
      if (responses[st]) continue;
      responses[st] = {
        description: codes.map((c) => `\`${c}\` (${ERROR_TITLES[c]})`).join(", "),
        content: { "application/problem+json": { schema: ref("Problem") } },
      };
    }
    paths[p] ??= {};
    paths[p][r.method] = {
      operationId: r.operationId,
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      tags: r.tags,
      ...(r.auth === "none" ? { security: [] } : {}),
      ...(parameters.length ? { parameters } : {}),
      ...(r.body
        ? {
            requestBody: {
              required: !r.bodyOptional,
              content: Object.fromEntries((r.bodyMediaTypes ?? ["application/json"]).map((t) => [t, { schema: ref(register(r.body!, `${r.operationId}Request`, "input")) }])),
            },
          }
        : {}),
      responses,
    };
  }

  const schemas: Record<string, JsonSchema> = {};
  const uri = (id: string) => `#/components/schemas/${id}`;
  for (const [registry, io] of [
    [outputs, "output"],
    [inputs, "input"],
  ] as const) {
    const out = z.toJSONSchema(registry, { target: "draft-2020-12", io, uri, unrepresentable: "any" }) as { schemas: Record<string, JsonSchema> };
    for (const [name, s] of Object.entries(out.schemas)) schemas[name] = strip(s);
  }

  return {
    openapi: "3.1.0",
    info: {
      title: "jitbroker",
      version: opts.version ?? "0.1.0",
      summary: "Just-in-time ephemeral credentials for workloads",
      description:
        "A workload proves who it is with a JWT (OIDC or SPIFFE JWT-SVID), names a task and a role, and gets a short-lived credential scoped to that task. Every credential is a lease, revoked when its task completes, when it expires, or when its owner or an operator says so. Errors are RFC 9457 problem documents with a stable `code`.",
      license: { name: "Apache-2.0", identifier: "Apache-2.0" },
    },
    ...(opts.serverUrl ? { servers: [{ url: opts.serverUrl }] } : {}),
    security: [{ workloadToken: [] }],
    tags: [
      { name: "credentials", description: "Agents and CI jobs: credentials for tasks" },
      { name: "leases", description: "One lease, by its owner or an operator" },
      { name: "operators", description: "Human workloads allowed by policy: listing, bulk revocation, history" },
      { name: "approvals", description: "Credential requests that need an operator's approval" },
      { name: "identity", description: "Who the caller is" },
      { name: "tokens", description: "Verifying broker-issued JWTs" },
      { name: "operations", description: "Health, readiness, metrics, this document" },
    ],
    paths,
    components: {
      securitySchemes: {
        workloadToken: { type: "http", scheme: "bearer", bearerFormat: "JWT", description: "The workload's OIDC token or SPIFFE JWT-SVID, audience = server.audience" },
      },
      schemas,
    },
  };
}
