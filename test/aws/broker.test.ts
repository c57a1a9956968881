/**
 * aws_sts end to end: a real broker (the composition root, its worker and Redis) configured with
 * an aws_sts role whose STS and IAM endpoints are the test server; the broker's own AWS
 * credentials come from the SDK's default provider chain (environment variables here).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { parse, stringify } from "yaml";
import { startAwsServer, type AwsServer } from "../support/aws-server";
import { getJson } from "../support/broker";
import { createKeyspace } from "../../src/redis/keys";
import { writeOldLease } from "../support/old-layouts";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { BROKER_CREDS, POLICY_NAME, expectNoSecrets, redisContents } from "./helpers";
import { readable } from "../../src/leases/store";

const SESSION_POLICY = {
  Version: "2012-10-17",
  Statement: [{ Effect: "Allow", Action: ["s3:GetObject", "s3:ListBucket"], Resource: ["arn:aws:s3:::artifacts", "arn:aws:s3:::artifacts/*"] }],
};

describe("aws_sts through the broker", () => {
  let server: AwsServer;
  let f: Fixture;
  const saved: Record<string, string | undefined> = {};
  const ENV = { AWS_ACCESS_KEY_ID: BROKER_CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: BROKER_CREDS.secretAccessKey, AWS_SESSION_TOKEN: undefined, AWS_PROFILE: undefined, AWS_EC2_METADATA_DISABLED: "true" };

  beforeAll(async () => {
    for (const [k, v] of Object.entries(ENV)) {
      saved[k] = process.env[k];
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    server = await startAwsServer();
    const role = server.addRole("artifacts-reader", { path: "/ci/" });
    f = await startFixture({
      extra: {
        roles: [
          {
            name: "artifacts-read",
            backend: "aws_sts",
            ttl: { default: "5m", max: "15m" },
            labels: { sensitivity: "internal", access: "read" },
            aws_sts: { role_arn: role.arn, session_policy: SESSION_POLICY },
          },
          {
            // A role in another account than the broker's credentials (123456789012).
            name: "elsewhere-read",
            backend: "aws_sts",
            ttl: { default: "5m", max: "15m" },
            labels: { sensitivity: "internal", access: "read" },
            aws_sts: { role_arn: "arn:aws:iam::222222222222:role/ci/artifacts-reader" },
          },
        ],
        backends: { aws_sts: { region: "us-east-1", endpoint: server.url, iam_endpoint: server.url, max_attempts: 1 } },
      },
    });
  });
  afterAll(async () => {
    await f?.close();
    await server?.close();
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  it("issues an STS session for a lease, and revoking the lease denies that session on the role", async () => {
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "artifacts-read", task: { id: "AWS-1", intent: "fetch build" } });
    expect(r.status).toBe(201);
    const lease = r.body.lease;
    const s = server.session(lease.id);
    expect(r.body.credential).toEqual({
      type: "aws",
      access_key_id: s.accessKeyId,
      secret_access_key: s.secretAccessKey,
      session_token: s.sessionToken,
      expiration: new Date(s.expiresAt).toISOString().replace(/\.\d{3}Z$/, ".000Z"),
      assumed_role_arn: `arn:aws:sts::123456789012:assumed-role/artifacts-reader/${lease.id}`,
    });
    // A 5-minute lease, a 15-minute session: the lease says until when the session could live.
    expect(lease).toMatchObject({ backend: "aws_sts", revocation_kind: "deny_by_session", state: "active", workload: "agent", task_id: "AWS-1" });
    expect(Date.parse(lease.expires_at) - Date.parse(lease.issued_at)).toBeLessThanOrEqual(300_000);
    expect(Date.parse(lease.backend_expires_at)).toBeGreaterThanOrEqual(Date.parse(lease.issued_at) + 900_000);
    expect(s).toMatchObject({ duration: 900, sourceIdentity: "agent", policy: JSON.stringify(SESSION_POLICY) });
    expect(s.tags).toEqual([
      { Key: "jitbroker:workload", Value: "agent" },
      { Key: "jitbroker:owner", Value: "a@example.com" },
      { Key: "jitbroker:task", Value: "AWS-1" },
      { Key: "jitbroker:lease", Value: lease.id },
    ]);
    expect(server.denies(s)).toBe(false);

    const del = await f.call("DELETE", `/v1/leases/${lease.id}`, "agent", { reason: "task done early" });
    expect(del.status).toBe(200);
    const done = await waitFor(async () => {
      const l = (await f.call("GET", `/v1/leases/${lease.id}`, "agent")).body.lease;
      return l.state === "revoked" ? l : null;
    }, 15_000, "the lease to be revoked");
    expect(done.revocation).toMatchObject({ trigger: "owner", by: "agent", reason: "task done early" });
    expect(server.denies(s)).toBe(true);
    expect(server.policy("artifacts-reader", POLICY_NAME)!.Statement[0]!.Condition).toEqual({ StringEquals: { "aws:userid": s.userId } });

    // The lease's history says what revocation meant for AWS (I8).
    // The `revoked` event is appended after the lease is revoked (after FINISH): wait for it.
    const hist = await waitFor(async () => {
      const h = await f.call("GET", `/v1/admin/leases/${lease.id}/history`, "alice");
      return h.status !== 200 || (h.body.events as { type: string }[]).some((e) => e.type === "revoked") ? h : null;
    }, 10_000, "the revoked event in the lease's history");
    expect(hist.status).toBe(200);
    const events = hist.body.events as { type: string; note?: string }[];
    const types = events.map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(["mint", "revocation_requested", "aws_deny_attached", "revoked"]));
    expect(types.indexOf("aws_deny_attached")).toBeLessThan(types.indexOf("revoked"));
    expect(events.find((e) => e.type === "aws_deny_attached")!.note).toMatch(
      new RegExp(`^deny attached at \\S+ to role ${server.roles.get("artifacts-reader")!.arn.replace(/[/]/g, "\\/")} \\(inline policy ${POLICY_NAME}\\); AWS may take a short while to apply it .*; the session would otherwise have lived until ${lease.backend_expires_at.replace(/\./g, "\\.")}$`),
    );
  });

  it("a session stored compactly (a ref and two offsets) and one in the layout before (JSON in pieces, full field names) both revoke: each is denied", async () => {
    const sk = createKeyspace(f.b.config.redis.prefix).shardKeys[0]!;
    const redis = f.b.broker.redis;
    const [a, b] = await Promise.all(["AWS-L1", "AWS-L2"].map((t) => f.call("POST", "/v1/credentials", "agent", { role: "artifacts-read", task: { id: t } })));
    expect([a!.status, b!.status]).toEqual([201, 201]);
    const arn = server.roles.get("artifacts-reader")!.arn;
    const stored = await redis.hgetall(sk.lease(a!.body.lease.id));
    expect(stored.h).toMatch(/^a[A-Za-z0-9_-]{12}-?\d+ -?\d+$/);
    expect(JSON.stringify(stored)).not.toContain(arn);
    expect(await redis.hget(sk.leasesHandles, stored.h!.slice(1, 13))).toBe(`${server.roles.get("artifacts-reader")!.roleId} ${arn}`);
    expect((readable(await f.b.broker.store.get(a!.body.lease.id)))?.handle).toMatchObject({ role_arn: arn, session_name: a!.body.lease.id, user_id: server.session(a!.body.lease.id).userId });

    // b, rewritten as the broker before wrote it (v2): same lease, JSON handle in pieces.
    const lb = (readable(await f.b.broker.store.get(b!.body.lease.id)))!;
    await redis.del(sk.lease(lb.id));
    const old = { id: lb.id, role: lb.role, backend: "aws_sts" as const, workload: lb.workload, task: lb.task_id, issuer: lb.identity.issuer, subject: lb.identity.subject, iat: lb.issued_ms, exp: lb.expires_ms, policy: lb.policy };
    expect(await writeOldLease(redis, sk, "v2", old, lb.handle!)).toEqual(["ok", "active"]);
    expect(await redis.hexists(sk.lease(lb.id), "handle.1")).toBe(1);

    for (const r of [a!, b!]) expect((await f.call("DELETE", `/v1/leases/${r.body.lease.id}`, "agent", { reason: "layout" })).status).toBe(200);
    for (const r of [a!, b!]) await waitFor(async () => (await f.call("GET", `/v1/leases/${r.body.lease.id}`, "agent")).body.lease.state === "revoked", 15_000, "revoked");
    expect([a!, b!].map((r) => server.denies(server.session(r.body.lease.id)))).toEqual([true, true]);
  });

  it("a lease expiring before its session (the 900 s minimum) gets a deny at expiry (I2)", async () => {
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "artifacts-read", task: { id: "AWS-2" }, ttl: "2s" });
    expect(r.status).toBe(201);
    const s = server.session(r.body.lease.id);
    expect(s.duration).toBe(900);
    await waitFor(async () => (await f.call("GET", `/v1/leases/${r.body.lease.id}`, "agent")).body.lease.state === "expired", 15_000, "expiry");
    expect(server.denies(s)).toBe(true);
  });

  it("completing a task revokes its sessions of one role concurrently: both end up denied", async () => {
    const [a, b] = await Promise.all([1, 2].map(() => f.call("POST", "/v1/credentials", "agent", { role: "artifacts-read", task: { id: "AWS-6" } })));
    expect([a!.status, b!.status]).toEqual([201, 201]);
    expect((await f.call("POST", "/v1/tasks/AWS-6/complete", "agent")).body).toEqual({ task_id: "AWS-6", revoked: 2 });
    for (const r of [a!, b!]) {
      await waitFor(async () => (await f.call("GET", `/v1/leases/${r.body.lease.id}`, "agent")).body.lease.state === "revoked", 15_000, "task leases revoked");
    }
    expect([a!, b!].map((r) => server.denies(server.session(r.body.lease.id)))).toEqual([true, true]);
  });

  it("a request may narrow the role's scope, never widen it (400 before anything is minted)", async () => {
    const narrow = { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "s3:GetObject", Resource: "arn:aws:s3:::artifacts/builds/123/*" }] };
    const ok = await f.call("POST", "/v1/credentials", "ci", { role: "artifacts-read", task: { id: "AWS-3" }, scope: narrow });
    expect(ok.status).toBe(201);
    expect(JSON.parse(server.session(ok.body.lease.id).policy!)).toEqual(narrow);

    const assumes = server.calls("AssumeRole").length;
    const wide = { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "s3:PutObject", Resource: "arn:aws:s3:::artifacts/*" }] };
    const bad = await f.call("POST", "/v1/credentials", "ci", { role: "artifacts-read", task: { id: "AWS-4" }, scope: wide });
    expect(bad.status).toBe(400);
    expect(bad.headers.get("content-type")).toMatch(/application\/problem\+json/);
    expect(bad.body.code).toBe("invalid_request");
    expect(bad.body.detail).toMatch(/"s3:PutObject" on "arn:aws:s3:::artifacts\/\*" is not within the role's session policy/);
    expect(server.calls("AssumeRole").length).toBe(assumes);
    const listed = await f.call("GET", "/v1/admin/leases?task_id=AWS-4", "bob");
    expect([listed.status, listed.body.leases]).toEqual([200, []]);
  });

  it("a huge scope is refused on its size before it is expanded: 400 at once, with a one-line answer", async () => {
    const scope = { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: Array.from({ length: 800 }, (_, i) => `s3:a${i % 10}`), Resource: Array.from({ length: 800 }, () => "arn:") }] };
    const t = Date.now();
    const r = await f.call("POST", "/v1/credentials", "ci", { role: "artifacts-read", task: { id: "AWS-8" }, scope });
    expect(Date.now() - t).toBeLessThan(1000);
    expect([r.status, r.body.code]).toEqual([400, "invalid_request"]);
    expect(r.body.detail).toMatch(/^scope: the session policy sent to STS would be \d+ characters; STS allows 2048$/);
  });

  it("IAM throttling: the revocation is retried until the deny is in place; last_error says why meanwhile", async () => {
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "artifacts-read", task: { id: "AWS-5" } });
    expect(r.status).toBe(201);
    server.fail("PutRolePolicy", "Throttling", 2, "Rate exceeded");
    await f.call("DELETE", `/v1/leases/${r.body.lease.id}`, "agent", {});
    const failing = await waitFor(async () => {
      const l = (await f.call("GET", `/v1/leases/${r.body.lease.id}`, "agent")).body.lease;
      return l.last_error ? l : null;
    }, 15_000, "a failed attempt");
    expect(failing.last_error).toMatch(/^PutRolePolicy on arn:aws:iam::123456789012:role\/ci\/artifacts-reader failed: Throttling \(HTTP 400\): Rate exceeded$/);
    await waitFor(async () => (await f.call("GET", `/v1/leases/${r.body.lease.id}`, "agent")).body.lease.state === "revoked", 25_000, "the retried revocation");
    expect(server.denies(server.session(r.body.lease.id))).toBe(true);
    const ready = await getJson(`${f.b.url}/readyz`);
    expect(ready.body.backends).toEqual(expect.arrayContaining([{ name: "aws_sts", state: "ok" }]));
  }, 40_000);

  it("a role in another account than the broker's: nothing is minted (503 backend_unavailable), the reason is in the lease's history", async () => {
    const assumes = server.calls("AssumeRole").length;
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "elsewhere-read", task: { id: "AWS-7" } });
    expect([r.status, r.body.code]).toEqual([503, "backend_unavailable"]);
    expect(server.calls("AssumeRole").length).toBe(assumes);
    const listed = await f.call("GET", "/v1/admin/leases?task_id=AWS-7", "bob");
    expect(listed.body.leases).toHaveLength(1);
    // issue_failed is recorded in the background (audit.record), not awaited before the answer.
    const hist = await waitFor(async () => {
      const h = await f.call("GET", `/v1/admin/leases/${listed.body.leases[0].id}/history`, "alice");
      return (h.body.events as { type: string }[] | undefined)?.some((e) => e.type === "issue_failed") ? h : null;
    }, 10_000, "the issue_failed event in the lease's history");
    const failed = (hist.body.events as { type: string; reason?: string }[]).find((e) => e.type === "issue_failed");
    expect(failed?.reason).toBe(
      "role arn:aws:iam::222222222222:role/ci/artifacts-reader is in account 222222222222, but the broker's AWS credentials are in account 123456789012: " +
        "a session is revoked by a deny policy written on its role with IAM, which reaches only roles of the broker's own account, so it mints no session of that role (nothing was minted); " +
        "use a broker whose AWS credentials are in the role's account",
    );
  });

  it("no secret key or session token in Redis, logs or metrics (I6)", async () => {
    expect(server.sessions.length).toBeGreaterThanOrEqual(4);
    const needles = [...server.sessions.flatMap((s) => [s.secretAccessKey, s.sessionToken]), BROKER_CREDS.secretAccessKey];
    const { keys, text, dumps } = await redisContents(f.b.broker.redis, f.b.config.redis.prefix);
    expect(keys).toBeGreaterThan(10);
    // The scan read real data: lease handles and the AWS audit events are there.
    expect(text).toContain(server.sessions[0]!.userId);
    expect(text).toContain("aws_deny_attached");
    expectNoSecrets("redis", text, needles);
    for (const d of dumps) expectNoSecrets("redis (DUMP)", d, needles);
    const logs = f.b.logs.join("");
    expect(logs).toContain("revocation policy updated");
    expectNoSecrets("logs", logs, needles);
    const metrics = (await getJson(`${f.b.url}/metrics`)).body as string;
    expect(metrics).toMatch(/jitbroker_aws_sts_calls_total\{operation="AssumeRole",result="ok"\} \d+/);
    expectNoSecrets("metrics", metrics, needles);
  });

  it("a workload's owner changed by a configuration reload tags the next session (the backend reads the live inventory)", async () => {
    const file = f.b.config.file;
    const doc = parse(readFileSync(file, "utf8")) as { workloads: { id: string; owner: string }[] };
    doc.workloads.find((w) => w.id === "agent")!.owner = "new-owner@example.com";
    writeFileSync(file, stringify(doc));
    const report = await f.b.broker.reload({ actor: "test", source: "test" });
    expect(report).toMatchObject({ ok: true, inventory: { changed: true } });
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "artifacts-read", task: { id: "AWS-R1" } });
    expect(r.status).toBe(201);
    expect(server.session(r.body.lease.id).tags).toContainEqual({ Key: "jitbroker:owner", Value: "new-owner@example.com" });
  });
});
