import path from "node:path";
import { parseConfig, type LoadedConfig } from "../config/load";
import { compileWorkloads } from "../identity/workloads";
import { principalOf } from "../authz/principal";
import { decisionContext, timeContext } from "./context";
import { compilePolicies, createPolicyEngine, loadPolicyFiles, type PolicyEngine, type PolicyFile } from "./engine";
import {
  brokerRefusal,
  buildRequest,
  checkPolicy,
  explain,
  instantInWeek,
  inventoryOf,
  loadPolicyTests,
  outcomeOf,
  parseContextInput,
  runPolicyTests,
  SimulationInputError,
  type Inventory,
  type SimInput,
  type Simulated,
} from "./simulate";

const REPO = path.resolve(__dirname, "../..");
const NOW = Date.parse("2026-03-04T12:00:00Z"); // a Wednesday

const CONFIG = `
server:
  public_url: "https://broker.example.com"
identity:
  issuers:
    - { name: github, type: oidc, issuer: "https://token.actions.githubusercontent.com", discovery: true }
    - { name: mesh, type: spiffe, trust_domain: "prod.example.org", bundle_file: "bundle.json" }
workloads:
  - id: deployer
    kind: ci
    owner: "platform@example.com"
    purpose: "deploys"
    issuer: github
    subject: "repo:acme/app:ref:refs/heads/main"
    claims: { repository_id: "912345", ref: ["refs/heads/main", "refs/heads/release"], protected: true }
  - { id: agent, kind: agent, owner: "alice@example.com", purpose: "tickets", issuer: mesh }
  - { id: alice, kind: human, owner: "alice@example.com", purpose: "operator", issuer: mesh, subject: "spiffe://prod.example.org/alice" }
roles:
  - { name: read, backend: jwt, ttl: { default: "5m", max: "15m" }, labels: { sensitivity: "internal", access: "read" }, jwt: { audience: "a" } }
  - { name: write, backend: jwt, ttl: { default: "2m", max: "10m" }, labels: { sensitivity: "restricted", access: "write" }, jwt: { audience: "a" } }
  - { name: deploy, backend: jwt, ttl: { default: "15m", max: "1h" }, labels: { access: "deploy" }, jwt: { audience: "a" } }
policy:
  files: ["${path.join(REPO, "config/policies/*.cedar")}"]
  timezone: "Europe/Berlin"
`;

let cfg: LoadedConfig;
let inv: Inventory;
let engine: PolicyEngine;

beforeAll(async () => {
  cfg = parseConfig(CONFIG, path.join(REPO, "test/policy/fixtures/inline.yaml"), {});
  inv = inventoryOf(cfg);
  engine = createPolicyEngine(compilePolicies(await loadPolicyFiles(cfg.policy.files)));
});

function build(input: SimInput, now = NOW): Simulated {
  const r = buildRequest(inv, input, now);
  if (!r.sim) throw new Error(`unexpected problems: ${JSON.stringify(r.problems)}`);
  return r.sim;
}

function problems(input: SimInput): string[] {
  const r = buildRequest(inv, input, NOW);
  expect(r.sim).toBeUndefined();
  return r.problems.map((p) => `${p.path.join(".")}: ${p.message}`);
}

describe("instantInWeek", () => {
  it.each([
    [1, 10, 0, "UTC", "2024-01-08T10:00:00.000Z"],
    [1, 10, 0, "Europe/Berlin", "2024-01-08T09:00:00.000Z"],
    [7, 3, 0, "Europe/Berlin", "2024-01-14T02:00:00.000Z"],
    [7, 3, 0, "America/New_York", "2024-01-14T08:00:00.000Z"],
    [5, 18, 59, "Asia/Kolkata", "2024-01-12T13:29:00.000Z"],
    [1, 0, 30, "Pacific/Auckland", "2024-01-07T11:30:00.000Z"],
  ])("weekday %d %d:%d in %s is %s, and reads back as that local time", (weekday, hour, minute, tz, iso) => {
    const at = instantInWeek(weekday, hour, minute, tz);
    expect(new Date(at).toISOString()).toBe(iso);
    expect(timeContext(at, tz)).toMatchObject({ weekday, hour, minute });
  });
});

describe("buildRequest", () => {
  it("builds the principal as the broker does for a token of that workload (principalOf)", () => {
    const sim = build({ workload: "deployer", role: "read" });
    const w = compileWorkloads(cfg.workloads).get("deployer")!;
    const token = {
      issuer: "github",
      kind: "oidc" as const,
      iss: "https://token.actions.githubusercontent.com",
      subject: "repo:acme/app:ref:refs/heads/main",
      claims: { repository_id: "912345", ref: "refs/heads/main", protected: true, sha: "abc", aud: "jitbroker" },
      jti: undefined,
      expiresAt: 0,
    };
    expect(compileWorkloads(cfg.workloads).match(token).id).toBe("deployer");
    expect(sim.request.principal).toEqual(principalOf({ identity: token, workload: w }));
    expect(sim.request.principal.claims).toEqual({ repository_id: "912345", ref: "refs/heads/main", protected: true });
  });

  it("builds the context with decisionContext: role default TTL, not approved, time of now in policy.timezone", () => {
    const sim = build({ workload: "agent", role: "read" });
    expect(sim.request.action).toBe("request");
    expect(sim.request.resource).toEqual({ name: "read", backend: "jwt", labels: { sensitivity: "internal", access: "read" } });
    expect(sim.request.context).toEqual(decisionContext({ task: {}, ttlSeconds: 300, approved: false, atMs: NOW, timeZone: "Europe/Berlin" }));
    expect(sim.request.context["time"]).toMatchObject({ hour: 13, weekday: 3, timezone: "Europe/Berlin" });
  });

  it("takes task, ttl, approved, at and claim overrides from the context", () => {
    const context = parseContextInput({
      task: { id: "t-1", intent: "fix", sensitivity: "low" },
      ttl: "10m",
      approved: true,
      at: "2026-03-07T08:30:00+01:00",
      claims: { ref: "refs/heads/release" },
    });
    const sim = build({ workload: "deployer", role: "read", context });
    expect(sim.request.context).toEqual(
      decisionContext({ task: { id: "t-1", intent: "fix", sensitivity: "low" }, ttlSeconds: 600, approved: true, atMs: Date.parse("2026-03-07T07:30:00Z"), timeZone: "Europe/Berlin" }),
    );
    expect(sim.request.principal.claims["ref"]).toBe("refs/heads/release");
    expect(sim.ttl).toEqual({ askedMs: 600_000, roleDefaultMs: 300_000, roleMaxMs: 900_000 });
    expect(build({ workload: "deployer", role: "read", context: { ttl: 42 } }).request.context.ttl_seconds).toBe(42);
  });

  it("turns the time shorthand into that local time in policy.timezone", () => {
    const sim = build({ workload: "agent", role: "read", context: parseContextInput({ time: { weekday: "sat", hour: 6, minute: 5 } }) });
    expect(sim.request.context["time"]).toEqual({ hour: 6, minute: 5, weekday: 6, day: "sat", date: "2024-01-13", timezone: "Europe/Berlin" });
  });

  it("uses the configured subject, else context.subject, else an empty string", () => {
    expect(build({ workload: "alice", role: "read" }).request.principal.subject).toBe("spiffe://prod.example.org/alice");
    expect(build({ workload: "agent", role: "read" }).request.principal.subject).toBe("");
    expect(build({ workload: "agent", role: "read", context: { subject: "spiffe://prod.example.org/x" } }).request.principal.subject).toBe("spiffe://prod.example.org/x");
  });

  it("builds admin requests on the broker resource with ttl 0, and approvals with the requester", () => {
    const admin = build({ workload: "alice", action: "admin_revoke" });
    expect(admin.request.resource).toEqual({ type: "Broker", id: "jitbroker" });
    expect(admin.request.context.ttl_seconds).toBe(0);
    const approve = build({ workload: "alice", action: "approve", role: "write", context: { requester: "agent" } });
    expect(approve.request.resource).toMatchObject({ name: "write" });
    expect(approve.request.context["requester"]).toEqual({ id: "agent", kind: "agent", owner: "alice@example.com" });
  });

  it("reports every problem of an input, at its path", () => {
    expect(problems({ workload: "nobody", role: "nothing" })).toEqual([
      'workload: unknown workload "nobody" (known: deployer, agent, alice)',
      'role: unknown role "nothing" (known: read, write, deploy)',
    ]);
    expect(problems({ workload: "agent" })).toEqual(["role: required for action request"]);
    expect(problems({ workload: "alice", action: "admin_read", role: "read", context: { ttl: "5m" } })).toEqual([
      "role: admin_read acts on the broker as a whole: give no role",
      "context.ttl: admin_read has no TTL",
    ]);
    expect(problems({ workload: "alice", action: "approve", role: "write" })).toEqual(["context.requester: required for action approve: the workload whose request is approved"]);
    expect(problems({ workload: "agent", role: "read", context: { requester: "alice" } })).toEqual(["context.requester: only for action approve"]);
  });

  it("refuses TTLs the API refuses, and one above the role's max (the broker answers ttl_too_long first)", () => {
    expect(problems({ workload: "agent", role: "read", context: { ttl: "20m" } })).toEqual([
      "context.ttl: 1200s exceeds role read's max of 900s (the broker answers 422 ttl_too_long when a policy allows the request, 403 policy_denied otherwise)",
    ]);
    expect(problems({ workload: "agent", role: "read", context: { ttl: 1 } })).toEqual(["context.ttl: must be a whole number of seconds, at least 2"]);
    expect(problems({ workload: "agent", role: "read", context: { ttl: "1s" } })).toEqual(["context.ttl: must be at least 2s"]);
    expect(problems({ workload: "agent", role: "read", context: { ttl: "1.5m" } })).toEqual(['context.ttl: "1.5m" is not a duration (use e.g. 30s, 5m, 1h)']);
  });

  it("refuses claims the workload would not match or does not constrain, and a subject it would not match", () => {
    expect(problems({ workload: "deployer", role: "read", context: { claims: { ref: "refs/heads/feature", sha: "abc" }, subject: "repo:evil/app" } })).toEqual([
      'context.subject: workload deployer only matches tokens with sub "repo:acme/app:ref:refs/heads/main"',
      'context.claims.ref: "refs/heads/feature" is not a value workload deployer matches (allowed: "refs/heads/main", "refs/heads/release")',
      "context.claims.sha: workload deployer does not constrain claim sha, so the broker never passes it to policies (its claims: repository_id, ref, protected)",
    ]);
    // As the broker's matcher: a number claim matches the configured string of its digits.
    expect(build({ workload: "deployer", role: "read", context: { claims: { repository_id: 912345 } } }).request.principal.claims["repository_id"]).toBe(912345);
  });
});

describe("parseContextInput", () => {
  it.each([
    [{ at: "yesterday" }, 'at: must be an RFC 3339 time such as "2026-03-02T10:00:00Z"'],
    [{ at: "2026-03-02T10:00:00Z", time: { weekday: 1, hour: 1 } }, "time: give at or time, not both"],
    [{ time: { weekday: 8, hour: 1 } }, "time.weekday: must be 1 (Monday) .. 7 (Sunday) or mon..sun"],
    [{ time: { weekday: "monday", hour: 1 } }, "time.weekday: must be 1 (Monday) .. 7 (Sunday) or mon..sun"],
    [{ time: { weekday: 1 } }, "time.hour: required"],
    [{ task: { intent: "x", purpose: "y" } }, "task.purpose: unknown key (check the spelling)"],
    [{ approved: "yes" }, "approved: Invalid input: expected boolean, received string"],
    [{ task: { id: "has space" } }, "task.id: must be up to 128 characters of [A-Za-z0-9._:@-]"],
  ])("%j: %s", (input, message) => {
    expect(() => parseContextInput(input)).toThrow(SimulationInputError);
    try {
      parseContextInput(input);
    } catch (e) {
      expect((e as SimulationInputError).problems).toEqual([message]);
    }
  });
});

describe("loadPolicyTests and runPolicyTests", () => {
  const FILE = "table.yaml";
  const load = (text: string) => loadPolicyTests(text, FILE, inv, NOW);
  const problemsOf = (text: string): string[] => {
    try {
      load(text);
    } catch (e) {
      expect(e).toBeInstanceOf(SimulationInputError);
      return (e as SimulationInputError).problems;
    }
    throw new Error("no problems");
  };

  it("runs every case and compares the outcome (allow, approval, deny)", () => {
    const tests = load(`cases:
  - { name: reads, workload: agent, role: read, expect: allow }
  - { workload: agent, role: write, context: { task: { intent: "refund" } }, expect: approval }
  - { workload: agent, role: write, expect: deny }
  - { name: wrong on purpose, workload: deployer, role: deploy, context: { time: { weekday: sun, hour: 12 } }, expect: allow }
`);
    const report = runPolicyTests(engine, tests);
    expect(report.passed).toBe(3);
    expect(report.failed).toBe(1);
    expect(report.policyHash).toBe(engine.set().hash);
    expect(report.results.map((r) => [r.index, r.line, r.expected, r.actual, r.ok, r.policyIds])).toEqual([
      [0, 2, "allow", "allow", true, ["agents-request-read"]],
      [1, 3, "approval", "approval", true, ["agents-request-write-or-restricted-with-approval"]],
      [2, 4, "deny", "deny", true, []],
      [3, 5, "allow", "deny", false, ["ci-deploy-working-hours"]],
    ]);
    expect(report.results[0]).toMatchObject({ name: "reads", maxTtlSeconds: 600, errors: [] });
  });

  it("adds the table's own inventory entries, and refuses duplicates and unknown issuers", () => {
    const tests = load(`inventory:
  workloads:
    - { id: bot, kind: service, owner: o, purpose: p, issuer: mesh, subject: "spiffe://prod.example.org/bot" }
  roles:
    - { name: pii, backend: jwt, ttl: { default: "5m", max: "30m" }, labels: { sensitivity: restricted, access: read }, jwt: { audience: a } }
cases:
  - { workload: bot, role: read, expect: deny }
  - { workload: agent, role: pii, context: { task: { intent: x }, ttl: 600 }, expect: deny }
`);
    expect(runPolicyTests(engine, tests).results.map((r) => [r.actual, r.policyIds])).toEqual([
      ["deny", []],
      ["deny", ["restricted-long-lease-needs-approval"]],
    ]);
    expect(inv.workloads.map((w) => w.id)).toEqual(["deployer", "agent", "alice"]); // the config's inventory is untouched

    expect(
      problemsOf(`inventory:
  workloads:
    - { id: agent, kind: service, owner: o, purpose: p, issuer: mesh }
    - { id: bot, kind: service, owner: o, purpose: p, issuer: gitlab }
  roles:
    - { name: read, backend: jwt, ttl: { default: "5m", max: "30m" }, jwt: { audience: a } }
    - { name: bad, backend: jwt, ttl: { default: "1h", max: "5m" }, jwt: { audience: a } }
cases:
  - { workload: agent, role: read, expect: allow }
`),
    ).toEqual([`${FILE}:7: inventory.roles[1].ttl: default must not exceed max`]);
    expect(
      problemsOf(`inventory:
  workloads:
    - { id: agent, kind: service, owner: o, purpose: p, issuer: mesh }
    - { id: bot, kind: service, owner: o, purpose: p, issuer: gitlab }
  roles:
    - { name: read, backend: jwt, ttl: { default: "5m", max: "30m" }, jwt: { audience: a } }
cases:
  - { workload: agent, role: read, expect: allow }
`),
    ).toEqual([
      `${FILE}:3: inventory.workloads[0].id: workload "agent" is already defined (in the config or above)`,
      `${FILE}:4: inventory.workloads[1].issuer: unknown issuer "gitlab" (known: github, mesh)`,
      `${FILE}:6: inventory.roles[0].name: role "read" is already defined (in the config or above)`,
    ]);
  });

  it("reports bad cases with their index, field and line, all at once", () => {
    expect(
      problemsOf(`cases:
  - { workload: agent, role: read, expect: allow }
  - workload: nobody
    role: read
    expect: allow
  - workload: agent
    role: nothing
    context: { ttl: "1h" }
    expect: deny
`),
    ).toEqual([`${FILE}:3: cases[1].workload: unknown workload "nobody" (known: deployer, agent, alice)`, `${FILE}:7: cases[2].role: unknown role "nothing" (known: read, write, deploy)`]);
    expect(
      problemsOf(`cases:
  - { workload: agent, role: read, expect: allowed }
  - { workload: agent, role: read, expect: deny, contxt: {} }
  - { role: read, expect: deny }
  - { workload: agent, role: read, expect: deny, context: { ttl: "20m" } }
`),
    ).toEqual([
      `${FILE}:2: cases[0].expect: must be allow, deny or approval`,
      `${FILE}:3: cases[1].contxt: unknown key (check the spelling)`,
      `${FILE}:4: cases[2].workload: required`,
    ]);
    expect(problemsOf(`cases:\n  - { workload: agent, role: read, expect: deny, context: { ttl: "20m" } }\n`)).toEqual([
      `${FILE}:2: cases[0].context.ttl: 1200s exceeds role read's max of 900s (the broker answers 422 ttl_too_long when a policy allows the request, 403 policy_denied otherwise)`,
    ]);
    expect(problemsOf("cases: []\n")).toEqual([`${FILE}:1: cases: at least one case is needed`]);
    expect(problemsOf("")).toEqual([`${FILE}: cases: required`]);
    expect(problemsOf("cases:\n  - { workload: agent\n")).toEqual([expect.stringMatching(/^table\.yaml:3:1: /)]);
    expect(problemsOf("cases:\n  - { workload: agent, workload: alice, role: read, expect: deny }\n")).toEqual([expect.stringMatching(/^table\.yaml:2:\d+: Map keys must be unique/)]);
  });
});

describe("explain", () => {
  it("on allow: the determining permit with its annotations, and the TTL the lease would get", () => {
    const x = explain(engine, build({ workload: "agent", role: "write", context: { task: { intent: "refund" }, ttl: "5m" } }));
    expect(x.outcome).toBe("approval");
    expect(x.defaultDeny).toBe(false);
    expect(x.determining).toEqual([
      {
        id: "agents-request-write-or-restricted-with-approval",
        effect: "permit",
        file: path.join(REPO, "config/policies/agents.cedar"),
        line: expect.any(Number),
        annotations: { id: "agents-request-write-or-restricted-with-approval", approval: "required", max_ttl: "15m" },
      },
    ]);
    expect(Object.keys(x.determining[0]!.annotations)[0]).toBe("id");
    expect(x.ttl).toEqual({ askedSeconds: 300, roleMaxSeconds: 600, policyMaxSeconds: 900, maxSeconds: 600, leaseSeconds: 300 });
    expect(x.permits).toEqual([]);

    const read = explain(engine, build({ workload: "agent", role: "read", context: { ttl: "15m" } }));
    expect(read.outcome).toBe("allow");
    expect(read.ttl).toEqual({ askedSeconds: 900, roleMaxSeconds: 900, policyMaxSeconds: 600, maxSeconds: 600, leaseSeconds: 600 });
  });

  it("on a default deny: each permit of the action evaluated alone, with the first condition that is false", () => {
    const x = explain(engine, build({ workload: "agent", role: "deploy" }));
    expect(x.outcome).toBe("deny");
    expect(x.defaultDeny).toBe(true);
    expect(x.determining).toEqual([]);
    expect(x.permits.map((p) => [p.id, p.satisfied, p.failed, p.detail])).toEqual([
      ["agents-request-read", false, "condition", 'resource.labels.access == "read"'],
      ["agents-request-write-or-restricted-with-approval", false, "condition", 'context.task.intent != ""'],
      ["ci-request-deploy-or-read", false, "condition", 'principal.kind == "ci"'],
    ]);
  });

  it("on a forbid: the forbid decides, and the permit it overrides is shown as satisfied", () => {
    const x = explain(engine, build({ workload: "deployer", role: "deploy", context: { time: { weekday: 6, hour: 10 } } }));
    expect(x.outcome).toBe("deny");
    expect(x.defaultDeny).toBe(false);
    expect(x.determining.map((d) => [d.id, d.effect])).toEqual([["ci-deploy-working-hours", "forbid"]]);
    expect(x.erroredForbids).toEqual([]);
    expect(x.permits.find((p) => p.id === "ci-request-deploy-or-read")).toMatchObject({ satisfied: true });
    expect(x.ttl).toBeUndefined();
  });

  it("only lists the permits of the action asked", () => {
    const x = explain(engine, build({ workload: "agent", action: "admin_revoke" }));
    expect(x.permits.map((p) => [p.id, p.failed, p.detail])).toEqual([["operators-admin-revoke", "condition", 'principal.kind == "human"']]);
  });
});

describe("checkPolicy", () => {
  const files = (text: string): PolicyFile[] => [{ path: "/p/test.cedar", text }];
  const request = () => build({ workload: "agent", role: "read", context: { task: { intent: "x" } } }).request;

  it.each([
    ['permit (principal == Workload::"other", action, resource);', "scope", 'principal == Workload::"other"'],
    ['permit (principal, action == Action::"approve", resource is Broker);', "scope", 'action == Action::"approve", resource is Broker'],
    ['permit (principal is Workload in Group::"g", action in [Action::"admin_read"], resource);', "scope", 'principal is Workload in Group::"g", action in Action::"admin_read"'], // Cedar reads a one-element list as the entity
    ['permit (principal, action in [Action::"admin_read", Action::"approve"], resource);', "scope", 'action in [Action::"admin_read", Action::"approve"]'],
    ['permit (principal, action, resource) when { principal.kind == "agent" } when { context.ttl_seconds > 600 };', "condition", "context.ttl_seconds > 600"],
    ['permit (principal, action, resource) when { principal.kind == "agent" } unless { context.task.intent == "x" };', "condition", 'unless { context.task.intent == "x" }'],
    ['permit (principal, action, resource) when { principal.kind == "agent" && context.nope == 1 };', "error", expect.stringMatching(/^context\.nope == 1: .*nope/)],
    ['permit (principal, action, resource) when { (principal.kind == "x" || true) && resource.labels.access == "read" };', undefined, undefined],
  ])("%s", (text, failed, detail) => {
    const [policy] = compilePolicies(files(text)).policies;
    const check = checkPolicy(policy!, request());
    expect(check.satisfied).toBe(failed === undefined);
    expect(check.failed).toBe(failed);
    expect(check.detail).toEqual(detail);
  });

  it("evaluates a forbid as written (its effect does not change whether it is satisfied)", () => {
    const [policy] = compilePolicies(files('forbid (principal, action, resource) when { principal.kind == "agent" };')).policies;
    expect(checkPolicy(policy!, request())).toMatchObject({ satisfied: true, effect: "forbid" });
  });
});

describe("refusals the broker makes before asking the policies", () => {
  const permitAll = () => createPolicyEngine(compilePolicies([{ path: "/p/all.cedar", text: "permit (principal, action, resource);" }]));

  it("admin actions and approvals are for human workloads only, and nobody approves their own request", () => {
    expect(brokerRefusal(build({ workload: "agent", role: "read" }))).toBeUndefined();
    expect(brokerRefusal(build({ workload: "alice", action: "admin_read" }))).toBeUndefined();
    expect(brokerRefusal(build({ workload: "agent", action: "admin_read" }))).toBe("only human workloads (operators) may admin_read: the broker refuses agent workloads before asking the policies");
    expect(brokerRefusal(build({ workload: "deployer", action: "approve", role: "write", context: { requester: "agent" } }))).toMatch(/^only human workloads \(operators\) may approve/);
    expect(brokerRefusal(build({ workload: "alice", action: "approve", role: "write", context: { requester: "alice" } }))).toBe("a workload can never approve its own request, whatever the policies say");
  });

  it("a table case and an explanation report deny even when the policies alone allow", () => {
    const all = permitAll();
    const tests = loadPolicyTests("cases:\n  - { workload: agent, action: admin_revoke, expect: allow }\n  - { workload: alice, action: admin_revoke, expect: allow }\n", "t.yaml", inv, NOW);
    const report = runPolicyTests(all, tests);
    expect(report.results.map((r) => [r.actual, r.policyIds, r.refusal])).toEqual([
      ["deny", ["all.cedar#0"], "only human workloads (operators) may admin_revoke: the broker refuses agent workloads before asking the policies"],
      ["allow", ["all.cedar#0"], undefined],
    ]);
    const x = explain(all, build({ workload: "alice", action: "approve", role: "write", context: { requester: "alice" } }));
    expect([x.outcome, x.decision.decision, x.refusal, x.ttl]).toEqual(["deny", "allow", "a workload can never approve its own request, whatever the policies say", undefined]);
  });
});

describe("outcomeOf", () => {
  it("maps decisions to outcomes", () => {
    const base = { policyIds: [], policyHash: "h", errors: [] };
    expect(outcomeOf({ ...base, decision: "allow", approvalRequired: false })).toBe("allow");
    expect(outcomeOf({ ...base, decision: "allow", approvalRequired: true })).toBe("approval");
    expect(outcomeOf({ ...base, decision: "deny", approvalRequired: false })).toBe("deny");
  });
});
