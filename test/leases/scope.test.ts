/**
 * `scope` (a backend-specific narrowing) is looked at only for callers the policy allows: a
 * refused caller gets 403 whatever it sends, and learns nothing about the role from a scope check.
 */
import { startFixture, type Fixture } from "../support/fixture";

describe("request scope", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture();
  });
  afterAll(() => f.close());

  it("an allowed caller sending a scope to a role whose backend takes none gets 400, nothing issued", async () => {
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "sc-1" }, scope: { Version: "2012-10-17" } });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ code: "invalid_request", detail: "scope: role orders-read (backend jwt) does not accept a scope" });
    expect((await f.call("GET", "/v1/admin/leases?task_id=sc-1", "alice")).body.leases).toEqual([]);
  });

  it("a caller the policy refuses gets 403 policy_denied, not a scope error", async () => {
    const r = await f.call("POST", "/v1/credentials", "ci", { role: "orders-write", task: { id: "sc-2" }, scope: { Statement: "x".repeat(1000) } });
    expect(r.status).toBe(403);
    expect(r.body.code).toBe("policy_denied");
  });

  it("a scope that is not an object is a 400 from request validation", async () => {
    for (const scope of ["s3:*", 1, ["a"], null]) {
      const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "sc-3" }, scope });
      expect(r.status).toBe(400);
      expect(r.body.code).toBe("invalid_request");
    }
  });
});
