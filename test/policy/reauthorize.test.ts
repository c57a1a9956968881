/**
 * Continuous re-authorization (issue 4): a policy or inventory change revokes exactly the
 * active leases the new policies no longer allow, with trigger policy_change, and no other;
 * a workload removed from the inventory loses all its leases; the reload endpoint reports it.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { parse, stringify } from "yaml";
import type { Backend } from "../../src/backends/types";
import { newShardedId } from "../../src/redis/keys";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { readable } from "../../src/leases/store";
import { policyDir, type PolicyDir } from "../support/policies";

type Who = "agent" | "agent2" | "ci";

/*
 * The policy changes these tests make reach the broker only through the reload call they test
 * (`dir.change`, test/support/policies.ts): a file written where the broker's file watcher looks
 * would be reloaded by the watcher too, 200 ms later, which on a loaded machine may come first
 * (the call then reports no change and does not wait for the watcher's walk). The watcher's own
 * re-authorization has its test here ("an edited policy file ...", `dir.edit`).
 */

/** For tests that issue many leases: no per-workload quota, no rate limit. */
const unlimited = { leases: { quota_per_workload: 0 }, limits: { requests_per_minute: 0 } };

describe("re-authorization of active leases", () => {
  let f: Fixture;
  let dir: PolicyDir;
  beforeEach(async () => {
    dir = policyDir();
    f = await startFixture({ extra: { policy: { files: [dir.files] } } });
  });
  afterEach(async () => {
    await f.close();
    dir.close();
  });

  async function issue(who: Who, task: string, role = "orders-read"): Promise<string> {
    const r = await f.call("POST", "/v1/credentials", who, { role, task: { id: task } });
    expect(r.status).toBe(201);
    return r.body.lease.id as string;
  }
  const lease = async (id: string) => (await f.call("GET", `/v1/leases/${id}`, "alice")).body.lease;
  const reload = () => f.call("POST", "/v1/admin/policy/reload", "alice");

  it("a policy change revokes exactly the leases it no longer allows, and reports the counts", async () => {
    const a1 = await issue("agent", "A-1");
    const a2 = await issue("agent", "A-2");
    const b1 = await issue("agent2", "B-1");
    const c1 = await issue("ci", "C-1");
    // A lease already revoked by its owner is not re-evaluated (and not revoked twice).
    const gone = await issue("agent2", "B-2");
    expect((await f.call("DELETE", `/v1/leases/${gone}`, "agent2")).status).toBe(200);

    dir.change({ write: { "zz-offboard.cedar": '@id("agent2-suspended")\nforbid (principal == Workload::"agent2", action, resource);\n' } });
    const r = await reload();
    expect(r.status).toBe(200);
    expect(r.body.policy.changed).toBe(true);
    expect(r.body.reauthorization).toMatchObject({ state: "completed", revoked: 1, kept: 3 });
    expect(r.body.reauthorization.reevaluated).toBe(4);
    expect(r.body.reauthorization.policy_hash).toBe(r.body.policy.hash);

    const b = await waitFor(async () => {
      const l = await lease(b1);
      return l.state === "revoked" ? l : null;
    }, 10_000, "agent2's lease to be revoked");
    expect(b.revocation).toMatchObject({ trigger: "policy_change", by: "alice", reason: expect.stringMatching(/no longer allows it \(forbidden by agent2-suspended\)/) });
    for (const id of [a1, a2, c1]) expect((await lease(id)).state).toBe("active");
    expect((await lease(gone)).revocation.trigger).toBe("owner");

    // The lease's history says how, when and by whom.
    const h = await f.call("GET", `/v1/admin/leases/${b1}/history`, "alice");
    expect(h.body.ended).toMatchObject({ state: "revoked", trigger: "policy_change", by: "alice" });
    expect(h.body.events.map((e: { type: string }) => e.type)).toContain("revocation_requested");
    // Nothing changed: a second reload re-evaluates nothing.
    const again = await reload();
    expect(again.body).toMatchObject({ policy: { changed: false }, inventory: { changed: false }, reauthorization: { reevaluated: 0, revoked: 0 } });
  });

  it("an edited policy file re-authorizes on its own (no reload call)", async () => {
    const a1 = await issue("agent", "W-1");
    const c1 = await issue("ci", "W-2");
    dir.edit("agents.cedar", "// agents get nothing any more\n"); // in the watched directory
    await waitFor(async () => (await lease(a1)).state === "revoked", 10_000, "the agent lease to be revoked");
    expect((await lease(a1)).revocation).toMatchObject({ trigger: "policy_change", by: "system" });
    expect((await lease(c1)).state).toBe("active");
  });

  it("a policy set that does not compile is refused with every problem; nothing is revoked", async () => {
    const a1 = await issue("agent", "X-1");
    dir.change({ write: { "broken.cedar": "permit (principal, action, resource) when { principal.kind == };\n" } });
    const r = await reload();
    expect(r.status).toBe(422);
    expect(r.body.code).toBe("policy_invalid");
    expect(r.body.problems.join("\n")).toMatch(/broken\.cedar:1/);
    expect((await lease(a1)).state).toBe("active");
  });

  it("reloading takes admin_revoke: read-only operators and workloads are refused", async () => {
    expect((await f.call("POST", "/v1/admin/policy/reload", "bob")).status).toBe(403);
    expect((await f.call("POST", "/v1/admin/policy/reload", "agent")).status).toBe(403);
    expect((await f.call("POST", "/v1/admin/policy/reload", null)).status).toBe(401);
  });

  it("removing a workload from the inventory revokes all its leases (offboarding); its token stops working", async () => {
    const a = [await issue("agent", "O-1"), await issue("agent", "O-2")];
    const keep = await issue("agent2", "O-3");
    const file = f.b.config.file;
    const doc = parse(readFileSync(file, "utf8")) as { workloads: { id: string }[]; server: Record<string, unknown> };
    doc.workloads = doc.workloads.filter((w) => w.id !== "agent");
    doc.server = { ...doc.server, body_limit: "32kb" }; // a section that needs a restart
    writeFileSync(file, stringify(doc));

    const r = await reload();
    expect(r.status).toBe(200);
    expect(r.body.inventory).toMatchObject({ changed: true, workloads: 4, restart_required: ["server"] });
    expect(r.body.reauthorization).toMatchObject({ reevaluated: 3, revoked: 2, kept: 1 });
    for (const id of a) {
      const l = await waitFor(async () => {
        const x = await lease(id);
        return x.state === "revoked" ? x : null;
      }, 10_000, "offboarded leases");
      expect(l.revocation).toMatchObject({ trigger: "policy_change", reason: "workload agent was removed from the inventory" });
    }
    expect((await lease(keep)).state).toBe("active");
    const denied = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "O-4" } });
    expect(denied.status).toBe(403);
    expect(denied.body.code).toBe("unknown_workload");
  });

  it("a configuration file that no longer loads is refused; the running inventory stays", async () => {
    const a1 = await issue("agent", "Q-1");
    writeFileSync(f.b.config.file, "workloads: [ { id: 1 } ]\n");
    const r = await reload();
    expect(r.status).toBe(422);
    expect(r.body.code).toBe("policy_invalid");
    expect(r.body.problems.length).toBeGreaterThan(0);
    expect((await lease(a1)).state).toBe("active");
    expect((await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "Q-2" } })).status).toBe(201);
  });
});

describe("re-authorization with decisions shared between leases of the same inputs", () => {
  let f: Fixture;
  let dir: PolicyDir;
  beforeAll(async () => {
    dir = policyDir();
    f = await startFixture({ extra: { policy: { files: [dir.files] }, ...unlimited } });
  });
  afterAll(async () => {
    await f.close();
    dir.close();
  });
  const auth = (id: "agent" | "agent2", subject: string) => ({
    identity: { issuer: "idp", kind: "oidc" as const, iss: f.issuer.url, subject, claims: { sub: subject }, jti: undefined, expiresAt: Date.now() + 3_600_000 },
    workload: { id, kind: "agent" as const, owner: id === "agent" ? "a@example.com" : "a2@example.com", purpose: "support", issuer: "idp", subject, claims: {} },
  });

  it("a lease whose task intent a new policy forbids is revoked even though another lease of the same workload with another intent stays", async () => {
    const issue = async (task: string, intent: string) => {
      const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: task, intent } });
      expect(r.status).toBe(201);
      return r.body.lease.id as string;
    };
    const keep = [await issue("I-1", "read"), await issue("I-3", "read")];
    const gone = await issue("I-2", "export");
    dir.change({ write: { "zz-intent.cedar": '@id("no-export")\nforbid (principal, action, resource) when { context.task.intent == "export" };\n' } });
    const r = await f.call("POST", "/v1/admin/policy/reload", "alice");
    expect(r.body.reauthorization).toMatchObject({ state: "completed", reevaluated: 3, revoked: 1, kept: 2 });
    const l = await waitFor(async () => {
      const x = readable(await f.b.broker.store.get(gone));
      return x?.state === "revoked" ? x : null;
    }, 10_000, "the export lease to be revoked");
    expect(l.revocation).toMatchObject({ trigger: "policy_change", reason: expect.stringMatching(/forbidden by no-export/) });
    for (const id of keep) expect((readable(await f.b.broker.store.get(id)))?.state).toBe("active");
    dir.change({ remove: ["zz-intent.cedar"] });
    await f.call("POST", "/v1/admin/policy/reload", "alice");
  });

  it("a walk over several batches (read ahead, revocations in flight) revokes exactly the forbidden leases and keeps every other", async () => {
    // 1,300 leases: more than two batches of the walk, two workloads interleaved, one forbidden.
    const ids: { id: string; workload: string }[] = [];
    const svc = f.b.broker.service;
    const agents = [auth("agent", "agent-1"), auth("agent2", "agent-2")] as const;
    for (let i = 0; i < 1300; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: 50 }, async (_, k) => {
          const a = agents[(i + k) % 2]!;
          const out = await svc.issue(a, { role: "orders-read", task: { id: `B-${i + k}` }, ttlMs: 600_000 });
          if (!("lease" in out)) throw new Error("expected a lease");
          return { id: out.lease.id, workload: a.workload.id };
        }),
      );
      ids.push(...batch);
    }
    dir.change({ write: { "zz-agent2.cedar": '@id("agent2-suspended")\nforbid (principal == Workload::"agent2", action, resource);\n' } });
    const r = await f.call("POST", "/v1/admin/policy/reload", "alice");
    expect(r.status).toBe(200);
    const forbidden = ids.filter((x) => x.workload === "agent2");
    const live = (await f.b.broker.store.getMany(ids.map((x) => x.id))).filter((l) => l?.state === "active").length;
    expect(r.body.reauthorization).toMatchObject({ state: "completed", revoked: forbidden.length, skipped: 0 });
    expect(r.body.reauthorization.kept).toBe(r.body.reauthorization.reevaluated - forbidden.length);
    expect(live).toBe(ids.length - forbidden.length);
    const after = (await f.b.broker.store.getMany(ids.map((x) => x.id))).map(readable);
    after.forEach((l, i) => {
      if (ids[i]!.workload === "agent2") expect(l?.revocation).toMatchObject({ trigger: "policy_change", reason: expect.stringMatching(/agent2-suspended/) });
      else expect(l?.state).toBe("active");
    });
  });
});

describe("re-authorization reads only a lease's decision inputs, and reads them strictly", () => {
  let f: Fixture;
  let dir: PolicyDir;
  beforeAll(async () => {
    dir = policyDir();
    f = await startFixture({ extra: { policy: { files: [dir.files] }, ...unlimited } });
  });
  afterAll(async () => {
    await f.close();
    dir.close();
  });
  const issue = async (who: Who, task: string) => {
    const r = await f.call("POST", "/v1/credentials", who, { role: "orders-read", task: { id: task } });
    expect(r.status).toBe(201);
    return r.body.lease.id as string;
  };
  const stored = (id: string) => f.b.broker.redis.hmget(f.b.broker.store.keys.lease(id), "state", "trig", "reason");
  let policyChange = 0;
  /** A new policy that forbids what `when` says (or nothing), then a reload: every active lease is decided again. */
  const reloadWith = async (when = "false") => {
    dir.change({ write: { "zz-change.cedar": `@id("change-${++policyChange}")\nforbid (principal, action, resource) when { ${when} };\n` } });
    const r = await f.call("POST", "/v1/admin/policy/reload", "alice");
    expect(r.status).toBe(200);
    return r.body.reauthorization;
  };

  it("a lease whose stored fields were tampered with is revoked (fail closed), and does not stop the walk from deciding every other lease", async () => {
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push(await issue("agent", `TMP-${i}`));
    const key = f.b.broker.store.keys.lease;
    // An expiry that is not a number would make the TTL NaN, which passes every TTL check.
    await f.b.broker.redis.hset(key(ids[0]!), "exp", "later");
    // Claims that are not JSON: the walk before this one stopped at such a lease, and every lease after it was never decided.
    await f.b.broker.redis.hset(key(ids[1]!), "cl", "{not json");
    await f.b.broker.redis.hdel(key(ids[2]!), "r"); // the role (its short name, docs/ARCHITECTURE.md, Lease record)
    const report = await reloadWith();
    // The call's own walk (the file watcher does not see dir.change) decided the leases before it answered.
    expect(report).toMatchObject({ state: "completed" });
    const expected: [string, string][] = [
      [ids[0]!, "exp"],
      [ids[1]!, "cl"],
      [ids[2]!, "role"],
    ];
    for (const [id, field] of expected) {
      const [state, trig, reason] = await stored(id);
      expect(["revoking", "revoked"]).toContain(state);
      expect(trig).toBe("policy_change");
      expect(reason).toBe(`its decision inputs cannot be read (its stored field ${field} is missing or malformed)`);
    }
    for (const id of ids.slice(3)) expect((await stored(id))[0]).toBe("active");
  });

  it("a lease written by the layout before (policy inline, every lease in its task's set) is decided again: revoked when the new policy forbids it, kept otherwise", async () => {
    const keys = f.b.broker.store.keys;
    const oldLease = async (workload: "agent" | "agent2", subject: string, task: string) => {
      const id = newShardedId("l", 0, 1);
      const iat = Date.now();
      const exp = iat + 300_000;
      await f.b.broker.redis.hset(keys.lease(id), {
        role: "orders-read",
        backend: "jwt",
        workload,
        task_id: task,
        state: "active",
        iat: String(iat),
        exp: String(exp),
        ikind: "oidc",
        issuer: "idp",
        subject,
        pids: JSON.stringify(["agents-request-read"]),
        phash: Buffer.from("ab".repeat(32), "hex").toString("base64url"),
        handle: JSON.stringify({ jti: id }),
      });
      await f.b.broker.redis.zadd(keys.due, exp, id);
      for (const [sel, v] of [["workload", workload], ["role", "orders-read"], ["issuer", "idp"], ["task", task]] as const) await f.b.broker.redis.sadd(keys.live(sel, v), id);
      return id;
    };
    const kept = await oldLease("agent", "agent-1", "OLD-1");
    const gone = await oldLease("agent2", "agent-2", "OLD-2");
    const report = await reloadWith('principal == Workload::"agent2"');
    expect(report).toMatchObject({ state: "completed" });
    const [state, trig, reason] = await stored(gone);
    expect(["revoking", "revoked"]).toContain(state);
    expect(trig).toBe("policy_change");
    expect(reason).toMatch(/forbidden by change-\d+/);
    expect((await stored(kept))[0]).toBe("active");
    await waitFor(async () => (await stored(gone))[0] === "revoked", 10_000, "the old lease to be revoked");
  });
});

describe("a re-authorization longer than the broker's wait", () => {
  let f: Fixture;
  let dir: PolicyDir;
  beforeAll(async () => {
    dir = policyDir();
    f = await startFixture({ extra: { policy: { files: [dir.files] } }, reloadWaitMs: 0 });
  });
  afterAll(async () => {
    await f.close();
    dir.close();
  });

  it("answers 202 while it goes on; its report lands in the audit ledger", async () => {
    const issue = async (who: Who, task: string) => (await f.call("POST", "/v1/credentials", who, { role: "orders-read", task: { id: task } })).body.lease.id as string;
    const lease = async (id: string) => (await f.call("GET", `/v1/leases/${id}`, "alice")).body.lease;
    const a1 = await issue("agent", "L-1");
    const b1 = await issue("agent2", "L-2");
    dir.change({ write: { "zz-offboard.cedar": '@id("agent2-suspended")\nforbid (principal == Workload::"agent2", action, resource);\n' } });
    const r = await f.call("POST", "/v1/admin/policy/reload", "alice");
    expect(r.status).toBe(202);
    expect(r.body.policy.changed).toBe(true);
    expect(r.body.reauthorization).toEqual({ state: "running", policy_hash: r.body.policy.hash });
    await waitFor(async () => (await lease(b1)).state === "revoked", 10_000, "agent2's lease to be revoked");
    expect((await lease(a1)).state).toBe("active");
    const event = await waitFor(async () => {
      const all = (await f.b.broker.audit.range({ count: 10_000 })) as unknown as Record<string, unknown>[];
      return all.find((e) => e.type === "reauthorization" && e.policy_hash === r.body.policy.hash) ?? null;
    }, 10_000, "the reauthorization event");
    expect(event).toMatchObject({ actor: "alice", reevaluated: 2, revoked: 1, kept: 1 });
  });
});

describe("a credential minted across a reload", () => {
  it("is checked again before it is handed out: refused and revoked if the new policy no longer allows it", async () => {
    const dir = policyDir();
    let real: Backend | null = null;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let minting: string | null = null;
    const slow: Backend = {
      kind: "jwt",
      revocation: "revocable",
      async mint(lease, role, req) {
        minting = lease.id;
        if (lease.task_id === "held") await held;
        return real!.mint(lease, role, req);
      },
      revoke: (lease, handle) => real!.revoke(lease, handle),
    };
    const f = await startFixture({ extra: { policy: { files: [dir.files] } }, backends: { jwt: slow } });
    real = f.b.broker.jwt;
    try {
      const pending = f.call("POST", "/v1/credentials", "agent2", { role: "orders-read", task: { id: "held" } });
      await waitFor(async () => minting !== null, 10_000, "the mint to start");
      const id = minting!;
      dir.change({ write: { "zz-offboard.cedar": '@id("agent2-suspended")\nforbid (principal == Workload::"agent2", action, resource);\n' } });
      const r = await f.call("POST", "/v1/admin/policy/reload", "alice");
      expect(r.body.reauthorization).toMatchObject({ state: "completed", revoked: 0, skipped: 1 });
      release();
      const answer = await pending;
      expect(answer.status).toBe(403);
      expect(answer.body.code).toBe("policy_denied");
      expect(answer.body.detail).toMatch(/changed while the credential was being issued: .*forbidden by agent2-suspended/);
      const l = await waitFor(async () => {
        const x = readable(await f.b.broker.store.get(id));
        return x?.state === "revoked" ? x : null;
      }, 10_000, "the lease to be revoked");
      expect(l.revocation).toMatchObject({ trigger: "policy_change", by: "system" });
    } finally {
      release();
      await f.close();
      dir.close();
    }
  });
});
