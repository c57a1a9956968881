/**
 * The stored form of backend handles (src/leases/handle.ts): compact forms that decode to exactly
 * the handle the backend gave, JSON for anything else, and hostile stored values that read as
 * an unusable handle (the backend refuses it) instead of crashing a read or passing for a real one.
 */
import { decodeHandle, encodeHandle, handleRef, handleRefOf, type HandleContext } from "../../src/leases/handle";

const ID = "l_AbCdEfGhIjKlMnOpQrStUvWx";
const L: HandleContext = { id: ID, issuedMs: Date.parse("2026-12-06T02:00:00.123Z"), expiresMs: Date.parse("2026-12-06T03:30:00.000Z") };
const ARN = "arn:aws:iam::123456789012:role/jitbroker/orders-read";
const ROLE_ID = "AROA3XFRBF535PLBIFPI4";
const AWS = {
  role_arn: ARN,
  session_name: ID,
  user_id: `${ROLE_ID}:${ID}`,
  issued_at: "2026-12-06T02:00:01.000Z",
  expires_at: "2026-12-06T03:30:00.077Z",
};

/** encode, then decode with the shared value the encoding wrote. */
function roundTrip(h: Record<string, string>, l = L) {
  const e = encodeHandle(l, h);
  return { e, back: decodeHandle(l, e.value, (ref) => (ref === e.ref?.ref ? e.ref.value : undefined)) };
}

describe("compact handle forms", () => {
  it("jwt: the lease id is not stored again", () => {
    const { e, back } = roundTrip({ jti: ID });
    expect(e).toEqual({ value: "j" });
    expect(back).toEqual({ jti: ID });
  });

  it("vault: a lease id's path is shared through a ref, a token is its accessor", () => {
    const leaseId = "database/creds/orders-read/Hr0Hpa3ZBmAsNYHSsE9qSxUa";
    const { e, back } = roundTrip({ lease_id: leaseId });
    expect(e.ref).toEqual({ ref: handleRef("database/creds/orders-read/"), value: "database/creds/orders-read/" });
    expect(e.value).toBe(`v${e.ref!.ref}Hr0Hpa3ZBmAsNYHSsE9qSxUa`);
    expect(back).toEqual({ lease_id: leaseId });
    // A namespaced lease id (`.<namespace id>` after the random part) keeps its suffix.
    expect(roundTrip({ lease_id: `${leaseId}.abc12` }).back).toEqual({ lease_id: `${leaseId}.abc12` });
    expect(roundTrip({ accessor: "Vhu5sjGK0dOTbNtkqQ4kF0YA" })).toEqual({ e: { value: "tVhu5sjGK0dOTbNtkqQ4kF0YA" }, back: { accessor: "Vhu5sjGK0dOTbNtkqQ4kF0YA" } });
  });

  it("aws: the role ARN and RoleId are shared, the session name and user id follow from the lease id, the times are offsets", () => {
    const { e, back } = roundTrip(AWS);
    expect(e.ref).toEqual({ ref: handleRef(`${ROLE_ID} ${ARN}`), value: `${ROLE_ID} ${ARN}` });
    expect(e.value).toBe(`a${e.ref!.ref}877 77`);
    expect(e.value.length).toBeLessThan(30);
    expect(back).toEqual(AWS);
  });

  it("anything a compact form would not give back exactly is stored as JSON", () => {
    const cases: Record<string, string>[] = [
      { jti: "another-lease" },
      { jti: ID, extra: "x" },
      { lease_id: "no-slash-at-all" },
      { lease_id: "ends/with/slash/" },
      { lease_id: "/leading-only" },
      { ...AWS, session_name: `jit-${ID}`, user_id: `${ROLE_ID}:jit-${ID}` },
      { ...AWS, user_id: `${ROLE_ID}:somebody-else` },
      { ...AWS, user_id: `AROA WITH SPACE:${ID}` },
      { ...AWS, issued_at: "2026-12-06T02:00:01Z" },
      { ...AWS, expires_at: "not a time" },
      { ...AWS, role_arn: "" },
      { ...AWS, more: "x" },
      {},
    ];
    for (const h of cases) {
      const { e, back } = roundTrip(h);
      expect(e).toEqual({ value: JSON.stringify(h) });
      expect(back).toEqual(h);
    }
    // Without the lease's times (or where no ref can be written) an AWS session stays JSON.
    expect(encodeHandle({ id: ID, issuedMs: Number.NaN, expiresMs: Number.NaN }, AWS).value).toBe(JSON.stringify(AWS));
    expect(encodeHandle(L, AWS, false).value).toBe(JSON.stringify(AWS));
    expect(encodeHandle(L, { lease_id: "a/b" }, false).value).toBe('{"lease_id":"a/b"}');
    expect(encodeHandle(L, { jti: ID }, false).value).toBe("j");
  });
});

describe("hostile stored values (a damaged or hostile Redis)", () => {
  const none = () => undefined;
  it("a value in no known form, or malformed JSON, reads as the empty handle", () => {
    for (const v of ["", "x", "jj", "t", "{", "{not json", "[1,2]", "null", '"str"', "v", "vshort", "a", "aAAAAAAAAAAAA", "aAAAAAAAAAAAA1 x", "aAAAAAAAAAAAA1e5 2", "a!!!!!!!!!!!!1 2"]) {
      expect(decodeHandle(L, v, () => "AROA x")).toEqual({});
    }
    expect(decodeHandle(L, '{"a":"x","n":1,"o":{}}', none)).toEqual({ a: "x" });
  });

  it("an unknown or malformed shared part leaves out what needs it: the backend then refuses the handle", () => {
    const { e } = roundTrip(AWS);
    const partial = decodeHandle(L, e.value, none);
    expect(partial).toEqual({ session_name: ID, issued_at: AWS.issued_at, expires_at: AWS.expires_at });
    expect(partial.role_arn).toBeUndefined();
    for (const bad of ["no-space", ` ${ARN}`, `${ROLE_ID} `, `AROA:BAD ${ARN}`]) expect(decodeHandle(L, e.value, () => bad).role_arn).toBeUndefined();
    const v = roundTrip({ lease_id: "database/creds/x/abc" }).e;
    expect(decodeHandle(L, v.value, none)).toEqual({});
    expect(decodeHandle(L, v.value, () => "prefix-without-slash")).toEqual({});
  });

  it("offsets are bounded (10 digits): a longer one is not read, and such a handle is stored as JSON", () => {
    const { e } = roundTrip(AWS);
    const ref = e.ref!.ref;
    expect(decodeHandle(L, `a${ref}99999999999 0`, () => `${ROLE_ID} ${ARN}`)).toEqual({});
    expect(decodeHandle(L, `a${ref}-9999999999 9999999999`, () => `${ROLE_ID} ${ARN}`).role_arn).toBe(ARN);
    const far = { ...AWS, expires_at: new Date(L.expiresMs + 1e11).toISOString() };
    expect(roundTrip(far)).toEqual({ e: { value: JSON.stringify(far) }, back: far });
  });

  it("only a well-formed ref is looked up", () => {
    expect(handleRefOf(undefined)).toBeUndefined();
    expect(handleRefOf("j")).toBeUndefined();
    expect(handleRefOf("v!!")).toBeUndefined();
    expect(handleRefOf(`v${"A".repeat(12)}x`)).toBe("A".repeat(12));
    expect(handleRefOf(`a${"A".repeat(12)}1 2`)).toBe("A".repeat(12));
  });
});
