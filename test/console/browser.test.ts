/**
 * The operators' console in a real browser: Debian's Chromium (/usr/bin/chromium, installed by
 * scripts/test when missing; never a browser download) driven by playwright-core, against
 * `jitbroker dev` (the built CLI, as a child process) whose dev issuer signs people in with a
 * real authorization code flow with PKCE. Screenshots of each view are kept under
 * .jitbroker/artifacts/console/.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { parse, stringify } from "yaml";
import { devConfigYaml } from "../../src/dev/config";
import { ROOT, runCli, startServeProcess } from "../support/cli";
import { findFreePort } from "../support/redis-server";
import { waitFor } from "../support/fixture";

jest.setTimeout(120_000);

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = path.join(ROOT, ".jitbroker/artifacts/console");
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];

let home: string;
let broker: Awaited<ReturnType<typeof startServeProcess>>;
let url: string;
const tokens = new Map<string, string>();
const contexts: BrowserContext[] = [];

async function token(workload: string): Promise<string> {
  const t = tokens.get(workload);
  if (t) return t;
  const r = await runCli(["token", "dev", "--workload", workload], { env: { JITBROKER_HOME: home } });
  if (r.code !== 0) throw new Error(`token dev ${workload}: ${r.stderr}`);
  tokens.set(workload, r.stdout.trim());
  return r.stdout.trim();
}

async function call(method: string, p: string, who: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${url}${p}`, {
    method,
    headers: { authorization: `Bearer ${await token(who)}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function lease(task: string, intent = "answer a ticket"): Promise<string> {
  const r = await call("POST", "/v1/credentials", "support-agent", { role: "orders-read", task: { id: task, intent } });
  expect(r.status).toBe(201);
  return r.body.lease.id as string;
}

/** A fresh browser profile (its own --user-data-dir) per person. */
async function browser(): Promise<{ context: BrowserContext; page: Page }> {
  const profile = mkdtempSync(path.join(os.tmpdir(), "jitbroker-chromium-"));
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1360, height: 900 } });
  contexts.push(context);
  context.setDefaultTimeout(60_000);
  const page = context.pages()[0] ?? (await context.newPage());
  return { context, page };
}

async function signIn(page: Page, who: string): Promise<void> {
  await page.goto(`${url}/console/`);
  await page.getByRole("link", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Dev issuer: sign in" }).waitFor();
  await page.getByRole("button", { name: new RegExp(`^Sign in as ${who}\\b`) }).click();
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  home = mkdtempSync(path.join(os.tmpdir(), "jitbroker-console-"));
  // The dev configuration, plus an agent that the dev OIDC issuer vouches for (to be refused).
  const cfg = parse(devConfigYaml()) as { workloads: object[] };
  cfg.workloads.push({ id: "triage-agent", kind: "agent", owner: "carol@example.com", purpose: "Triages incidents", issuer: "dev-oidc", subject: "agent:triage" });
  writeFileSync(path.join(home, "dev.yaml"), stringify(cfg), { mode: 0o600 });
  const port = await findFreePort();
  broker = await startServeProcess(["dev", "--port", String(port)], { port, env: { JITBROKER_HOME: home }, readyTimeoutMs: 90_000 });
  url = broker.url;
});

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => undefined);
  await broker?.stop();
});

test("the console's pages carry a Content-Security-Policy without unsafe-inline, and its cookies are HttpOnly SameSite=Strict", async () => {
  const { context, page } = await browser();
  const res = await page.goto(`${url}/console/`);
  const csp = res!.headers()["content-security-policy"]!;
  expect(csp).toContain("script-src 'self'");
  expect(csp).toContain("default-src 'none'");
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).not.toContain("unsafe-inline");
  expect(csp).not.toContain("unsafe-eval");
  await shot(page, "sign-in");
  await signIn(page, "alice");
  await page.getByRole("heading", { name: "Leases" }).waitFor();
  const app = await page.request.get(`${url}/console/`);
  expect(app.headers()["content-security-policy"]).toBe(csp);
  expect(await app.text()).toContain('src="/console/assets/app.js"');
  const session = (await context.cookies()).find((c) => c.name === "jitbroker-console")!;
  expect(session).toMatchObject({ httpOnly: true, sameSite: "Strict", path: "/console" });
  // No token in the browser's storage.
  // (evaluated in the page; the strings keep the Node-side type check free of DOM types)
  expect(await page.evaluate("[localStorage.length, sessionStorage.length]")).toEqual([0, 0]);
  expect(await page.evaluate("document.cookie")).toBe("");
});

test("an agent's identity, and a person absent from the inventory, get a refusal page and no session", async () => {
  const { context, page } = await browser();
  await signIn(page, "triage-agent");
  await page.getByRole("heading", { name: "Not an operator" }).waitFor();
  expect(await page.getByRole("alert").textContent()).toContain('workload "triage-agent" of kind agent');
  await shot(page, "refused-agent");
  expect((await context.cookies()).some((c) => c.name === "jitbroker-console")).toBe(false);
  const api = await page.request.get(`${url}/console/api/v1/admin/leases`);
  expect(api.status()).toBe(401);
  expect((await api.json()).code).toBe("session_required");

  await signIn(page, "mallory@example.com");
  await page.getByRole("heading", { name: "Not an operator" }).waitFor();
  expect(await page.getByRole("alert").textContent()).toContain("not in the broker's inventory");
  expect((await context.cookies()).some((c) => c.name === "jitbroker-console")).toBe(false);
});

test("an operator signs in, sees a lease created through the API appear by itself, revokes it with a reason, and the API reports it revoked by that operator", async () => {
  const first = await lease("ticket-1001");
  const { page } = await browser();
  await signIn(page, "alice");
  await page.getByRole("heading", { name: "Leases" }).waitFor();
  await page.getByRole("link", { name: first }).waitFor();
  // Created after the page loaded: the list updates without a reload (within 10 s).
  const id = await lease("ticket-1002", "<img src=x onerror=alert(1)><b>refund</b>");
  await page.getByRole("link", { name: id }).waitFor({ timeout: 10_000 });
  await shot(page, "leases");

  await page.getByRole("link", { name: id }).click();
  await page.getByRole("heading", { name: "Who requested it" }).waitFor();
  // Workload text is text: the intent shows literally, no element was made from it.
  await page.getByText("<img src=x onerror=alert(1)><b>refund</b>", { exact: true }).waitFor();
  expect(await page.locator("main img, main b").count()).toBe(0);
  expect(await page.getByText("orders-read", { exact: false }).count()).toBeGreaterThan(0);
  await page.getByLabel("Reason").fill("suspicious refund burst");
  await page.getByRole("button", { name: "Review revocation" }).click();
  await page.getByText("This will end 1 lease").waitFor();
  await shot(page, "lease-detail");
  await page.getByRole("button", { name: "Revoke", exact: true }).click();
  await page.getByText(/Done: 1 of 1 revoked/).waitFor();
  await page.getByText("operator", { exact: true }).first().waitFor();

  const r = await call("GET", `/v1/leases/${id}`, "alice");
  expect(r.status).toBe(200);
  expect(r.body.lease.state).toBe("revoked");
  expect(r.body.lease.revocation).toMatchObject({ trigger: "operator", by: "alice", reason: "suspicious refund burst" });
  // The `revoked` event is appended after FINISH, which the page's progress already shows: wait for it.
  const h = await waitFor(async () => {
    const x = await call("GET", `/v1/admin/leases/${id}/history`, "alice");
    return x.body.events?.some((e: { type: string }) => e.type === "revoked") ? x : null;
  }, 10_000, "the revoked event in the lease's history");
  expect(h.body.events.some((e: { type: string; actor?: string }) => e.type === "revoked" && e.actor === "alice")).toBe(true);
  const other = await call("GET", `/v1/leases/${first}`, "alice");
  expect(other.body.lease.state).toBe("active");
});

test("revocation by task: the confirmation says how many leases will end, then shows progress to the end", async () => {
  await lease("incident-7");
  await lease("incident-7");
  const { page } = await browser();
  await signIn(page, "alice");
  await page.getByRole("heading", { name: "Leases" }).waitFor();
  await page.getByRole("link", { name: "Revoke" }).click();
  await page.getByLabel("Revoke by").selectOption("task_id");
  await page.getByLabel("Task", { exact: true }).fill("incident-7");
  await page.getByLabel("Reason").fill("incident 7 contained");
  await page.getByRole("button", { name: "Review revocation" }).click();
  await page.getByText('This will end 2 leases of task "incident-7"').waitFor();
  await shot(page, "revoke-confirm");
  await page.getByRole("button", { name: "Revoke", exact: true }).click();
  await page.getByText(/Done: 2 of 2 revoked/).waitFor();
  await shot(page, "revoke-done");
  const live = await call("GET", "/v1/admin/leases?task_id=incident-7&state=active", "alice");
  expect(live.body.leases).toHaveLength(0);
});

test("approvals: an operator approves one request and denies another with a reason, from the keyboard; the owner of the requester may not approve", async () => {
  const ask = async (task: string) => {
    const r = await call("POST", "/v1/credentials", "support-agent", { role: "orders-write", task: { id: task, intent: `update order for ${task}` } });
    expect(r.status).toBe(202);
    return r.body.request.id as string;
  };
  const yes = await ask("order-77");
  const no = await ask("order-78");

  // alice owns support-agent: the policies' four-eyes rule refuses her approval.
  const a = await browser();
  await signIn(a.page, "alice");
  await a.page.getByRole("link", { name: "Approvals" }).click();
  const aliceCard = a.page.getByRole("listitem").filter({ hasText: yes });
  await aliceCard.getByRole("button", { name: "Approve" }).click();
  await aliceCard.getByRole("alert").waitFor();
  expect(await aliceCard.getByRole("alert").textContent()).toContain("may not approve");

  const { page } = await browser();
  await signIn(page, "bob");
  await page.getByRole("link", { name: "Approvals" }).click();
  await page.getByRole("heading", { name: "Pending" }).waitFor();
  const card = (id: string) => page.getByRole("listitem").filter({ hasText: id });
  await card(yes).getByRole("button", { name: "Approve" }).waitFor();
  await shot(page, "approvals");
  // Keyboard only: type the reason, Tab to Approve, Enter.
  await card(yes).getByLabel("Reason").focus();
  await page.keyboard.type("ticket verified");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await card(no).getByLabel("Reason").fill("no change window");
  await card(no).getByRole("button", { name: "Deny" }).click();
  await page.getByRole("heading", { name: "Recently decided" }).waitFor();
  await page.getByRole("row").filter({ hasText: no }).getByText("denied").waitFor();
  await page.getByRole("row").filter({ hasText: yes }).getByText("approved").waitFor();

  const collected = await call("GET", `/v1/requests/${yes}`, "support-agent");
  expect(collected.status).toBe(201);
  expect(collected.body.lease.approval).toMatchObject({ approved_by: "bob" });
  const denied = await call("GET", `/v1/requests/${no}`, "support-agent");
  expect(denied.body.request).toMatchObject({ state: "denied", decided_by: "bob", reason: "no change window" });
});

test("a change without the session's CSRF token is refused, and the same change with it goes through", async () => {
  const id = await lease("ticket-csrf");
  const { context, page } = await browser();
  await signIn(page, "alice");
  await page.getByRole("heading", { name: "Leases" }).waitFor();
  const body = { lease_id: id, reason: "csrf test" };
  const missing = await context.request.post(`${url}/console/api/v1/admin/revocations`, { data: body });
  expect(missing.status()).toBe(403);
  expect((await missing.json()).code).toBe("csrf_failed");
  const wrong = await context.request.post(`${url}/console/api/v1/admin/revocations`, { data: body, headers: { "x-csrf-token": "A".repeat(43) } });
  expect(wrong.status()).toBe(403);
  expect((await call("GET", `/v1/leases/${id}`, "alice")).body.lease.state).toBe("active");
  const session = await (await context.request.get(`${url}/console/api/session`)).json();
  const foreign = await context.request.post(`${url}/console/api/v1/admin/revocations`, { data: body, headers: { "x-csrf-token": session.csrf_token, origin: "http://evil.example" } });
  expect(foreign.status()).toBe(403);
  const ok = await context.request.post(`${url}/console/api/v1/admin/revocations`, { data: body, headers: { "x-csrf-token": session.csrf_token } });
  expect(ok.status()).toBe(202);
  // Paths of the API that are not operator views are not reachable through the console.
  const mint = await context.request.post(`${url}/console/api/v1/credentials`, { data: { role: "orders-read", task: { id: "x" } }, headers: { "x-csrf-token": session.csrf_token } });
  expect(mint.status()).toBe(404);
});

test("workloads and health views, and sign-out ends the session", async () => {
  await lease("ticket-2001");
  const { context, page } = await browser();
  await signIn(page, "alice");
  await page.getByRole("link", { name: "Workloads" }).click();
  await page.getByRole("cell", { name: "Answers support tickets" }).waitFor();
  await page.getByRole("button", { name: "Revoke all leases of support-agent" }).waitFor();
  await shot(page, "workloads");
  await page.getByRole("link", { name: "Health" }).click();
  await page.getByText(/Intact: \d+ events checked/).waitFor();
  await page.getByText("role master").waitFor();
  await page.getByText(/embedded \(single node\)/).waitFor();
  // The dev broker configures no audit sink: Health says so (with sinks it lists each one's state and lag).
  await page.getByRole("heading", { name: "Audit sinks" }).waitFor();
  await page.getByText(/No sinks configured/).waitFor();
  await shot(page, "health");

  const before = (await context.cookies()).find((c) => c.name === "jitbroker-console")!.value;
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("link", { name: "Sign in" }).waitFor();
  // The old cookie is dead server side, wherever it was copied to.
  const res = await fetch(`${url}/console/api/session`, { headers: { cookie: `jitbroker-console=${before}` } });
  expect(res.status).toBe(401);
  const page2 = await fetch(`${url}/console/`, { headers: { cookie: `jitbroker-console=${before}` } });
  expect(await page2.text()).toContain("Your session has ended");
});

test("screenshots were written", () => {
  for (const f of ["sign-in", "leases", "lease-detail", "approvals", "workloads", "health"]) expect(readFileSync(path.join(ARTIFACTS, `${f}.png`)).length).toBeGreaterThan(1000);
});
