/**
 * Issue 13, finding 2: terminal escapes in operator output. Every text the broker or a backend
 * supplies is printed with its control characters visible; the API refuses them in free text.
 */
import { requestRows, describeRequest } from "../../src/cli/client/approvals";
import { cliErrorOf } from "../../src/cli/client/common";
import { describeHistory, leaseRows } from "../../src/cli/client/operators";
import { safeText, visible } from "../../src/cli/text";
import { BrokerApiError } from "../../src/client/errors";
import { startFixture, type Fixture } from "../support/fixture";

/** What a terminal would act on: ESC, CSI (8-bit), CR, BEL, backspace, bidi overrides, separators. */
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200b\u200e\u200f\u2028-\u202e\u2060-\u2069\ufeff]/;

const ERASE_AND_REWRITE = "write everything\r\u001b[2Kread-only access";
const OSC52 = "\u001b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\u0007";
const C1_CSI = "\u009b2J";
const BIDI = "\u202eetirw\u202c";

const request = (intent: string) =>
  ({
    id: "rq_aaaaaaaaaaaaaaaa",
    state: "pending_approval",
    workload: "agent\u001b[31m",
    role: "orders-write",
    task_id: "t-1",
    task: { id: "t-1", intent, tool: "", destination: "", sensitivity: "" },
    identity: { kind: "oidc", issuer: "idp", subject: "agent-1" },
    policy: { ids: [], hash: "" },
    created_at: "2026-01-01T00:00:00.000Z",
    decided_by: "alice",
    reason: OSC52,
  }) as any;

describe("terminal escapes in operator output (finding 2)", () => {
  it("jitbroker requests: an intent with CR and erase-line cannot rewrite the row", () => {
    const out = requestRows([request(ERASE_AND_REWRITE), request(OSC52 + C1_CSI + BIDI)]);
    expect(out).not.toMatch(RAW_CONTROL);
    expect(out.split("\n")).toHaveLength(4); // header, two rows, final newline
    expect(out).toContain("write everything\\r\\x1b[2Kread-only access");
    expect(out).toContain("\\x1b]52;c;");
    expect(out).toContain("\\x9b2J");
    expect(out).toContain("\\u{202e}etirw");
  });

  it("jitbroker deny/approve: the request line shows the reason's escapes", () => {
    const out = describeRequest({ ...request("x"), state: "denied" });
    expect(out).not.toMatch(RAW_CONTROL);
    expect(out.trimEnd().split("\n")).toHaveLength(1);
  });

  it("jitbroker history: a lease owner's revocation reason (OSC 52) and a backend error cannot reach the terminal", () => {
    const lease = {
      id: "l_aaaaaaaaaaaa",
      role: "orders-read",
      backend: "jwt",
      workload: "agent",
      task_id: "t-1",
      state: "revoke_failed",
      issued_at: "2026-01-01T00:00:00.000Z",
      expires_at: "2026-01-01T00:05:00.000Z",
      revocation: { trigger: "owner", by: "agent\nfake line", reason: OSC52, at: "2026-01-01T00:01:00.000Z" },
      revocation_kind: "revocable",
      last_error: `backend said \u001b[8m${C1_CSI}`,
      revoke_attempts: 3,
    };
    const out = describeHistory({
      lease,
      requested_by: { workload: "agent", task: { id: "t-1", intent: ERASE_AND_REWRITE, tool: BIDI, destination: "", sensitivity: "" } },
      identity: { kind: "oidc", issuer: "idp", subject: "sub\r\u001b[2K" },
      allowed_by: { ids: ["p\u0007"], hash: "h" },
      ended: { state: "revoke_failed", ...lease.revocation, revoked_at: null },
      events: [{ type: "revocation_requested", at: "2026-01-01T00:01:00.000Z", actor: "agent", reason: OSC52, error: "\u001b[1A" }],
    } as any);
    expect(out).not.toMatch(RAW_CONTROL);
    expect(out.split("\n")).toHaveLength(8); // six lines, one event, final newline
    expect(out).toContain("\\x1b]52;c;");
  });

  it("jitbroker leases: cells are escaped before the columns are measured", () => {
    const out = leaseRows([{ id: "l_x", state: "active", workload: "w\u001b[2K", role: "r", task_id: "t", issued_at: "a", expires_at: "b", revocation: { trigger: "owner", by: "x\ry" } } as any]);
    expect(out).not.toMatch(RAW_CONTROL);
  });

  it("a problem's detail from the broker is one visible line on stderr", () => {
    const e = cliErrorOf(new BrokerApiError({ type: "t", title: "x", status: 403, code: "policy_denied", detail: `no\r\u001b[2Kyes${OSC52}` } as any));
    expect(e.message).not.toMatch(RAW_CONTROL);
    expect(e.message).not.toContain("\n");
  });

  it("the escaping helper: visible() escapes everything, safeText() keeps the CLI's own newlines and tabs", () => {
    expect(visible("a\nb\tc\u001bd\u007f\u0085\u2028\ud800")).toBe("a\\nb\\tc\\x1bd\\x7f\\x85\\u{2028}\\u{d800}");
    expect(safeText("col1\tcol2\nline2\r\u001b")).toBe("col1\tcol2\nline2\\r\\x1b");
    // Letters of any script, emoji with joiners, and backslashes are left alone.
    expect(visible("Grüße 日本 👨‍👩‍👧 a\\b")).toBe("Grüße 日本 👨‍👩‍👧 a\\b");
  });
});

describe("which characters the API accepts in free text (finding 2)", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture();
  });
  afterAll(() => f.close());

  it.each([
    ["CR + erase line", ERASE_AND_REWRITE],
    ["OSC 52", OSC52],
    ["C1 CSI", C1_CSI],
    ["bidi override", BIDI],
    ["newline", "a\nb"],
    ["tab", "a\tb"],
    ["lone surrogate", "a\ud800b"],
  ])("an intent with %s is refused with 400, nothing minted", async (_name, intent) => {
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "esc-1", intent } });
    expect([r.status, r.body.code]).toEqual([400, "invalid_request"]);
    expect(r.body.errors[0].field).toBe("task.intent");
  });

  it("letters of any script and emoji are accepted", async () => {
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "esc-2", intent: "Grüße, 日本語, עברית, 👨‍👩‍👧 — «ok»" } });
    expect(r.status).toBe(201);
  });

  it("a revocation reason and an approval reason follow the same rule", async () => {
    const lease = (await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "esc-3" } })).body.lease;
    const bad = await f.call("DELETE", `/v1/leases/${lease.id}`, "agent", { reason: OSC52 });
    expect([bad.status, bad.body.code]).toEqual([400, "invalid_request"]);
    const op = await f.call("POST", "/v1/admin/revocations", "alice", { lease_id: lease.id, reason: `ok\r${C1_CSI}` });
    expect([op.status, op.body.code]).toEqual([400, "invalid_request"]);
    const deny = await f.call("POST", "/v1/admin/requests/rq_aaaaaaaaaaaaaaaa/deny", "alice", { reason: BIDI });
    expect([deny.status, deny.body.code]).toEqual([400, "invalid_request"]);
  });

  it("the OpenAPI document says which characters free-text fields accept", async () => {
    const doc = (await f.call("GET", "/openapi.json", null)).body;
    const text = JSON.stringify(doc);
    expect(text).toContain("no control characters");
    const schemas = doc.components.schemas as Record<string, any>;
    const intent = schemas.CredentialRequest.properties.task.properties.intent;
    expect(intent.description).toContain("no control characters");
    expect(intent.maxLength).toBe(256);
    expect(new RegExp(intent.pattern).test("Grüße 👨‍👩‍👧")).toBe(true);
    expect(new RegExp(intent.pattern).test("a\u001bb")).toBe(false);
    expect(new RegExp(intent.pattern).test("a\u202eb")).toBe(false);
  });
});
