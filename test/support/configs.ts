/** The smallest valid configuration: one OIDC issuer, everything else defaulted. */
export const MINIMAL_CONFIG = `
server:
  public_url: "https://broker.example.com"
identity:
  issuers:
    - name: ci
      type: oidc
      issuer: "https://ci.example.com"
      jwks_uri: "https://ci.example.com/jwks"
`;
