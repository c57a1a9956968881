/** `POST /v1/admin/policy/reload`: its spec and response schema (the handler: ./routes.ts). */
import { z } from "zod";
import { apiComponent, defineRoutes, text } from "../http/api";

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


export const POLICY_API = defineRoutes({
  reloadPolicy: {
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
});
