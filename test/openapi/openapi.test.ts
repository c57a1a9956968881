/**
 * GET /openapi.json: a valid OpenAPI 3.1 document (checked by @seriousme/openapi-schema-validator),
 * naming exactly the routes the express app serves, whose response schemas real responses of a
 * test broker satisfy (ajv, JSON Schema 2020-12), for every documented operation.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import Ajv2020 from "ajv/dist/2020";
import addFormats from "ajv-formats";
import type { Express } from "express";
import type { z } from "zod";
import { buildOpenApiDocument, openApiPath, type ApiRoute } from "../../src/http/openapi";
import { apiRoutes } from "../../src/api";
import { leaseSchema } from "../../src/leases/schemas";
import { approvalRequestSchema } from "../../src/approvals/api";
import type { Lease } from "../../src/leases/types";
import type { publicRequest } from "../../src/approvals/store";
import { getJson } from "../support/broker";
import { POLICIES, startFixture, waitFor, type Fixture } from "../support/fixture";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";

const ROOT = path.resolve(__dirname, "../..");

/** The ESM-only validator runs in a child process (jest runs CommonJS). */
function validateOpenApi(doc: unknown): Promise<{ valid: boolean; version?: string; errors?: unknown }> {
  const script = `
    import { Validator } from "@seriousme/openapi-schema-validator";
    let text = ""; for await (const c of process.stdin) text += c;
    const v = new Validator();
    const r = await v.validate(JSON.parse(text));
    console.log(JSON.stringify({ valid: r.valid, version: v.version, errors: r.errors }));`;
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, ["--input-type=module", "-e", script], { cwd: ROOT }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as { valid: boolean; version?: string; errors?: unknown });
    });
    child.stdin!.end(JSON.stringify(doc));
  });
}

/** Every (method, path) the express app routes, from its router stack. */
function expressRoutes(app: Express): string[] {
  const out: string[] = [];
  const walk = (stack: unknown[]) => {
    for (const layer of stack as { route?: { path: string; methods: Record<string, boolean> }; handle?: { stack?: unknown[] } }[]) {
      if (layer.route) {
        for (const [m, on] of Object.entries(layer.route.methods)) if (on && m !== "_all") out.push(`${m} ${layer.route.path}`);
      } else if (layer.handle?.stack) {
        walk(layer.handle.stack);
      }
    }
  };
  walk((app as unknown as { router: { stack: unknown[] } }).router.stack);
  return out.sort();
}

let f: Fixture;
let doc: { paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, unknown> }> }>> } & Record<string, unknown>;
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
const DOC_ID = "https://jitbroker.test/openapi.json";
/** operationId → statuses whose real responses validated. */
const validated = new Map<string, Set<number>>();

beforeAll(async () => {
  // The example policies, plus one that lets agents delegate read roles (token exchange).
  const dir = mkdtempSync(path.join(os.tmpdir(), "jitbroker-openapi-"));
  writeFileSync(
    path.join(dir, "delegate.cedar"),
    'permit (principal, action == Action::"delegate", resource is Role) when { principal.kind == "agent" && context.delegation.depth <= 2 && resource.labels has access && resource.labels.access == "read" };',
  );
  f = await startFixture({ extra: { policy: { files: [POLICIES, path.join(dir, "*.cedar")] } } });
  const r = await getJson(`${f.b.url}/openapi.json`);
  expect(r.status).toBe(200);
  doc = r.body;
  ajv.addSchema({ ...doc, $id: DOC_ID });
});
afterAll(() => f?.close());

const pointer = (...parts: string[]) => parts.map((p) => p.replace(/~/g, "~0").replace(/\//g, "~1")).join("/");

/** Validates a real response against the document's schema for that operation and status. */
function check(method: string, expressPath: string, res: { status: number; body: unknown; headers: Headers }): void {
  const p = openApiPath(expressPath);
  const op = doc.paths[p]?.[method] as { operationId: string; responses: Record<string, { content?: Record<string, unknown> }> } | undefined;
  if (!op) throw new Error(`${method} ${p} is not documented`);
  const documented = op.responses[String(res.status)];
  if (!documented) throw new Error(`${method} ${p} answered ${res.status}, which is not documented (${JSON.stringify(res.body)})`);
  const type = (res.headers.get("content-type") ?? "").split(";")[0]!.trim();
  if (!documented.content?.[type]) throw new Error(`${method} ${p} ${res.status}: content type ${type} is not documented`);
  const validate = ajv.getSchema(`${DOC_ID}#/${pointer("paths", p, method, "responses", String(res.status), "content", type, "schema")}`)!;
  if (!validate(res.body)) throw new Error(`${method} ${p} ${res.status} does not match its schema: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(res.body, null, 1)}`);
  if (!validated.has(op.operationId)) validated.set(op.operationId, new Set());
  validated.get(op.operationId)!.add(res.status);
}

describe("the document", () => {
  it("is valid OpenAPI 3.1", async () => {
    expect(doc.openapi).toBe("3.1.0");
    const r = await validateOpenApi(doc);
    expect(r).toEqual({ valid: true, version: "3.1" });
  }, 30_000);

  it("the validator does reject a broken document", async () => {
    const broken = JSON.parse(JSON.stringify(doc)) as typeof doc;
    (broken.paths["/v1/whoami"]!.get as Record<string, unknown>).responses = "none";
    expect((await validateOpenApi(broken)).valid).toBe(false);
  }, 30_000);

  it("documents exactly the routes the app serves", () => {
    const served = expressRoutes(f.b.broker.app);
    const documented = apiRoutes()
      .map((r: ApiRoute) => `${r.method} ${r.path}`)
      .sort();
    expect(served.length).toBeGreaterThan(15);
    // A route without an ApiRoute entry in src/http/openapi.ts shows up here.
    expect(served.filter((r) => !documented.includes(r))).toEqual([]);
    expect(documented.filter((r) => !served.includes(r))).toEqual([]);
  });

  it("takes request schemas from the handlers' own zod schemas", () => {
    const schemas = (doc.components as { schemas: Record<string, { properties?: Record<string, unknown>; required?: string[] }> }).schemas;
    expect(Object.keys(schemas.CredentialRequest!.properties!)).toEqual(["role", "task", "ttl", "scope"]);
    expect(schemas.CredentialRequest!.required).toEqual(["role", "task"]);
    const op = doc.paths["/v1/admin/leases"]!.get as unknown as { parameters: { name: string; in: string }[] };
    expect(op.parameters.map((x) => x.name)).toEqual(["workload", "task_id", "role", "issuer", "state", "parent", "limit", "cursor"]);
    // Built deterministically: the same routes give the same document.
    expect(buildOpenApiDocument(apiRoutes(), { serverUrl: f.b.config.server.public_url })).toEqual(doc);
  });
});

describe("real responses match the documented schemas", () => {
  const call = async (method: string, expressPath: string, concrete: string, who: Parameters<Fixture["call"]>[2], body?: unknown) => {
    const r = await f.call(method.toUpperCase(), concrete, who, body);
    check(method, expressPath, r);
    return r;
  };

  it("public endpoints", async () => {
    for (const p of ["/healthz", "/readyz", "/metrics", "/openapi.json", "/.well-known/jwks.json", "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]) {
      check("get", p, await getJson(`${f.b.url}${p}`));
    }
  });

  it("credentials, leases, tasks, introspection and problems", async () => {
    await call("get", "/v1/whoami", "/v1/whoami", "agent");
    const grant = await call("post", "/v1/credentials", "/v1/credentials", "agent", { role: "orders-read", task: { id: "oa-1", intent: "check" }, ttl: "1m" });
    expect(grant.status).toBe(201);
    const id = grant.body.lease.id as string;
    await call("post", "/v1/introspect", "/v1/introspect", "agent2", { token: grant.body.credential.token });
    await call("get", "/v1/leases/:id", `/v1/leases/${id}`, "agent");
    await call("delete", "/v1/leases/:id", `/v1/leases/${id}`, "agent", { reason: "done" });
    await call("post", "/v1/introspect", "/v1/introspect", "agent2", { token: grant.body.credential.token });
    await call("post", "/v1/credentials", "/v1/credentials", "agent", { role: "orders-read", task: { id: "oa-2" } });
    await call("post", "/v1/tasks/:task_id/complete", "/v1/tasks/oa-2/complete", "agent");
    // Problems: 400, 401, 403, 404, 409.
    expect((await call("post", "/v1/credentials", "/v1/credentials", "agent", { role: "orders-read", task: { id: "bad id" } })).status).toBe(400);
    expect((await call("post", "/v1/credentials", "/v1/credentials", null, { role: "orders-read", task: { id: "x" } })).status).toBe(401);
    expect((await call("post", "/v1/credentials", "/v1/credentials", "agent", { role: "orders-write", task: { id: "x" } })).status).toBe(403);
    // Decided before the role is looked up: no permit covers a role named "nope" (issue 13).
    expect((await call("post", "/v1/credentials", "/v1/credentials", "agent", { role: "nope", task: { id: "x" } })).status).toBe(403);
    expect((await call("post", "/v1/credentials", "/v1/credentials", "agent", { role: "orders-read", task: { id: "oa-2" } })).status).toBe(409);
    expect((await call("get", "/v1/leases/:id", "/v1/leases/l_nosuchleaseatall", "agent")).status).toBe(404);
  });

  it("token exchange: success and RFC 6749 errors", async () => {
    const grant = await call("post", "/v1/credentials", "/v1/credentials", "agent", { role: "orders-read", task: { id: "oa-x" } });
    const exchange = async (body: Record<string, string>, headers: Record<string, string> = {}) => {
      const r = await getJson(`${f.b.url}/v1/oauth/token`, undefined, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", ...headers }, body: new URLSearchParams(body).toString() });
      check("post", "/v1/oauth/token", r);
      return r;
    };
    const base = {
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      subject_token: grant.body.credential.token as string,
      subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
      actor_token: await f.token("agent2"),
      actor_token_type: "urn:ietf:params:oauth:token-type:jwt",
    };
    const ok = await exchange(base);
    expect(ok.status).toBe(200);
    await call("get", "/v1/admin/leases", `/v1/admin/leases?parent=${grant.body.lease.id}`, "bob");
    expect((await exchange({ ...base, scope: "orders:write" })).status).toBe(400);
    expect((await exchange(base, { authorization: "Bearer nope" })).status).toBe(401);
    const text = await getJson(`${f.b.url}/v1/oauth/token`, undefined, { method: "POST", headers: { "content-type": "text/plain" }, body: "x" });
    check("post", "/v1/oauth/token", text);
    expect(text.status).toBe(415);
  });

  it("approvals: pending, approved, collected, denied, listed", async () => {
    const pending = await call("post", "/v1/credentials", "/v1/credentials", "agent", { role: "orders-write", task: { id: "oa-w1", intent: "refund" } });
    expect(pending.status).toBe(202);
    const rq = pending.body.request.id as string;
    await call("get", "/v1/requests/:id", `/v1/requests/${rq}`, "agent");
    await call("get", "/v1/admin/requests", "/v1/admin/requests?state=pending_approval", "bob");
    await call("get", "/v1/admin/requests/:id", `/v1/admin/requests/${rq}`, "bob");
    await call("post", "/v1/admin/requests/:id/approve", `/v1/admin/requests/${rq}/approve`, "alice", { reason: "ok" });
    expect((await call("get", "/v1/requests/:id", `/v1/requests/${rq}`, "agent")).status).toBe(201);
    await call("get", "/v1/requests/:id", `/v1/requests/${rq}`, "agent");
    const other = (await call("post", "/v1/credentials", "/v1/credentials", "agent", { role: "orders-write", task: { id: "oa-w2", intent: "refund" } })).body.request.id as string;
    await call("post", "/v1/admin/requests/:id/deny", `/v1/admin/requests/${other}/deny`, "alice");
    expect((await call("post", "/v1/admin/requests/:id/approve", `/v1/admin/requests/${other}/approve`, "alice")).status).toBe(409);
  });

  it("operators: lists, bulk revocation and its progress, history", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await f.call("POST", "/v1/credentials", "agent2", { role: "orders-read", task: { id: `oa-op-${i}` } })).body.lease.id);
    await call("get", "/v1/admin/leases", "/v1/admin/leases?workload=agent2&limit=2", "bob");
    await call("get", "/v1/admin/readiness", "/v1/admin/readiness", "bob");
    const op = await call("post", "/v1/admin/revocations", "/v1/admin/revocations", "alice", { workload: "agent2", reason: "openapi test" });
    expect(op.status).toBe(202);
    await waitFor(async () => (await f.call("GET", `/v1/admin/revocations/${op.body.id}`, "alice")).body.state === "completed", 10_000, "the revocation");
    await call("get", "/v1/admin/revocations/:id", `/v1/admin/revocations/${op.body.id}`, "alice");
    await call("get", "/v1/admin/leases/:id/history", `/v1/admin/leases/${ids[0]}/history`, "alice");
    expect((await call("post", "/v1/admin/revocations", "/v1/admin/revocations", "bob", { workload: "agent2", reason: "x" })).status).toBe(403);
    await call("post", "/v1/admin/policy/reload", "/v1/admin/policy/reload", "alice");
  });

  it("every documented operation had a real success response validated", () => {
    const missing = apiRoutes()
      .filter((r) => ![...(validated.get(r.operationId) ?? [])].some((s) => s >= 200 && s < 300))
      .map((r) => r.operationId);
    expect(missing).toEqual([]);
  });
});

// Compile-time: the documented response schemas describe the broker's own types exactly.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const leaseSchemaIsLease: Same<z.output<typeof leaseSchema>, Lease> = true;
const approvalSchemaIsPublicRequest: Same<z.output<typeof approvalRequestSchema>, ReturnType<typeof publicRequest>> = true;
it("the Lease and ApprovalRequest schemas are the broker's types (checked by the compiler)", () => {
  expect([leaseSchemaIsLease, approvalSchemaIsPublicRequest]).toEqual([true, true]);
});
