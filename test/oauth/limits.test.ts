/** The delegation path is under the same rate limit and quota as POST /v1/credentials. */
import { delegation, startDelegationFixture, type DelegationFixture } from "./support";

let f: DelegationFixture;
beforeAll(async () => {
  f = await startDelegationFixture({ limits: { requests_per_minute: 4, active_leases: 2 } });
});
afterAll(async () => {
  await f.close();
});

it("a sub-agent cannot exceed its quota or its rate limit through token exchange", async () => {
  const root = await f.credential("orchestrator", "orders-read", "T-limits");
  const ask = async () => f.exchange(await delegation(f, root.credential.token, "subagent"));
  expect((await ask()).status).toBe(200);
  expect((await ask()).status).toBe(200);
  // Two active leases: the quota is full.
  const full = await ask();
  expect(full.status).toBe(429);
  expect(full.body).toMatchObject({ error: "temporarily_unavailable", code: "quota_exceeded" });
  expect(Number(full.headers.get("retry-after"))).toBeGreaterThan(0);
  // Refused attempts count too: the 5th attempt this minute is over the limit.
  expect((await ask()).body.code).toBe("quota_exceeded");
  const limited = await ask();
  expect(limited.status).toBe(429);
  expect(limited.body).toMatchObject({ error: "temporarily_unavailable", code: "rate_limited" });
  expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
});
