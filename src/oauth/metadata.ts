/**
 * `GET /.well-known/oauth-authorization-server` (RFC 8414): what an MCP client or a resource
 * server needs to find the broker's token exchange, introspection and keys.
 *
 * - `issuer`: `server.public_url`, the `iss` of every broker-issued token.
 * - `token_endpoint`: RFC 8693 token exchange only (`grant_types_supported`).
 * - `token_endpoint_auth_methods_supported: ["none"]`: there is no OAuth client authentication;
 *   the caller proves who it is with `actor_token` (its workload JWT). Omitting the member would
 *   imply the RFC 8414 default `client_secret_basic`, which is false.
 * - `introspection_endpoint`: RFC 7662, for any authenticated workload (Bearer workload JWT).
 * - `response_types_supported: []`: required by RFC 8414; there is no authorization endpoint.
 * - Also listed: the token types accepted and issued by the exchange, and that `resource`
 *   (RFC 8707) binds a token to one audience.
 */
import { SIGNING_ALG } from "../backends/jwt/backend";
import { GRANT_TYPE, TOKEN_TYPES } from "./exchange";

export function authorizationServerMetadata(issuer: string) {
  const base = issuer.replace(/\/+$/, "");
  return {
    issuer,
    token_endpoint: `${base}/v1/oauth/token`,
    jwks_uri: `${base}/.well-known/jwks.json`,
    introspection_endpoint: `${base}/v1/introspect`,
    grant_types_supported: [GRANT_TYPE],
    response_types_supported: [] as string[],
    token_endpoint_auth_methods_supported: ["none"],
    // RFC 8693 token types this endpoint accepts as subject/actor tokens and issues.
    token_exchange_subject_token_types_supported: [TOKEN_TYPES.access_token, TOKEN_TYPES.jwt, TOKEN_TYPES.id_token],
    token_exchange_actor_token_types_supported: [TOKEN_TYPES.jwt],
    token_exchange_issued_token_types_supported: [TOKEN_TYPES.access_token, TOKEN_TYPES.jwt],
    resource_indicators_supported: true,
    access_token_signing_alg_values_supported: [SIGNING_ALG],
  };
}
