/** Configuration of the aws_sts backend and roles: defaults, and every problem with its path. */
import { stringify } from "yaml";
import { ConfigError, parseConfig } from "../../src/config/load";
import { MINIMAL_CONFIG } from "../support/configs";

const FILE = "/etc/jitbroker/broker.yaml";
const ARN = "arn:aws:iam::123456789012:role/ci/deployer";

function parse(extra: Record<string, unknown>) {
  return parseConfig(`${MINIMAL_CONFIG}\n${stringify(extra)}`, FILE, {});
}
function problems(extra: Record<string, unknown>): string[] {
  try {
    parse(extra);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

const role = (aws: Record<string, unknown>, ttl = { default: "15m", max: "1h" }) => ({ name: "deploy", backend: "aws_sts", ttl, aws_sts: aws });

describe("aws_sts configuration", () => {
  it("parses (defaults are the backend's: max_attempts 3, request_timeout 10s, jitbroker-revocations, 10240)", () => {
    const cfg = parse({
      roles: [role({ role_arn: ARN, session_policy: { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "s3:GetObject", Resource: "arn:aws:s3:::b/*" }] }, external_id: "tenant:42/x" })],
      backends: { aws_sts: { region: "eu-west-1" } },
    });
    expect(cfg.backends.aws_sts).toEqual({ region: "eu-west-1" });
    expect(parse({ backends: { aws_sts: { region: "eu-west-1", max_attempts: 5, request_timeout: "3s", revocation_policy_name: "deny-revoked", revocation_policy_max_chars: 4096 } } }).backends.aws_sts).toEqual({
      region: "eu-west-1",
      max_attempts: 5,
      request_timeout: 3000,
      revocation_policy_name: "deny-revoked",
      revocation_policy_max_chars: 4096,
    });
    expect(cfg.roles[0]!.aws_sts!.external_id).toBe("tenant:42/x");
  });

  it("accepts the contract's configuration example (an empty session_policy means none)", () => {
    expect(() => parse({ roles: [role({ role_arn: ARN, session_policy: {} })], backends: { aws_sts: { region: "us-east-1", endpoint: "http://127.0.0.1:4566", iam_endpoint: "https://iam.amazonaws.com" } } })).not.toThrow();
  });

  it("reports every problem with its path", () => {
    const p = problems({
      roles: [
        role({ role_arn: "arn:aws:iam::123:user/x", session_policy: { Statement: [{ Effect: "Allow", Action: "s3:GetObject", Principal: "*", Resource: "*" }] }, external_id: "has space" }, { default: "1h", max: "13h" }),
      ],
      backends: { aws_sts: { region: "mars", endpoint: "http://sts.example.com", max_attempts: 0, revocation_policy_name: "bad/name", revocation_policy_max_chars: 20_000, unknown: 1 } },
    });
    const at = (path: string) => p.filter((x) => x.startsWith(`${path}: `));
    expect(at("roles[0].aws_sts.role_arn")).toHaveLength(1);
    expect(at("roles[0].aws_sts.session_policy").join()).toMatch(/Principal: not allowed in a session policy/);
    expect(at("roles[0].aws_sts.external_id")).toHaveLength(1);
    expect(at("roles[0].ttl.max").join()).toMatch(/at most 12h/);
    expect(at("backends.aws_sts.region").join()).toMatch(/AWS region/);
    expect(at("backends.aws_sts.endpoint").join()).toMatch(/https/);
    expect(at("backends.aws_sts.max_attempts")).toHaveLength(1);
    expect(at("backends.aws_sts.revocation_policy_name")).toHaveLength(1);
    expect(at("backends.aws_sts.revocation_policy_max_chars")).toHaveLength(1);
    expect(p.join("\n")).toMatch(/unknown/);
  });

  it("clock_skew_margin: a duration (default 60s, applied by the backend), at most 1h", () => {
    expect(parse({ backends: { aws_sts: { region: "us-east-1", clock_skew_margin: "2m" } } }).backends.aws_sts).toEqual({ region: "us-east-1", clock_skew_margin: 120_000 });
    expect(parse({ backends: { aws_sts: { region: "us-east-1", clock_skew_margin: "0s" } } }).backends.aws_sts!.clock_skew_margin).toBe(0);
    expect(problems({ backends: { aws_sts: { region: "us-east-1", clock_skew_margin: "2h" } } })).toEqual(["backends.aws_sts.clock_skew_margin: must be at most 1h"]);
  });

  it('a session policy must say Version "2012-10-17" (policy variables mean the same in it and in scopes)', () => {
    const statement = { Effect: "Allow", Action: "s3:GetObject", Resource: "arn:aws:s3:::b/${aws:username}/*" };
    const at = (p: string[]) => p.filter((x) => x.startsWith("roles[0].aws_sts.session_policy: "));
    expect(at(problems({ roles: [role({ role_arn: ARN, session_policy: { Statement: [statement] } })], backends: { aws_sts: { region: "us-east-1" } } })).join()).toMatch(
      /session_policy\.Version: required, "2012-10-17" \(without it, or under "2008-10-17", IAM does not substitute policy variables/,
    );
    expect(at(problems({ roles: [role({ role_arn: ARN, session_policy: { Version: "2008-10-17", Statement: [statement] } })], backends: { aws_sts: { region: "us-east-1" } } }))).toEqual([
      'roles[0].aws_sts.session_policy: session_policy.Version: must be "2012-10-17"',
    ]);
  });

  it("a session policy over STS's 2,048 characters is refused at load", () => {
    const big = { Statement: Array.from({ length: 40 }, (_, i) => ({ Effect: "Allow", Action: "s3:GetObject", Resource: `arn:aws:s3:::bucket/prefix/number/${i}/*` })) };
    expect(problems({ roles: [role({ role_arn: ARN, session_policy: big })], backends: { aws_sts: { region: "us-east-1" } } }).join()).toMatch(/STS allows 2048/);
  });
});
