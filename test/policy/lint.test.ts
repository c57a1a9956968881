/**
 * `config check` lint (src/policy/lint.ts): each warning on a minimal inventory, its absence on
 * the safe variant next to it, and the example configuration free of warnings.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { loadConfig, parseConfig, type LoadedConfig } from "../../src/config/load";
import { compilePolicies, loadPolicyFiles, type PolicySet } from "../../src/policy/engine";
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import { entityRefs, formatWarning, lintConfig, lintInventory, lintPolicies, observedBy, type LintWarning, type Observed } from "../../src/policy/lint";

const ROOT = path.resolve(__dirname, "../..");
const FILE = path.join(ROOT, "test/policy/fixtures/lint-inline.yaml");

const HEAD = `
server:
  public_url: "https://broker.example.com"
identity:
  issuers:
    - { name: github, type: oidc, issuer: "https://token.actions.githubusercontent.com", discovery: true }
    - { name: ghes, type: oidc, issuer: "https://github.acme.example/_services/token", discovery: true }
    - { name: gitlab, type: oidc, issuer: "https://gitlab.com", discovery: true }
    - { name: mesh, type: spiffe, trust_domain: "prod.example.org", bundle_file: "bundle.json" }
`;

function config(workloads: string, roles = ""): LoadedConfig {
  return parseConfig(`${HEAD}workloads:\n${workloads}\n${roles ? `roles:\n${roles}\n` : ""}`, FILE, {});
}

const set = (text: string): PolicySet => compilePolicies([{ path: "/policies/test.cedar", text }]);
const kinds = (ws: LintWarning[]) => ws.map((w) => [w.kind, w.where]);

describe("inventory warnings", () => {
  it("aud_only: a workload with neither subject nor claims", () => {
    const cfg = config(`  - { id: any-ci, kind: ci, owner: o, purpose: p, issuer: gitlab }
  - { id: any-svid, kind: service, owner: o, purpose: p, issuer: mesh }
  - { id: by-sub, kind: service, owner: o, purpose: p, issuer: mesh, subject: "spiffe://prod.example.org/a" }
  - { id: by-claim, kind: ci, owner: o, purpose: p, issuer: gitlab, claims: { project_id: "42" } }`);
    const ws = lintInventory(cfg).filter((w) => w.kind === "aud_only");
    expect(ws.map((w) => formatWarning(w))).toEqual([
      'workloads[0] (any-ci): bound only by issuer and audience (no subject, no claims): any token of issuer gitlab with aud "jitbroker" maps to it; fix: set subject (the exact sub of its tokens) or claims that only its tokens carry',
      'workloads[1] (any-svid): bound only by issuer and audience (no subject, no claims): any JWT-SVID of trust domain prod.example.org with aud "jitbroker" maps to it; fix: set subject (the exact sub of its tokens) or claims that only its tokens carry',
    ]);
  });

  it("github_unpinned: GitHub Actions workloads need repository_id or repository_owner_id", () => {
    const cfg = config(`  - { id: by-sub, kind: ci, owner: o, purpose: p, issuer: github, subject: "repo:acme/app:ref:refs/heads/main" }
  - { id: by-names, kind: ci, owner: o, purpose: p, issuer: github, subject: "repo:acme/b:ref:refs/heads/main", claims: { repository: "acme/b", repository_owner: "acme" } }
  - { id: ghes-by-sub, kind: ci, owner: o, purpose: p, issuer: ghes, subject: "repo:acme/c:ref:refs/heads/main" }
  - { id: claims-elsewhere, kind: ci, owner: o, purpose: p, issuer: gitlab, subject: "x", claims: { job_workflow_ref: "acme/d/.github/workflows/ci.yml@refs/heads/main" } }
  - { id: repo-id, kind: ci, owner: o, purpose: p, issuer: github, subject: "repo:acme/e:ref:refs/heads/main", claims: { repository_id: "1" } }
  - { id: owner-id, kind: ci, owner: o, purpose: p, issuer: ghes, subject: "repo:acme/f:ref:refs/heads/main", claims: { repository_owner_id: 2 } }
  - { id: custom-sub, kind: ci, owner: o, purpose: p, issuer: github, subject: "repository_owner_id:4242:environment:prod" }
  - { id: gitlab-job, kind: ci, owner: o, purpose: p, issuer: gitlab, subject: "project_path:acme/g:ref_type:branch:ref:main", claims: { ref: "main" } }`);
    const ws = lintInventory(cfg).filter((w) => w.kind === "github_unpinned");
    expect(ws.map((w) => w.where)).toEqual(["workloads[0] (by-sub)", "workloads[1] (by-names)", "workloads[2] (ghes-by-sub)", "workloads[3] (claims-elsewhere)"]);
    expect(formatWarning(ws[0]!)).toBe(
      "workloads[0] (by-sub): GitHub Actions workload not pinned to repository_id or repository_owner_id: it is matched by names (repository, owner, the sub), and a deleted or renamed repository's or owner's name can be registered again by someone else; fix: add claims: { repository_id: \"<numeric id>\" } or repository_owner_id (both are in every job's token)",
    );
  });

  it("ambiguous_identity: names both workloads and an identity that the broker's matcher finds ambiguous", () => {
    const cfg = config(`  - { id: main, kind: ci, owner: o, purpose: p, issuer: github, subject: "repo:acme/app:ref:refs/heads/main", claims: { repository_id: "1", ref: ["refs/heads/main"] } }
  - { id: release, kind: ci, owner: o, purpose: p, issuer: github, claims: { repository_id: 1, ref: ["refs/heads/release", "refs/heads/main"], environment: prod } }
  - { id: other-repo, kind: ci, owner: o, purpose: p, issuer: github, claims: { repository_id: "2", ref: ["refs/heads/main"] } }
  - { id: other-sub, kind: ci, owner: o, purpose: p, issuer: github, subject: "repo:acme/app:ref:refs/heads/dev", claims: { repository_id: "1", environment: dev } }
  - { id: same-sub-other-issuer, kind: ci, owner: o, purpose: p, issuer: ghes, subject: "repo:acme/app:ref:refs/heads/main", claims: { repository_id: "1" } }
  - { id: agent-a, kind: agent, owner: o, purpose: p, issuer: mesh, subject: "spiffe://prod.example.org/a" }
  - { id: agent-a-again, kind: agent, owner: o, purpose: p, issuer: mesh, subject: "spiffe://prod.example.org/a" }
  - { id: agent-b, kind: agent, owner: o, purpose: p, issuer: mesh, subject: "spiffe://prod.example.org/b" }`);
    const ws = lintInventory(cfg).filter((w) => w.kind === "ambiguous_identity");
    expect(ws.map((w) => formatWarning(w))).toEqual([
      'workloads[0] (main) and workloads[1] (release): one identity matches both (e.g. a token of issuer github with sub "repo:acme/app:ref:refs/heads/main" and claims repository_id="1" ref="refs/heads/main" environment="prod"); the broker refuses such tokens as ambiguous (403 unknown_workload); fix: make them disjoint: a subject or a claim value that only one of them accepts',
      'workloads[5] (agent-a) and workloads[6] (agent-a-again): one identity matches both (e.g. a token of issuer mesh with sub "spiffe://prod.example.org/a"); the broker refuses such tokens as ambiguous (403 unknown_workload); fix: make them disjoint: a subject or a claim value that only one of them accepts',
    ]);
  });

  it("ambiguous_identity: two workloads without subject or shared claims overlap on any sub", () => {
    const cfg = config(`  - { id: a, kind: ci, owner: o, purpose: p, issuer: gitlab, claims: { project_id: "1" } }
  - { id: b, kind: ci, owner: o, purpose: p, issuer: gitlab, claims: { namespace_id: "9" } }`);
    expect(lintInventory(cfg).map((w) => formatWarning(w))).toEqual([
      'workloads[0] (a) and workloads[1] (b): one identity matches both (e.g. a token of issuer gitlab with any sub and claims project_id="1" namespace_id="9"); the broker refuses such tokens as ambiguous (403 unknown_workload); fix: make them disjoint: a subject or a claim value that only one of them accepts',
    ]);
  });

  it("human_on_ci_issuer: an operator bound to GitHub Actions", () => {
    const cfg = config(`  - { id: ops, kind: human, owner: o, purpose: p, issuer: github, subject: "repository_owner_id:4242:environment:ops" }
  - { id: ops-mesh, kind: human, owner: o, purpose: p, issuer: mesh, subject: "spiffe://prod.example.org/ops" }`);
    expect(kinds(lintInventory(cfg))).toEqual([["human_on_ci_issuer", "workloads[0] (ops)"]]);
  });
});

describe("policy warnings", () => {
  const inventory = config(
    `  - { id: agent, kind: agent, owner: o, purpose: p, issuer: mesh, subject: "spiffe://prod.example.org/agent" }
  - { id: ci, kind: ci, owner: o, purpose: p, issuer: gitlab, subject: "project_path:acme/app", claims: { project_id: "7" } }`,
    `  - { name: read, backend: jwt, ttl: { default: "5m", max: "15m" }, labels: { access: read, sensitivity: internal }, jwt: { audience: a } }
  - { name: write, backend: jwt, ttl: { default: "5m", max: "15m" }, labels: { access: write, sensitivity: restricted }, jwt: { audience: a } }`,
  );

  it("unknown_role, unknown_workload, unknown_action: in the scope and in conditions, at the line of the reference", () => {
    const policies = set(`@id("ok")
permit (principal == Workload::"agent", action == Action::"request", resource == Role::"read");

@id("typos")
permit (
  principal in Workload::"agnet",
  action in [Action::"request", Action::"reqest"],
  resource
)
when {
  resource == Role::"wirte" ||
  [Role::"write", Role::"raed"].contains(resource) ||
  principal == Workload::"ci"
};
`);
    const ws = lintPolicies(inventory, policies).filter((w) => w.kind.startsWith("unknown"));
    expect(ws.map((w) => formatWarning(w))).toEqual([
      'policy typos (/policies/test.cedar:6): names Workload::"agnet", which is not a workload of the inventory (workloads: agent, ci); fix: correct the id, or add the workload to workloads',
      'policy typos (/policies/test.cedar:7): names Action::"reqest", which the broker never asks (actions: request, admin_read, admin_revoke, approve, delegate); fix: use one of the broker\'s actions',
      'policy typos (/policies/test.cedar:11): names Role::"wirte", which is not a role of the inventory (roles: read, write); fix: correct the name, or add the role to roles',
      'policy typos (/policies/test.cedar:12): names Role::"raed", which is not a role of the inventory (roles: read, write); fix: correct the name, or add the role to roles',
    ]);
  });

  it("entityRefs reads Cedar's JSON form of a policy", () => {
    const [p] = set('permit (principal is Workload in Group::"g", action, resource) when { context.requester == Workload::"w" && [Role::"r"].contains(resource) };').policies;
    const json = cedar.policyToJson(p!.text);
    if (json.type !== "success") throw new Error("parse");
    expect(entityRefs(json.json)).toEqual([
      { type: "Group", id: "g" },
      { type: "Workload", id: "w" },
      { type: "Role", id: "r" },
    ]);
  });

  it("role_never_granted: warns for a role no workload gets in any sampled context, and says it is a sample", () => {
    const ws = lintPolicies(inventory, set('permit (principal, action == Action::"request", resource == Role::"read") when { principal.kind == "agent" };'));
    expect(ws.map((w) => formatWarning(w))).toEqual([
      'roles[1] (write): no workload of the inventory is granted role write by the policies in the sampled contexts (2 workloads; approved or not, ttl the role\'s default or 2s, task fields empty or "x" (sensitivity also "write", "restricted"), Monday 10:00 and Sunday 03:00 UTC); fix: write a permit policy for it (check with `jitbroker policy why --workload <id> --role write`), or remove the role',
    ]);
  });

  it.each([
    ["an approval-only permit", '@approval("required") permit (principal, action == Action::"request", resource == Role::"write") when { principal.kind == "agent" };'],
    ["a permit only once approved", 'permit (principal, action == Action::"request", resource == Role::"write") when { context.approved };'],
    ["a permit only on Sunday night", 'permit (principal, action == Action::"request", resource == Role::"write") when { context.time.weekday == 7 && context.time.hour < 4 };'],
    ["a permit only for short leases", 'permit (principal, action == Action::"request", resource == Role::"write") when { context.ttl_seconds <= 2 };'],
    ["a permit for restricted tasks", 'permit (principal, action == Action::"request", resource == Role::"write") when { context.task.sensitivity == "restricted" };'],
    ["a permit for tasks with an intent", 'permit (principal, action == Action::"request", resource == Role::"write") when { context.task.intent != "" };'],
    ["a permit for one CI project", 'permit (principal, action == Action::"request", resource == Role::"write") when { principal.claims.project_id == "7" };'],
  ])("role_never_granted: no warning with %s", (_, text) => {
    const policies = set(`permit (principal, action == Action::"request", resource == Role::"read");\n${text}`);
    expect(lintPolicies(inventory, policies)).toEqual([]);
  });

  it("role_never_granted: a permit outside the sampled times is reported (the warning is about samples)", () => {
    const policies = set(`permit (principal, action == Action::"request", resource == Role::"read");
permit (principal, action == Action::"request", resource == Role::"write") when { context.time.weekday == 3 };`);
    expect(kinds(lintPolicies(inventory, policies))).toEqual([["role_never_granted", "roles[1] (write)"]]);
  });

  it("observedBy: what policies read of the principal and resource, or whether they use its identity", () => {
    const json = (text: string) =>
      set(text).policies.map((p) => {
        const r = cedar.policyToJson(p.text);
        if (r.type !== "success") throw new Error("parse");
        return r.json;
      });
    const attrs = (o: Observed) => [o.identity, [...o.attrs].sort()];
    const plain = json('permit (principal is Workload, action, resource is Role) when { principal.kind == "agent" && principal has claims.sub && resource.labels.access == "read" && principal is Workload };');
    expect(attrs(observedBy(plain, "principal"))).toEqual([false, ["claims", "kind"]]);
    expect(attrs(observedBy(plain, "resource"))).toEqual([false, ["labels"]]);
    expect(observedBy(json('permit (principal == Workload::"a", action, resource);'), "principal").identity).toBe(true);
    expect(observedBy(json('permit (principal, action, resource) when { [Role::"r"].contains(resource) };'), "resource").identity).toBe(true);
    expect(observedBy(json('permit (principal, action, resource) when { principal is Workload in Group::"g" };'), "principal").identity).toBe(true);
    expect(observedBy(json('permit (principal, action, resource) when { context.requester == principal };'), "principal").identity).toBe(true);
  });

  it("role_never_granted: workloads or roles the policies can tell apart are each sampled", () => {
    const twins = config(
      `  - { id: a, kind: service, owner: o, purpose: p, issuer: mesh, subject: "spiffe://prod.example.org/a" }
  - { id: b, kind: service, owner: o, purpose: p, issuer: mesh, subject: "spiffe://prod.example.org/b" }`,
      `  - { name: r1, backend: jwt, ttl: { default: "5m", max: "15m" }, labels: { access: read }, jwt: { audience: a } }
  - { name: r2, backend: jwt, ttl: { default: "5m", max: "15m" }, labels: { access: read }, jwt: { audience: a } }`,
    );
    // Granted only to the second of two otherwise identical workloads, or only to the second role.
    expect(lintPolicies(twins, set('permit (principal == Workload::"b", action == Action::"request", resource);'))).toEqual([]);
    expect(lintPolicies(twins, set('permit (principal, action == Action::"request", resource) when { principal.subject == "spiffe://prod.example.org/b" };'))).toEqual([]);
    expect(lintPolicies(twins, set('permit (principal, action in [Action::"approve", Action::"request"], resource) when { principal.subject == "spiffe://prod.example.org/b" };'))).toEqual([]);
    // (A permit of every action also permits unbounded delegation: that warning is tested in src/policy/delegation.test.ts.)
    expect(lintPolicies(twins, set('permit (principal, action, resource) when { principal.subject == "spiffe://prod.example.org/b" };')).filter((w) => w.kind !== "unbounded_delegation")).toEqual([]);
    expect(kinds(lintPolicies(twins, set('permit (principal, action == Action::"request", resource == Role::"r2");')))).toEqual([["role_never_granted", "roles[0] (r1)"]]);
    expect(kinds(lintPolicies(twins, set('permit (principal, action == Action::"request", resource) when { principal.kind == "agent" };')))).toEqual([
      ["role_never_granted", "roles[0] (r1)"],
      ["role_never_granted", "roles[1] (r2)"],
    ]);
  });

  it("an empty policy set grants nothing", () => {
    expect(kinds(lintConfig(inventory, set("")))).toEqual([
      ["role_never_granted", "roles[0] (read)"],
      ["role_never_granted", "roles[1] (write)"],
    ]);
  });
});

describe("the shipped examples", () => {
  it("config/broker.yaml with config/policies has no warning", async () => {
    const cfg = loadConfig(path.join(ROOT, "config/broker.yaml"), {});
    const policies = compilePolicies(await loadPolicyFiles(cfg.policy.files));
    expect(lintConfig(cfg, policies)).toEqual([]);
  });

  it("test/policy/fixtures/risky.yaml has one warning of each kind where its comments say", async () => {
    const file = path.join(ROOT, "test/policy/fixtures/risky.yaml");
    const cfg = loadConfig(file, {});
    const policies = compilePolicies(await loadPolicyFiles(cfg.policy.files));
    const ws = lintConfig(cfg, policies);
    expect(kinds(ws)).toEqual([
      ["github_unpinned", "workloads[1] (docs-publisher)"],
      ["aud_only", "workloads[2] (anything-from-mesh)"],
      ["human_on_ci_issuer", "workloads[4] (ci-operator)"],
      ["ambiguous_identity", "workloads[0] (payments-deployer) and workloads[3] (payments-release)"],
      ["ambiguous_identity", "workloads[2] (anything-from-mesh) and workloads[5] (support-agent)"],
      ["unknown_role", "policy orders-reader-typo"],
      ["unknown_action", "policy deployer-typo"],
      ["unknown_workload", "policy deployer-typo"],
      ["role_never_granted", "roles[1] (billing-admin)"],
    ]);
    // Each line the fixture's comments point at.
    const text = readFileSync(path.join(ROOT, "test/policy/fixtures/risky-policies/risky.cedar"), "utf8").split("\n");
    for (const w of ws.filter((x) => x.file)) {
      const id = /"([^"]+)"/.exec(w.message)![1]!;
      expect(text[w.line! - 1]).toContain(`"${id}"`);
    }
  });
});
