/**
 * The README's walk-through, run: `jitbroker dev` on a temp JITBROKER_HOME, then each documented
 * step in order (the curl calls as fetch, the CLI calls as the CLI), each answer checked for the
 * shape the README shows, each step using what the previous ones created. The README's policy
 * hash and workload count are compared with the running broker's, so the text cannot drift from
 * what a user sees.
 */
import { execFile } from "node:child_process";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { CLI, cleanEnv, ROOT } from "../support/cli";
import { startDevBroker, type DevBroker } from "../support/dev-broker";
import { waitFor } from "../support/fixture";

jest.setTimeout(60_000);
const run = promisify(execFile);
const README = readFileSync(path.join(ROOT, "README.md"), "utf8");
const WALK = README.slice(README.indexOf("## Walk-through"), README.indexOf("## Configuration"));

let tmp: string;
let home: string;
let broker: DevBroker;
const tok: Record<string, string> = {};

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { cwd: tmp, env: cleanEnv({ JITBROKER_HOME: home, ...env }), timeout: 30_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    if (typeof x.code !== "number") throw e;
    return x;
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function api(method: string, p: string, token: string, body?: unknown): Promise<{ status: number; headers: Headers; body: any }> {
  const res = await fetch(`${broker.url}${p}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), "jit-walk-"));
  home = path.join(tmp, ".jitbroker");
  broker = await startDevBroker(process.execPath, [CLI], { home, cwd: tmp });
  for (const w of ["support-agent", "billing-api", "alice", "bob"]) tok[w] = (await cli(["token", "dev", "--workload", w])).stdout.trim();
}, 90_000);

afterAll(async () => {
  await broker?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

// The state the steps hand on to each other.
let firstLease: string;
let cred: string;
let policyHash: string;
let requestId: string;
let approvedLease: string;

it("every answer the README shows is one line of JSON, as the broker prints it (no hand-made excerpts)", () => {
  const blocks = [...WALK.matchAll(/```text\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const json = blocks.flatMap((b) => b.split("\n")).filter((l) => l.startsWith("{"));
  expect(json.length).toBeGreaterThan(20);
  for (const line of json) expect(() => JSON.parse(line)).not.toThrow();
});

it("start: the banner lists the five demo workloads, as the README says", () => {
  const m = /workloads: (.*)\n/.exec(broker.output());
  expect(m![1]!.split(", ")).toEqual(["payments-deployer (ci)", "support-agent (agent)", "billing-api (service)", "alice (human)", "bob (human)"]);
  expect(README).toContain("with five workloads and two roles");
  expect(WALK).toContain("workloads: payments-deployer (ci), support-agent (agent), billing-api (service), alice (human), bob (human)");
});

it("whoami: the support agent's SPIFFE identity", async () => {
  const r = await api("GET", "/v1/whoami", tok["support-agent"]!);
  expect(r.status).toBe(200);
  expect(r.body.workload).toEqual({ id: "support-agent", kind: "agent", owner: "alice@example.com", purpose: "Answers support tickets" });
  expect(r.body.identity).toMatchObject({ kind: "spiffe", issuer: "dev-mesh", subject: "spiffe://dev.jitbroker.local/agents/support" });
});

it("a credential for ticket-42: 201, allowed by agents-request-read, 5 minutes, under the policy hash the README shows", async () => {
  const r = await api("POST", "/v1/credentials", tok["support-agent"]!, { role: "orders-read", task: { id: "ticket-42", intent: "answer a ticket" } });
  expect(r.status).toBe(201);
  expect(r.body.lease).toMatchObject({ role: "orders-read", backend: "jwt", workload: "support-agent", task_id: "ticket-42", state: "active", revocation_kind: "revocable", policy: { ids: ["agents-request-read"] } });
  expect(r.body.lease.ttl_seconds).toBeGreaterThan(290);
  expect(r.body.lease.ttl_seconds).toBeLessThanOrEqual(300);
  expect(r.body.credential).toMatchObject({ type: "jwt", token: expect.stringMatching(/^ey/) });
  firstLease = r.body.lease.id;
  cred = r.body.credential.token;
  // the README keeps the answer in $RESP and takes the token out of it with grep and cut: that
  // command, run on this answer as curl prints it, gives the token
  const extract = WALK.split("\n").find((l) => l.startsWith("$ CRED="))!.slice(2);
  expect(extract).toBe(`CRED=$(echo "$RESP" | grep -o '"token":"[^"]*"' | cut -d'"' -f4)`);
  const shell = await run("bash", ["-c", `${extract}; printf %s "$CRED"`], { env: { PATH: process.env.PATH, RESP: JSON.stringify(r.body) } });
  expect(shell.stdout).toBe(cred);
  policyHash = r.body.lease.policy.hash;
  // every full or shortened hash of the example policy set in the README is this one
  // (policy references: `"ids": [...], "hash": "..."`, as leases, requests and history show them)
  const shown = new Set([...WALK.matchAll(/"ids": ?\[[^\]]*\], ?"hash": ?"([0-9a-f]{8,64})(?:\.\.\.)?"/g)].map((m) => m[1]!));
  expect(shown.size).toBeGreaterThan(0);
  for (const h of shown) expect(policyHash.startsWith(h)).toBe(true);
});

it("introspection by the billing API: active", async () => {
  const r = await api("POST", "/v1/introspect", tok["billing-api"]!, { token: cred });
  expect(r.body).toMatchObject({ active: true, sub: "support-agent", aud: "https://orders.internal", scope: "orders:read", lease_id: firstLease, role: "orders-read" });
});

it("complete the task: its lease is revoked, introspection says inactive, the task is final", async () => {
  expect((await api("POST", "/v1/tasks/ticket-42/complete", tok["support-agent"]!)).body).toEqual({ task_id: "ticket-42", revoked: 1 });
  // Inactive at once (the lease left "active" with the completion); the worker finishes the
  // revocation a few milliseconds later (longer on a loaded machine), as the README's next GET shows.
  expect((await api("POST", "/v1/introspect", tok["billing-api"]!, { token: cred })).body).toEqual({ active: false });
  const lease = await waitFor(async () => {
    const l = (await api("GET", `/v1/leases/${firstLease}`, tok["support-agent"]!)).body.lease;
    return l.state === "revoking" ? null : l;
  }, 10_000, "the completed task's lease to be revoked");
  expect(lease).toMatchObject({ state: "revoked", revocation: { trigger: "task_completed", by: "support-agent" } });
  const again = await api("POST", "/v1/credentials", tok["support-agent"]!, { role: "orders-read", task: { id: "ticket-42" } });
  expect(again.status).toBe(409);
  expect(again.body.code).toBe("task_completed");
});

it("write access without an intent is denied; with one it waits for approval (202, Location)", async () => {
  const denied = await api("POST", "/v1/credentials", tok["support-agent"]!, { role: "orders-write", task: { id: "ticket-43" } });
  expect(denied.status).toBe(403);
  expect(denied.body.code).toBe("policy_denied");
  const pending = await api("POST", "/v1/credentials", tok["support-agent"]!, { role: "orders-write", task: { id: "ticket-43", intent: "refund order 43" } });
  expect(pending.status).toBe(202);
  expect(pending.body.request).toMatchObject({ state: "pending_approval", workload: "support-agent", role: "orders-write", task_id: "ticket-43", policy: { ids: ["agents-request-write-or-restricted-with-approval"], hash: policyHash } });
  requestId = pending.body.request.id;
  expect(pending.headers.get("location")).toBe(`/v1/requests/${requestId}`);
});

it("bob sees it pending; alice (the agent's owner) may not approve it; bob approves", async () => {
  const list = await api("GET", "/v1/admin/requests?state=pending_approval", tok.bob!);
  expect(list.body.requests.map((q: { id: string }) => q.id)).toEqual([requestId]);
  const alice = await api("POST", `/v1/admin/requests/${requestId}/approve`, tok.alice!);
  expect(alice.status).toBe(403);
  expect(alice.body.code).toBe("policy_denied");
  const bob = await api("POST", `/v1/admin/requests/${requestId}/approve`, tok.bob!, { reason: "refund approved in ticket 43" });
  expect(bob.body.request).toMatchObject({ state: "approved", decided_by: "bob", reason: "refund approved in ticket 43" });
});

it("the agent collects once: a lease naming the approval; the second time only the request", async () => {
  const first = await api("GET", `/v1/requests/${requestId}`, tok["support-agent"]!);
  expect(first.status).toBe(201);
  expect(first.body.lease).toMatchObject({ role: "orders-write", state: "active", approval: { request_id: requestId, approved_by: "bob" } });
  expect(first.body.request).toMatchObject({ state: "collected", lease_id: first.body.lease.id });
  approvedLease = first.body.lease.id;
  const second = await api("GET", `/v1/requests/${requestId}`, tok["support-agent"]!);
  expect(second.body.lease).toBeUndefined();
  expect(second.body.request.state).toBe("collected");
});

it("a policy change revokes the lease it no longer allows (the file watcher or the reload call, whichever is first); removing it and reloading restores the set", async () => {
  const file = path.join(home, "policies/agents.cedar");
  const original = readFileSync(file, "utf8");
  appendFileSync(file, '@id("suspend-support-agent")\nforbid (principal == Workload::"support-agent", action, resource);\n');
  const r = await api("POST", "/v1/admin/policy/reload", tok.alice!);
  expect(r.status).toBe(200);
  expect(r.body.policy.hash).not.toBe(policyHash);
  expect(r.body.policy.policies).toBe(10);
  expect(r.body.inventory).toMatchObject({ changed: false, workloads: 5, roles: 2 });
  // the README says: changed true and revoked 1, or changed false when the watcher was first
  if (r.body.policy.changed) expect(r.body.reauthorization).toMatchObject({ state: "completed", reevaluated: 1, revoked: 1, kept: 0 });
  const lease = await waitFor(async () => {
    const l = (await api("GET", `/v1/leases/${approvedLease}`, tok.alice!)).body.lease;
    return l.state === "revoked" ? l : null;
  }, 10_000, "the lease revoked by the policy change");
  expect(lease.revocation).toMatchObject({ trigger: "policy_change", reason: expect.stringContaining("forbidden by suspend-support-agent") });

  writeFileSync(file, original);
  const back = await api("POST", "/v1/admin/policy/reload", tok.alice!);
  expect(back.body.policy.hash).toBe(policyHash);
});

it("force-revocation: the agent holds two live leases again, alice revokes all of them", async () => {
  for (const t of ["ticket-44", "ticket-45"]) expect((await api("POST", "/v1/credentials", tok["support-agent"]!, { role: "orders-read", task: { id: t, intent: "answer a ticket" } })).status).toBe(201);
  const list = await api("GET", "/v1/admin/leases?workload=support-agent&state=active", tok.alice!);
  expect(list.body.leases.map((l: { task_id: string }) => l.task_id).sort()).toEqual(["ticket-44", "ticket-45"]);
  const op = await api("POST", "/v1/admin/revocations", tok.alice!, { workload: "support-agent", reason: "agent compromised (INC-1234)" });
  expect(op.status).toBe(202);
  expect(op.body).toMatchObject({ id: expect.stringMatching(/^op_/), matched: 2 });
  const done = await waitFor(async () => {
    const p = (await api("GET", `/v1/admin/revocations/${op.body.id}`, tok.alice!)).body;
    return p.state === "completed" ? p : null;
  }, 10_000, "the revocation to complete");
  expect(done).toMatchObject({ selector: { workload: "support-agent" }, by: "alice", matched: 2, revoked: 2, failed: 0 });
  // the README's listing (real output) shows the same two leases
  const shown = JSON.parse(WALK.split("\n")[WALK.split("\n").findIndex((l) => l.includes("/v1/admin/leases?workload=support-agent&state=active")) + 1]!) as { leases: { task_id: string }[] };
  expect(shown.leases.map((l) => l.task_id).sort()).toEqual(["ticket-44", "ticket-45"]);
  expect(WALK).toMatch(/"matched":2\b/);
});

it("history answers the four questions for the first lease", async () => {
  const h = await api("GET", `/v1/admin/leases/${firstLease}/history`, tok.alice!);
  expect(h.body).toMatchObject({
    requested_by: { workload: "support-agent", task: { id: "ticket-42", intent: "answer a ticket" } },
    identity: { kind: "spiffe", issuer: "dev-mesh" },
    allowed_by: { ids: ["agents-request-read"], hash: policyHash },
    ended: { state: "revoked", trigger: "task_completed", by: "support-agent" },
  });
  expect(h.body.events.map((e: { type: string }) => e.type)).toEqual(expect.arrayContaining(["mint", "revoked"]));
});

it("audit verify finds the running dev broker's configuration by itself and checks the chain", async () => {
  const r = await cli(["audit", "verify"]);
  expect(r.code).toBe(0);
  expect(r.stderr).toBe("jitbroker: reading .jitbroker/dev.yaml, the configuration of the running jitbroker dev (--config to read another)\n");
  expect(r.stdout).toMatch(/^audit chain OK: \d+ events verified(?: \(.*\))?; key [0-9a-f]{16}\n$/);
  expect(WALK).toContain("$ ./scripts/jitbroker audit verify\n");
});
