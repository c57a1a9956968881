/**
 * Issue 13, findings 6 and 7: no answer carries a stack trace or a path, the error handler cannot
 * fail, nothing from a token reaches a header; and the broker decides before it says why (no
 * role or TTL oracle for a workload without a permit, no issuer error details on /readyz).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { BrokerError } from "../../src/core/errors";
import { createHttpApp, finishApp } from "../../src/http/app";
import { createMetrics } from "../../src/http/metrics";
import { getJson, startTestBroker, type TestBroker } from "../support/broker";
import { startFixture, type Fixture } from "../support/fixture";

const b64u = (x: string) => Buffer.from(x).toString("base64url");
const STACK_OR_PATH = /\bat [\w.<>]+ \(|node_modules|\/src\/|\/work\/|[A-Z]:\\|<pre>|<html/i;

/** A raw HTTP request (fetch refuses some of these headers itself). */
function rawRequest(url: string, opts: { method?: string; path: string; headers?: Record<string, string>; body?: string | Buffer }): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method: opts.method ?? "GET", path: opts.path, headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

describe("an unauthenticated 500 with a stack trace (finding 6)", () => {
  let f: Fixture;
  const env = process.env.NODE_ENV;
  beforeAll(async () => {
    process.env.NODE_ENV = "development";
    f = await startFixture();
  });
  afterAll(async () => {
    process.env.NODE_ENV = env;
    await f.close();
  });

  it.each([
    ["CR/LF", "RS256\r\nX-Injected: 1"],
    ["characters above U+00FF", "RS256\u2028\u{1F600}"],
    ["a quote and a backslash", 'RS256"\\'],
    ["Latin-1", "RS256é"],
  ])("a token alg with %s: 401 problem+json, nothing of the token in any header", async (_name, alg) => {
    const token = `${b64u(JSON.stringify({ alg, typ: "JWT" }))}.${b64u(JSON.stringify({ iss: f.issuer.url, sub: "agent-1", aud: "jitbroker", exp: Math.floor(Date.now() / 1000) + 60 }))}.c2ln`;
    const r = await rawRequest(f.b.url, { path: "/v1/whoami", headers: { authorization: `Bearer ${token}` } });
    expect(r.status).toBe(401);
    expect(r.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(r.body).not.toMatch(STACK_OR_PATH);
    expect(JSON.parse(r.body)).toMatchObject({ code: "invalid_token" });
    expect(r.headers["www-authenticate"]).toBe('Bearer error="invalid_token", error_description="Invalid workload token"');
    expect(r.headers["x-injected"]).toBeUndefined();
    expect(JSON.stringify(r.headers)).not.toContain("RS256");
    expect(JSON.parse(r.body).detail).not.toContain(alg);
  });

  it.each([
    ["an unknown charset", { "content-type": "application/json; charset=utf-99" }, "{}", 415],
    ["an unknown content encoding", { "content-type": "application/json", "content-encoding": "compress-9" }, "{}", 415],
    ["gzip that is not gzip", { "content-type": "application/json", "content-encoding": "gzip" }, "not gzip at all", 400],
    ["a declared length that lies", { "content-type": "application/json", "content-length": "2" }, "{}", 201],
  ])("express's body-parser errors (%s) are problem documents too", async (_name, headers, body, _status) => {
    const r = await rawRequest(f.b.url, { method: "POST", path: "/v1/credentials", headers: { ...headers, authorization: `Bearer ${await f.token("agent")}` }, body });
    expect(r.status).toBeLessThan(500);
    expect(r.headers["content-type"]).toMatch(/^application\/(problem\+)?json/);
    expect(r.body).not.toMatch(STACK_OR_PATH);
  });
});

describe("the error handler cannot fail (finding 6)", () => {
  let server: http.Server;
  let url: string;
  const env = process.env.NODE_ENV;
  beforeAll(async () => {
    process.env.NODE_ENV = "development";
    const app = createHttpApp({ logger: pino({ level: "silent" }), metrics: createMetrics({ defaultMetrics: false }), bodyLimit: "16kb", trustProxy: false });
    app.get("/bigint", () => {
      throw new BrokerError("invalid_request", "x", { extra: { n: 10n } });
    });
    app.get("/header", () => {
      throw new BrokerError("rate_limited", "x", { headers: { "Retry-After": "1\r\nX-Evil: 1", "X-Émoji": "😀" } });
    });
    app.get("/thrower", () => {
      throw Object.defineProperty({}, "type", {
        get() {
          throw new Error("/secret/path/in/a/getter");
        },
      });
    });
    app.get("/null", () => {
      // eslint-disable-next-line @typescript-eslint/only-throw-error
      throw null;
    });
    app.get("/native", () => {
      throw new Error("ENOENT: /usr/lib/node_modules/something");
    });
    finishApp(app, pino({ level: "silent" }));
    server = http.createServer(app);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    process.env.NODE_ENV = env;
    await new Promise((r) => server.close(r));
  });

  it.each(["/bigint", "/header", "/thrower", "/null", "/native"])("%s: a problem document without a stack trace or path, whatever NODE_ENV says", async (p) => {
    const r = await rawRequest(url, { path: p });
    expect(r.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(r.body).not.toMatch(STACK_OR_PATH);
    expect(r.body).not.toContain("secret");
    expect(r.headers["x-evil"]).toBeUndefined();
    const doc = JSON.parse(r.body) as { status: number; code: string };
    expect(doc.status).toBe(r.status);
  });
});

describe("information before the decision (finding 7)", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture();
  });
  afterAll(() => f.close());

  const ask = (who: "agent" | "ci", body: unknown) => f.call("POST", "/v1/credentials", who, body);

  it("role oracle: a workload with no permit gets the same 403 for a role that exists and one that does not", async () => {
    // ci may request only deploy/read roles; orders-write exists, "payments-admin" does not.
    const existing = await ask("ci", { role: "orders-write", task: { id: "o-1" } });
    const missing = await ask("ci", { role: "payments-admin", task: { id: "o-1" } });
    expect([existing.status, existing.body.code]).toEqual([403, "policy_denied"]);
    expect([missing.status, missing.body.code]).toEqual([403, "policy_denied"]);
    expect(Object.keys(missing.body).sort()).toEqual(Object.keys(existing.body).sort());
  });

  it("max TTL oracle: a workload with no permit for a role does not learn the role's max TTL", async () => {
    const r = await ask("ci", { role: "orders-write", task: { id: "o-2" }, ttl: "1h" });
    expect([r.status, r.body.code]).toEqual([403, "policy_denied"]);
    expect(r.body.max_ttl_seconds).toBeUndefined();
    expect(r.body.detail).toBe("policy does not allow ci to request orders-write");
    expect(Object.keys(r.body).sort()).toEqual(["code", "detail", "instance", "policy_hash", "request_id", "status", "title", "type"]);
    // An allowed workload is told why, after the decision.
    const allowed = await ask("agent", { role: "orders-read", task: { id: "o-2" }, ttl: "1h" });
    expect([allowed.status, allowed.body.code, allowed.body.max_ttl_seconds]).toEqual([422, "ttl_too_long", 900]);
  });

  it("request id oracle (a sibling): a workload that may not approve gets 403 for a request that exists and one that does not", async () => {
    const pending = await ask("agent", { role: "orders-write", task: { id: "o-3", intent: "fix" } });
    expect(pending.status).toBe(202);
    for (const verb of ["approve", "deny"]) {
      const existing = await f.call("POST", `/v1/admin/requests/${pending.body.request.id}/${verb}`, "agent2");
      const missing = await f.call("POST", `/v1/admin/requests/rq_0000000000000000/${verb}`, "agent2");
      expect([existing.status, existing.body.code, missing.status, missing.body.code]).toEqual([403, "policy_denied", 403, "policy_denied"]);
      expect(missing.body.detail).toBe(existing.body.detail);
    }
    // An operator is told a request does not exist.
    expect((await f.call("POST", "/v1/admin/requests/rq_0000000000000000/deny", "alice")).status).toBe(404);
  });

  it("the refusals are decided and audited, sampled: the first of the interval is in the ledger, all are counted", async () => {
    const events = await f.b.broker.audit.range({ count: 10_000 });
    expect(events.filter((e) => e.type === "decision" && e.workload === "ci" && e.decision === "deny")).toEqual([expect.objectContaining({ role: "orders-write", sampled: true })]);
    const metrics = await (await fetch(`${f.b.url}/metrics`)).text();
    expect(metrics).toMatch(/^jitbroker_refusals_total\{kind="request"\} 3$/m);
  });
});

describe("/readyz shows no issuer error details (finding 7)", () => {
  let b: TestBroker;
  beforeAll(async () => {
    b = await startTestBroker({
      server: { public_url: "http://127.0.0.1:8080" },
      identity: { issuers: [{ name: "gone", type: "oidc", issuer: "https://issuer.invalid", jwks_file: "/nonexistent/secret-dir/jwks.json", algorithms: ["RS256"] }] },
      workloads: [{ id: "op", kind: "human", owner: "o@example.com", purpose: "p", issuer: "gone", subject: "op" }],
    });
  });
  afterAll(() => b.close());

  it("unauthenticated /readyz names the issuer and its state, never its error, path or URL", async () => {
    const r = await getJson(`${b.url}/readyz`);
    const text = JSON.stringify(r.body);
    expect(r.body.issuers).toEqual([{ name: "gone", state: "unavailable", keys: 0, loaded_at: null }]);
    expect(text).not.toMatch(/nonexistent|secret-dir|ENOENT|issuer\.invalid|last_error/);
    // The log has the reason.
    expect(b.logs.join("")).toMatch(/issuer key set could not be loaded/);
  });
});
