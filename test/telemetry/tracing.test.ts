/**
 * OpenTelemetry traces (src/telemetry) against an OTLP/HTTP receiver: the span tree of one
 * credential request (a SERVER root span and its children: token verification, policy decision,
 * each lease store script, the backend mint, the audit appends), a worker job's own trace, and
 * the same trace id in the request's access log line and in the audit events the request wrote
 * (chain still verifying, OCSF correlation_uid). Off without an endpoint: nothing is loaded.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parse, stringify } from "yaml";
import { verifyAuditChain } from "../../src/audit/ledger";
import { readAuditKey } from "../../src/audit/key";
import { toOcsf } from "../../src/audit/ocsf";
import { createKeyspace } from "../../src/redis/keys";
import { createTracing, NOOP_TRACING } from "../../src/telemetry/tracing";
import { getJson } from "../support/broker";
import { CLI, cleanEnv } from "../support/cli";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { findFreePort } from "../support/redis-server";
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from "../support/otlp-receiver";

jest.setTimeout(60_000);

const SERVER = 2; // OTLP SpanKind SPAN_KIND_SERVER

/**
 * The traced broker runs as a child process (`jitbroker serve` from dist/): the OTLP exporter
 * loads its transport with a dynamic import(), which jest's module sandbox cannot run. The
 * in-process fixture (API only, no telemetry) provides the issuer, the config and Redis access.
 */
describe("tracing on (telemetry.otlp_endpoint)", () => {
  let f: Fixture;
  let otlp: OtlpReceiver;
  let child: ChildProcess;
  let url: string;
  const logs: string[] = [];

  const call = async (method: string, p: string, who: "agent" | "alice", body?: unknown) =>
    getJson(`${url}${p}`, await f.token(who), { method, ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }) });

  beforeAll(async () => {
    otlp = await startOtlpReceiver();
    f = await startFixture({ worker: false });
    const cfg = parse(readFileSync(f.b.config.file, "utf8")) as Record<string, unknown>;
    const file = path.join(path.dirname(f.b.config.file), "traced.yaml");
    writeFileSync(file, stringify({ ...cfg, telemetry: { otlp_endpoint: otlp.url, service_name: "jitbroker-test" } }));
    const port = await findFreePort();
    url = `http://127.0.0.1:${port}`;
    child = spawn(process.execPath, [CLI, "serve", "--config", file], { env: cleanEnv({ JITBROKER_LISTEN: `127.0.0.1:${port}` }), stdio: ["ignore", "pipe", "pipe"] });
    let buf = "";
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split("\n");
      buf = parts.pop()!;
      logs.push(...parts.filter(Boolean));
    });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}: ${stderr}`);
      return (await fetch(`${url}/readyz`).catch(() => null))?.status === 200;
    }, 30_000, "the traced broker");
  });
  afterAll(async () => {
    if (child && child.exitCode === null) {
      await new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      });
    }
    await f?.close();
    await otlp?.close();
  });

  it("one credential request is one trace: a SERVER root span with the work as its children, and its trace id in the log line and the audit events", async () => {
    const r = await call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "traced-1" } });
    expect(r.status).toBe(201);
    const requestId = r.headers.get("x-request-id");
    const root = await waitFor(
      async () => otlp.spans.find((s) => s.name === "POST /v1/credentials" && !s.parentSpanId),
      20_000,
      "the request's root span",
    );
    expect(root.kind).toBe(SERVER);
    expect(root.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(root.attributes).toMatchObject({ "http.request.method": "POST", "http.route": "/v1/credentials", "http.response.status_code": 201 });
    expect(root.resource["service.name"]).toBe("jitbroker-test");

    // The children arrive in the same or a later export.
    // The jwt backend mints inside the process, before the lease write that records it active
    // (Backend.mintsLocally): no ACTIVATE span.
    const expected = ["token.verify", "policy.decide", "redis.exists task", "backend.mint", "redis.script CREATE", "audit.append"];
    const tree = await waitFor(
      async () => {
        const spans = otlp.spans.filter((s) => s.traceId === root.traceId);
        return expected.every((n) => spans.some((s) => s.name === n)) ? spans : null;
      },
      20_000,
      "every child span",
    );
    const children = tree.filter((s) => s.parentSpanId === root.spanId);
    for (const n of expected) expect(children.map((s) => s.name)).toContain(n);
    // Every span of the trace hangs off the root (nothing dangles), and the order of the work is kept.
    const ids = new Set(tree.map((s) => s.spanId));
    for (const s of tree) if (s !== root) expect(ids.has(s.parentSpanId!)).toBe(true);
    expect(tree.find((s) => s.name === "backend.mint")!.attributes["jitbroker.backend"]).toBe("jwt");
    expect(tree.find((s) => s.name === "redis.script CREATE")!.attributes["db.system.name"]).toBe("redis");
    expect(tree.some((s) => s.name === "redis.script ACTIVATE")).toBe(false);

    // The access log line of that request carries the trace id.
    const line = logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === "request" && l.request_id === requestId);
    expect(line?.trace_id).toBe(root.traceId);

    // So does every audit event the request wrote (decision and mint), and the chain still verifies.
    const events = (await f.b.broker.audit.range({ count: 1000 })).filter((e) => e.task_id === "traced-1");
    expect(events.map((e) => e.type).sort()).toEqual(expect.arrayContaining(["decision", "mint"]));
    for (const e of events) expect(e.trace_id).toBe(root.traceId);
    const keys = createKeyspace(f.b.config.redis.prefix);
    const key = await readAuditKey(f.b.config.audit.key_file);
    expect(await verifyAuditChain(f.b.broker.redis, { key, streamKey: keys.audit, headKey: keys.auditHead, anchorKey: keys.auditAnchor })).toMatchObject({ ok: true });
    const [exported] = await f.b.broker.audit.exportRange({ from: events.find((e) => e.type === "mint")!.seq, count: 1 });
    expect((toOcsf(exported!).metadata as Record<string, unknown>).correlation_uid).toBe(root.traceId);
  });

  it("a failed request's span says so by code, never by message", async () => {
    const r = await call("POST", "/v1/credentials", "agent", { role: "no-such-role", task: { id: "traced-2" } });
    expect(r.status).toBeGreaterThanOrEqual(400);
    const root = await waitFor(async () => otlp.spans.find((s) => s.name === "POST /v1/credentials" && s.attributes["http.response.status_code"] === r.status), 20_000, "the refused request's span");
    const spans = otlp.spans.filter((s) => s.traceId === root.traceId);
    expect(spans.some((s) => s.name === "policy.decide")).toBe(true);
    for (const s of spans) expect(JSON.stringify(s)).not.toMatch(/no policy|eyJ/); // no detail text, no token
  });

  it("a worker job is a trace of its own, with the revocation's store scripts and backend call in it", async () => {
    const r = await call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "traced-3" } });
    expect(r.status).toBe(201);
    expect((await call("DELETE", `/v1/leases/${r.body.lease.id}`, "agent")).status).toBe(200);
    // Spans arrive in export batches as they end (FINISH ends after backend.revoke): wait for both.
    const job: ReceivedSpan = await waitFor(
      async () => otlp.spans.find((s) => s.name.startsWith("job ") && !s.parentSpanId && ["backend.revoke", "redis.script FINISH"].every((n) => otlp.spans.some((c) => c.traceId === s.traceId && c.name === n))),
      20_000,
      "a job trace with a revocation and its FINISH",
    );
    const names = otlp.spans.filter((s) => s.traceId === job.traceId).map((s) => s.name);
    expect(names).toEqual(expect.arrayContaining(["backend.revoke", "redis.script FINISH"]));
  });
});

describe("tracing off (no endpoint)", () => {
  it("is the no-op: nothing wrapped, no trace id", () => {
    const t = createTracing({ service_name: "jitbroker" });
    expect(t).toBe(NOOP_TRACING);
    const obj = { f: async () => 1 };
    expect(t.wrap(obj, { f: "x" })).toBe(obj);
    expect(t.traceId()).toBeUndefined();
  });

  it("a broker built without telemetry never loads the OpenTelemetry SDK (only prom-client's own use of the API package)", () => {
    const dist = path.resolve(__dirname, "../../dist");
    const out = execFileSync(process.execPath, ["-e", `require(${JSON.stringify(path.join(dist, "broker.js"))}); require(${JSON.stringify(path.join(dist, "telemetry/tracing.js"))}); console.log(JSON.stringify(Object.keys(require.cache).filter((k) => /@opentelemetry\\/(?!api\\/)/.test(k))))`], { encoding: "utf8" });
    expect(JSON.parse(out)).toEqual([]);
  });
});
