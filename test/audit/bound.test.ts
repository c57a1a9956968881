/**
 * The bounded audit store through a running broker (I9, src/audit/retention.ts): a short
 * retention (seconds) removes events once the sink has them, a lease's history then says where
 * they went, and a sink held down until its backlog reaches audit.max_backlog stops new issuance
 * (503 audit_backlog_full; the token endpoint answers temporarily_unavailable) while task
 * completion, revocation and operator revocation keep working; once the sink catches up,
 * issuance resumes, and the chain still verifies from the trim anchor.
 */
import { verifyAuditChain } from "../../src/audit/ledger";
import { readAuditKey } from "../../src/audit/key";
import { createKeyspace } from "../../src/redis/keys";
import { getJson } from "../support/broker";
import { waitFor } from "../support/fixture";
import { startHttpReceiver, type Receiver } from "../support/audit-receivers";
import { delegation, startDelegationFixture, type DelegationFixture } from "../oauth/support";

jest.setTimeout(120_000);

describe("bounded audit store", () => {
  let f: DelegationFixture;
  let siem: Receiver;

  beforeAll(async () => {
    siem = await startHttpReceiver();
    f = await startDelegationFixture({
      extra: { audit: { retention: "2s", max_backlog: 12, sinks: [{ type: "http", name: "siem", url: siem.url, batch_size: 50 }] } },
    });
  });
  afterAll(async () => {
    await f?.close();
    await siem?.close();
  });

  const keys = () => createKeyspace(f.b.config.redis.prefix);
  const verify = async () => verifyAuditChain(f.b.broker.redis, { key: await readAuditKey(f.b.config.audit.key_file), streamKey: keys().audit, headKey: keys().auditHead, anchorKey: keys().auditAnchor });
  const readyz = async () => (await getJson(`${f.b.url}/readyz`)).body as { status: string; audit_backlog?: { events: number; max: number; full: boolean } };

  it("events leave Redis after the retention once the sink has them; the lease's history names the sink", async () => {
    const { lease } = await f.credential("orchestrator", "orders-read", "hist-1");
    await waitFor(async () => siem.seqs.length > 0 && (await f.b.broker.redis.xlen(keys().audit)) === 0, 20_000, "every event trimmed");
    expect(await f.b.broker.redis.get(keys().auditAnchor)).toMatch(/^v1 /);
    const h = await f.call("GET", `/v1/admin/leases/${lease.id}/history`, "alice");
    expect(h.status).toBe(200);
    expect(h.body.events).toEqual([]);
    expect(h.body.evidence).toMatchObject({ events_trimmed: expect.any(Number), sinks: ["siem"] });
    expect(h.body.evidence.events_trimmed).toBeGreaterThan(0);
    expect(h.body.evidence.note).toMatch(/siem/);
    // The lease's own record still answers the four questions.
    expect(h.body.requested_by.workload).toBe("orchestrator");
    expect(h.body.allowed_by.ids.length).toBeGreaterThan(0);
    // Every event the sink got is a chain event; the Redis chain verifies from the anchor.
    expect(await verify()).toMatchObject({ ok: true });
  });

  it("a sink down long enough stops issuance with 503 audit_backlog_full; completion and revocation go on; issuance resumes after catch-up", async () => {
    const root = await f.credential("orchestrator", "orders-read", "root");
    await siem.stop();
    const issued: { lease: { id: string; task_id: string } }[] = [];
    let refused: Awaited<ReturnType<DelegationFixture["call"]>> | undefined;
    for (let i = 0; i < 60 && !refused; i++) {
      const r = await f.call("POST", "/v1/credentials", "orchestrator", { role: "orders-read", task: { id: `bound-${i}` } });
      if (r.status === 201) issued.push(r.body);
      else refused = r;
      if (r.status === 201) await new Promise((res) => setTimeout(res, 50));
    }
    expect(refused).toBeDefined();
    expect(refused!.status).toBe(503);
    expect(refused!.headers.get("content-type")).toMatch(/application\/problem\+json/);
    expect(refused!.body).toMatchObject({ code: "audit_backlog_full", status: 503 });
    expect(refused!.headers.get("retry-after")).toBe("30");
    expect(issued.length).toBeGreaterThan(0);

    // The token endpoint refuses too, the RFC 6749 way.
    const ex = await f.exchange(await delegation(f, root.credential.token, "subagent"));
    expect(ex.status).toBe(503);
    expect(ex.body).toMatchObject({ error: "temporarily_unavailable", code: "audit_backlog_full" });

    // Shown: /readyz stays ready (the broker can still revoke) with the backlog in its details; the alert metric is 1.
    const rz = await readyz();
    expect(rz.status).toBe("ready");
    expect(rz.audit_backlog).toMatchObject({ full: true, max: 12 });
    expect(rz.audit_backlog!.events).toBeGreaterThanOrEqual(12);
    const metrics = await (await fetch(`${f.b.url}/metrics`)).text();
    expect(metrics).toMatch(/^jitbroker_audit_backlog_full 1$/m);
    expect(metrics).toMatch(/^jitbroker_audit_backlog_refusals_total [1-9]/m);

    // I9: completion, the owner's revocation and an operator's revocation keep working.
    const [a, b, c] = issued;
    expect((await f.call("POST", `/v1/tasks/${a!.lease.task_id}/complete`, "orchestrator")).status).toBe(200);
    expect((await f.call("DELETE", `/v1/leases/${b?.lease.id ?? root.lease.id}`, "orchestrator")).status).toBe(200);
    const op = await f.call("POST", "/v1/admin/revocations", "alice", { lease_id: c?.lease.id ?? root.lease.id, reason: "backlog drill" });
    expect(op.status).toBe(202);
    await waitFor(async () => (await f.call("GET", `/v1/leases/${a!.lease.id}`, "orchestrator")).body.lease.state === "revoked", 20_000, "completed task's lease revoked");

    // The sink comes back and catches up: issuance resumes.
    await siem.start();
    await waitFor(async () => (await readyz()).audit_backlog?.full === false, 30_000, "backlog below the bound");
    const again = await f.call("POST", "/v1/credentials", "orchestrator", { role: "orders-read", task: { id: "after-catch-up" } });
    expect(again.status).toBe(201);
    expect((await fetch(`${f.b.url}/metrics`).then((r) => r.text()))).toMatch(/^jitbroker_audit_backlog_full 0$/m);

    // The caught-up events leave Redis too, and the chain verifies from the trim anchor.
    await waitFor(async () => (await f.b.broker.redis.xlen(keys().audit)) < 5, 20_000, "caught-up events trimmed");
    expect(await verify()).toMatchObject({ ok: true });
  });
});
