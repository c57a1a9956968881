import { DEV_OIDC_ISSUER, DEV_TRUST_DOMAIN } from "./issuer";

/** The demo configuration `jitbroker dev` writes to `<dev dir>/dev.yaml` on first start. */
export function devConfigYaml(): string {
  return `# jitbroker dev configuration, written by \`jitbroker dev\` on first start.
# Edit it freely; \`jitbroker dev --reset\` writes it anew. Relative paths are relative to this file.
server:
  listen: "127.0.0.1:8080"
  public_url: "http://127.0.0.1:8080"
  audience: "jitbroker"
redis:
  url: "embedded"          # a local redis-server, data under ./redis (AOF on)
  prefix: "jit"
  data_dir: "redis"
identity:
  issuers:
    - name: dev-oidc                  # stands in for GitHub Actions, GitLab, Kubernetes...
      type: oidc
      issuer: "${DEV_OIDC_ISSUER}"
      jwks_file: "dev-jwks.json"
      algorithms: ["ES256"]
      max_token_lifetime: "1h"
    - name: dev-mesh                  # stands in for SPIRE
      type: spiffe
      trust_domain: "${DEV_TRUST_DOMAIN}"
      bundle_file: "dev-bundle.json"
      algorithms: ["ES256"]
workloads:
  - id: payments-deployer
    kind: ci
    owner: "platform-team@example.com"
    purpose: "Deploys the payments service from main"
    issuer: dev-oidc
    subject: "repo:acme/payments:ref:refs/heads/main"
    claims: { repository_id: "912345", repository_owner_id: "4242", ref: ["refs/heads/main"] }
  - id: support-agent
    kind: agent
    owner: "alice@example.com"
    purpose: "Answers support tickets"
    issuer: dev-mesh
    subject: "spiffe://${DEV_TRUST_DOMAIN}/agents/support"
  - id: billing-api
    kind: service
    owner: "billing-team@example.com"
    purpose: "Billing API reading orders"
    issuer: dev-oidc
    subject: "system:serviceaccount:billing:api"
  - id: alice
    kind: human
    owner: "alice@example.com"
    purpose: "On-call operator"
    issuer: dev-oidc
    subject: "alice@example.com"
    claims: { email_verified: true }
  - id: bob
    kind: human
    owner: "bob@example.com"
    purpose: "On-call operator (approves requests of alice's agents)"
    issuer: dev-oidc
    subject: "bob@example.com"
    claims: { email_verified: true }
roles:
  - name: orders-read
    backend: jwt
    ttl: { default: "5m", max: "15m" }
    labels: { sensitivity: "internal", access: "read" }
    jwt: { audience: "https://orders.internal", scope: "orders:read" }
  - name: orders-write
    backend: jwt
    ttl: { default: "2m", max: "5m" }
    labels: { sensitivity: "restricted", access: "write" }
    jwt: { audience: "https://orders.internal", scope: "orders:write" }
backends:
  jwt: { signing_key_file: "signing-key.json" }
policy:
  files: ["policies/*.cedar"]
console:                             # the operators' console at http://127.0.0.1:8080/console/
  oidc: { issuer: dev-oidc, client_id: "jitbroker-console" }   # the dev issuer signs people in
  session_idle: "30m"
  session_max: "8h"
audit:
  key_file: "audit.key"
dev:
  issuer_key_file: "dev-issuer-keys.json"
`;
}
