/**
 * `jitbroker policy test`, `policy why` and the warnings of `config check`, as a user runs them:
 * child processes of `node dist/cli/main.js` (build first: `npm run build`, or ./scripts/test).
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parse as parseYaml } from "yaml";

import { CLI, ROOT, lines, runCli } from "../support/cli";
const FIXTURE = "test/policy/fixtures/broker.yaml";
const RISKY = "test/policy/fixtures/risky.yaml";



// Each run is a fresh Node process loading the CLI and the Cedar engine: about a second on a quiet
// machine, several on a loaded 2-core CI machine (tests here timed out at Jest's default 30 s in
// loaded full runs, with 2 or 3 runs each). Each run keeps its own 20 s bound.
jest.setTimeout(90_000);

const run = (args: string[]) => runCli(args, { timeoutMs: 20_000 });


let tmp: string;

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} does not exist: build first (npm run build, or run the suite with ./scripts/test)`);
  tmp = mkdtempSync(path.join(os.tmpdir(), "jit-policy-cli-"));
});

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function table(name: string, text: string): string {
  const file = path.join(tmp, name);
  writeFileSync(file, text);
  return file;
}

describe("policy test", () => {
  it("config/policy-tests.yaml passes against config/broker.yaml: every case ok, exit 0", async () => {
    const r = await run(["policy", "test", "config/policy-tests.yaml"]);
    // no --config: it says which configuration it read
    expect(r.stderr).toBe("jitbroker: reading config/broker.yaml (the default; --config to read another)\n");
    expect(r.code).toBe(0);
    const cases = (parseYaml(readFileSync(path.join(ROOT, "config/policy-tests.yaml"), "utf8")) as { cases: { name: string }[] }).cases;
    const out = lines(r.stdout);
    expect(out[0]).toMatch(new RegExp(`^config/policy-tests\\.yaml: ${cases.length} cases against \\d+ policies from \\d+ files \\(set [0-9a-f]{12}\\), inventory of config/broker\\.yaml$`));
    const results = out.slice(1, -1).filter((l) => !l.startsWith(" ")); // indented: notes under a case
    expect(results).toHaveLength(cases.length);
    results.forEach((l, i) => expect(l.startsWith(`ok    ${cases[i]!.name}: `)).toBe(true));
    expect(out).toContain("        refused by the broker: only human workloads (operators) may admin_read: the broker refuses agent workloads before asking the policies");
    expect(out[out.length - 1]).toBe(`${cases.length} passed, 0 failed`);
  });

  it("covers every example policy: each one decides at least one case", async () => {
    const r = await run(["policy", "test", "config/policy-tests.yaml", "--json"]);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as { cases: { policy_ids: string[] }[] };
    const decided = new Set(report.cases.flatMap((c) => c.policy_ids));
    const dir = path.join(ROOT, "config/policies");
    const text = readdirSync(dir)
      .filter((f) => f.endsWith(".cedar"))
      .map((f) => readFileSync(path.join(dir, f), "utf8"))
      .join("\n");
    const all = [...text.matchAll(/@id\("([^"]+)"\)/g)].map((m) => m[1]!);
    expect(all.length).toBeGreaterThan(5);
    expect(all.filter((id) => !decided.has(id))).toEqual([]);
  });

  it("a table with a failing case exits 1, names the case, what was expected and what decided", async () => {
    const file = table(
      "failing.yaml",
      `cases:
  - { workload: support-agent, role: orders-read, expect: allow }
  - name: "deploys on Sunday"
    workload: payments-deployer
    role: payments-deploy
    context: { time: { weekday: sun, hour: 10 } }
    expect: allow
  - { workload: support-agent, role: orders-write, expect: approval }
`,
    );
    const r = await run(["policy", "test", file, "--config", FIXTURE]);
    expect(r.code).toBe(1);
    const out = lines(r.stdout);
    expect(out.slice(1)).toEqual([
      "ok    support-agent → orders-read: allow (agents-request-read)",
      `FAIL  deploys on Sunday: expected allow, got deny (ci-deploy-working-hours)  [${path.relative(ROOT, file)}:3]`,
      `FAIL  support-agent → orders-write: expected approval, got deny (no policy matched: default deny)  [${path.relative(ROOT, file)}:8]`,
      "1 passed, 2 failed",
    ]);
    expect(lines(r.stderr)).toEqual(["jitbroker: 2 of 3 cases failed"]);
  });

  it("--json gives every case with its outcome, policies and errors, and still exits 1 on a mismatch", async () => {
    const file = table(
      "json.yaml",
      `cases:
  - { workload: alice, action: approve, role: orders-write, context: { requester: support-agent }, expect: allow }
  - { workload: support-agent, role: orders-read, context: { ttl: "15m" }, expect: allow }
`,
    );
    const r = await run(["policy", "test", file, "--config", FIXTURE, "--json"]);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(report).toEqual({
      file: path.relative(ROOT, file),
      policy_hash: expect.stringMatching(/^[0-9a-f]{64}$/),
      passed: 1,
      failed: 1,
      cases: [
        { index: 0, line: 2, workload: "alice", action: "approve", role: "orders-write", expected: "allow", actual: "deny", ok: false, policy_ids: ["operators-no-approval-of-own-workloads"], errors: [] },
        { index: 1, line: 3, workload: "support-agent", action: "request", role: "orders-read", expected: "allow", actual: "allow", ok: true, policy_ids: ["agents-request-read"], max_ttl_seconds: 600, errors: [] },
      ],
    });
  });

  it("exits 2 on unknown workloads and roles, with the case index, field and line of each", async () => {
    const file = table(
      "unknown.yaml",
      `cases:
  - { workload: support-agent, role: orders-read, expect: allow }
  - workload: nobody
    role: orders-read
    expect: deny
  - { workload: support-agent, role: orders-raed, expect: deny }
`,
    );
    const r = await run(["policy", "test", file, "--config", FIXTURE]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(lines(r.stderr)).toEqual([
      `${file}:3: cases[1].workload: unknown workload "nobody" (known: payments-deployer, support-agent, alice, bob, report-bot)`,
      `${file}:6: cases[2].role: unknown role "orders-raed" (known: orders-read, orders-write, customer-pii, metrics-read, payments-deploy)`,
      "jitbroker: 2 problems; nothing was run",
    ]);
  });

  it.each([
    ["a YAML error", "yaml.yaml", "cases:\n  - { workload: a\n", /^jitbroker: .*\/yaml\.yaml:3:1: /],
    ["a schema error", "schema.yaml", "cases:\n  - { workload: support-agent, role: orders-read, expect: maybe }\n", /^jitbroker: .*\/schema\.yaml:2: cases\[0\]\.expect: must be allow, deny or approval$/],
    ["an unknown key", "key.yaml", "cases:\n  - { workload: support-agent, role: orders-read, expect: deny, contexts: {} }\n", /^jitbroker: .*\/key\.yaml:2: cases\[0\]\.contexts: unknown key \(check the spelling\)$/],
    ["a bad context", "context.yaml", "cases:\n  - { workload: support-agent, role: orders-read, expect: deny, context: { at: tomorrow } }\n", /^jitbroker: .*\/context\.yaml:2: cases\[0\]\.context\.at: must be an RFC 3339 time/],
  ])("exits 2 on %s, one line naming it", async (_, name, text, message) => {
    const file = table(name, text);
    const r = await run(["policy", "test", file, "--config", FIXTURE]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(lines(r.stderr)).toHaveLength(1);
    expect(lines(r.stderr)[0]).toMatch(message);
  });

  it("exits 2 on a missing table and on a policy set that does not compile", async () => {
    const missing = await run(["policy", "test", path.join(tmp, "nope.yaml"), "--config", FIXTURE]);
    expect(missing.code).toBe(2);
    expect(lines(missing.stderr)).toEqual([`jitbroker: ${path.join(tmp, "nope.yaml")}: file not found`]);

    const dir = mkdtempSync(path.join(tmp, "broken-"));
    mkdirSync(path.join(dir, "policies"));
    writeFileSync(path.join(dir, "policies/bad.cedar"), 'permit (principal, action, resource) when { principal.kind == "agent" ;\n');
    writeFileSync(path.join(dir, "broker.yaml"), readFileSync(path.join(ROOT, FIXTURE), "utf8").replace('["../../../config/policies/*.cedar"]', '["policies/*.cedar"]'));
    const ok = table("one.yaml", "cases:\n  - { workload: support-agent, role: orders-read, expect: allow }\n");
    const r = await run(["policy", "test", ok, "--config", path.join(dir, "broker.yaml")]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    const err = lines(r.stderr);
    expect(err[0]).toBe("1 policy problem:");
    expect(err[1]).toMatch(new RegExp(`^  ${path.join(dir, "policies/bad.cedar")}:1: `));
    expect(err[err.length - 1]).toBe("jitbroker: the policy set has errors");
  });
});

describe("policy why", () => {
  const why = (...args: string[]) => run(["policy", "why", "--config", FIXTURE, ...args]);

  it("explains an allow after approval: the determining permit, its file:line and annotations, the max TTL", async () => {
    const r = await why("--workload", "support-agent", "--role", "orders-write", "--context", '{"task": {"id": "t-1", "intent": "refund"}}', "--at", "2026-03-02T09:00:00Z", "--ttl", "5m");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const agents = readFileSync(path.join(ROOT, "config/policies/agents.cedar"), "utf8").split("\n");
    const line = agents.findIndex((l) => l.includes('@id("agents-request-write-or-restricted-with-approval")')) + 1;
    expect(lines(r.stdout)).toEqual([
      'workload:  support-agent (kind agent, owner alice@example.com, issuer mesh, subject "spiffe://prod.example.org/agents/support")',
      "action:    request",
      "role:      orders-write (backend jwt, labels sensitivity=restricted access=write, ttl 2m max 10m)",
      'context:   task id="t-1" intent="refund"; ttl_seconds 300; approved false; time mon 2026-03-02 10:00 Europe/Berlin',
      "decision:  allow after approval",
      "determining policies:",
      `  agents-request-write-or-restricted-with-approval  permit  config/policies/agents.cedar:${line}`,
      '    @id("agents-request-write-or-restricted-with-approval") @approval("required") @max_ttl("15m")',
      "max ttl:   10m (role max 10m, @max_ttl 15m); asked 5m, the lease would last 5m",
      "errors:    none",
    ]);
  });

  it("explains a default deny in plain words and shows, for each permit alone, the condition that failed", async () => {
    const r = await why("--workload", "support-agent", "--role", "metrics-read");
    expect(r.code).toBe(0);
    const out = lines(r.stdout);
    expect(out.slice(4)).toEqual([
      "decision:  deny",
      "  no permit policy matched; nothing is allowed unless a policy permits it",
      "errors:    none",
      "permit policies for action request, each evaluated alone:",
      expect.stringMatching(/^  agents-request-read  config\/policies\/agents\.cedar:\d+$/),
      "    condition false: resource.labels has sensitivity",
      expect.stringMatching(/^  agents-request-write-or-restricted-with-approval  config\/policies\/agents\.cedar:\d+$/),
      '    condition false: context.task.intent != ""',
      expect.stringMatching(/^  ci-request-deploy-or-read  config\/policies\/ci\.cedar:\d+$/),
      '    condition false: principal.kind == "ci"',
    ]);
  });

  it("explains a forbid: the forbid decides and the permit it overrides matches", async () => {
    const r = await why("--workload", "payments-deployer", "--role", "payments-deploy", "--context", '{"time": {"weekday": "sat", "hour": 10}}');
    expect(r.code).toBe(0);
    const out = lines(r.stdout);
    expect(out).toContain("decision:  deny");
    expect(out).toContain("  a forbid policy matched: a forbid overrides every permit");
    expect(out[out.indexOf("determining policies:") + 1]).toMatch(/^  ci-deploy-working-hours  forbid  config\/policies\/ci\.cedar:\d+$/);
    expect(out[out.findIndex((l) => l.startsWith("  ci-request-deploy-or-read ")) + 1]).toBe("    matches (overridden)");
    expect(out).not.toContain("  no permit policy matched; nothing is allowed unless a policy permits it");
  });

  it("--json gives the decision, determining policies with annotations, TTLs and the request", async () => {
    const r = await why("--workload", "support-agent", "--role", "orders-read", "--ttl", "900", "--json");
    expect(r.code).toBe(0);
    const x = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(x).toMatchObject({
      decision: "allow",
      decision_text: "allow",
      default_deny: false,
      policy_ids: ["agents-request-read"],
      determining: [{ id: "agents-request-read", effect: "permit", file: "config/policies/agents.cedar", annotations: { id: "agents-request-read", max_ttl: "10m" } }],
      ttl: { asked_seconds: 900, role_max_seconds: 900, policy_max_seconds: 600, max_seconds: 600, lease_seconds: 600 },
      errors: [],
      permits: [],
      request: { principal: { id: "support-agent" }, action: "request", resource: { name: "orders-read" }, context: { ttl_seconds: 900, approved: false } },
    });
  });

  it("explains admin actions and approvals", async () => {
    const admin = await why("--workload", "bob", "--action", "admin_revoke");
    expect(admin.code).toBe(0);
    expect(lines(admin.stdout)).toContain("decision:  allow");
    const approve = await why("--workload", "alice", "--action", "approve", "--role", "orders-write", "--context", '{"requester": "support-agent"}');
    expect(approve.code).toBe(0);
    expect(lines(approve.stdout)).toContain("decision:  deny");
    expect(approve.stdout).toMatch(/^  operators-no-approval-of-own-workloads  forbid  /m);
  });

  it.each([
    [["--workload", "nobody", "--role", "orders-read"], 'jitbroker: --workload: unknown workload "nobody" (known: payments-deployer, support-agent, alice, bob, report-bot)'],
    [["--workload", "support-agent", "--role", "orders-read", "--context", "{task:"], /^jitbroker: --context: not JSON: /],
    [["--workload", "support-agent", "--role", "orders-read", "--context", "[]"], "jitbroker: --context: must be a JSON object"],
    [["--workload", "support-agent", "--role", "orders-read", "--context", '{"tsk": {}}'], "jitbroker: --context.tsk: unknown key (check the spelling)"],
    [["--workload", "support-agent", "--role", "orders-read", "--ttl", "1h"], "jitbroker: --ttl: 3600s exceeds role orders-read's max of 900s (the broker answers 422 ttl_too_long when a policy allows the request, 403 policy_denied otherwise)"],
    [["--workload", "support-agent", "--role", "orders-read", "--ttl", "soon"], 'jitbroker: --ttl: "soon" is not a duration (use e.g. 30s, 5m, 1h)'],
    [["--workload", "support-agent", "--role", "orders-read", "--at", "noon"], 'jitbroker: --at: must be an RFC 3339 time such as "2026-03-02T10:00:00Z"'],
    [["--workload", "support-agent", "--role", "orders-read", "--context", '{"time": {"weekday": 0, "hour": 9}}'], "jitbroker: --context.time.weekday: must be 1 (Monday) .. 7 (Sunday) or mon..sun"],
    [["--workload", "support-agent", "--role", "orders-read", "--context", '{"claims": {"tier": "gold"}}'], "jitbroker: --context.claims.tier: workload support-agent does not constrain claim tier, so the broker never passes it to policies (its claims: none)"],
    [["--workload", "bob", "--action", "admin_read", "--role", "orders-read"], "jitbroker: --role: admin_read acts on the broker as a whole: give no role"],
    [["--workload", "support-agent"], "jitbroker: --role: required for action request"],
    [["--role", "orders-read"], "jitbroker: usage: required option '--workload <id>' not specified (jitbroker policy why --help)"],
    [["--workload", "bob", "--action", "delete"], /^jitbroker: usage: option '--action <action>' argument 'delete' is invalid/],
  ])("exits 2 on bad input: %j", async (args, message) => {
    const r = await why(...args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(lines(r.stderr)[0]).toEqual(typeof message === "string" ? message : expect.stringMatching(message));
  });
});

describe("config check warnings", () => {
  it("lists one line per risky entry with its path and a fix, and still exits 0", async () => {
    const r = await run(["config", "check", "--config", RISKY]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const out = lines(r.stdout);
    const start = out.indexOf("warnings (9):");
    expect(start).toBeGreaterThan(0);
    const warnings = out.slice(start + 1);
    expect(warnings).toHaveLength(9);
    expect(warnings.map((w) => w.slice(0, w.indexOf(": ")))).toEqual([
      "  workloads[1] (docs-publisher)",
      "  workloads[2] (anything-from-mesh)",
      "  workloads[4] (ci-operator)",
      "  workloads[0] (payments-deployer) and workloads[3] (payments-release)",
      "  workloads[2] (anything-from-mesh) and workloads[5] (support-agent)",
      "  policy orders-reader-typo (test/policy/fixtures/risky-policies/risky.cedar:11)",
      "  policy deployer-typo (test/policy/fixtures/risky-policies/risky.cedar:18)",
      "  policy deployer-typo (test/policy/fixtures/risky-policies/risky.cedar:21)",
      "  roles[1] (billing-admin)",
    ]);
    for (const w of warnings) expect(w).toMatch(/; fix: \S/);
    expect(warnings[8]).toContain("no workload of the inventory is granted role billing-admin by the policies in the sampled contexts");
  });

  it("--strict exits 1 when there are warnings, 0 when there are none", async () => {
    const risky = await run(["config", "check", "--strict", "--config", RISKY]);
    expect(risky.code).toBe(1);
    expect(lines(risky.stderr)).toEqual(["jitbroker: 9 warnings (--strict)"]);
    const example = await run(["config", "check", "--strict", "--config", "config/broker.yaml"]);
    expect(example.stderr).toBe("");
    expect(example.code).toBe(0);
    expect(example.stdout).not.toContain("warnings");
  });

  it("exits 2 when the configured policies do not compile", async () => {
    const dir = mkdtempSync(path.join(tmp, "check-"));
    mkdirSync(path.join(dir, "policies"));
    writeFileSync(path.join(dir, "policies/a.cedar"), '@approval("requried") permit (principal, action, resource);\n');
    writeFileSync(path.join(dir, "broker.yaml"), readFileSync(path.join(ROOT, FIXTURE), "utf8").replace('["../../../config/policies/*.cedar"]', '["policies/*.cedar"]'));
    const r = await run(["config", "check", "--config", path.join(dir, "broker.yaml")]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(lines(r.stderr)).toEqual(["1 policy problem:", `  ${path.join(dir, "policies/a.cedar")}:1: invalid @approval("requried"): use "required" or "none"`, "jitbroker: the policy set has errors"]);
  });
});
