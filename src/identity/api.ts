/** `GET /v1/whoami`: its spec and response schema (the handler: ./routes.ts). */
import { z } from "zod";
import { apiComponent, defineRoutes, text, time } from "../http/api";

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


export const IDENTITY_API = defineRoutes({
  whoami: {
      method: "get",
      path: "/v1/whoami",
      operationId: "whoami",
      summary: "The workload the token maps to, and the identity it was read from",
      tags: ["identity"],
      auth: "workload",
      responses: { 200: { description: "The workload and identity", schema: whoamiSchema } },
    },
});
