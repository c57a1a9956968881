/**
 * One revocation ends the whole chain: revoking a lease, for any trigger, revokes every lease
 * delegated from it (trigger parent_revoked), and every descendant's token introspects inactive
 * within a second.
 */
import { waitFor } from "../support/fixture";
import { delegation, startDelegationFixture, type DelegationFixture } from "./support";

let f: DelegationFixture;
beforeAll(async () => {
  f = await startDelegationFixture({ maxDepth: 3 });
});
afterAll(async () => {
  await f.close();
});

interface Chain {
  root: { lease: any; credential: any };
  descendants: { lease_id: string; access_token: string }[];
}

/** orchestrator → subagent → tool, plus a second child of the root held by tool. */
async function chain(task: string, ttl?: number): Promise<Chain> {
  const root = await f.credential("orchestrator", "orders-read", task, ttl ? { ttl } : {});
  const one = (await f.exchange(await delegation(f, root.credential.token, "subagent"))).body;
  const two = (await f.exchange(await delegation(f, one.access_token, "tool"))).body;
  const side = (await f.exchange(await delegation(f, root.credential.token, "tool"))).body;
  for (const d of [one, two, side]) expect(d.lease_id).toMatch(/^l_/);
  return { root, descendants: [one, two, side] };
}

/** Every descendant introspects inactive within a second of `t0`, and ends revoked with parent_revoked (or expiry). */
async function expectChainEnded(c: Chain, t0: number, triggers: string[] = ["parent_revoked"]) {
  for (const d of c.descendants) {
    await waitFor(async () => (await f.introspect(d.access_token)).active === false, 1000, `descendant ${d.lease_id} inactive`);
  }
  expect(Date.now() - t0).toBeLessThan(1500);
  for (const d of c.descendants) {
    const l = await waitFor(async () => {
      const lease = (await f.call("GET", `/v1/leases/${d.lease_id}`, "alice")).body.lease;
      return lease.state === "revoked" || lease.state === "expired" ? lease : null;
    }, 5000, `descendant ${d.lease_id} terminal`);
    expect(triggers).toContain(l.revocation.trigger);
  }
}

describe("cascade revocation", () => {
  it("owner revokes the root", async () => {
    const c = await chain("T-c-owner");
    const t0 = Date.now();
    expect((await f.call("DELETE", `/v1/leases/${c.root.lease.id}`, "orchestrator")).status).toBe(200);
    await expectChainEnded(c, t0);
    const child = (await f.call("GET", `/v1/leases/${c.descendants[0]!.lease_id}`, "alice")).body.lease;
    expect(child.revocation).toMatchObject({ trigger: "parent_revoked", by: "orchestrator" });
    expect(child.revocation.reason).toContain(c.root.lease.id);
  });

  it("an operator revokes a middle lease: its subtree ends, the root and the sibling stay", async () => {
    const c = await chain("T-c-middle");
    const t0 = Date.now();
    const r = await f.call("POST", "/v1/admin/revocations", "alice", { lease_id: c.descendants[0]!.lease_id, reason: "sub-agent misbehaves" });
    expect(r.status).toBe(202);
    await waitFor(async () => (await f.introspect(c.descendants[1]!.access_token)).active === false, 1000);
    expect(Date.now() - t0).toBeLessThan(1500);
    expect((await f.introspect(c.root.credential.token)).active).toBe(true);
    expect((await f.introspect(c.descendants[2]!.access_token)).active).toBe(true);
  });

  it("operator force-revokes the workload that started the chain", async () => {
    const c = await chain("T-c-workload");
    const t0 = Date.now();
    expect((await f.call("POST", "/v1/admin/revocations", "alice", { workload: "orchestrator", reason: "incident" })).status).toBe(202);
    await expectChainEnded(c, t0);
  });

  it("task completion by the root's workload", async () => {
    const c = await chain("T-c-task");
    const t0 = Date.now();
    expect((await f.call("POST", "/v1/tasks/T-c-task/complete", "orchestrator")).body.revoked).toBe(1);
    await expectChainEnded(c, t0);
    // I5 holds for the chain: the root's task is done, so no new child of it can be made.
    const again = await f.exchange(await delegation(f, c.descendants[0]!.access_token, "tool"));
    expect(again.status).toBe(400);
  });

  it("policy change: a reload that no longer allows the root's role", async () => {
    const c = await chain("T-c-policy");
    // Cut the root only: agents may no longer request orders-read directly (delegation stays).
    const fs = await import("node:fs");
    const file = f.b.config.policy.files[0]!.replace("*.cedar", "p.cedar");
    const before = fs.readFileSync(file, "utf8");
    fs.writeFileSync(file, before.replace('@max_ttl("10m")', '@max_ttl("1m")'));
    try {
      const t0 = Date.now();
      const r = await f.call("POST", "/v1/admin/policy/reload", "alice");
      expect(r.status).toBeLessThan(300);
      await expectChainEnded(c, t0);
      const root = (await f.call("GET", `/v1/leases/${c.root.lease.id}`, "alice")).body.lease;
      expect(root.revocation.trigger).toBe("policy_change");
    } finally {
      fs.writeFileSync(file, before);
      await f.call("POST", "/v1/admin/policy/reload", "alice");
    }
  });

  it("expiry of the root ends descendants no later than the root", async () => {
    const c = await chain("T-c-expiry", 3);
    const t0 = Date.parse(c.root.lease.expires_at);
    for (const d of c.descendants) {
      const l = (await f.call("GET", `/v1/leases/${d.lease_id}`, "alice")).body.lease;
      expect(Date.parse(l.expires_at)).toBeLessThanOrEqual(t0);
    }
    await waitFor(async () => Date.now() >= t0, 5000);
    await expectChainEnded(c, t0, ["parent_revoked", "expiry"]);
  });

  it("re-authorization decides delegated leases again with their chain", async () => {
    const c = await chain("T-c-reauth");
    const fs = await import("node:fs");
    const file = f.b.config.policy.files[0]!.replace("*.cedar", "p.cedar");
    const before = fs.readFileSync(file, "utf8");
    // Delegation now allowed one hop only: the second hop (depth 2) must go, depth 1 stays.
    fs.writeFileSync(file, before.replace("context.delegation.depth <= 3", "context.delegation.depth <= 1"));
    try {
      expect((await f.call("POST", "/v1/admin/policy/reload", "alice")).status).toBeLessThan(300);
      const deep = await waitFor(async () => {
        const l = (await f.call("GET", `/v1/leases/${c.descendants[1]!.lease_id}`, "alice")).body.lease;
        return l.state === "revoked" ? l : null;
      }, 5000);
      expect(deep.revocation.trigger).toBe("policy_change");
      expect((await f.introspect(c.descendants[0]!.access_token)).active).toBe(true);
      expect((await f.introspect(c.descendants[2]!.access_token)).active).toBe(true);
    } finally {
      fs.writeFileSync(file, before);
      await f.call("POST", "/v1/admin/policy/reload", "alice");
    }
  });

  it("a child can no longer be made from a parent that was revoked while the exchange ran (no orphan)", async () => {
    const root = await f.credential("orchestrator", "orders-read", "T-c-race");
    const attempts = Array.from({ length: 5 }, async () => f.exchange(await delegation(f, root.credential.token, "subagent")));
    await f.call("DELETE", `/v1/leases/${root.lease.id}`, "orchestrator");
    const results = await Promise.all(attempts);
    // Whatever won the race, no child stays active once the root is revoked.
    for (const r of results.filter((x) => x.status === 200)) {
      await waitFor(async () => (await f.introspect(r.body.access_token)).active === false, 1000);
      await waitFor(async () => ["revoked", "expired"].includes((await f.call("GET", `/v1/leases/${r.body.lease_id}`, "alice")).body.lease.state), 5000);
    }
  });
});
