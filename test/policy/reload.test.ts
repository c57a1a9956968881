import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { readable } from "../../src/leases/store";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { policyDir } from "../support/policies";

describe("policy reload on change", () => {
  let f: Fixture;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "jit-policies-"));
    cpSync(path.resolve(__dirname, "../../config/policies"), dir, { recursive: true });
    f = await startFixture({ extra: { policy: { files: [path.join(dir, "*.cedar")] } } });
  });
  afterAll(async () => {
    await f.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const request = (task: string) => f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: task } });

  it("picks up a changed file, refuses a broken one, and audits both", async () => {
    const before = await request("P-1");
    expect(before.status).toBe(201);
    const hash0 = before.body.lease.policy.hash;

    // Agents lose read access: the file now forbids it.
    writeFileSync(path.join(dir, "agents.cedar"), '@id("agents-none")\nforbid (principal, action, resource) when { principal.kind == "agent" };\n');
    const denied = await waitFor(async () => {
      const r = await request(`P-2-${Date.now()}`);
      return r.status === 403 ? r : null;
    }, 10_000, "the new policy to deny");
    expect(denied.body.code).toBe("policy_denied");
    expect(denied.body.policy_hash).not.toBe(hash0);
    const hash1 = denied.body.policy_hash;

    // A file that does not compile is refused; the running set stays in force.
    writeFileSync(path.join(dir, "broken.cedar"), "permit (principal, action, resource) when { principal.kind == };\n");
    const r = await f.b.broker.reloadPolicies();
    expect(r.ok).toBe(false);
    expect(r.problems?.join("\n")).toMatch(/broken\.cedar:1/);
    expect(r.hash).toBe(hash1);
    expect((await request(`P-3-${Date.now()}`)).body.policy_hash).toBe(hash1);

    // policy_reload events are recorded in the background (audit.record), not awaited by the reload.
    const reloads = await waitFor(async () => {
      const all = (await f.b.broker.audit.range({ count: 1000 })).filter((e) => e.type === "policy_reload");
      return all.some((e) => e.ok === false) ? all : null;
    }, 10_000, "the refused reload's event");
    expect(reloads.some((e) => e.ok === true && e.policy_hash === hash1 && e.previous_policy_hash === hash0)).toBe(true);
    expect(reloads.some((e) => e.ok === false && e.policy_hash === hash1)).toBe(true);
  });
});

describe("a reload call that joins a reload already running", () => {
  it("still re-authorizes: a lease the new policy forbids is revoked when the file watcher's reload started first (its second pass finds nothing new)", async () => {
    const dir = policyDir();
    const f = await startFixture({ extra: { policy: { files: [dir.files] } } });
    try {
      const r0 = await f.call("POST", "/v1/credentials", "agent2", { role: "orders-read", task: { id: "S-join" } });
      expect(r0.status).toBe(201);
      const id = r0.body.lease.id as string;
      dir.change({ write: { "zz-offboard.cedar": '@id("agent2-suspended")\nforbid (principal == Workload::"agent2", action, resource);\n' } });
      // What the file watcher's debounce timer calls, then the admin endpoint's reload, at once:
      // the second joins the first's run, and the run's result is its last pass's (unchanged).
      const watcher = f.b.broker.reloadPolicies();
      const call = f.b.broker.reload({ actor: "alice", source: "test" });
      const [w, c] = await Promise.all([watcher, call]);
      expect(w.ok).toBe(true);
      expect(c.policy).toMatchObject({ ok: true, changed: true });
      expect(c.reauthorization).not.toBeNull();
      expect(await c.reauthorization).toMatchObject({ revoked: 1 });
      await waitFor(async () => readable(await f.b.broker.store.get(id))?.state === "revoked", 10_000, "the forbidden lease to be revoked");
    } finally {
      await f.close();
      dir.close();
    }
  });
});
