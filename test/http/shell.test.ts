import { getJson, startTestBroker, type TestBroker } from "../support/broker";
import { startTestIssuer, type TestIssuer } from "../support/oidc-issuer";

describe("HTTP shell", () => {
  let issuer: TestIssuer;
  let b: TestBroker;
  let token: string;

  beforeAll(async () => {
    issuer = await startTestIssuer();
    b = await startTestBroker({
      server: { public_url: "http://127.0.0.1:8080" },
      identity: { issuers: [{ name: "ci", type: "oidc", issuer: issuer.url, jwks_uri: `${issuer.url}/jwks`, algorithms: ["RS256"] }] },
      workloads: [{ id: "w", kind: "service", owner: "o", purpose: "p", issuer: "ci", subject: "svc" }],
    });
    token = await issuer.token({ sub: "svc" });
  });
  afterAll(async () => {
    await b.close();
    await issuer.close();
  });

  it("answers unknown routes with a problem document", async () => {
    const r = await getJson(`${b.url}/nope?x=1`);
    expect(r.status).toBe(404);
    expect(r.headers.get("content-type")).toMatch(/^application\/problem\+json/);
    expect(r.body).toMatchObject({ type: "urn:jitbroker:problem:not_found", title: "Not found", status: 404, code: "not_found", instance: "/nope" });
    expect(r.body.request_id).toBe(r.headers.get("x-request-id"));
  });

  it("authenticates before routing under /v1 (no route discovery without a token)", async () => {
    const r = await getJson(`${b.url}/v1/does-not-exist`);
    expect(r.status).toBe(401);
    expect(r.body.code).toBe("invalid_token");
  });

  it("echoes a well-formed X-Request-Id and replaces a hostile one", async () => {
    const ok = await getJson(`${b.url}/healthz`, undefined, { headers: { "x-request-id": "abc-123" } });
    expect(ok.headers.get("x-request-id")).toBe("abc-123");
    const bad = await getJson(`${b.url}/healthz`, undefined, { headers: { "x-request-id": "x".repeat(200) } });
    expect(bad.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("refuses bodies over 16 KiB with 413 and malformed JSON with 400", async () => {
    const big = await getJson(`${b.url}/v1/whoami`, token, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ pad: "x".repeat(17 * 1024) }),
    });
    expect(big.status).toBe(413);
    expect(big.body.code).toBe("payload_too_large");
    const bad = await getJson(`${b.url}/v1/whoami`, token, { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" });
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe("invalid_request");
  });

  it("exposes Prometheus metrics: requests, latencies and auth failures by reason", async () => {
    await getJson(`${b.url}/v1/whoami`, token);
    await getJson(`${b.url}/v1/whoami`, "garbage");
    const r = await fetch(`${b.url}/metrics`);
    const text = await r.text();
    expect(r.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(text).toMatch(/jitbroker_http_requests_total\{method="GET",route="\/v1\/whoami",status="200"\} [1-9]/);
    expect(text).toMatch(/jitbroker_http_request_duration_seconds_bucket\{le="[0-9.]+",method="GET",route="\/v1\/whoami"\}/);
    expect(text).toMatch(/jitbroker_auth_failures_total\{reason="malformed"\} [1-9]/);
  });

  it("never logs the workload token or the Authorization header", async () => {
    await getJson(`${b.url}/v1/whoami`, token);
    await getJson(`${b.url}/v1/whoami`, `${token}x`);
    const logs = b.logs.join("");
    expect(logs).toContain('"workload":"w"');
    expect(logs).not.toContain(token.split(".")[2]);
    expect(logs).not.toContain(token.split(".")[1]);
    expect(logs.toLowerCase()).not.toContain("bearer");
  });
});
