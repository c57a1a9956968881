/**
 * The token exchange's routes in the OpenAPI document (src/http/openapi.ts, collected by
 * src/api.ts). Built on first use, so nothing here runs at load time.
 */
import { z } from "zod";
import { apiComponent, type ApiRoute } from "../http/api";
import { GRANT_TYPE } from "./exchange";
import { tokenRequestSchema, TOKEN_PATH } from "./routes";

let routes: ApiRoute[] | null = null;

/** One of the OAuth routes, by operationId (what ./routes.ts mounts). */
export function oauthRoute(operationId: "authorizationServerMetadata" | "tokenExchange"): ApiRoute {
  const route = oauthApiRoutes().find((r) => r.operationId === operationId);
  if (!route) throw new Error(`no OAuth route ${operationId}`);
  return route;
}

export function oauthApiRoutes(): ApiRoute[] {
  if (routes) return routes;
  const text = z.string();
  const oauthError = apiComponent(
    "OAuthError",
    z
      .strictObject({
        error: z.enum(["invalid_request", "invalid_client", "invalid_target", "invalid_scope", "unauthorized_client", "unsupported_grant_type", "temporarily_unavailable", "server_error"]),
        error_description: text.describe("What went wrong, safe to show"),
        code: text.describe("The broker's stable code (as in problem documents): invalid_request, invalid_token, token_expired, policy_denied, ttl_too_long, rate_limited, quota_exceeded..."),
      })
      .describe("RFC 6749 section 5.2 error, plus the broker's code"),
  );
  const answer = apiComponent(
    "TokenExchangeResponse",
    z.strictObject({
      access_token: text.describe("ES256 JWT signed by the broker (shown once)"),
      issued_token_type: text,
      token_type: z.literal("Bearer"),
      expires_in: z.number().int(),
      scope: text.optional(),
      lease_id: text.describe("l_… (the new lease; its parent_lease_id is the subject token's lease for a delegation)"),
    }),
  );
  const metadata = apiComponent(
    "AuthorizationServerMetadata",
    z.looseObject({
      issuer: text,
      token_endpoint: text,
      jwks_uri: text,
      introspection_endpoint: text,
      grant_types_supported: z.array(text),
      response_types_supported: z.array(text),
      token_endpoint_auth_methods_supported: z.array(text),
    }),
  );
  apiComponent("TokenExchangeRequest", tokenRequestSchema, "input");
  const err = (description: string) => ({ description, schema: oauthError });
  routes = [
    {
      method: "get",
      path: "/.well-known/oauth-authorization-server",
      operationId: "authorizationServerMetadata",
      summary: "RFC 8414 authorization server metadata",
      tags: ["tokens"],
      auth: "none",
      responses: { 200: { description: "Issuer, token, introspection and JWKS endpoints; the token-exchange grant", schema: metadata } },
    },
    {
      method: "post",
      path: TOKEN_PATH,
      operationId: "tokenExchange",
      summary: "RFC 8693 token exchange: delegation and on-behalf-of",
      description:
        `grant_type=${GRANT_TYPE}; form-encoded (application/x-www-form-urlencoded) or JSON. The caller authenticates with actor_token ` +
        "(its workload JWT); a Bearer header, if sent, must be the same workload's. Delegation: subject_token is an active broker-issued JWT; " +
        "on-behalf-of: subject_token is an ID token of a `use: users` issuer, with role and task_id. Errors are RFC 6749 JSON, not problem+json.",
      tags: ["tokens"],
      auth: "none",
      body: tokenRequestSchema,
      bodyMediaTypes: ["application/x-www-form-urlencoded", "application/json"],
      responses: {
        200: { description: "The new credential and its lease", schema: answer },
        400: err("invalid_request (a bad parameter, or a subject or actor token that is invalid, inactive or unacceptable), invalid_target, invalid_scope, unauthorized_client (policy), unsupported_grant_type"),
        401: err("invalid_client: the Bearer header is not a valid workload token"),
        413: err("invalid_request / payload_too_large"),
        415: err("invalid_request / unsupported_media_type"),
        429: err("temporarily_unavailable / rate_limited or quota_exceeded (Retry-After)"),
        500: err("server_error"),
        503: err("temporarily_unavailable: store, backend or issuer unavailable"),
      },
    },
  ];
  return routes;
}
