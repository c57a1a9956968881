/**
 * The console's API in-process (no browser): what a session may do is what the REST API lets
 * its operator do, every change needs the CSRF token, and a session whose identity no longer
 * maps to a human workload is ended. Sessions are opened directly in the session store (the
 * OIDC sign-in itself is covered by browser.test.ts).
 */
import { createConsoleSessions } from "../../src/console/sessions";
import { createKeyspace } from "../../src/redis/keys";
import { getJson } from "../support/broker";
import { SUBJECTS, startFixture, type Fixture } from "../support/fixture";

let f: Fixture;
let plain: Fixture;
const CONSOLE = { console: { oidc: { issuer: "idp", client_id: "jitbroker-console" }, session_idle: "30m", session_max: "8h" } };

beforeAll(async () => {
  [f, plain] = await Promise.all([startFixture({ extra: CONSOLE }), startFixture()]);
});
afterAll(async () => {
  await Promise.all([f?.close(), plain?.close()]);
});

async function session(workload: string, subject: string): Promise<{ cookie: string; csrf: string }> {
  const s = createConsoleSessions(f.b.broker.redis, createKeyspace(f.b.config.redis.prefix), { idleMs: 1_800_000, maxMs: 28_800_000 });
  const { sid, session: rec } = await s.create({ workload, issuer: "idp", subject, claims: {} });
  return { cookie: `jitbroker-console=${sid}`, csrf: rec.csrf };
}

const consoleCall = (path: string, who: { cookie: string; csrf?: string } | null, init: { method?: string; body?: unknown; csrf?: boolean } = {}) =>
  getJson(`${f.b.url}/console/api${path}`, undefined, {
    method: init.method ?? "GET",
    headers: {
      ...(who ? { cookie: who.cookie } : {}),
      ...(init.body !== undefined ? { "content-type": "application/json" } : {}),
      ...(init.csrf && who?.csrf ? { "x-csrf-token": who.csrf } : {}),
    },
    ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
  });

async function lease(task: string): Promise<string> {
  const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: task } });
  expect(r.status).toBe(201);
  return r.body.lease.id;
}

test("a broker without a console section serves no console", async () => {
  expect((await getJson(`${plain.b.url}/console/`)).status).toBe(404);
  expect((await getJson(`${plain.b.url}/console/api/session`)).status).toBe(404);
});

test("without a session: the sign-in page under a strict CSP, and 401 session_required from the API", async () => {
  const page = await fetch(`${f.b.url}/console/`);
  expect(page.status).toBe(200);
  expect(await page.text()).toContain('href="/console/login"');
  const csp = page.headers.get("content-security-policy")!;
  expect(csp).toMatch(/script-src 'self'/);
  expect(csp).not.toMatch(/unsafe-inline/);
  expect(page.headers.get("referrer-policy")).toBe("no-referrer");
  for (const cookie of [null, { cookie: "jitbroker-console=forged" }, { cookie: `jitbroker-console=${"A".repeat(43)}` }]) {
    const r = await consoleCall("/v1/admin/leases", cookie);
    expect(r.status).toBe(401);
    expect(r.body.code).toBe("session_required");
  }
});

test("an operator's session lists and revokes through the API's own handlers, with the operator as actor; changes need the CSRF token", async () => {
  const alice = await session("alice", SUBJECTS.alice);
  const id = await lease("console-1");
  const list = await consoleCall("/v1/admin/leases?task_id=console-1", alice);
  expect(list.status).toBe(200);
  expect(list.body.leases.map((l: { id: string }) => l.id)).toEqual([id]);
  expect((await consoleCall(`/revocations/preview?task_id=console-1`, alice)).body.matched).toBe(1);

  const noCsrf = await consoleCall("/v1/admin/revocations", alice, { method: "POST", body: { lease_id: id, reason: "r" } });
  expect(noCsrf.status).toBe(403);
  expect(noCsrf.body.code).toBe("csrf_failed");
  const ok = await consoleCall("/v1/admin/revocations", alice, { method: "POST", body: { lease_id: id, reason: "seen in the console" }, csrf: true });
  expect(ok.status).toBe(202);
  const done = await (async () => {
    for (let i = 0; i < 100; i++) {
      const l = await f.call("GET", `/v1/leases/${id}`, "alice");
      if (l.body.lease.state === "revoked") return l.body.lease;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("not revoked");
  })();
  expect(done.revocation).toMatchObject({ trigger: "operator", by: "alice", reason: "seen in the console" });
});

test("a read-only operator reads but may neither preview nor start a revocation (Cedar admin_revoke, as on the API)", async () => {
  const bob = await session("bob", SUBJECTS.bob);
  await lease("console-2");
  expect((await consoleCall("/v1/admin/leases", bob)).status).toBe(200);
  expect((await consoleCall("/workloads", bob)).status).toBe(200);
  const preview = await consoleCall("/revocations/preview?task_id=console-2", bob);
  expect(preview.status).toBe(403);
  expect(preview.body.code).toBe("policy_denied");
  const r = await consoleCall("/v1/admin/revocations", bob, { method: "POST", body: { task_id: "console-2", reason: "x" }, csrf: true });
  expect(r.status).toBe(403);
  expect(r.body.code).toBe("policy_denied");
});

test("a session whose identity maps to an agent is refused and ended; API paths outside the operator views are not reachable", async () => {
  const agent = await session("agent", SUBJECTS.agent);
  const r = await consoleCall("/v1/admin/leases", agent);
  expect(r.status).toBe(401);
  expect(r.body.code).toBe("session_required");

  const alice = await session("alice", SUBJECTS.alice);
  for (const [method, path] of [
    ["POST", "/v1/credentials"],
    ["POST", "/v1/admin/policy/reload"],
    ["GET", "/v1/whoami"],
    ["POST", "/v1/tasks/t/complete"],
  ] as const) {
    const res = await consoleCall(path, alice, { method, body: method === "POST" ? {} : undefined, csrf: true });
    expect(res.status).toBe(404);
  }
});

test("sign-out ends every session of the operator", async () => {
  const a = await session("alice", SUBJECTS.alice);
  const b = await session("alice", SUBJECTS.alice);
  expect((await consoleCall("/logout", a, { method: "POST", body: {} })).status).toBe(403); // CSRF
  const out = await consoleCall("/logout", a, { method: "POST", body: {}, csrf: true });
  expect(out.status).toBe(200);
  expect(out.body.sessions_ended).toBeGreaterThanOrEqual(2);
  expect((await consoleCall("/session", a)).status).toBe(401);
  expect((await consoleCall("/session", b)).status).toBe(401);
});
