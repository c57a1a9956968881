/**
 * The lease routes' schemas: request bodies and queries the handlers (./routes.ts) validate
 * with, and the responses the tests check real answers against (test/openapi). The routes
 * themselves are in ./api.ts.
 */
import { z } from "zod";
import type { ErrorCode } from "../core/errors";
import { apiComponent, text, time } from "../http/api";
import { freeText } from "../http/text";
import { LEASE_STATES, type RevocationTrigger } from "./types";

export const TASK_ID = /^[A-Za-z0-9._:@-]{1,128}$/;
export const taskId = z.string().regex(TASK_ID, "must be 1-128 characters of [A-Za-z0-9._:@-]");
const freeText256 = freeText(256);

export const credentialRequestSchema = z.strictObject({
  role: z.string().min(1).max(128),
  task: z.strictObject({ id: taskId, intent: freeText256.optional(), tool: freeText256.optional(), destination: freeText256.optional(), sensitivity: freeText256.optional() }),
  ttl: z
    .union([z.string().max(16), z.number().int().min(2, "must be at least 2 seconds").max(7 * 24 * 3600)])
    .optional()
    .describe('a duration such as "5m", or seconds'),
  scope: z
    .record(z.string(), z.unknown())
    .optional()
    .describe("backend-specific narrowing of the role's access (aws_sts: an IAM policy document within the role's session policy)"),
});

const leaseState = z.enum(LEASE_STATES);
export const leaseListQuery = z.strictObject({
  workload: z.string().max(128).optional(),
  task_id: taskId.optional(),
  role: z.string().max(128).optional(),
  issuer: z.string().max(64).optional(),
  state: leaseState.optional(),
  parent: z.string().regex(/^l_[A-Za-z0-9_-]{10,40}$/, "must be a lease id").optional().describe("leases delegated from this lease (RFC 8693)"),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().max(512).optional(),
});

export const revocationRequestSchema = z
  .strictObject({
    lease_id: z.string().max(64).optional(),
    task_id: taskId.optional(),
    workload: z.string().max(128).optional(),
    role: z.string().max(128).optional(),
    issuer: z.string().max(64).optional(),
    reason: freeText(500, 1),
  })
  .refine((b) => [b.lease_id, b.task_id, b.workload, b.role, b.issuer].filter((v) => v !== undefined).length === 1, {
    message: "give exactly one of lease_id, task_id, workload, role, issuer",
  });

export const revokeBodySchema = z.strictObject({ reason: freeText(500, 1).optional() });

const REVOCATION_TRIGGERS = ["expiry", "task_completed", "owner", "operator", "policy_change", "issue_failed", "parent_revoked"] as const satisfies readonly RevocationTrigger[];

export const taskContext = z.strictObject({ id: text, intent: text, tool: text, destination: text, sensitivity: text }).describe("The task a credential is for; absent context fields are empty strings");

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

export const identitySchema = z.strictObject({ kind: z.enum(["oidc", "spiffe"]), issuer: text, subject: text });
export const policySchema = z.strictObject({ ids: z.array(text), hash: text });


export const leaseEnvelopeSchema = apiComponent("LeaseEnvelope", z.strictObject({ lease: leaseSchema }));
export const taskCompletionSchema = apiComponent("TaskCompletion", z.strictObject({ task_id: text, revoked: z.number().int().describe("Leases whose revocation this call triggered") }));

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
        ancestors: z.array(
          z.strictObject({
            id: text,
            workload: text.optional(),
            state: text.describe("a lease state, gone once past retention, or unreadable when its record in Redis is malformed"),
            policy_ids: z.array(text).optional(),
            unreadable_field: text.optional().describe("with state unreadable: the stored field that is missing or malformed (never its value)"),
          }),
        ),
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
    evidence: z
      .strictObject({
        events_trimmed: z.number().int().describe("events of this lease retention removed from Redis (every sink had them)"),
        trimmed_through: text.optional().describe("seq of the newest event retention removed (the trim anchor)"),
        events_missing: z.number().int().optional().describe("events the lease's index names that are gone from Redis without retention (run audit verify)"),
        sinks: z.array(text).describe("the audit sinks that received them"),
        note: text,
      })
      .optional()
      .describe("Present when some of the lease's events are no longer in Redis: where the evidence went"),
  }),
);

apiComponent("CredentialRequest", credentialRequestSchema, "input");
apiComponent("RevocationRequest", revocationRequestSchema, "input");
apiComponent("RevokeLeaseRequest", revokeBodySchema, "input");

/** Problems issuing a credential can answer (POST /v1/credentials, and collecting an approved request). */
export const ISSUE_ERRORS: ErrorCode[] = ["unknown_role", "policy_denied", "task_completed", "ttl_too_long", "rate_limited", "quota_exceeded", "backend_unavailable", "store_full", "audit_backlog_full"];
