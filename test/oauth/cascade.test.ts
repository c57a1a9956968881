/**
 * One revocation ends the whole chain: revoking a lease, for any trigger, revokes every lease
 * delegated from it (trigger parent_revoked), and every descendant's token introspects inactive
 * within a second.
 */
import { describeHistory } from "../../src/cli/client/operators";
import { waitFor } from "../support/fixture";
import { delegation, POLICIES, startDelegationFixture, type DelegationFixture } from "./support";

jest.setTimeout(120_000);

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

let originalHash = "";
beforeAll(() => {
  originalHash = f.b.broker.policy().set().hash;
});

/**
 * The policy changes reach the broker through the reload call only (`f.policies.change`, unseen
 * by the file watcher, test/support/policies.ts): a file written where the watcher looks was
 * reloaded by it too, 200 ms later, and a watcher reload overlapping the call's could leave
 * neither to re-authorize (the descendants' wait then timed out in loaded runs).
 */
async function changePolicies(text: string) {
  f.policies.change({ write: { "p.cedar": text } });
  const r = await f.call("POST", "/v1/admin/policy/reload", "alice");
  expect(r.status).toBeLessThan(300);
}

/** Puts the policy file back, so later tests start from the original set. */
async function restorePolicies(text: string) {
  await changePolicies(text);
  expect(f.b.broker.policy().set().hash).toBe(originalHash);
}

const leaseOf = async (id: string) => (await f.call("GET", `/v1/leases/${id}`, "alice")).body.lease;

/**
 * Every descendant introspects inactive, ends revoked with parent_revoked (or expiry), and was
 * triggered within a second of the lease it was delegated from (the broker's own timestamps, so
 * a slow test machine does not decide the outcome).
 */
async function expectChainEnded(c: Chain, triggers: string[] = ["parent_revoked"]) {
  for (const d of c.descendants) {
    await waitFor(async () => (await f.introspect(d.access_token)).active === false, 15_000, `descendant ${d.lease_id} inactive`);
  }
  const ended = new Map<string, any>();
  const root = await waitFor(async () => {
    const l = await leaseOf(c.root.lease.id);
    return l.revocation ? l : null;
  }, 15_000, "the root triggered");
  ended.set(root.id, root);
  for (const d of c.descendants) {
    const l = await waitFor(async () => {
      const lease = await leaseOf(d.lease_id);
      return lease.state === "revoked" || lease.state === "expired" ? lease : null;
    }, 15_000, `descendant ${d.lease_id} terminal`);
    expect(triggers).toContain(l.revocation.trigger);
    ended.set(l.id, l);
  }
  for (const d of c.descendants) {
    const l = ended.get(d.lease_id);
    const parent = ended.get(l.parent_lease_id);
    expect(Date.parse(l.revocation.at) - Date.parse(parent.revocation.at)).toBeLessThan(1000);
  }
}

describe("cascade revocation", () => {
  it("owner revokes the root", async () => {
    const c = await chain("T-c-owner");
    expect((await f.call("DELETE", `/v1/leases/${c.root.lease.id}`, "orchestrator")).status).toBe(200);
    // Inactive from the moment the root is triggered: introspection checks the ancestors.
    for (const d of c.descendants) expect(await f.introspect(d.access_token)).toEqual({ active: false });
    await expectChainEnded(c);
    const child = (await f.call("GET", `/v1/leases/${c.descendants[0]!.lease_id}`, "alice")).body.lease;
    expect(child.revocation).toMatchObject({ trigger: "parent_revoked", by: "orchestrator" });
    expect(child.revocation.reason).toContain(c.root.lease.id);

    // History of the deepest lease answers the four questions through the whole chain (I8).
    const deep = c.descendants[1]!;
    // The deepest lease's `revoked` event is appended after it is revoked, and the root ends after
    // its descendants (children first): wait for both before reading the history.
    const h = await waitFor(async () => {
      const body = (await f.call("GET", `/v1/admin/leases/${deep.lease_id}/history`, "alice")).body;
      const done = body.events?.some((e: any) => e.type === "revoked") && body.delegation?.ancestors?.every((a: any) => a.state === "revoked");
      return done ? body : null;
    }, 15_000, "the deepest lease's revoked event and its ancestors revoked");
    expect(h.requested_by).toMatchObject({ workload: "tool", chain: ["orchestrator", "subagent", "tool"] });
    expect(h.identity).toMatchObject({ issuer: "idp", subject: "tool-1" });
    expect(h.allowed_by.ids).toEqual(["agents-delegate-read"]);
    expect(h.ended).toMatchObject({ state: "revoked", trigger: "parent_revoked", by: "orchestrator" });
    expect(h.delegation).toMatchObject({ parent_lease_id: c.descendants[0]!.lease_id, depth: 2 });
    expect(h.delegation.ancestors.map((a: any) => [a.id, a.workload, a.state])).toEqual([
      [c.root.lease.id, "orchestrator", "revoked"],
      [c.descendants[0]!.lease_id, "subagent", "revoked"],
    ]);
    const types = h.events.map((e: any) => e.type);
    expect(types).toEqual(expect.arrayContaining(["mint", "revocation_requested", "revoked"]));
    const mint = h.events.find((e: any) => e.type === "mint");
    expect(mint).toMatchObject({ exchange: "delegation", parent_lease_id: c.descendants[0]!.lease_id, chain: ["orchestrator", "subagent"], token_claims: { sub: "orchestrator", act: { sub: "tool", act: { sub: "subagent" } } } });
    expect(mint.policy_ids).toEqual(["agents-delegate-read"]);
    expect(h.events.find((e: any) => e.type === "revocation_requested")).toMatchObject({ trigger: "parent_revoked", parent_lease_id: c.descendants[0]!.lease_id });
    const text = describeHistory(h);
    expect(text).toContain("through the chain:       orchestrator -> subagent -> tool (delegated 2 hops");
    expect(text).toContain(`root lease:              ${c.root.lease.id} (orchestrator, revoked, allowed by agents-read)`);
    expect(text).toContain("the lease it was delegated from was revoked (by orchestrator)");
  });

  it("an operator revokes a middle lease: its subtree ends, the root and the sibling stay", async () => {
    const c = await chain("T-c-middle");
    const r = await f.call("POST", "/v1/admin/revocations", "alice", { lease_id: c.descendants[0]!.lease_id, reason: "sub-agent misbehaves" });
    expect(r.status).toBe(202);
    await waitFor(async () => (await f.introspect(c.descendants[1]!.access_token)).active === false, 15_000);
    const middle = await waitFor(async () => ((await leaseOf(c.descendants[0]!.lease_id)).state === "revoked" ? leaseOf(c.descendants[0]!.lease_id) : null), 15_000);
    const deep = await waitFor(async () => ((await leaseOf(c.descendants[1]!.lease_id)).state === "revoked" ? leaseOf(c.descendants[1]!.lease_id) : null), 15_000);
    expect(deep.revocation).toMatchObject({ trigger: "parent_revoked", by: "alice" });
    expect(Date.parse(deep.revocation.at) - Date.parse(middle.revocation.at)).toBeLessThan(1000);
    expect((await f.introspect(c.root.credential.token)).active).toBe(true);
    expect((await f.introspect(c.descendants[2]!.access_token)).active).toBe(true);
  });

  it("operator force-revokes the workload that started the chain", async () => {
    const c = await chain("T-c-workload");
    expect((await f.call("POST", "/v1/admin/revocations", "alice", { workload: "orchestrator", reason: "incident" })).status).toBe(202);
    await expectChainEnded(c);
  });

  it("task completion by the root's workload", async () => {
    const c = await chain("T-c-task");
    expect((await f.call("POST", "/v1/tasks/T-c-task/complete", "orchestrator")).body.revoked).toBe(1);
    await expectChainEnded(c);
    // I5 holds for the chain: the root's task is done, so no new child of it can be made.
    const again = await f.exchange(await delegation(f, c.descendants[0]!.access_token, "tool"));
    expect(again.status).toBe(400);
  });

  it("policy change: a reload that no longer allows the root's role", async () => {
    const c = await chain("T-c-policy");
    // Cut the root only: agents may no longer request orders-read directly (delegation stays).
    const before = POLICIES;
    try {
      await changePolicies(before.replace('@max_ttl("10m")', '@max_ttl("1m")'));
      await expectChainEnded(c);
      const root = (await f.call("GET", `/v1/leases/${c.root.lease.id}`, "alice")).body.lease;
      expect(root.revocation.trigger).toBe("policy_change");
    } finally {
      await restorePolicies(before);
    }
  });

  it("expiry of the root ends descendants no later than the root", async () => {
    const c = await chain("T-c-expiry", 8);
    const rootExpiry = Date.parse(c.root.lease.expires_at);
    for (const d of c.descendants) {
      const l = (await f.call("GET", `/v1/leases/${d.lease_id}`, "alice")).body.lease;
      expect(Date.parse(l.expires_at)).toBeLessThanOrEqual(rootExpiry);
    }
    await waitFor(async () => Date.now() >= rootExpiry, 15_000);
    await expectChainEnded(c, ["parent_revoked", "expiry"]);
  });

  it("re-authorization decides delegated leases again with their chain", async () => {
    const c = await chain("T-c-reauth");
    const before = POLICIES;
    try {
      // Delegation now allowed one hop only: the second hop (depth 2) must go, depth 1 stays.
      await changePolicies(before.replace("context.delegation.depth <= 3", "context.delegation.depth <= 1"));
      const deep = await waitFor(async () => {
        const l = (await f.call("GET", `/v1/leases/${c.descendants[1]!.lease_id}`, "alice")).body.lease;
        return l.state === "revoked" ? l : null;
      }, 15_000);
      expect(deep.revocation.trigger).toBe("policy_change");
      expect((await f.introspect(c.descendants[0]!.access_token)).active).toBe(true);
      expect((await f.introspect(c.descendants[2]!.access_token)).active).toBe(true);
    } finally {
      await restorePolicies(before);
    }
  });

  it("a child can no longer be made from a parent that was revoked while the exchange ran (no orphan)", async () => {
    const root = await f.credential("orchestrator", "orders-read", "T-c-race");
    const attempts = Array.from({ length: 5 }, async () => f.exchange(await delegation(f, root.credential.token, "subagent")));
    await f.call("DELETE", `/v1/leases/${root.lease.id}`, "orchestrator");
    const results = await Promise.all(attempts);
    // Whatever won the race, no child stays active once the root is revoked.
    for (const r of results.filter((x) => x.status === 200)) {
      expect((await f.introspect(r.body.access_token)).active).toBe(false);
      await waitFor(async () => ["revoked", "expired"].includes((await f.call("GET", `/v1/leases/${r.body.lease_id}`, "alice")).body.lease.state), 15_000);
    }
  });
});
