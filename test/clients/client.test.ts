/**
 * `jitbroker/client` against a real broker (test/support/fixture.ts): credentials, leases, task
 * completion (withTask completes even when its function throws), token sources re-read on
 * every call, a fresh token after token_expired, 503 retried with backoff, typed errors.
 * Approval waiting is covered against a recording server standing in for the broker, with
 * every state the approval contract defines.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ApprovalError, BrokerApiError, BrokerClient, BrokerUnreachableError, githubActionsToken, TokenSourceError } from "../../src/client";
import { BackendError, type Backend } from "../../src/backends/types";
import { startFixture, type Fixture } from "../support/fixture";
import { startRecordingServer } from "../support/http-server";

const FAST = { attempts: 4, baseMs: 5, maxMs: 20 };

/** The broker's jwt backend, with mint failures on demand (a backend outage: 503). */
function flakyJwt() {
  let real: Backend | null = null;
  const ctl = {
    mints: 0,
    failNext: 0,
    use: (b: Backend) => (real = b),
    backend: {
      kind: "jwt",
      revocation: "revocable",
      async mint(lease, role) {
        ctl.mints++;
        if (ctl.failNext > 0) {
          ctl.failNext--;
          throw new BackendError("test backend is down", "unavailable");
        }
        return real!.mint(lease, role);
      },
      revoke: (lease, handle) => real!.revoke(lease, handle),
    } as Backend,
  };
  return ctl;
}

let f: Fixture;
const flaky = flakyJwt();
let tmp: string;

beforeAll(async () => {
  f = await startFixture({ backends: { jwt: flaky.backend } });
  flaky.use(f.b.broker.jwt);
  tmp = mkdtempSync(path.join(os.tmpdir(), "jit-client-"));
});
afterAll(async () => {
  await f?.close();
});

const client = (who: Parameters<Fixture["token"]>[0], extra: Partial<ConstructorParameters<typeof BrokerClient>[0]> = {}) =>
  new BrokerClient({ url: f.b.url, token: () => f.token(who), retry: FAST, ...extra });
const uniqueTask = (p: string) => `${p}-${Math.random().toString(36).slice(2, 10)}`;

describe("credentials and leases", () => {
  it("requests a credential, reads and introspects it, and revokes it", async () => {
    const agent = client("agent");
    const task = uniqueTask("t");
    const grant = await agent.requestCredential({ role: "orders-read", task: { id: task, intent: "answer a ticket" }, ttl: "2m" });
    expect(grant.credential.type).toBe("jwt");
    expect(grant.lease).toMatchObject({ role: "orders-read", workload: "agent", task_id: task, state: "active", task: { id: task, intent: "answer a ticket" } });
    expect([119, 120]).toContain(grant.lease.ttl_seconds); // expiries are whole seconds, never later than asked
    expect(await agent.getLease(grant.lease.id)).toEqual(grant.lease);
    const token = grant.credential.type === "jwt" ? grant.credential.token : "";
    expect(await agent.introspect(token)).toMatchObject({ active: true, lease_id: grant.lease.id, sub: "agent" });
    const revoked = await agent.revoke(grant.lease.id, "done early");
    expect(revoked.revocation).toMatchObject({ trigger: "owner", by: "agent", reason: "done early" });
    expect(await agent.introspect(token)).toEqual({ active: false });
  });

  it("whoami names the workload and the identity", async () => {
    const me = await client("ci").whoami();
    expect(me.workload).toEqual({ id: "ci", kind: "ci", owner: "ci@example.com", purpose: "deploys" });
    expect(me.identity).toMatchObject({ kind: "oidc", issuer: "idp", subject: "repo:acme/app" });
  });

  it("operators page through every lease, following cursors", async () => {
    const agent2 = client("agent2");
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await agent2.requestCredential({ role: "orders-read", task: uniqueTask("page") })).lease.id);
    const alice = client("alice");
    const seen: string[] = [];
    for await (const l of alice.leases({ workload: "agent2", state: "active" }, { pageSize: 3 })) seen.push(l.id);
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toEqual(expect.arrayContaining(ids));
    const firstFive: string[] = [];
    for await (const l of alice.leases({ workload: "agent2" }, { pageSize: 2, max: 5 })) firstFive.push(l.id);
    expect(firstFive).toHaveLength(5);
  });
});

describe("withTask", () => {
  it("completes the task when the function throws, and rethrows the function's error", async () => {
    const agent = client("agent");
    const task = uniqueTask("wt");
    const boom = new Error("the agent crashed");
    let leaseId = "";
    await expect(
      agent.withTask({ id: task, intent: "triage" }, async (t) => {
        expect(t.id).toBe(task);
        leaseId = (await t.requestCredential("orders-read")).lease.id;
        throw boom;
      }),
    ).rejects.toBe(boom);
    const lease = await agent.getLease(leaseId);
    expect(lease.task.intent).toBe("triage");
    expect(lease.revocation).toMatchObject({ trigger: "task_completed", by: "agent" });
    // I5: the task is final.
    const again = await agent.requestCredential({ role: "orders-read", task }).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(BrokerApiError);
    expect(again).toMatchObject({ status: 409, code: "task_completed" });
  });

  it("returns the function's result and completes the task", async () => {
    const agent = client("agent");
    const task = uniqueTask("wt");
    const out = await agent.withTask(task, async (t) => (await t.requestCredential("orders-read", { ttl: 30 })).lease);
    expect([29, 30]).toContain(out.ttl_seconds);
    expect((await agent.getLease(out.id)).revocation?.trigger).toBe("task_completed");
    expect(await agent.completeTask(task)).toEqual({ task_id: task, revoked: 0 });
  });
});

describe("typed errors", () => {
  it("carry the problem's status, code and detail, and never the token", async () => {
    const token = await f.token("agent");
    const agent = new BrokerClient({ url: f.b.url, token, retry: false });
    const denied = await agent.requestCredential({ role: "orders-write", task: uniqueTask("d") }).catch((e: unknown) => e);
    expect(denied).toBeInstanceOf(BrokerApiError);
    const d = denied as BrokerApiError;
    expect({ status: d.status, code: d.code }).toEqual({ status: 403, code: "policy_denied" });
    expect(d.detail).toContain("orders-write");
    expect(d.problem.request_id).toMatch(/.+/);
    expect(d.message).toBe(`policy_denied: ${d.detail}`);
    expect(`${d.message}${d.stack}`).not.toContain(token);

    // No policy lets this agent request a role named "nope": it learns nothing about which roles exist.
    await expect(agent.requestCredential({ role: "nope", task: uniqueTask("d") })).rejects.toMatchObject({ status: 403, code: "policy_denied" });
    const bad = (await agent.requestCredential({ role: "orders-read", task: "has spaces" }).catch((e: unknown) => e)) as BrokerApiError;
    expect(bad).toMatchObject({ status: 400, code: "invalid_request" });
    expect(bad.problem.errors).toEqual([{ field: "task.id", message: expect.stringContaining("[A-Za-z0-9._:@-]") }]);
    await expect(client("bob").startRevocation({ workload: "agent" }, "x")).rejects.toMatchObject({ status: 403, code: "policy_denied" });
    await expect(client("agent").getLease("l_doesnotexist00")).rejects.toMatchObject({ status: 404, code: "not_found" });
  });

  it("an unreachable broker is BrokerUnreachableError, after bounded retries", async () => {
    const dead = await startRecordingServer((_req, res) => res.end());
    const url = dead.url;
    await dead.close();
    const c = new BrokerClient({ url, token: "x.y.z", retry: { attempts: 2, baseMs: 1, maxMs: 2 } });
    const e = (await c.whoami().catch((x: unknown) => x)) as BrokerUnreachableError;
    expect(e).toBeInstanceOf(BrokerUnreachableError);
    expect(e.reason).toBe("ECONNREFUSED");
    expect(e.message).toBe(`cannot reach the broker at ${url}: ECONNREFUSED`);
  });

  it("a 401 invalid_token is raised at once, with the broker's reason", async () => {
    const c = new BrokerClient({ url: f.b.url, token: "not-a-jwt", retry: FAST });
    await expect(c.whoami()).rejects.toMatchObject({ status: 401, code: "invalid_token" });
  });
});

describe("retries and token refresh", () => {
  it("retries 503 backend_unavailable with backoff until the backend is back", async () => {
    flaky.failNext = 2;
    const before = flaky.mints;
    const grant = await client("agent").requestCredential({ role: "orders-read", task: uniqueTask("r") });
    expect(grant.lease.state).toBe("active");
    expect(flaky.mints - before).toBe(3);
  });

  it("gives up after the configured attempts with the 503 problem", async () => {
    flaky.failNext = 100;
    const before = flaky.mints;
    try {
      const e = (await client("agent", { retry: { attempts: 3, baseMs: 1, maxMs: 5 } })
        .requestCredential({ role: "orders-read", task: uniqueTask("r") })
        .catch((x: unknown) => x)) as BrokerApiError;
      expect(e).toBeInstanceOf(BrokerApiError);
      expect({ status: e.status, code: e.code, unavailable: e.unavailable }).toEqual({ status: 503, code: "backend_unavailable", unavailable: true });
      expect(flaky.mints - before).toBe(3);
    } finally {
      flaky.failNext = 0;
    }
  });

  it("re-reads a token file before every call (rotated Kubernetes tokens)", async () => {
    const file = path.join(tmp, "token");
    writeFileSync(file, `${await f.token("agent")}\n`);
    const c = new BrokerClient({ url: f.b.url, token: { file } });
    expect((await c.whoami()).workload.id).toBe("agent");
    writeFileSync(file, await f.token("agent2"));
    expect((await c.whoami()).workload.id).toBe("agent2");
    writeFileSync(file, "");
    await expect(c.whoami()).rejects.toThrow(new TokenSourceError(`token file ${file} is empty`));
    await expect(new BrokerClient({ url: f.b.url, token: { file: path.join(tmp, "missing") } }).whoami()).rejects.toThrow("no such file");
  });

  it("asks the token function again after 401 token_expired, once", async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await f.issuer.token({ sub: "agent-1" }, { iat: now - 600, exp: now - 300 });
    const tokens = [expired, await f.token("agent")];
    let calls = 0;
    const c = new BrokerClient({ url: f.b.url, token: () => tokens[Math.min(calls++, 1)]!, retry: FAST });
    expect((await c.whoami()).workload.id).toBe("agent");
    expect(calls).toBe(2);

    let always = 0;
    const stale = new BrokerClient({ url: f.b.url, token: () => (always++, expired), retry: FAST });
    await expect(stale.whoami()).rejects.toMatchObject({ status: 401, code: "token_expired" });
    expect(always).toBe(2);
  });
});

describe("GitHub Actions token source", () => {
  it("asks the runner's endpoint with the request token and the audience, and reuses the token until near its exp", async () => {
    const now = Math.floor(Date.now() / 1000);
    const seen: { url: string; auth?: string; accept?: string }[] = [];
    const idToken = await f.issuer.token({ sub: "repo:acme/app" }, { exp: now + 300 });
    const gh = await startRecordingServer((req, res) => {
      seen.push({ url: req.url ?? "", auth: req.headers.authorization, accept: req.headers.accept });
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ count: 1, value: idToken }));
    });
    try {
      const env = { ACTIONS_ID_TOKEN_REQUEST_URL: `${gh.url}/token?api-version=2.0`, ACTIONS_ID_TOKEN_REQUEST_TOKEN: "runner-request-token" };
      const source = githubActionsToken({ env, audience: "jitbroker" });
      const c = new BrokerClient({ url: f.b.url, token: source });
      expect((await c.whoami()).workload.id).toBe("ci");
      expect((await c.whoami()).workload.id).toBe("ci");
      expect(seen).toEqual([{ url: "/token?api-version=2.0&audience=jitbroker", auth: "Bearer runner-request-token", accept: "application/json" }]);
      source.invalidate!();
      await source.get();
      expect(seen).toHaveLength(2);
    } finally {
      await gh.close();
    }
  });

  it("explains what is missing outside a job with id-token: write, and refuses a failing endpoint", async () => {
    await expect(githubActionsToken({ env: {} }).get()).rejects.toThrow("permissions: id-token: write");
    const gh = await startRecordingServer((_req, res) => {
      res.statusCode = 403;
      res.end('{"message":"forbidden"}');
    });
    try {
      const e = (await githubActionsToken({ env: { ACTIONS_ID_TOKEN_REQUEST_URL: `${gh.url}/t?x=1`, ACTIONS_ID_TOKEN_REQUEST_TOKEN: "secret-request-token" } })
        .get()
        .catch((x: unknown) => x)) as TokenSourceError;
      expect(e).toMatchObject({ kind: "refused", message: "the GitHub Actions token endpoint answered HTTP 403" });
    } finally {
      await gh.close();
    }
  });
});

describe("approval waiting (a recording server following the approval contract)", () => {
  const grant = { lease: { id: "l_approvedlease00", state: "active" }, credential: { type: "jwt", token: "eyJ.a.b", expires_at: "2030-01-01T00:00:00.000Z" } };

  /** POST /v1/credentials answers 202; GET /v1/requests/rq_1 walks through `states`, then 201. */
  async function approvalServer(states: string[], final: "grant" | "stay" = "grant") {
    const polls: string[] = [];
    const srv = await startRecordingServer((req, res) => {
      res.setHeader("content-type", "application/json");
      if (req.method === "POST" && req.url === "/v1/credentials") {
        res.statusCode = 202;
        res.setHeader("location", "/v1/requests/rq_1");
        res.end(JSON.stringify({ request: { id: "rq_1", state: "pending_approval", role: "orders-write", task_id: "t", expires_at: "2030-01-01T00:00:00.000Z" } }));
        return;
      }
      if (req.method === "GET" && req.url === "/v1/requests/rq_1") {
        polls.push(req.headers.authorization ?? "");
        const next = states.length > 1 || final === "grant" ? states.shift() : states[0];
        if (next === undefined) {
          res.statusCode = 201;
          res.end(JSON.stringify({ ...grant, request: { id: "rq_1", state: "collected" } }));
        } else {
          res.end(JSON.stringify({ request: { id: "rq_1", state: next } }));
        }
        return;
      }
      res.statusCode = 404;
      res.end();
    });
    return { srv, polls };
  }

  it("without waitForApproval a 202 raises ApprovalError(pending_approval)", async () => {
    const { srv } = await approvalServer([]);
    try {
      const pending: string[] = [];
      const c = new BrokerClient({ url: srv.url, token: "a.b.c" });
      const e = (await c.requestCredential({ role: "orders-write", task: "t", onPending: (r) => pending.push(r.id) }).catch((x: unknown) => x)) as ApprovalError;
      expect(e).toBeInstanceOf(ApprovalError);
      expect({ state: e.state, requestId: e.requestId }).toEqual({ state: "pending_approval", requestId: "rq_1" });
      expect(pending).toEqual(["rq_1"]);
    } finally {
      await srv.close();
    }
  });

  it("polls GET /v1/requests/{id} with the workload token until it is collected", async () => {
    const { srv, polls } = await approvalServer(["pending_approval", "pending_approval"]);
    try {
      const c = new BrokerClient({ url: srv.url, token: "a.b.c" });
      const out = await c.requestCredential({ role: "orders-write", task: "t", waitForApproval: { timeoutMs: 10_000, pollMs: 10 } });
      expect(out.lease.id).toBe("l_approvedlease00");
      expect(polls).toEqual(["Bearer a.b.c", "Bearer a.b.c", "Bearer a.b.c"]);
    } finally {
      await srv.close();
    }
  });

  it.each([
    ["denied", "request rq_1 was denied"],
    ["expired", "request rq_1 expired before it was approved and collected"],
    ["collected", "request rq_1 was already collected"],
  ])("a request that ends %s raises ApprovalError", async (state, message) => {
    const { srv } = await approvalServer(["pending_approval", state], "stay");
    try {
      const c = new BrokerClient({ url: srv.url, token: "a.b.c" });
      const e = (await c.requestCredential({ role: "orders-write", task: "t", waitForApproval: { timeoutMs: 10_000, pollMs: 10 } }).catch((x: unknown) => x)) as ApprovalError;
      expect(e).toBeInstanceOf(ApprovalError);
      expect({ state: e.state, message: e.message }).toEqual({ state, message });
    } finally {
      await srv.close();
    }
  });

  it("gives up when the wait is over, with the request still pending", async () => {
    const { srv, polls } = await approvalServer(["pending_approval"], "stay");
    try {
      const c = new BrokerClient({ url: srv.url, token: "a.b.c" });
      const e = (await c.requestCredential({ role: "orders-write", task: "t", waitForApproval: { timeoutMs: 200, pollMs: 20 } }).catch((x: unknown) => x)) as ApprovalError;
      expect({ state: e.state, message: e.message }).toEqual({ state: "pending_approval", message: "request rq_1 is still pending approval after 0 s" });
      expect(polls.length).toBeGreaterThanOrEqual(2);
    } finally {
      await srv.close();
    }
  });
});
