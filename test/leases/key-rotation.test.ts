import { decodeProtectedHeader } from "jose";
import { rotateSigningKey } from "../../src/backends/jwt/keys";
import { startFixture, type Fixture } from "../support/fixture";

describe("signing key rotation", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture();
  });
  afterAll(async () => {
    await f.close();
  });

  it("signs with the new key after a reload; tokens of the previous key still verify and introspect", async () => {
    const before = (await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "K-1" } })).body;
    const kid1 = decodeProtectedHeader(before.credential.token).kid;

    const rotated = await rotateSigningKey(f.b.config.backends.jwt.signing_key_file);
    expect(rotated.current.kid).not.toBe(kid1);
    expect(await f.b.broker.reloadSigningKeys()).toEqual({ ok: true, kid: rotated.current.kid });

    const after = (await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "K-2" } })).body;
    expect(decodeProtectedHeader(after.credential.token).kid).toBe(rotated.current.kid);
    const jwks = (await f.call("GET", "/.well-known/jwks.json", null)).body;
    expect(jwks.keys.map((k: { kid: string }) => k.kid)).toEqual([rotated.current.kid, kid1]);
    for (const token of [before.credential.token, after.credential.token]) {
      expect((await f.call("POST", "/v1/introspect", "ci", { token })).body.active).toBe(true);
    }
  });
});
