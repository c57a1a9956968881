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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** mint, complete, expire, owner revoke, force-revoke by each selector, listing, audit verify. */
export async function lifecycle(f: Fixture, conn: Redis): Promise<void> {
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

  // admin listing sees them
  const list = await f.call("GET", "/v1/admin/leases?limit=50", "alice");
  expect(list.status).toBe(200);
  expect(list.body.leases.map((l: { id: string }) => l.id)).toEqual(expect.arrayContaining([a, e, o]));

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
      await sleep(100);
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
    const leases = await store.getMany(batch.map((l) => l.id));
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
