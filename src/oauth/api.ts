/**
 * Verifying broker-issued JWTs: the key set, discovery metadata and RFC 7662 introspection, their
 * specs and schemas (the token exchange's are in ./openapi.ts).
 */
import { z } from "zod";
import { apiComponent, defineRoutes, text } from "../http/api";

export const jwksSchema = apiComponent(
  "Jwks",
  z.strictObject({ keys: z.array(z.strictObject({ kty: z.literal("EC"), crv: z.literal("P-256"), x: text, y: text, kid: text, alg: z.literal("ES256"), use: z.literal("sig") })) }),
);
export const openidConfigurationSchema = apiComponent(
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

export const introspectionSchema = apiComponent(
  "Introspection",
  z
    .union([
      z.strictObject({ active: z.literal(false) }),
      z.looseObject({ active: z.literal(true), token_type: text, iss: text, sub: text, jti: text, task_id: text, exp: z.number().int(), lease_id: text, role: text }),
    ])
    .describe("RFC 7662; inactive once the lease is revoked or expired"),
);

export const introspectionRequestSchema = apiComponent(
  "IntrospectionRequest",
  z.strictObject({ token: z.string().min(1).describe("A broker-issued JWT"), resource: z.string().min(1).max(2048).optional().describe("RFC 8707: inactive unless the token's audience includes it") }),
  "input",
);

export const TOKENS_API = defineRoutes({
  jwks: {
      method: "get",
      path: "/.well-known/jwks.json",
      operationId: "jwks",
      summary: "Public keys of broker-issued JWTs (current and previous)",
      tags: ["tokens"],
      auth: "none",
      responses: { 200: { description: "JWK set", schema: jwksSchema } },
    },
  openidConfiguration: {
      method: "get",
      path: "/.well-known/openid-configuration",
      operationId: "openidConfiguration",
      summary: "Discovery metadata of broker-issued JWTs",
      tags: ["tokens"],
      auth: "none",
      responses: { 200: { description: "OpenID Connect Discovery / RFC 8414 shape", schema: openidConfigurationSchema } },
    },
  introspect: {
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
});
