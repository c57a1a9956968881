/**
 * What the re-authorization walk reads of a lease (`decisionInputsOf`, `parseDecisionInputs`,
 * src/leases/store.ts): the same decision inputs `decode` reads, but strict, because a wrong
 * value here decides whether a credential stays alive. A Redis value an attacker (or a damaged
 * Redis) made malformed makes the lease unreadable (the walk revokes it), never a lease decided on
 * a default; a reply that is not the script's shape is an error, never a walk that skips leases.
 */
import { BrokerError } from "../core/errors";
import { decisionInputsOf, parseDecisionInputs } from "./store";

const base: Record<string, string> = {
  role: "orders-read",
  backend: "jwt",
  workload: "agent",
  task_id: "T-1",
  state: "active",
  iat: "1764000000000",
  exp: "1764000300000",
  ikind: "oidc",
  issuer: "idp",
  subject: "agent-1",
};

describe("decisionInputsOf", () => {
  it("reads the short field names of the current layout as it reads the full names of the layout before (k absent: oidc)", () => {
    const short = { r: "orders-read", b: "jwt", w: "agent", t: "T-1", state: "active", iat: base.iat!, exp: base.exp!, i: "idp", s: "agent-1", h: "j" };
    expect(decisionInputsOf("l_1", short)).toEqual(decisionInputsOf("l_1", base));
    expect(decisionInputsOf("l_1", { ...short, k: "spiffe" })).toMatchObject({ identity: { kind: "spiffe", issuer: "idp", subject: "agent-1" } });
    const { r: _r, ...noRole } = short;
    expect(decisionInputsOf("l_1", noRole)).toMatchObject({ unreadable: "its stored field role is missing or malformed", workload: "agent", task_id: "T-1" });
  });

  it("reads every decision input, joining values stored in pieces", () => {
    const intent = "é".repeat(40); // 80 bytes: two pieces
    const d = decisionInputsOf("l_1", {
      ...base,
      ti: intent.slice(0, 32),
      "ti.1": intent.slice(32),
      tt: "psql",
      ask: "600",
      cl: '{"ref":"refs/heads/main"}',
      apr: "rq_1",
      apb: "alice",
      par: "l_0",
      dep: "2",
      anc: "l_r l_0",
      chn: "ci agent2",
      obi: "idp",
      obs: "eve",
      obc: '{"groups":["ops"]}',
    });
    expect(d).toEqual({
      id: "l_1",
      workload: "agent",
      role: "orders-read",
      backend: "jwt",
      task_id: "T-1",
      task: { id: "T-1", intent, tool: "psql", destination: "", sensitivity: "" },
      identity: { kind: "oidc", issuer: "idp", subject: "agent-1" },
      claims: { ref: "refs/heads/main" },
      ttl_seconds: 300,
      asked_ttl_seconds: 600,
      issued_ms: 1764000000000,
      approval: { request_id: "rq_1", approved_by: "alice" },
      delegation: { parent: "l_0", depth: 2, ancestors: ["l_r", "l_0"], chain: ["ci", "agent2"] },
      obo: { issuer: "idp", subject: "eve", claims: { groups: ["ops"] } },
    });
  });

  it("a lease of the layout before (policy inline, no optional field) reads with its defaults", () => {
    const d = decisionInputsOf("l_old", { ...base, pids: '["agents-request-read"]', phash: "q83v" });
    expect(d).toMatchObject({ asked_ttl_seconds: 300, claims: {}, delegation: null, obo: null, task: { id: "T-1", intent: "" } });
    expect("approval" in d).toBe(false);
  });

  // Each of these would otherwise be decided on a wrong value: NaN passes every TTL comparison,
  // an absent workload or role would be reported as removed from the inventory with a made-up name.
  it.each([
    ["a tampered expiry (not a number: a TTL of NaN passes every TTL check)", { exp: "later" }, "exp"],
    ["an expiry before the issue time", { exp: "1763999999000" }, "exp"],
    ["a tampered issue time", { iat: "0x10" }, "iat"],
    ["a tampered asked TTL", { ask: "1e9" }, "ask"],
    ["claims that are not JSON", { cl: "{ref:" }, "cl"],
    ["claims that are JSON but not an object", { cl: '["refs/heads/main"]' }, "cl"],
    ["a tampered delegation depth", { par: "l_0", dep: "-1" }, "dep"],
    ["the person's claims not an object", { obs: "eve", obc: "null" }, "obc"],
    ["an unknown backend (no revoker, no revocation kind)", { backend: "ldap" }, "backend"],
    ["an unknown identity kind", { ikind: "saml" }, "ikind"],
    ["an issue time past what a date holds (toISOString would throw)", { iat: "9999999999999999", exp: "9999999999999999" }, "iat"],
  ])("%s makes the lease unreadable (the walk revokes it)", (_name, over, field) => {
    const d = decisionInputsOf("l_1", { ...base, ...over });
    expect(d).toEqual({ id: "l_1", workload: "agent", task_id: "T-1", state: "active", field, unreadable: `its stored field ${field} is missing or malformed` });
  });

  it.each(["role", "backend", "workload", "issuer", "subject", "iat", "exp"])("a lease without its %s is unreadable", (field) => {
    const { [field]: _gone, ...rest } = base;
    const d = decisionInputsOf("l_1", rest);
    expect(d).toMatchObject({ id: "l_1", unreadable: `its stored field ${field} is missing or malformed` });
  });

  it("an unreadable lease's reason names the field, never the stored value", () => {
    const d = decisionInputsOf("l_1", { ...base, cl: "secret-looking-value" });
    expect(JSON.stringify(d)).not.toContain("secret-looking-value");
  });
});

describe("parseDecisionInputs: the walk's read, as the script answers it", () => {
  const row = (id: string, h: Record<string, string>) => [id, ...Object.entries(h).flat()];

  it("reads the active leases and the ids of the others", () => {
    const page = parseDecisionInputs(JSON.stringify([["l_issuing", "l_revoking"], row("l_1", base), row("l_2", { ...base, cl: "nope" })]));
    expect(parseDecisionInputs(JSON.stringify([{}, row("l_1", base)])).skipped).toEqual([]); // cjson's empty table
    expect(page.skipped).toEqual(["l_issuing", "l_revoking"]);
    expect(page.leases).toHaveLength(2);
    expect(page.leases[0]).toMatchObject({ id: "l_1", workload: "agent", ttl_seconds: 300 });
    expect(page.leases[1]).toMatchObject({ id: "l_2", unreadable: expect.stringContaining("cl") });
  });

  it("a field named __proto__ in Redis is a plain field, not the record's prototype", () => {
    const page = parseDecisionInputs(JSON.stringify([[], ["l_1", ...Object.entries(base).flat(), "__proto__", "x"]]));
    expect(page.leases[0]).toMatchObject({ id: "l_1", role: "orders-read" });
  });

  it.each([
    ["not a text", 42],
    ["not JSON", "[[],"],
    ["not a list", '{"0":1}'],
    ["an empty list", "[]"],
    ["skipped ids that are not a list", '["l_1"]'],
    ["a skipped id that is not a string", '[["l_1", 7]]'],
    ["a row with a field but no value", '[[], ["l_1", "role"]]'],
    ["a row with a value that is not a string", '[[], ["l_1", "role", 5]]'],
    ["a row that is not a list", '[[], {"id": "l_1"}]'],
  ])("a reply with %s is an error (store_unavailable), not a walk that skips leases", (_name, reply) => {
    let err: unknown;
    try {
      parseDecisionInputs(reply);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BrokerError);
    expect((err as BrokerError).code).toBe("store_unavailable");
  });
});
