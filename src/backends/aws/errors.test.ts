/**
 * How an AWS SDK error becomes a typed backend error code (src/backends/types.ts): by the error
 * code and HTTP status AWS sent, never by its message text.
 */
import { awsError } from "./backend";

const sdk = (name: string, status?: number, extra: Record<string, unknown> = {}) =>
  Object.assign(new Error(`${name}: message from AWS`), { name, Code: name, ...(status === undefined ? {} : { $metadata: { httpStatusCode: status } }), ...extra });

describe("awsError: code and status decide what the revoker does", () => {
  const cases: [string, unknown, "unavailable" | "denied" | "misconfigured"][] = [
    ["a 5xx is the service's health: retried", sdk("ServiceFailure", 500), "unavailable"],
    ["throttling is retried", sdk("Throttling", 400), "unavailable"],
    ["an SDK-flagged throttle with another code is retried", sdk("SomethingNew", 400, { $retryable: { throttling: true } }), "unavailable"],
    ["no HTTP status (network, DNS, timeout) is retried", Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }), "unavailable"],
    ["AccessDenied: the broker's own permissions", sdk("AccessDenied", 403), "denied"],
    ["an expired broker credential", sdk("ExpiredToken", 400), "denied"],
    ["a bad broker access key", sdk("InvalidClientTokenId", 403), "denied"],
    ["a 401 without a known code", sdk("Whatever", 401), "denied"],
    ["a malformed policy (no caller scope): the role's configuration", sdk("MalformedPolicyDocument", 400), "misconfigured"],
    ["a validation error: the configuration", sdk("ValidationError", 400), "misconfigured"],
  ];
  test.each(cases)("%s", (_, e, kind) => {
    expect(awsError(e).kind).toBe(kind);
  });

  test("a message that merely mentions a code does not change the kind", () => {
    expect(awsError(sdk("ValidationError", 400, { message: "AccessDenied Throttling 500" })).kind).toBe("misconfigured");
  });
});
