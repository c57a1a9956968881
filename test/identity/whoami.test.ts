import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { getJson, startTestBroker, type TestBroker } from "../support/broker";
import { makeKey, signSvid, startTestIssuer, writeSpiffeBundle, type TestIssuer, type TestKey } from "../support/oidc-issuer";

describe("GET /v1/whoami", () => {
  let issuer: TestIssuer;
  let svidKey: TestKey;
  let b: TestBroker;

  beforeAll(async () => {
    issuer = await startTestIssuer();
    svidKey = await makeKey("ES256");
    const dir = mkdtempSync(path.join(os.tmpdir(), "jit-spiffe-"));
    const bundle = path.join(dir, "bundle.json");
    writeSpiffeBundle(bundle, [svidKey]);
    b = await startTestBroker({
      server: { public_url: "http://127.0.0.1:8080", audience: "jitbroker" },
      identity: {
        issuers: [
          { name: "ci", type: "oidc", issuer: issuer.url, discovery: true, algorithms: ["RS256", "ES256"] },
          { name: "mesh", type: "spiffe", trust_domain: "prod.example.org", bundle_file: bundle },
        ],
      },
      workloads: [
        { id: "deployer", kind: "ci", owner: "o@example.com", purpose: "p", issuer: "ci", subject: "repo:acme/payments", claims: { repository_id: "912345", ref: ["refs/heads/main", "refs/heads/release"] } },
        { id: "support-agent", kind: "agent", owner: "a@example.com", purpose: "p", issuer: "mesh", subject: "spiffe://prod.example.org/agents/support" },
      ],
    });
  });
  afterAll(async () => {
    await b.close();
    await issuer.close();
  });

  it("maps an OIDC token to its workload via discovery", async () => {
    const token = await issuer.token({ sub: "repo:acme/payments", repository_id: "912345", ref: "refs/heads/release" });
    const r = await getJson(`${b.url}/v1/whoami`, token);
    expect(r.status).toBe(200);
    expect(r.body.workload).toEqual({ id: "deployer", kind: "ci", owner: "o@example.com", purpose: "p" });
    expect(r.body.identity).toMatchObject({ kind: "oidc", issuer: "ci", iss: issuer.url, subject: "repo:acme/payments", matched_claims: { repository_id: "912345", ref: "refs/heads/release" } });
    expect(issuer.requests).toContain("/.well-known/openid-configuration");
  });

  it("maps a JWT-SVID to its workload by trust domain", async () => {
    const r = await getJson(`${b.url}/v1/whoami`, await signSvid(svidKey, "spiffe://prod.example.org/agents/support"));
    expect(r.status).toBe(200);
    expect(r.body.workload.id).toBe("support-agent");
    expect(r.body.identity).toMatchObject({ kind: "spiffe", issuer: "mesh", iss: null, subject: "spiffe://prod.example.org/agents/support" });
  });

  it("refuses a valid token that matches no workload with 403 unknown_workload", async () => {
    for (const claims of [
      { sub: "repo:acme/payments", repository_id: "912345", ref: "refs/heads/feature" },
      { sub: "repo:acme/payments", repository_id: "000", ref: "refs/heads/main" },
      { sub: "repo:acme/other", repository_id: "912345", ref: "refs/heads/main" },
      { sub: "repo:acme/payments", ref: "refs/heads/main" },
    ]) {
      const r = await getJson(`${b.url}/v1/whoami`, await issuer.token(claims));
      expect(r.status).toBe(403);
      expect(r.body.code).toBe("unknown_workload");
      expect(r.headers.get("content-type")).toMatch(/^application\/problem\+json/);
    }
    const svid = await signSvid(svidKey, "spiffe://prod.example.org/agents/other");
    expect((await getJson(`${b.url}/v1/whoami`, svid)).body.code).toBe("unknown_workload");
  });
});
