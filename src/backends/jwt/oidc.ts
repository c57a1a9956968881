/**
 * `GET /.well-known/openid-configuration`: metadata about broker-issued JWTs, in the shape of
 * OpenID Connect Discovery 1.0 / RFC 8414 (so off-the-shelf JWT validators can find the keys).
 *
 * The broker is not an OpenID Provider or an OAuth authorization server: it has no authorization
 * endpoint, no token endpoint and issues no ID tokens. Only members that are true for it are
 * listed, and members whose *omission* would imply something false are listed explicitly:
 *
 * - `issuer`: `server.public_url`, exactly the `iss` of every broker-issued token.
 * - `jwks_uri`: the public keys (current and previous) that sign them.
 * - `introspection_endpoint`: RFC 7662 introspection; `active` is false once the lease is revoked.
 *   Callers authenticate with `Authorization: Bearer <workload JWT>` like every other API call;
 *   that is not a registered client authentication method, so
 *   `introspection_endpoint_auth_methods_supported` is omitted ("determined by other means").
 * - `response_types_supported: []`: required by OIDC Discovery; empty because there is no
 *   authorization endpoint.
 * - `grant_types_supported: []`: no OAuth grant is supported (credentials come from
 *   `POST /v1/credentials`); omitting it would imply the RFC 8414 default
 *   `["authorization_code", "implicit"]`.
 * - `subject_types_supported: ["public"]`: required by OIDC Discovery; `sub` is the workload id,
 *   the same for every audience.
 * - `id_token_signing_alg_values_supported: ["ES256"]`: required by OIDC Discovery; no ID tokens
 *   are issued, and ES256 is the only algorithm of any broker-issued JWT, which is what generic
 *   validators read this member for.
 * - `claims_supported`: the claims broker-issued tokens carry (`scope` only when the role sets one).
 *
 * Deliberately absent: `authorization_endpoint`, `token_endpoint` and
 * `token_endpoint_auth_methods_supported` (no such endpoint), `revocation_endpoint` (revocation is
 * `DELETE /v1/leases/{id}`, not RFC 7009), `userinfo_endpoint`, `scopes_supported` (scopes are
 * per role and the role list is not published here).
 */
import { SIGNING_ALG } from "./backend";

export const BROKER_TOKEN_CLAIMS = ["iss", "sub", "aud", "scope", "jti", "task_id", "iat", "nbf", "exp"] as const;

export interface OpenIdConfiguration {
  issuer: string;
  jwks_uri: string;
  introspection_endpoint: string;
  response_types_supported: string[];
  grant_types_supported: string[];
  subject_types_supported: string[];
  id_token_signing_alg_values_supported: string[];
  claims_supported: string[];
}

/** The discovery document for `issuer` (= `server.public_url`); URLs are built under it. */
export function openidConfiguration(issuer: string): OpenIdConfiguration {
  const base = issuer.replace(/\/+$/, "");
  return {
    issuer,
    jwks_uri: `${base}/.well-known/jwks.json`,
    introspection_endpoint: `${base}/v1/introspect`,
    response_types_supported: [],
    grant_types_supported: [],
    subject_types_supported: ["public"],
    id_token_signing_alg_values_supported: [SIGNING_ALG],
    claims_supported: [...BROKER_TOKEN_CLAIMS],
  };
}
