/**
 * aws_sts revocation through the real IAM client against the STS/IAM test server: the inline
 * deny policy after several revocations and after garbage collection, the size-limit fallback,
 * concurrent revocations in one process and across replicas, and IAM errors. "Denied" is
 * decided by evaluating the role's inline policies for the session (the test server's
 * `denies`), not by looking for strings.
 */
import type { RoleConfig } from "../../src/config/schema";
import { BackendError } from "../../src/backends/types";
import { DEFAULT_CLOCK_SKEW_MARGIN_MS, NOT_WORTH_DENYING_MS } from "../../src/backends/aws/backend";
import { GC_GRACE_MS } from "../../src/backends/aws/deny";
import type { Lease } from "../../src/leases/types";
import { startAwsServer, type AwsServer, type FakeRole } from "../support/aws-server";
import { uniquePrefix } from "../support/broker";
import { POLICY_NAME, leaseFor, startHarness, testClock, type Harness } from "./helpers";

const role = (arn: string): RoleConfig => ({ name: "deploy", backend: "aws_sts", ttl: { default: 300_000, max: 3600_000 }, labels: {}, aws_sts: { role_arn: arn } });

async function mintMany(h: Harness, r: FakeRole, now: number, n: number, ttlSeconds = 300): Promise<{ lease: Lease; handle: Record<string, string> }[]> {
  const out = [];
  for (let i = 0; i < n; i++) {
    const lease = leaseFor(now, { ttlSeconds, task: `T-${i}` });
    const m = await h.backend.mint(lease, role(r.arn));
    out.push({ lease, handle: m.handle });
  }
  return out;
}

describe("aws_sts revocation policy", () => {
  const clock = testClock();
  let server: AwsServer;
  let h: Harness;
  beforeAll(async () => {
    server = await startAwsServer({ now: clock.now });
    h = await startHarness({ now: clock.now, server });
  });
  afterAll(async () => {
    await h.close();
    await server.close();
  });

  it("denies exactly the revoked sessions, merged across revocations, and audits what it means", async () => {
    const r = server.addRole("deployer");
    const minted = await mintMany(h, r, clock.now(), 4);
    const [a, b, c, d] = minted.map((m) => ({ ...m, s: server.session(m.lease.id) }));
    await h.backend.revoke(a!.lease, a!.handle);
    clock.advance(60_000);
    await h.backend.revoke(b!.lease, b!.handle);
    await h.backend.revoke(c!.lease, c!.handle);
    expect([a, b, c, d].map((x) => server.denies(x!.s))).toEqual([true, true, true, false]);

    // One statement per expiry bucket; the three sessions expire in the same 5 minutes.
    const doc = server.policy("deployer", POLICY_NAME)!;
    expect(doc.Version).toBe("2012-10-17");
    expect(doc.Statement).toEqual([
      {
        Sid: `JitbrokerDenyE${Math.ceil(a!.s.expiresAt / 1000)}I${Math.ceil(a!.s.issuedAt / 1000) + 1}`,
        Effect: "Deny",
        Action: "*",
        Resource: "*",
        Condition: { StringEquals: { "aws:userid": [a!.s.userId, b!.s.userId, c!.s.userId].sort() } },
      },
    ]);
    expect(server.calls("GetRole")).toHaveLength(1); // RoleId cached
    expect(server.calls("PutRolePolicy")).toHaveLength(3);
    // Revoking again changes nothing and writes nothing (I4).
    await h.backend.revoke(a!.lease, a!.handle);
    expect(server.calls("PutRolePolicy")).toHaveLength(3);

    const ev = h.events.filter((e) => e.type === "aws_deny_attached" && e.lease_id === b!.lease.id);
    expect(ev).toHaveLength(1);
    expect(ev[0]).toMatchObject({
      role_arn: r.arn,
      policy_name: POLICY_NAME,
      session: b!.s.userId,
      deny: "aws:userid",
      session_expires_at: new Date(b!.s.expiresAt).toISOString(),
      note: `deny attached at ${new Date(clock.now()).toISOString()} to role ${r.arn} (inline policy ${POLICY_NAME}); AWS may take a short while to apply it (IAM is eventually consistent); the session would otherwise have lived until ${new Date(b!.s.expiresAt).toISOString()}`,
    });
  });

  it("a session that ends on its own within seconds needs no deny, counting the clock skew margin", async () => {
    const r = server.addRole("expiring");
    const [m, n] = await mintMany(h, r, clock.now(), 2, 900);
    const puts = () => server.calls("PutRolePolicy").filter((c) => c.params.RoleName === "expiring").length;
    // 3 s before its end by this broker's clock: that clock may be up to the margin (60 s)
    // ahead of AWS's or of the minting broker's, so the session may live a minute more: denied.
    clock.advance(900_000 - 3_000);
    await h.backend.revoke(m!.lease, m!.handle);
    expect(puts()).toBe(1);
    expect(server.denies(server.session(m!.lease.id))).toBe(true);
    // Ended more than the margin minus 5 s ago: dead whatever the skew; nothing is written.
    clock.advance(3_000 + DEFAULT_CLOCK_SKEW_MARGIN_MS - NOT_WORTH_DENYING_MS);
    await h.backend.revoke(n!.lease, n!.handle);
    expect(puts()).toBe(1);
  });

  it("with clock_skew_margin 0 (clocks trusted), a session ending within 5 s gets no deny", async () => {
    const h0 = await startHarness({ now: clock.now, server, clockSkewMarginMs: 0 });
    try {
      const r = server.addRole("expiring-0");
      const [m] = await mintMany(h0, r, clock.now(), 1, 900);
      clock.advance(900_000 - 3_000);
      await h0.backend.revoke(m!.lease, m!.handle);
      expect(server.calls("PutRolePolicy").filter((c) => c.params.RoleName === "expiring-0")).toHaveLength(0);
      expect(server.policy("expiring-0", POLICY_NAME)).toBeNull();
    } finally {
      await h0.close();
    }
  });

  it("drops statements of sessions that have expired anyway, keeps statements it did not write", async () => {
    const r = server.addRole("gc-role");
    const foreign = { Sid: "ManualBreakGlass", Effect: "Deny", Action: "iam:*", Resource: "*" };
    r.policies.set(POLICY_NAME, JSON.stringify({ Version: "2012-10-17", Statement: [foreign] }));
    const [old] = await mintMany(h, r, clock.now(), 1);
    await h.backend.revoke(old!.lease, old!.handle);
    const oldSession = server.session(old!.lease.id);
    expect(server.policy("gc-role", POLICY_NAME)!.Statement).toHaveLength(2);

    // Past the old session's end, within the grace plus the clock skew margin: still listed.
    clock.set(oldSession.expiresAt + GC_GRACE_MS + DEFAULT_CLOCK_SKEW_MARGIN_MS - 1000);
    const [mid] = await mintMany(h, r, clock.now(), 1);
    await h.backend.revoke(mid!.lease, mid!.handle);
    const ids = (doc: ReturnType<AwsServer["policy"]>) => doc!.Statement.flatMap((s) => [s.Condition?.StringEquals?.["aws:userid"] ?? []].flat());
    expect(ids(server.policy("gc-role", POLICY_NAME))).toEqual(expect.arrayContaining([oldSession.userId, server.session(mid!.lease.id).userId]));

    // Past the grace and the margin: the old entry is garbage-collected by the next revocation,
    // in IAM's copy and in the Redis record alike.
    clock.set(oldSession.expiresAt + GC_GRACE_MS + DEFAULT_CLOCK_SKEW_MARGIN_MS + 1000);
    const [late] = await mintMany(h, r, clock.now(), 1);
    await h.backend.revoke(late!.lease, late!.handle);
    const doc = server.policy("gc-role", POLICY_NAME)!;
    expect(doc.Statement[0]).toEqual(foreign);
    expect(ids(doc).sort()).toEqual([server.session(mid!.lease.id).userId, server.session(late!.lease.id).userId].sort());
    expect(server.denies(server.session(mid!.lease.id))).toBe(true);
    expect(server.denies(server.session(late!.lease.id))).toBe(true);
    const recorded = await h.redis.zrange(h.keys.awsRevoked(r.arn), 0, -1);
    expect(recorded.map((m) => m.split(" ")[1]).sort()).toEqual([server.session(mid!.lease.id).userId, server.session(late!.lease.id).userId].sort());
  });

  it("revokes every session of a role in one process concurrently, batched, none lost", async () => {
    const r = server.addRole("busy");
    const minted = await mintMany(h, r, clock.now(), 12);
    const puts = server.calls("PutRolePolicy").length;
    const appends = h.appendCalls.length;
    const events = h.events.length;
    server.delay("GetRolePolicy", 50);
    try {
      await Promise.all(minted.slice(0, 10).map((m) => h.backend.revoke(m.lease, m.handle)));
    } finally {
      server.delay("GetRolePolicy", 0);
    }
    const sessions = minted.map((m) => server.session(m.lease.id));
    expect(sessions.map((s) => server.denies(s))).toEqual([...Array(10).fill(true), false, false]);
    expect(server.calls("PutRolePolicy").length - puts).toBeLessThan(10);
    expect(server.calls("PutRolePolicy").length - puts).toBeGreaterThanOrEqual(1);
    // One audit append per batch, its events in the order the revocations came.
    const batches = h.appendCalls.slice(appends);
    expect(batches.length).toBeLessThan(10);
    expect(batches.reduce((a, b) => a + b, 0)).toBe(10);
    expect(h.events.slice(events).map((e) => [e.type, "lease_id" in e ? e.lease_id : undefined])).toEqual(minted.slice(0, 10).map((m) => ["aws_deny_attached", m.lease.id]));
  });

  it("throttled IAM calls are retried by the SDK; persistent throttling and refusals are clear errors", async () => {
    const r = server.addRole("throttled");
    const h2 = await startHarness({ now: clock.now, server, maxAttempts: 2 });
    try {
      const [m1, m2, m3] = await mintMany(h2, r, clock.now(), 3);
      server.fail("PutRolePolicy", "Throttling", 1, "Rate exceeded");
      await h2.backend.revoke(m1!.lease, m1!.handle);
      expect(server.denies(server.session(m1!.lease.id))).toBe(true);

      server.fail("PutRolePolicy", "Throttling", 2, "Rate exceeded");
      const err = await h2.backend.revoke(m2!.lease, m2!.handle).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackendError);
      expect(err).toMatchObject({ retryable: true, message: `PutRolePolicy on ${r.arn} failed: Throttling (HTTP 400): Rate exceeded` });
      expect(server.denies(server.session(m2!.lease.id))).toBe(false);
      expect(h2.backend.status!().state).toBe("degraded");
      await h2.backend.revoke(m2!.lease, m2!.handle); // the revoker's retry
      expect(server.denies(server.session(m2!.lease.id))).toBe(true);
      expect(h2.backend.status!()).toEqual({ state: "ok" });

      server.fail("GetRolePolicy", "ServiceFailure", 2, "Internal failure");
      await expect(h2.backend.revoke(m3!.lease, m3!.handle)).rejects.toMatchObject({ retryable: true, message: expect.stringMatching(/GetRolePolicy .* ServiceFailure \(HTTP 500\)/) });
      server.fail("PutRolePolicy", "AccessDenied", 1, `User: arn:aws:iam::123456789012:user/broker is not authorized to perform: iam:PutRolePolicy on resource: role throttled`);
      await expect(h2.backend.revoke(m3!.lease, m3!.handle)).rejects.toMatchObject({ retryable: false, message: expect.stringMatching(/PutRolePolicy on .* failed: AccessDenied \(HTTP 403\): .*not authorized to perform: iam:PutRolePolicy/) });
      await h2.backend.revoke(m3!.lease, m3!.handle);
      expect(server.denies(server.session(m3!.lease.id))).toBe(true);
    } finally {
      await h2.close();
    }
  });

  it("a role that no longer exists: NoSuchEntity is believed when seen again 10 s later; then no deny is needed", async () => {
    const r = server.addRole("doomed");
    const [m] = await mintMany(h, r, clock.now(), 1);
    server.roles.delete("doomed");
    const h2 = await startHarness({ now: clock.now, server }); // no cached RoleId
    try {
      const first = await h2.backend.revoke(m!.lease, m!.handle).catch((e: unknown) => e);
      expect(first).toBeInstanceOf(BackendError);
      expect(first).toMatchObject({
        retryable: true,
        message: `GetRole on ${r.arn}: the role was not found (NoSuchEntity); IAM is eventually consistent, so the broker believes it only when an attempt at least 10 s later says so too; will retry`,
      });
      clock.advance(5_000); // too soon to believe it
      await expect(h2.backend.revoke(m!.lease, m!.handle)).rejects.toMatchObject({ retryable: true });
      expect(h2.events).toEqual([]);
      clock.advance(5_000);
      await h2.backend.revoke(m!.lease, m!.handle);
      expect(h2.events).toEqual([
        expect.objectContaining({ type: "aws_session_ended", lease_id: m!.lease.id, note: expect.stringMatching(/no longer exists \(IAM NoSuchEntity, seen again at least 10 s after the first time\)/) }),
      ]);
      // With the RoleId cached, PutRolePolicy's NoSuchEntity is a first sighting just the same.
      const r2 = server.addRole("doomed2");
      const [k1, k2] = await mintMany(h, r2, clock.now(), 2);
      await h.backend.revoke(k1!.lease, k1!.handle);
      server.roles.delete("doomed2");
      await expect(h.backend.revoke(k2!.lease, k2!.handle)).rejects.toMatchObject({ retryable: true, message: expect.stringMatching(/^PutRolePolicy on .*role\/doomed2: the role was not found \(NoSuchEntity\)/) });
      clock.advance(10_000);
      await h.backend.revoke(k2!.lease, k2!.handle);
      expect(h.events.at(-1)).toMatchObject({ type: "aws_session_ended", lease_id: k2!.lease.id });
      // The record of a gone role is dropped with it.
      expect(await h.redis.exists(h.keys.awsRevoked(r2.arn))).toBe(0);
    } finally {
      await h2.close();
    }
  });

  it("a role that answers NoSuchEntity once (IAM eventual consistency) and then exists gets its deny", async () => {
    const r = server.addRole("flaky");
    const [m] = await mintMany(h, r, clock.now(), 1);
    const h2 = await startHarness({ now: clock.now, server });
    try {
      server.fail("GetRole", "NoSuchEntity", 1, "The role with name flaky cannot be found.");
      await expect(h2.backend.revoke(m!.lease, m!.handle)).rejects.toMatchObject({ retryable: true, message: expect.stringMatching(/NoSuchEntity/) });
      clock.advance(60_000);
      await h2.backend.revoke(m!.lease, m!.handle);
      expect(server.denies(server.session(m!.lease.id))).toBe(true);
      expect(h2.events.map((e) => e.type)).toEqual(["aws_deny_attached"]);
    } finally {
      await h2.close();
    }
  });

  it("a malformed handle is refused clearly", async () => {
    const lease = leaseFor(clock.now(), { ttlSeconds: 300 });
    await expect(h.backend.revoke(lease, { role_arn: "arn:aws:iam::123456789012:role/x" })).rejects.toMatchObject({ retryable: false, message: `lease ${lease.id}: its aws_sts handle has no session_name` });
  });
});

describe("size limit", () => {
  const clock = testClock();
  let server: AwsServer;
  beforeAll(async () => {
    server = await startAwsServer({ now: clock.now });
  });
  afterAll(async () => {
    await server.close();
  });

  it("falls back to an aws:TokenIssueTime cut-off that denies every revoked session, and says so", async () => {
    const h = await startHarness({ now: clock.now, server, policyMaxChars: 1024 });
    try {
      const r = server.addRole("crowded");
      // 30 sessions issued a minute apart; the first 25 are revoked.
      const minted: { lease: Lease; handle: Record<string, string> }[] = [];
      for (let i = 0; i < 30; i++) {
        minted.push(...(await mintMany(h, r, clock.now(), 1, 3600)));
        clock.advance(60_000);
      }
      for (const m of minted.slice(0, 25)) await h.backend.revoke(m.lease, m.handle);
      const sessions = minted.map((m) => server.session(m.lease.id));
      const text = r.policies.get(POLICY_NAME)!;
      expect(text.length).toBeLessThanOrEqual(1024);
      const doc = JSON.parse(text) as { Statement: Record<string, any>[] };
      const cut = doc.Statement.find((s) => String(s.Sid).startsWith("JitbrokerDenyBeforeE"))!;
      expect(cut).toMatchObject({ Effect: "Deny", Action: "*", Resource: "*", Condition: { DateLessThan: { "aws:TokenIssueTime": expect.any(String) } } });
      // Every revoked session is denied; the newest revoked ones by name, the oldest by the cut-off.
      expect(sessions.slice(0, 25).every((s) => server.denies(s))).toBe(true);
      // Collateral, as documented: unrevoked sessions issued before the cut-off are denied too;
      // later ones are not.
      const before = Date.parse(cut.Condition.DateLessThan["aws:TokenIssueTime"]);
      for (const s of sessions.slice(25)) expect([s.sessionName, server.denies(s)]).toEqual([s.sessionName, s.issuedAt < before]);
      expect(before).toBeLessThan(sessions[24]!.issuedAt); // the cut-off is below the newest revocations
      const fb = h.events.filter((e) => e.type === "aws_revocation_fallback");
      expect(fb.length).toBeGreaterThanOrEqual(1);
      expect(fb.at(-1)).toMatchObject({
        role_arn: r.arn,
        issued_before: new Date(before).toISOString(),
        note: expect.stringMatching(/every session of .*role\/crowded issued before .* is now denied until .*, including sessions of leases that were not revoked/),
      });
      // Each revoked lease has its own deny event; the fallback event names the role-wide cut-off.
      expect(new Set(h.events.filter((e) => e.type === "aws_deny_attached").map((e) => e.lease_id))).toEqual(new Set(minted.slice(0, 25).map((m) => m.lease.id)));
      expect(h.logs.join("")).toContain("fell back to a role-wide aws:TokenIssueTime deny");
    } finally {
      await h.close();
    }
  });

  it("other inline policies on the role: IAM's LimitExceeded shrinks the revocation policy until it fits", async () => {
    const h = await startHarness({ now: clock.now, server });
    try {
      const r = server.addRole("shared");
      // Someone else's 9,000-character inline policy on the same role.
      const other = { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "s3:GetObject", Resource: `arn:aws:s3:::${"x".repeat(8900)}/*` }] };
      r.policies.set("someone-elses", JSON.stringify(other));
      const minted = await mintMany(h, r, clock.now(), 40);
      await Promise.all(minted.map((m) => h.backend.revoke(m.lease, m.handle)));
      expect(minted.every((m) => server.denies(server.session(m.lease.id)))).toBe(true);
      expect(server.calls("PutRolePolicy").some((c) => c.params.RoleName === "shared")).toBe(true);
      expect(h.logs.join("")).toContain("shrinking the revocation policy");
      expect(r.policies.get("someone-elses")).toBe(JSON.stringify(other));
    } finally {
      await h.close();
    }
  });
});

describe("replicas", () => {
  const clock = testClock();
  let server: AwsServer;
  beforeAll(async () => {
    server = await startAwsServer({ now: clock.now });
  });
  afterAll(async () => {
    await server.close();
  });

  async function race(sameKeyspace: boolean, roleName: string, after?: (a: Harness, b: Harness, denied: () => boolean[]) => Promise<void>) {
    const prefix = uniquePrefix();
    const a = await startHarness({ now: clock.now, server, prefix });
    const b = await startHarness({ now: clock.now, server, prefix: sameKeyspace ? prefix : uniquePrefix() });
    try {
      const r = server.addRole(roleName);
      const ma = await mintMany(a, r, clock.now(), 3);
      const mb = await mintMany(b, r, clock.now(), 3);
      server.delay("GetRolePolicy", 300); // both replicas read before either writes, unless serialized
      await Promise.all([...ma.map((m) => a.backend.revoke(m.lease, m.handle)), ...mb.map((m) => b.backend.revoke(m.lease, m.handle))]);
      server.delay("GetRolePolicy", 0);
      const denied = () => [...ma, ...mb].map((m) => server.denies(server.session(m.lease.id)));
      const out = denied();
      await after?.(a, b, denied);
      return out;
    } finally {
      server.delay("GetRolePolicy", 0);
      await a.close();
      await b.close();
    }
  }

  it("two brokers revoking sessions of one role at once: the Redis lock serializes them, both sets end up denied", async () => {
    expect(await race(true, "shared-by-replicas")).toEqual(Array(6).fill(true));
  });

  it("(control) without a shared lock the read-modify-write race is real: one broker's update is lost, until the check against its Redis record rewrites it", async () => {
    const denied = await race(false, "unlocked", async (a, b, now) => {
      // What the worker runs periodically (and each broker 30 s after its own writes).
      const reports = [await a.backend.checkRevocationPolicies(), await b.backend.checkRevocationPolicies()];
      expect(reports.map((r) => r.rewritten).sort()).toEqual([0, 1]);
      expect(reports.every((r) => r.roles === 1 && r.failed === 0)).toBe(true);
      expect(now()).toEqual(Array(6).fill(true));
      expect([a, b].map((x) => x.logs.join("")).join("")).toContain("revocation policy missed revoked sessions recorded in Redis");
    });
    expect(denied.filter(Boolean).length).toBe(3);
  });

  it("a lock held elsewhere for too long is a retryable error, not a blind write", async () => {
    const h = await startHarness({ now: clock.now, server, lockWaitMs: 200 });
    try {
      const r = server.addRole("locked");
      const [m] = await mintMany(h, r, clock.now(), 1);
      await h.redis.set(h.keys.awsLock(r.arn), "someone-else", "PX", 10_000);
      await expect(h.backend.revoke(m!.lease, m!.handle)).rejects.toMatchObject({ retryable: true, message: expect.stringMatching(/being updated by another broker/) });
      expect(server.calls("PutRolePolicy").filter((c) => c.params.RoleName === "locked")).toHaveLength(0);
    } finally {
      await h.close();
    }
  });
});
