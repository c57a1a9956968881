/**
 * Policy tools and delegation: `policy test` / `policy why` cases for Action::"delegate" and
 * on-behalf-of (context.delegation, context.on_behalf_of), and the `config check` lint that
 * warns about a delegate permit bounding neither the depth nor the roles.
 */
import path from "node:path";
import { parseConfig } from "../config/load";
import { compilePolicies, createPolicyEngine } from "./engine";
import { lintPolicies } from "./lint";
import { buildRequest, explain, inventoryOf, loadPolicyTests, runPolicyTests } from "./simulate";

const REPO = path.resolve(__dirname, "../..");
const NOW = Date.parse("2026-03-04T12:00:00Z");
const cfg = parseConfig(
  `
server: { public_url: "https://broker.example.com" }
identity:
  issuers:
    - { name: mesh, type: spiffe, trust_domain: "prod.example.org", bundle_file: "bundle.json" }
    - { name: people, type: oidc, use: users, audience: console, issuer: "https://login.example.com", discovery: true }
workloads:
  - { id: orchestrator, kind: agent, owner: "o@example.com", purpose: "plans", issuer: mesh, subject: "spiffe://prod.example.org/orch" }
  - { id: subagent, kind: agent, owner: "o@example.com", purpose: "reads", issuer: mesh, subject: "spiffe://prod.example.org/sub" }
roles:
  - { name: read, backend: jwt, ttl: { default: "5m", max: "15m" }, labels: { access: "read" }, jwt: { audience: "a" } }
  - { name: write, backend: jwt, ttl: { default: "2m", max: "10m" }, labels: { access: "write" }, jwt: { audience: "a" } }
`,
  path.join(REPO, "test/policy/fixtures/inline-delegation.yaml"),
  {},
);
const files = (text: string) => [{ path: "/p/deleg.cedar", text }];
const POLICIES = `
@id("delegate-read-two-hops")
permit (principal, action == Action::"delegate", resource is Role)
when { principal.kind == "agent" && context.delegation.depth <= 2 && resource.labels.access == "read" };
@id("write-for-support")
permit (principal == Workload::"orchestrator", action == Action::"request", resource == Role::"write")
when { context has on_behalf_of && context.on_behalf_of.claims has groups && context.on_behalf_of.claims.groups.contains("support") };
`;

describe("policy test and policy why with delegation and on-behalf-of", () => {
  const engine = createPolicyEngine(compilePolicies(files(POLICIES)));
  const inv = inventoryOf(cfg);

  it("decides a table of delegation and on-behalf-of cases", () => {
    const tests = loadPolicyTests(
      `cases:
  - { workload: subagent, action: delegate, role: read, context: { delegation: { depth: 1, from: orchestrator } }, expect: allow }
  - { workload: subagent, action: delegate, role: read, context: { delegation: { depth: 3, from: orchestrator, chain: [orchestrator, x, y] } }, expect: deny }
  - { workload: subagent, action: delegate, role: write, context: { delegation: { depth: 1, from: orchestrator } }, expect: deny }
  - { workload: orchestrator, role: write, context: { on_behalf_of: { issuer: people, subject: pat, claims: { groups: [support] } } }, expect: allow }
  - { workload: orchestrator, role: write, context: { on_behalf_of: { issuer: people, subject: sam, claims: { groups: [sales] } } }, expect: deny }
  - { workload: orchestrator, role: write, expect: deny }
`,
      "t.yaml",
      inv,
      NOW,
    );
    const report = runPolicyTests(engine, tests);
    expect(report.results.map((r) => r.actual)).toEqual(["allow", "deny", "deny", "allow", "deny", "deny"]);
    expect(report.failed).toBe(0);
  });

  it("requires context.delegation for delegate, and only there", () => {
    const missing = buildRequest(inv, { workload: "subagent", action: "delegate", role: "read" }, NOW);
    expect(missing.problems.map((p) => p.path.join("."))).toEqual(["context.delegation"]);
    const stray = buildRequest(inv, { workload: "subagent", role: "read", context: { delegation: { depth: 1, from: "orchestrator" } } }, NOW);
    expect(stray.problems.map((p) => p.message)).toEqual(["only for action delegate"]);
  });

  it("policy why names the permit that allows a delegation", () => {
    const r = buildRequest(inv, { workload: "subagent", action: "delegate", role: "read", context: { delegation: { depth: 2, from: "orchestrator" } } }, NOW);
    const e = explain(engine, r.sim!);
    expect(e.decision.decision).toBe("allow");
    expect(e.decision.policyIds).toEqual(["delegate-read-two-hops"]);
    expect(r.sim!.request.context.delegation).toEqual({ depth: 2, from: "orchestrator", chain: ["orchestrator"] });
  });
});

describe("config check lint: unbounded delegation", () => {
  it.each([
    ['permit (principal, action == Action::"delegate", resource);', ["a depth condition (context.delegation.depth) or a condition on the role (resource)"]],
    ['permit (principal, action == Action::"delegate", resource) when { resource.labels.access == "read" };', ["a depth condition (context.delegation.depth)"]],
    ['permit (principal, action == Action::"delegate", resource == Role::"read") when { context.delegation.depth <= 1 };', []],
    ['permit (principal, action, resource) when { principal.kind == "agent" };', ["a depth condition (context.delegation.depth) or a condition on the role (resource)"]],
    ['permit (principal, action == Action::"request", resource);', []],
    ['forbid (principal, action == Action::"delegate", resource);', []],
  ])("%s", (text, expected) => {
    const set = compilePolicies(files(text));
    const warnings = lintPolicies(cfg, set).filter((w) => w.kind === "unbounded_delegation");
    expect(warnings.map((w) => /without (.*): any holder/.exec(w.message)![1])).toEqual(expected);
  });
});
