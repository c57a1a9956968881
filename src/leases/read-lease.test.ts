/**
 * `readLease`: the one read of a stored lease record (`get`, `getMany`, listings), as strict as the
 * re-authorization walk's (`decisionInputsOf`, whose checks it reuses). A record an attacker with
 * write access to Redis (or a damaged Redis) made malformed reads as an UnreadableLease naming
 * the field, never the value, and never throws: a throw out of a read would crash the caller
 * (GET /v1/leases/{id}, introspection, delegation, listings, the Vault reconcile pass).
 */
import { decisionInputsOf, isUnreadable, leaseUnreadable, publicLease, readLease, readable, UNKNOWN_ID, type LeaseResolver, type StoredLease, type UnreadableLease } from "./store";

const POLICY = { ids: ["agents-request-read"], hash: "ab".repeat(32) };
const resolver: LeaseResolver = { policy: (ref) => (ref === "ref1" ? POLICY : undefined), handle: (id, h) => (h.h === "j" ? { jti: id } : null) };

const IAT = "1764000000000";
const EXP = "1764000300000";

/** A lease as the current broker writes it (short names, policy ref, handle), revoked by its owner. */
const current: Record<string, string> = {
  r: "orders-read",
  b: "jwt",
  w: "agent",
  t: "T-1",
  state: "revoked",
  iat: IAT,
  exp: EXP,
  i: "idp",
  s: "agent-1",
  pr: "ref1",
  h: "j",
  tat: "1764000100000",
  rat: "1764000100500",
  trig: "owner",
  by: "agent",
  att: "1",
  cl: '{"ref":"refs/heads/main"}',
  par: "l_0",
  dep: "1",
  anc: "l_0",
  obi: "idp",
  obs: "eve",
  obc: '{"groups":["ops"]}',
};

/** The same lease as the layout before issue 17's second pass wrote it (v1: names in full, policy inline). */
const old: Record<string, string> = {
  role: "orders-read",
  backend: "vault",
  workload: "agent",
  task_id: "T-1",
  state: "active",
  iat: IAT,
  exp: EXP,
  ikind: "oidc",
  issuer: "idp",
  subject: "agent-1",
  pids: '["agents-request-read"]',
  phash: Buffer.from("ab".repeat(32), "hex").toString("base64url"),
  handle: '{"lease_id":"database/creds/orders-read/abc"}',
  bexp: EXP,
};

const read = (h: Record<string, string>) => readLease("l_1", h, resolver);
const unreadable = (h: Record<string, string>): UnreadableLease => {
  const l = read(h);
  if (!l || !isUnreadable(l)) throw new Error(`expected an unreadable lease, got ${JSON.stringify(l)}`);
  return l;
};
const without = (h: Record<string, string>, f: string) => Object.fromEntries(Object.entries(h).filter(([k]) => k !== f));

describe("readLease: the layouts as written read as before", () => {
  it("a lease of the current layout reads whole", () => {
    const l = read(current) as StoredLease;
    expect(isUnreadable(l)).toBe(false);
    expect(publicLease(l)).toMatchObject({
      id: "l_1",
      role: "orders-read",
      backend: "jwt",
      workload: "agent",
      state: "revoked",
      issued_at: new Date(Number(IAT)).toISOString(),
      expires_at: new Date(Number(EXP)).toISOString(),
      revoked_at: new Date(1764000100500).toISOString(),
      revocation: { trigger: "owner", by: "agent", at: new Date(1764000100000).toISOString() },
      identity: { kind: "oidc", issuer: "idp", subject: "agent-1" },
      policy: POLICY,
      ttl_seconds: 300,
      parent_lease_id: "l_0",
      on_behalf_of: { issuer: "idp", subject: "eve" },
      revoke_attempts: 1,
    });
    expect(l).toMatchObject({ handle: { jti: "l_1" }, claims: { ref: "refs/heads/main" }, trigger_at: 1764000100000, obo: { claims: { groups: ["ops"] } } });
  });

  it("a lease of the layout before (names in full, policy ids inline, JSON handle) reads whole", () => {
    const l = read(old) as StoredLease;
    expect(publicLease(l)).toMatchObject({ backend: "vault", revocation_kind: "revocable", policy: POLICY, backend_expires_at: new Date(Number(EXP)).toISOString(), identity: { kind: "oidc" } });
  });

  it("an expiry before its issue time (a child whose parent ended within the second) is shown as it is, never decided on", () => {
    const l = read({ ...current, exp: String(Number(IAT) - 500) });
    expect(l && !isUnreadable(l) ? l.expires_ms : null).toBe(Number(IAT) - 500);
    expect(decisionInputsOf("l_1", { ...current, exp: String(Number(IAT) - 500) })).toMatchObject({ field: "exp" });
  });

  it("a record without a state is gone (null), as is no record", () => {
    expect(read(without(current, "state"))).toBeNull();
    expect(read({})).toBeNull();
  });
});

describe("readLease: a tampered record is unreadable, names the field, never throws", () => {
  // [attack, the layout it is written in, the fields written over, the field named]
  const cases: [string, Record<string, string>, Record<string, string | undefined>, string][] = [
    // bad JSON
    ["claims that are not JSON (JSON.parse threw out of get)", current, { cl: "{ref:" }, "cl"],
    ["claims that are JSON but a list", current, { cl: '["x"]' }, "cl"],
    ["the person's claims not JSON", current, { obc: "{" }, "obc"],
    ["policy ids of the layout before not JSON", old, { pids: "[agents" }, "pids"],
    ["policy ids of the layout before not a list of strings", old, { pids: "[1,2]" }, "pids"],
    // times and numbers that are not whole numbers
    ["an issue time that is not a number (toISOString threw a RangeError)", current, { iat: "yesterday" }, "iat"],
    ["an expiry that is not a number", current, { exp: "NaN" }, "exp"],
    ["an expiry in exponent notation", old, { exp: "1.7e12" }, "exp"],
    ["a negative expiry", current, { exp: "-1" }, "exp"],
    ["a trigger time that is not a number", current, { tat: "soon" }, "tat"],
    ["a revocation time past what a date holds", current, { rat: "9999999999999999" }, "rat"],
    ["a backend expiry that is not a number", old, { bexp: "later" }, "bexp"],
    ["revoke attempts that are not a number (NaN shown)", current, { att: "many" }, "att"],
    ["an asked TTL that is not a number", current, { ask: "1e9" }, "ask"],
    ["a delegation depth that is not a number", current, { dep: "x" }, "dep"],
    // values outside their enumeration
    ["an unknown state", current, { state: "forever" }, "state"],
    ["an unknown backend (short name)", current, { b: "ldap" }, "backend"],
    ["an unknown backend (name in full)", old, { backend: "ldap" }, "backend"],
    ["an unknown identity kind (short name)", current, { k: "saml" }, "ikind"],
    ["an unknown identity kind (name in full)", old, { ikind: "saml" }, "ikind"],
    ["an unknown revocation trigger", current, { trig: "magic" }, "trig"],
    // required fields missing
    ["no role (short name)", current, { r: undefined }, "role"],
    ["no role (name in full)", old, { role: undefined }, "role"],
    ["no backend (short name)", current, { b: undefined }, "backend"],
    ["no backend (name in full)", old, { backend: undefined }, "backend"],
    ["no workload (short name)", current, { w: undefined }, "workload"],
    ["no workload (name in full)", old, { workload: undefined }, "workload"],
    ["no task (short name)", current, { t: undefined }, "task_id"],
    ["no task (name in full)", old, { task_id: undefined }, "task_id"],
    ["no issuer (short name)", current, { i: undefined }, "issuer"],
    ["no issuer (name in full)", old, { issuer: undefined }, "issuer"],
    ["no subject (short name)", current, { s: undefined }, "subject"],
    ["no subject (name in full)", old, { subject: undefined }, "subject"],
    ["no issue time", current, { iat: undefined }, "iat"],
    ["no expiry", old, { exp: undefined }, "exp"],
  ];

  it.each(cases)("%s", (_attack, layout, over, field) => {
    const h = { ...layout };
    for (const [k, v] of Object.entries(over)) {
      if (v === undefined) delete h[k];
      else h[k] = v;
    }
    const l = unreadable(h);
    expect(l).toMatchObject({ id: "l_1", field, unreadable: `its stored field ${field} is missing or malformed` });
    // Who may see or revoke it (the workload its record names), and its state when that is one.
    expect(l.workload).toBe("w" in over || "workload" in over ? UNKNOWN_ID : "agent");
    expect(l.task_id).toBe("t" in over || "task_id" in over ? UNKNOWN_ID : "T-1");
    if (field !== "state") expect(l.state).toBe(layout.state);
    else expect("state" in l).toBe(false);
    // Nothing written over reaches the answer.
    for (const v of Object.values(over)) if (v !== undefined && v.length > 2) expect(JSON.stringify(l)).not.toContain(v);
    expect(readable(l)).toBeNull();
  });

  it("a tampered value stored in pieces (over 64 bytes) is read joined, and unreadable", () => {
    const bad = `{"token":"${"s".repeat(80)}"`; // not JSON: the closing brace is missing
    const l = unreadable({ ...current, cl: bad.slice(0, 64), "cl.1": bad.slice(64) });
    expect(l.field).toBe("cl");
    expect(JSON.stringify(l)).not.toContain("sss");
  });

  it("the answer about an unreadable lease (500 lease_unreadable) names the lease and the field, never the value", () => {
    const e = leaseUnreadable(unreadable({ ...current, cl: '{"password":"hunter2"' }), "its revocation was requested all the same");
    expect(e).toMatchObject({ code: "lease_unreadable", status: 500, extra: { lease_id: "l_1", field: "cl" } });
    expect(e.message).toBe("lease l_1 cannot be read: its stored field cl is missing or malformed in the lease store; its revocation was requested all the same");
    expect(JSON.stringify({ message: e.message, extra: e.extra })).not.toContain("hunter2");
  });

  // Any value in any field: a lease or an unreadable lease, never an exception, and a readable
  // lease always has dates that serialize (the answer of GET /v1/leases/{id}).
  const HOSTILE = ["", " ", "NaN", "-1", "1e3", "0x10", "9".repeat(20), "8640000000000001", "{", "[]", "null", '{"a":1}', "\u0000", "__proto__", "é".repeat(30), "j", "{not json"];
  const FIELDS = [...new Set([...Object.keys(current), ...Object.keys(old), "k", "ask", "apr", "apb", "chn", "hk", "op", "err", "reason", "ti", "tt", "td", "ts", "pr"])];
  it.each(FIELDS)("no value of field %s makes a read throw or show a date it cannot write", (field) => {
    for (const layout of [current, old]) {
      for (const v of HOSTILE) {
        const l = read({ ...layout, [field]: v });
        if (field === "state" && v === "") expect(l).toBeNull();
        else expect(l).not.toBeNull();
        if (l && !isUnreadable(l)) {
          const shown = JSON.parse(JSON.stringify(publicLease(l))) as Record<string, unknown>;
          for (const t of ["issued_at", "expires_at", "revoked_at", "backend_expires_at"]) if (shown[t] !== undefined) expect(Number.isFinite(Date.parse(shown[t] as string))).toBe(true);
          expect(Number.isFinite(l.ttl_seconds) && Number.isFinite(l.asked_ttl_seconds)).toBe(true);
          if (l.revoke_attempts !== undefined) expect(Number.isInteger(l.revoke_attempts)).toBe(true);
        } else if (l) {
          if (v.length > 2) expect(l.unreadable).not.toContain(v);
        }
      }
    }
  });
});
