import { BrokerError } from "../core/errors";
import { leaseTtlMs } from "./ttl";

const m = 60_000;
describe("leaseTtlMs", () => {
  it.each([
    ["role default when nothing requested", { roleDefaultMs: 5 * m, roleMaxMs: 15 * m }, 5 * m],
    ["the request when within max", { requestedMs: 10 * m, roleDefaultMs: 5 * m, roleMaxMs: 15 * m }, 10 * m],
    ["the request at exactly max", { requestedMs: 15 * m, roleDefaultMs: 5 * m, roleMaxMs: 15 * m }, 15 * m],
    ["@max_ttl clamps the request", { requestedMs: 10 * m, roleDefaultMs: 5 * m, roleMaxMs: 15 * m, policyMaxMs: 2 * m }, 2 * m],
    ["@max_ttl clamps the default", { roleDefaultMs: 5 * m, roleMaxMs: 15 * m, policyMaxMs: 1 * m }, 1 * m],
    ["@max_ttl above the request changes nothing", { requestedMs: 3 * m, roleDefaultMs: 5 * m, roleMaxMs: 15 * m, policyMaxMs: 60 * m }, 3 * m],
  ])("%s", (_name, input, expected) => {
    expect(leaseTtlMs(input)).toBe(expected);
  });

  it("refuses a request above the role's max with ttl_too_long", () => {
    expect(() => leaseTtlMs({ requestedMs: 16 * m, roleDefaultMs: 5 * m, roleMaxMs: 15 * m })).toThrow(BrokerError);
    try {
      leaseTtlMs({ requestedMs: 16 * m, roleDefaultMs: 5 * m, roleMaxMs: 15 * m });
    } catch (e) {
      expect((e as BrokerError).code).toBe("ttl_too_long");
      expect((e as BrokerError).status).toBe(422);
    }
  });
});
