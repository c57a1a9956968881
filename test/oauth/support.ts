/**
 * A broker set up for delegation (RFC 8693): an agent issuer, a `use: users` issuer of people's
 * ID tokens (audience = the console client id), three agents that hand work down a chain, an
 * operator, and policies that allow reading, delegating read access at most two hops down, and
 * writing orders on behalf of people in the support group.
 */
import { getJson, startTestBroker, type TestBroker } from "../support/broker";
import { policyDir, type PolicyDir } from "../support/policies";
import { startTestIssuer, type TestIssuer } from "../support/oidc-issuer";

export const EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
export const JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt";
export const AT_TYPE = "urn:ietf:params:oauth:token-type:access_token";
export const ID_TYPE = "urn:ietf:params:oauth:token-type:id_token";

export const POLICIES = `
@id("agents-read")
@max_ttl("10m")
permit (principal, action == Action::"request", resource is Role)
when { principal.kind == "agent" && resource.labels has access && resource.labels.access == "read" };

@id("agents-delegate-read")
permit (principal, action == Action::"delegate", resource is Role)
when {
  principal.kind == "agent" && context.delegation.depth <= 3 &&
  resource.labels has access && resource.labels.access == "read"
};

@id("never-to-ci")
forbid (principal, action == Action::"delegate", resource)
when { principal.kind == "ci" };

@id("support-writes-for-support-people")
permit (principal == Workload::"orchestrator", action == Action::"request", resource == Role::"orders-write")
when {
  context has on_behalf_of && context.on_behalf_of.claims has groups &&
  context.on_behalf_of.claims.groups.contains("support")
};

@id("subagent-continues-writes-for-support")
permit (principal == Workload::"subagent", action == Action::"delegate", resource == Role::"orders-write")
when {
  context.delegation.from == "orchestrator" &&
  context has on_behalf_of && context.on_behalf_of.claims has groups &&
  context.on_behalf_of.claims.groups.contains("support")
};

@id("operators")
permit (principal, action in [Action::"admin_read", Action::"admin_revoke"], resource)
when { principal.kind == "human" };
`;

export const WHO = { orchestrator: "orch-1", subagent: "sub-1", tool: "tool-1", ci: "repo:acme/app", alice: "alice" } as const;
export type Who = keyof typeof WHO;

export interface DelegationFixture {
  b: TestBroker;
  agents: TestIssuer;
  people: TestIssuer;
  /** The policy directory (p.cedar holds POLICIES). */
  policies: PolicyDir;
  token(who: Who): Promise<string>;
  /** An ID token of a person (audience: the console client id). */
  person(sub: string, claims?: Record<string, unknown>): Promise<string>;
  call(method: string, p: string, who: Who | null, body?: unknown): Promise<{ status: number; body: any; headers: Headers }>;
  /** POST /v1/oauth/token, form-encoded unless `json`. */
  exchange(params: Record<string, string | string[] | number | undefined>, opts?: { json?: boolean; bearer?: string }): Promise<{ status: number; body: any; headers: Headers }>;
  /** A direct credential for a workload. */
  credential(who: Who, role: string, task: string, extra?: Record<string, unknown>): Promise<{ lease: any; credential: any }>;
  introspect(token: string, resource?: string): Promise<any>;
  close(): Promise<void>;
}

export async function startDelegationFixture(opts: { maxDepth?: number; extra?: Record<string, unknown>; limits?: Record<string, number> } = {}): Promise<DelegationFixture> {
  const agents = await startTestIssuer();
  const people = await startTestIssuer({ audience: "jitbroker-console" });
  // Changed by tests through `policies.change` (unseen by the file watcher, test/support/policies.ts).
  const policies = policyDir({ files: { "p.cedar": POLICIES } });
  const b = await startTestBroker({
    server: { public_url: "http://127.0.0.1:8080" },
    identity: {
      issuers: [
        { name: "idp", type: "oidc", issuer: agents.url, jwks_uri: `${agents.url}/jwks`, algorithms: ["RS256", "ES256"] },
        { name: "people", type: "oidc", use: "users", audience: "jitbroker-console", issuer: people.url, jwks_uri: `${people.url}/jwks`, algorithms: ["RS256", "ES256"] },
      ],
    },
    workloads: [
      { id: "orchestrator", kind: "agent", owner: "o@example.com", purpose: "plans", issuer: "idp", subject: WHO.orchestrator, ...(opts.limits ? { limits: opts.limits } : {}) },
      { id: "subagent", kind: "agent", owner: "o@example.com", purpose: "reads orders", issuer: "idp", subject: WHO.subagent, ...(opts.limits ? { limits: opts.limits } : {}) },
      { id: "tool", kind: "agent", owner: "o@example.com", purpose: "an MCP tool", issuer: "idp", subject: WHO.tool },
      { id: "ci", kind: "ci", owner: "ci@example.com", purpose: "deploys", issuer: "idp", subject: WHO.ci },
      { id: "alice", kind: "human", owner: "alice@example.com", purpose: "on-call", issuer: "idp", subject: WHO.alice },
    ],
    roles: [
      {
        name: "orders-read",
        backend: "jwt",
        ttl: { default: "5m", max: "15m" },
        labels: { access: "read" },
        jwt: { audience: ["https://orders.internal", "https://mcp.orders.internal"], scope: "orders:read orders:list" },
      },
      { name: "orders-write", backend: "jwt", ttl: { default: "2m", max: "5m" }, labels: { access: "write" }, jwt: { audience: "https://orders.internal", scope: "orders:write" } },
    ],
    policy: { files: [policies.files] },
    worker: { sweep_interval: "200ms", sweep_grace: "1s", fail_after: 2 },
    ...(opts.maxDepth !== undefined ? { delegation: { max_depth: opts.maxDepth } } : {}),
    ...(opts.extra ?? {}),
  });
  const token = (who: Who) => agents.token({ sub: WHO[who] });
  const f: DelegationFixture = {
    b,
    policies,
    agents,
    people,
    token,
    person: (sub, claims = {}) => people.token({ sub, ...claims }),
    async call(method, p, who, body) {
      const t = who ? await token(who) : undefined;
      return getJson(`${b.url}${p}`, t, { method, ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }) });
    },
    async exchange(params, o = {}) {
      const headers: Record<string, string> = { "content-type": o.json ? "application/json" : "application/x-www-form-urlencoded" };
      if (o.bearer) headers.authorization = `Bearer ${o.bearer}`;
      let body: string;
      if (o.json) body = JSON.stringify(Object.fromEntries(Object.entries(params).filter(([, v]) => v !== undefined)));
      else {
        const form = new URLSearchParams();
        for (const [k, v] of Object.entries(params)) {
          if (v === undefined) continue;
          for (const x of Array.isArray(v) ? v : [v]) form.append(k, String(x));
        }
        body = form.toString();
      }
      return getJson(`${b.url}/v1/oauth/token`, undefined, { method: "POST", headers, body });
    },
    async credential(who, role, task, extra = {}) {
      const r = await f.call("POST", "/v1/credentials", who, { role, task: { id: task }, ...extra });
      if (r.status !== 201) throw new Error(`credential for ${who}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body;
    },
    async introspect(tok, resource) {
      return (await f.call("POST", "/v1/introspect", "alice", { token: tok, ...(resource ? { resource } : {}) })).body;
    },
    async close() {
      await b.close();
      await agents.close();
      await people.close();
      policies.close();
    },
  };
  return f;
}

/** Delegation parameters: `subject` handed to `actor`. */
export async function delegation(f: DelegationFixture, subject: string, actor: Who, extra: Record<string, string | string[] | number | undefined> = {}) {
  return { grant_type: EXCHANGE, subject_token: subject, subject_token_type: AT_TYPE, actor_token: await f.token(actor), actor_token_type: JWT_TYPE, ...extra };
}
