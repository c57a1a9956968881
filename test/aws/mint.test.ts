/**
 * aws_sts minting through the real STS client against the STS/IAM test server: what AssumeRole
 * receives, what the lease keeps, scope narrowing, and how STS errors surface.
 */
import { BrokerError } from "../../src/core/errors";
import { BackendError } from "../../src/backends/types";
import type { RoleConfig } from "../../src/config/schema";
import * as scopeModule from "../../src/backends/aws/scope";
import type { AwsServer } from "../support/aws-server";
import { startAwsServer } from "../support/aws-server";
import { BROKER_CREDS, leaseFor, startHarness, testClock, type Harness } from "./helpers";

const SESSION_POLICY = {
  Version: "2012-10-17",
  Statement: [
    { Effect: "Allow", Action: ["s3:GetObject", "s3:PutObject"], Resource: "arn:aws:s3:::deploy-bucket/*" },
    { Effect: "Deny", Action: "s3:PutObject", Resource: "arn:aws:s3:::deploy-bucket/locked/*" },
  ],
};

function roleConfig(arn: string, extra: Partial<NonNullable<RoleConfig["aws_sts"]>> = {}): RoleConfig {
  return { name: "deploy", backend: "aws_sts", ttl: { default: 900_000, max: 3600_000 }, labels: {}, aws_sts: { role_arn: arn, session_policy: SESSION_POLICY, ...extra } };
}

describe("aws_sts mint", () => {
  const clock = testClock();
  let server: AwsServer;
  let h: Harness;
  let arn: string;
  beforeAll(async () => {
    server = await startAwsServer({ now: clock.now });
    h = await startHarness({ now: clock.now, server, maxAttempts: 2 });
    arn = server.addRole("deployer").arn;
  });
  afterAll(async () => {
    await h.close();
    await server.close();
  });

  it("sends the documented AssumeRole parameters and clamps a short lease to 900 s", async () => {
    const lease = leaseFor(clock.now(), { ttlSeconds: 300, workload: "deployer", task: "deploy-42" });
    const out = await h.backend.mint(lease, roleConfig(arn, { external_id: "ext-123" }));
    const req = server.calls("AssumeRole").at(-1)!;
    expect(req.params).toEqual({
      Action: "AssumeRole",
      Version: "2011-06-15",
      RoleArn: arn,
      RoleSessionName: lease.id,
      DurationSeconds: "900",
      Policy: JSON.stringify(SESSION_POLICY),
      SourceIdentity: "deployer",
      ExternalId: "ext-123",
      "Tags.member.1.Key": "jitbroker:workload",
      "Tags.member.1.Value": "deployer",
      "Tags.member.2.Key": "jitbroker:owner",
      "Tags.member.2.Value": "platform@example.com",
      "Tags.member.3.Key": "jitbroker:task",
      "Tags.member.3.Value": "deploy-42",
      "Tags.member.4.Key": "jitbroker:lease",
      "Tags.member.4.Value": lease.id,
    });
    // Signed with the broker's own credentials (SigV4), which appear nowhere else.
    expect(req.authorization).toMatch(new RegExp(`^AWS4-HMAC-SHA256 Credential=${BROKER_CREDS.accessKeyId}/\\d{8}/us-east-1/sts/aws4_request`));

    const s = server.session(lease.id);
    expect(s.transitiveTagKeys).toEqual([]);
    expect(out.credential).toEqual({
      type: "aws",
      access_key_id: s.accessKeyId,
      secret_access_key: s.secretAccessKey,
      session_token: s.sessionToken,
      expiration: new Date(s.expiresAt).toISOString(),
      assumed_role_arn: `arn:aws:sts::123456789012:assumed-role/deployer/${lease.id}`,
    });
    // The session outlives the 5-minute lease: the lease says so (I2) and revocation covers the gap.
    expect(out.backendExpiresAt?.toISOString()).toBe(new Date(clock.now() + 900_000).toISOString());
    expect(Date.parse(lease.expires_at)).toBeLessThan(out.backendExpiresAt!.getTime());
    // The handle is what revocation needs, and nothing secret.
    expect(out.handle).toEqual({
      role_arn: arn,
      session_name: lease.id,
      user_id: s.userId,
      issued_at: new Date(s.issuedAt + 1000).toISOString(),
      expires_at: new Date(s.expiresAt).toISOString(),
    });
    const handleText = JSON.stringify(out.handle);
    for (const secret of [s.secretAccessKey, s.sessionToken, s.accessKeyId, BROKER_CREDS.secretAccessKey]) expect(handleText).not.toContain(secret);
  });

  it("a lease of 900 s or more gets exactly its remaining seconds and no backend_expires_at", async () => {
    const lease = leaseFor(clock.now(), { ttlSeconds: 1800 });
    const out = await h.backend.mint(lease, roleConfig(arn));
    expect(server.calls("AssumeRole").at(-1)!.params.DurationSeconds).toBe("1800");
    expect(out.backendExpiresAt).toBeUndefined();
    expect(server.session(lease.id).expiresAt).toBe(Date.parse(lease.expires_at));
    expect(server.calls("AssumeRole").at(-1)!.params.ExternalId).toBeUndefined();
  });

  it("a role without a session policy sends none; a workload id STS would refuse is made valid", async () => {
    const lease = leaseFor(clock.now(), { ttlSeconds: 900, workload: "team:deployer" });
    await h.backend.mint(lease, { ...roleConfig(arn), aws_sts: { role_arn: arn } });
    const p = server.calls("AssumeRole").at(-1)!.params;
    expect(p.Policy).toBeUndefined();
    expect(p.SourceIdentity).toMatch(/^team_deployer\.[\w-]{8}$/);
    expect(p["Tags.member.1.Value"]).toBe("team:deployer"); // tag values may carry ':'
    expect(p["Tags.member.2.Key"]).toBe("jitbroker:task"); // no owner known for this workload: no owner tag
  });

  it("a narrower scope is sent with the role's Deny statements; a wider one is refused before STS is called", async () => {
    const role = roleConfig(arn);
    const scope = { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "s3:GetObject", Resource: "arn:aws:s3:::deploy-bucket/releases/*" }] };
    expect(() => h.backend.checkRequest!(role, { scope })).not.toThrow();
    const lease = leaseFor(clock.now(), { ttlSeconds: 900 });
    await h.backend.mint(lease, role, { scope });
    expect(JSON.parse(server.calls("AssumeRole").at(-1)!.params.Policy!)).toEqual({ Version: "2012-10-17", Statement: [scope.Statement[0], SESSION_POLICY.Statement[1]] });

    const before = server.calls("AssumeRole").length;
    const wider = { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "s3:*", Resource: "arn:aws:s3:::deploy-bucket/*" }] };
    const err = (() => {
      try {
        h.backend.checkRequest!(role, { scope: wider });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(BrokerError);
    expect(err).toMatchObject({ code: "invalid_request", status: 400 });
    expect((err as Error).message).toMatch(/"s3:\*" on "arn:aws:s3:::deploy-bucket\/\*" is not within the role's session policy/);
    // mint checks again (defence in depth) and never calls STS.
    await expect(h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 900 }), role, { scope: wider })).rejects.toMatchObject({ code: "invalid_request" });
    const big = { Version: "2012-10-17", Statement: Array.from({ length: 30 }, (_, i) => ({ Effect: "Allow", Action: "s3:GetObject", Resource: `arn:aws:s3:::deploy-bucket/a/rather/long/prefix/${i}/*` })) };
    expect(() => h.backend.checkRequest!(role, { scope: big })).toThrow(/STS allows 2048/);
    expect(server.calls("AssumeRole").length).toBe(before);
  });

  it("mint sends a scope checkRequest accepted without checking it again, but checks one changed since or checked for another role", async () => {
    const role = roleConfig(arn);
    const scope = { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "s3:GetObject", Resource: "arn:aws:s3:::deploy-bucket/releases/*" }] };
    const checks = jest.spyOn(scopeModule, "checkScope");
    try {
      h.backend.checkRequest!(role, { scope });
      await h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 900 }), role, { scope });
      expect(checks).toHaveBeenCalledTimes(1);
      expect(JSON.parse(server.calls("AssumeRole").at(-1)!.params.Policy!).Statement[0]).toEqual(scope.Statement[0]);

      // Another role object (a reload): checked again, and accepted.
      await h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 900 }), roleConfig(arn), { scope });
      expect(checks).toHaveBeenCalledTimes(2);

      // Widened in place after the check: checked again, and refused before STS is called.
      const before = server.calls("AssumeRole").length;
      scope.Statement[0]!.Action = "s3:*";
      await expect(h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 900 }), role, { scope })).rejects.toMatchObject({ code: "invalid_request" });
      expect(checks).toHaveBeenCalledTimes(3);
      expect(server.calls("AssumeRole").length).toBe(before);
    } finally {
      checks.mockRestore();
    }
  });

  it("STS errors: a scope too large when packed is the caller's 400; other refusals are clear backend errors", async () => {
    const role = roleConfig(arn);
    server.setPackedCapacity(40);
    try {
      const scope = { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "s3:GetObject", Resource: "arn:aws:s3:::deploy-bucket/x/*" }] };
      await expect(h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 900 }), role, { scope })).rejects.toMatchObject({
        code: "invalid_request",
        message: expect.stringMatching(/scope: STS refused the session policy \(PackedPolicyTooLarge\): Packed policy consumes \d+% of allotted space/),
      });
      const noScope = await h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 900 }), role).catch((e: unknown) => e);
      expect(noScope).toBeInstanceOf(BackendError);
      expect((noScope as BackendError).message).toMatch(/^AssumeRole on arn:aws:iam::123456789012:role\/deployer failed: PackedPolicyTooLarge \(HTTP 400\)/);
    } finally {
      server.setPackedCapacity(1024);
    }

    const denied = await h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 900 }), roleConfig(arn.replace("deployer", "missing"))).catch((e: unknown) => e);
    expect(denied).toBeInstanceOf(BackendError);
    expect(denied).toMatchObject({ retryable: false, message: expect.stringMatching(/AssumeRole on .*role\/missing failed: AccessDenied \(HTTP 403\): User: .* is not authorized to perform: sts:AssumeRole/) });

    const short = server.addRole("short-role", { maxSessionDuration: 3600 });
    const tooLong = await h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 7200 }), roleConfig(short.arn)).catch((e: unknown) => e);
    expect((tooLong as Error).message).toMatch(/ValidationError \(HTTP 400\): The requested DurationSeconds exceeds the MaxSessionDuration set for this role/);

    const ext = server.addRole("external", { externalId: "right-id" });
    await expect(h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 900 }), roleConfig(ext.arn, { external_id: "wrong-id" }))).rejects.toThrow(/AccessDenied/);
    await expect(h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 900 }), roleConfig(ext.arn, { external_id: "right-id" }))).resolves.toMatchObject({ credential: { type: "aws" } });
  });

  it("throttling is retried by the SDK; a persistent one is a retryable backend error", async () => {
    const role = roleConfig(arn);
    server.fail("AssumeRole", "Throttling", 1, "Rate exceeded");
    const n = server.calls("AssumeRole").length;
    const lease = leaseFor(clock.now(), { ttlSeconds: 900 });
    await expect(h.backend.mint(lease, role)).resolves.toMatchObject({ handle: { session_name: lease.id } });
    expect(server.calls("AssumeRole").length - n).toBe(2);

    server.fail("AssumeRole", "Throttling", 2, "Rate exceeded");
    const err = await h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 900 }), role).catch((e: unknown) => e);
    expect(err).toMatchObject({ retryable: true, message: expect.stringMatching(/Throttling \(HTTP 400\): Rate exceeded/) });
    expect(h.backend.status!()).toMatchObject({ state: "degraded", detail: expect.stringMatching(/Throttling/) });
    await h.backend.mint(leaseFor(clock.now(), { ttlSeconds: 900 }), role);
    expect(h.backend.status!()).toEqual({ state: "ok" });
  });

  it("a lease already past its expiry is refused without calling STS", async () => {
    const n = server.calls("AssumeRole").length;
    const lease = leaseFor(clock.now() - 10_000, { ttlSeconds: 5 });
    await expect(h.backend.mint(lease, roleConfig(arn))).rejects.toThrow(/expires before a session could be valid/);
    expect(server.calls("AssumeRole").length).toBe(n);
  });
});

describe("aws_sts mint: only sessions this broker can revoke", () => {
  it("a role in another account than the broker's credentials is refused before AssumeRole: clear, not retryable", async () => {
    // STS AssumeRole works across accounts; IAM's PutRolePolicy would act on the broker's own account.
    const server = await startAwsServer({ account: "222222222222", callerAccount: "111111111111" });
    const h = await startHarness({ server });
    try {
      const r = server.addRole("deployer");
      const err = await h.backend.mint(leaseFor(Date.now(), { ttlSeconds: 900 }), roleConfig(r.arn)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackendError);
      expect(err).toMatchObject({
        retryable: false,
        message:
          `role ${r.arn} is in account 222222222222, but the broker's AWS credentials are in account 111111111111: a session is revoked by a deny policy written on its role with IAM, ` +
          "which reaches only roles of the broker's own account, so it mints no session of that role (nothing was minted); use a broker whose AWS credentials are in the role's account",
      });
      expect(server.calls("AssumeRole")).toHaveLength(0);
      expect(h.backend.status!()).toMatchObject({ state: "degraded", detail: expect.stringMatching(/a role of another account than the broker's$/) });
      expect(h.backend.status!().detail).not.toMatch(/\d{12}|arn:/);
    } finally {
      await h.close();
      await server.close();
    }
  });

  it("the broker's account is asked once (GetCallerIdentity, cached); when it cannot be known nothing is minted (retryable)", async () => {
    const server = await startAwsServer();
    const h = await startHarness({ server });
    try {
      const r = server.addRole("deployer");
      server.fail("GetCallerIdentity", "ServiceUnavailable", 1, "try later");
      await expect(h.backend.mint(leaseFor(Date.now(), { ttlSeconds: 900 }), roleConfig(r.arn))).rejects.toMatchObject({
        retryable: true,
        message: "GetCallerIdentity on the broker's AWS credentials failed: ServiceUnavailable (HTTP 503): try later",
      });
      expect(server.calls("AssumeRole")).toHaveLength(0);
      for (let i = 0; i < 3; i++) await h.backend.mint(leaseFor(Date.now(), { ttlSeconds: 900 }), roleConfig(r.arn));
      expect(server.calls("AssumeRole")).toHaveLength(3);
      expect(server.calls("GetCallerIdentity")).toHaveLength(2); // the failed one, then one for all three
    } finally {
      await h.close();
      await server.close();
    }
  });
});
