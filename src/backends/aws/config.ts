/**
 * The aws_sts backend's configuration (docs/ARCHITECTURE.md, How to add a config section): the
 * role section `roles[].aws_sts` and the backend section `backends.aws_sts`, with the defaults
 * of its optional fields. src/config/schema.ts composes them into the file's schema.
 */
import { z } from "zod";
import { duration, httpsUrl } from "../../core/schema";
import { sessionPolicyProblems } from "./scope";

/** Defaults of the optional `backends.aws_sts` fields, applied by createAwsStsBackendFromConfig (./backend.ts). */
export const AWS_STS_DEFAULTS = {
  max_attempts: 3,
  request_timeout: 10_000,
  revocation_policy_name: "jitbroker-revocations",
  revocation_policy_max_chars: 10_240,
  clock_skew_margin: 60_000,
};

export const awsStsRole = z.strictObject({
  role_arn: z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/(?:[\w+=,.@-]+\/)*[\w+=,.@-]{1,64}$/, "must be an IAM role ARN (arn:aws:iam::<account>:role/<path/>name)"),
  /** An IAM policy document: the ceiling of every session of this role (see src/backends/aws/scope.ts). */
  session_policy: z
    .record(z.string(), z.unknown())
    .superRefine((doc, ctx) => {
      for (const message of sessionPolicyProblems(doc)) ctx.addIssue({ code: "custom", message });
    })
    .optional(),
  external_id: z.string().regex(/^[\w+=,.@:/-]{2,1224}$/, "must be 2-1224 of letters, digits and _+=,.@:/-").optional(),
});

export const awsStsBackend = z.strictObject({
  region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, "must be an AWS region such as us-east-1"),
  endpoint: httpsUrl.optional(),
  iam_endpoint: httpsUrl.optional(),
  // Defaults: AWS_STS_DEFAULTS above.
  /** SDK attempts per STS/IAM call (throttling and 5xx are retried with backoff). */
  max_attempts: z.number().int().min(1).max(10).optional(),
  request_timeout: duration.optional(),
  /** The inline policy on each target role that denies revoked sessions. */
  revocation_policy_name: z.string().regex(/^[\w+=,.@-]{1,128}$/, "must be 1-128 of letters, digits and _+=,.@-").optional(),
  /** Characters it may use: IAM allows 10,240 for all inline policies of a role together. */
  revocation_policy_max_chars: z.number().int().min(1024).max(10240).optional(),
  /**
   * How far other brokers' and AWS's clocks may be from this one (default 60s): added before a
   * session is taken to have ended on its own, and before a revocation entry is garbage.
   */
  clock_skew_margin: duration.refine((ms) => ms <= 3600_000, "must be at most 1h").optional(),
});
