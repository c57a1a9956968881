/**
 * What the high-availability tests run on each topology: the whole lease lifecycle, and a
 * failover under load that counts every 201 whose lease record is gone afterwards (I1), how late
 * the leases due during the failover were revoked (I3), and what /readyz said throughout (I10).
 */
import type { Redis } from "ioredis";
import { verifyAuditChain } from "../../src/audit/ledger";
import { readAuditKey } from "../../src/audit/key";
import { createKeyspace } from "../../src/redis/keys";
import { waitFor, type Fixture } from "../support/fixture";
import { readable } from "../../src/leases/store";
import type { PolicyDir } from "../support/policies";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * mint, complete, expire, owner revoke, force-revoke by each selector, approvals (approve and
 * collect, deny), listing page by page, audit verify; and re-authorization when `policyDir` is
 * the fixture's policy directory (test/support/policies.ts).
 */
export async function lifecycle(f: Fixture, conn: Redis, opts: { policyDir?: PolicyDir } = {}): Promise<void> {
  const leaseOf = async (id: string) => (await f.call("GET", `/v1/leases/${id}`, "alice")).body.lease;
  const stateOf = (id: string, state: string, step = "") =>
    waitFor(async () => ((await leaseOf(id))?.state === state ? true : null), 10_000, `lease ${id} ${state} (${step})`).catch(async (e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(await leaseOf(id))}\n${f.b.logs.filter((l) => /"level":(4|5)0/.test(l)).slice(-10).join("")}`);
    });
  const mint = async (task: string, role = "orders-read", who: "agent" | "agent2" = "agent") => {
    const r = await f.call("POST", "/v1/credentials", who, { role, task: { id: task }, ...(role === "short-read" ? { ttl: 10 } : {}) });
    expect(r.status).toBe(201);
    return r.body.lease.id as string;
  };

  const ready = await f.call("GET", "/readyz", null);
  expect(ready.status).toBe(200);
  expect(ready.body.redis).toBe("ok");

  // complete
  const a = await mint("HA-done");
  expect((await leaseOf(a)).state).toBe("active");
  expect((await f.call("POST", "/v1/tasks/HA-done/complete", "agent")).status).toBe(200);
  await stateOf(a, "revoked", "complete");
  expect((await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "HA-done" } })).status).toBe(409);

  // expire
  const e = (await f.call("POST", "/v1/credentials", "agent", { role: "short-read", task: { id: "HA-exp" }, ttl: 2 })).body.lease.id as string;
  await stateOf(e, "expired", "expire");

  // owner revoke
  const o = await mint("HA-owner");
  expect((await f.call("DELETE", `/v1/leases/${o}`, "agent")).status).toBeLessThan(300);
  await stateOf(o, "revoked", "owner");

  // force-revoke by each selector
  for (const [sel, value, make] of [
    ["lease", null, () => mint("HA-sel-lease")],
    ["task", "HA-sel-task", () => mint("HA-sel-task")],
    ["workload", "agent2", () => mint("HA-sel-wl", "orders-read", "agent2")],
    ["role", "short-read", () => mint("HA-sel-role", "short-read")],
    ["issuer", "idp", () => mint("HA-sel-iss")],
  ] as const) {
    const id = await make();
    const body = { [sel === "lease" ? "lease_id" : sel === "task" ? "task_id" : sel]: value ?? id, reason: `ha ${sel}` };
    const op = await f.call("POST", "/v1/admin/revocations", "alice", body);
    expect(op.status).toBeLessThan(300);
    await stateOf(id, "revoked", sel);
  }

  // approvals: one approved and collected, one denied
  const WRITE = { role: "orders-write", task: { id: "HA-approve", intent: "ha approval" }, ttl: "3m" };
  const asked = await f.call("POST", "/v1/credentials", "agent", WRITE);
  expect(asked.status).toBe(202);
  const rq = asked.body.request.id as string;
  const pendingList = await f.call("GET", "/v1/admin/requests?state=pending_approval", "alice");
  expect(pendingList.body.requests.map((r: { id: string }) => r.id)).toContain(rq);
  expect((await f.call("POST", `/v1/admin/requests/${rq}/approve`, "alice", { reason: "ha" })).status).toBe(200);
  const collected = await f.call("GET", `/v1/requests/${rq}`, "agent");
  expect(collected.status).toBe(201);
  expect(collected.body.lease).toMatchObject({ state: "active", approval: { request_id: rq, approved_by: "alice" } });
  const denied = await f.call("POST", "/v1/credentials", "agent2", { ...WRITE, task: { id: "HA-deny", intent: "ha denial" } });
  expect(denied.status).toBe(202);
  expect((await f.call("POST", `/v1/admin/requests/${denied.body.request.id}/deny`, "alice", { reason: "no" })).status).toBe(200);
  expect((await f.call("GET", `/v1/requests/${denied.body.request.id}`, "agent2")).body.request.state).toBe("denied");

  // re-authorization: a policy that forbids agent2 revokes its leases and keeps agent's
  if (opts.policyDir) {
    const keep = await mint("HA-reauth-keep");
    const drop = await mint("HA-reauth-drop", "orders-read", "agent2");
    // Unseen by the file watcher (test/support/policies.ts): the reload call alone re-authorizes,
    // not the watcher's debounced reload racing it.
    opts.policyDir.change({ write: { "zz-ha-suspend.cedar": '@id("ha-agent2-suspended")\nforbid (principal == Workload::"agent2", action, resource);\n' } });
    try {
      const r = await f.call("POST", "/v1/admin/policy/reload", "alice");
      expect(r.status).toBe(200);
      await stateOf(drop, "revoked", "re-authorization");
      expect((await leaseOf(drop)).revocation).toMatchObject({ trigger: "policy_change" });
      expect((await leaseOf(keep)).state).toBe("active");
    } finally {
      opts.policyDir.change({ remove: ["zz-ha-suspend.cedar"] });
      expect((await f.call("POST", "/v1/admin/policy/reload", "alice")).status).toBe(200);
    }
  }

  // admin listing sees them, page by page: newest first, nothing skipped or repeated
  const list = await f.call("GET", "/v1/admin/leases?limit=50", "alice");
  expect(list.status).toBe(200);
  expect(list.body.leases.map((l: { id: string }) => l.id)).toEqual(expect.arrayContaining([a, e, o]));
  const paged: { id: string; issued_at: string }[] = [];
  let cursor: string | null = null;
  do {
    const page: { status: number; body: any } = await f.call("GET", `/v1/admin/leases?limit=3${cursor ? `&cursor=${cursor}` : ""}`, "alice");
    expect(page.status).toBe(200);
    expect(page.body.leases.length).toBeLessThanOrEqual(3);
    paged.push(...page.body.leases);
    cursor = page.body.next_cursor ?? null;
  } while (cursor && paged.length < 500);
  const all = (await f.call("GET", "/v1/admin/leases?limit=500", "alice")).body.leases as { id: string; issued_at: string }[];
  expect(paged.map((l) => l.id)).toEqual(all.map((l) => l.id));
  expect(new Set(paged.map((l) => l.id)).size).toBe(paged.length);
  for (let i = 1; i < paged.length; i++) expect(Date.parse(paged[i - 1]!.issued_at)).toBeGreaterThanOrEqual(Date.parse(paged[i]!.issued_at));

  // audit chain verifies, read through the same mode's connection
  const keys = createKeyspace(f.b.config.redis.prefix);
  await sleep(200);
  const verdict = await verifyAuditChain(conn, { key: await readAuditKey(f.b.config.audit.key_file), streamKey: keys.audit, headKey: keys.auditHead, anchorKey: keys.auditAnchor });
  expect(verdict).toMatchObject({ ok: true });
}

export interface FailoverReport {
  ok201: number;
  refused: Record<string, number>;
  /** 201s whose lease record is absent afterwards (I1: must be 0). */
  lost: string[];
  /** Leases still live, or revoked more than 5 s after max(expiry, recovery) (I3: must be empty). */
  late: { id: string; lateMs: number | null }[];
  readyz: number[];
  /** ms from the failover to the first 201 after it failed (0 when none failed). */
  recoveryMs: number;
  dueDuring: number;
  /** Log lines at warn or above written during the run (no log storm). */
  warnings: number;
}

/**
 * Issues 2-second leases from `concurrency` loops while `failover()` runs, then `restore()`, until
 * /readyz is 200 again and `settleMs` more have passed; then checks I1, I3 and I10.
 */
export async function failoverUnderLoad(
  f: Fixture,
  failover: () => Promise<void>,
  opts: { restore?: () => Promise<void>; concurrency?: number; settleMs?: number } = {},
): Promise<FailoverReport> {
  const issued: { id: string; expires: number }[] = [];
  const refused: Record<string, number> = {};
  const readyz: number[] = [];
  const readyTimes: { t: number; status: number }[] = [];
  let stop = false;
  let failoverAt = 0;
  let firstFailAfter = 0;
  let firstOkAfterFail = 0;
  const tokens = await Promise.all([f.token("agent"), f.token("agent2")]);
  const loop = async (n: number) => {
    while (!stop) {
      const res = await fetch(`${f.b.url}/v1/credentials`, {
        method: "POST",
        headers: { authorization: `Bearer ${tokens[n % 2]}`, "content-type": "application/json" },
        body: JSON.stringify({ role: "short-read", task: { id: `HA-load-${n}` }, ttl: 2 }),
        // A request that never answers is a failure of its own (counted as "no answer").
        signal: AbortSignal.timeout(15_000),
      }).catch(() => null);
      const t = Date.now();
      if (res?.status === 201) {
        const body = (await res.json()) as { lease: { id: string; expires_at: string } };
        issued.push({ id: body.lease.id, expires: Date.parse(body.lease.expires_at) });
        if (firstFailAfter && !firstOkAfterFail) firstOkAfterFail = t;
      } else {
        const code = res ? `${res.status} ${((await res.json().catch(() => ({}))) as { code?: string }).code ?? ""}` : "no answer";
        refused[code] = (refused[code] ?? 0) + 1;
        if (failoverAt && !firstFailAfter) firstFailAfter = t;
        await sleep(50);
      }
    }
  };
  const poller = async () => {
    while (!stop) {
      const r = await fetch(`${f.b.url}/readyz`, { signal: AbortSignal.timeout(5000) }).catch(() => null);
      const status = r?.status ?? 0;
      await r?.text().catch(() => undefined);
      if (readyz[readyz.length - 1] !== status) readyz.push(status);
      readyTimes.push({ t: Date.now(), status });
      await sleep(25);
    }
  };
  const logsBefore = f.b.logs.length;
  const loops = [...Array(opts.concurrency ?? 3).keys()].map(loop);
  const poll = poller();
  await sleep(1500);
  failoverAt = Date.now();
  await failover();
  await opts.restore?.();
  // Until the broker answers ready again, then the settle time.
  await waitFor(async () => readyTimes.some((r) => r.t > Date.now() - 300 && r.status === 200) && (!firstFailAfter || firstOkAfterFail), 90_000, "/readyz 200 and a 201 after the failover").catch((e: Error) => {
    throw new Error(`${e.message}; refused so far: ${JSON.stringify(refused)}, /readyz: ${JSON.stringify(readyz)}`);
  });
  const recoveredAt = Math.max(Date.now() - 300, firstOkAfterFail);
  await sleep(opts.settleMs ?? 1500);
  stop = true;
  await Promise.all([...loops, poll]);
  // Every lease issued is due within 2 s; give the worker the 5 s of I3 after recovery or expiry.
  const lastDue = Math.max(...issued.map((l) => l.expires));
  await sleep(Math.max(0, Math.max(lastDue, recoveredAt) + 5000 - Date.now()));

  const lost: string[] = [];
  const late: { id: string; lateMs: number | null }[] = [];
  let dueDuring = 0;
  const store = f.b.broker.store;
  for (let i = 0; i < issued.length; i += 200) {
    const batch = issued.slice(i, i + 200);
    const leases = (await store.getMany(batch.map((l) => l.id))).map(readable);
    leases.forEach((l, j) => {
      const want = batch[j]!;
      if (!l) return void lost.push(want.id);
      if (want.expires >= failoverAt && want.expires <= recoveredAt) dueDuring++;
      const deadline = Math.max(want.expires, recoveredAt) + 5000;
      const revokedAt = l.revoked_at ? Date.parse(l.revoked_at) : null;
      if (l.state !== "expired" && l.state !== "revoked") late.push({ id: want.id, lateMs: null });
      else if (revokedAt! > deadline) late.push({ id: want.id, lateMs: revokedAt! - deadline + 5000 });
    });
  }
  const warnLines = f.b.logs.slice(logsBefore).filter((l) => /"level":(4|5)0/.test(l));
  if (process.env.HA_DEBUG) console.log(warnLines.join(""));
  return { ok201: issued.length, refused, lost, late, readyz, recoveryMs: firstFailAfter ? firstOkAfterFail - failoverAt : 0, dueDuring, warnings: warnLines.length };
}
