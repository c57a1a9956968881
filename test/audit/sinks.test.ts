/**
 * Audit sinks against real receivers: a file, an HTTP endpoint (json and ocsf) and a syslog tcp
 * listener. Receivers go away for a while under load and come back; every event of the chain
 * must arrive, in chain order, repeats allowed (identified by seq), nothing missing.
 */
import { mkdtemp, readdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { readAuditKey } from "../../src/audit/key";
import { verifyAuditFiles } from "../../src/audit/files";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { deliveryProblems, startHttpReceiver, startSyslogTcpReceiver, type Receiver } from "../support/audit-receivers";
import { getJson } from "../support/broker";
import { startServeProcess } from "../support/cli";

jest.setTimeout(180_000);

describe("audit sinks: receivers down for a while under load", () => {
  let f: Fixture;
  let httpJson: Receiver;
  let httpOcsf: Receiver;
  let syslog: Receiver;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "jitbroker-sinks-"));
    httpJson = await startHttpReceiver();
    httpOcsf = await startHttpReceiver({ seqOf: (e) => e.metadata.uid });
    syslog = await startSyslogTcpReceiver();
    f = await startFixture({
      extra: {
        audit: {
          sinks: [
            { type: "file", name: "file", path: path.join(dir, "audit.jsonl"), max_size: "8KB", keep: 100, batch_size: 7 },
            { type: "http", name: "siem", url: httpJson.url, batch_size: 5, headers: { authorization: "Bearer sink-secret-xyz" } },
            { type: "http", name: "ocsf", url: httpOcsf.url, format: "ocsf", batch_size: 50 },
            { type: "syslog", name: "syslog", address: syslog.url, batch_size: 5 },
          ],
        },
      },
    });
  });
  afterAll(async () => {
    await f?.close();
    await Promise.all([httpJson, httpOcsf, syslog].map((r) => r?.close()));
  });

  const allSeqs = async () => (await f.b.broker.audit.range({ count: 10000 })).map((e) => e.seq);

  it("every event reaches every sink in chain order, across outages, with nothing missing", async () => {
    const load = async (from: number, n: number) => {
      for (let i = from; i < from + n; i++) {
        const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: `load-${i}` } });
        expect(r.status).toBe(201);
        if (i % 3 === 0) expect((await f.call("POST", `/v1/tasks/load-${i}/complete`, "agent")).status).toBe(200);
      }
    };
    await load(0, 6);
    await Promise.all([httpJson.stop(), syslog.stop()]);
    await load(6, 12); // receivers down
    // the outage shows in /readyz and the metrics
    await waitFor(async () => {
      const r = await getJson(`${f.b.url}/readyz`);
      const sinks = r.body.audit_sinks as { name: string; state: string; consecutive_failures: number }[];
      return sinks.find((s) => s.name === "siem")?.state === "failing" && sinks.find((s) => s.name === "syslog")?.state === "failing";
    }, 20_000, "failing sinks in /readyz");
    const metrics = await (await fetch(`${f.b.url}/metrics`)).text();
    expect(metrics).toMatch(/jitbroker_audit_sink_failures_total\{sink="siem"\} [1-9]/);
    expect(metrics).toMatch(/jitbroker_audit_sink_lag_seconds\{sink="siem"\}/);
    await Promise.all([httpJson.start(), syslog.start()]);
    await load(18, 6);

    // A completed task's lease is revoked by the worker after the complete call answered, and its
    // `revoked` event is the last event the broker writes for it: wait for all 8 (tasks 0, 3, ... 21),
    // so that `expected` is the whole chain (an event appended after it was taken arrived at every
    // sink as "got X where nothing more was due", and the sinks' positions went past its last seq).
    await waitFor(async () => (await f.b.broker.audit.range({ count: 10000 })).filter((e) => e.type === "revoked" && e.trigger === "task_completed").length >= 8, 20_000, "the completed tasks' revoked events");
    const expected = await allSeqs();
    expect(expected.length).toBeGreaterThan(40);
    for (const r of [httpJson, httpOcsf, syslog]) {
      await waitFor(async () => new Set(r.seqs).size >= expected.length, 60_000, "every event delivered");
    }
    expect(deliveryProblems(httpJson.seqs, expected)).toEqual([]);
    expect(deliveryProblems(httpOcsf.seqs, expected)).toEqual([]);
    expect(deliveryProblems(syslog.seqs, expected)).toEqual([]);

    // positions reached the head, and readyz is back to ok
    await waitFor(async () => {
      const r = await getJson(`${f.b.url}/readyz`);
      return (r.body.audit_sinks as { state: string; position: string }[]).every((s) => s.state === "ok" && s.position === expected[expected.length - 1]);
    }, 30_000, "sinks caught up");

    // the file sink rotated, and the rotated files verify offline with the key, from genesis
    const files = (await readdir(dir)).filter((n) => n.startsWith("audit.jsonl")).map((n) => path.join(dir, n));
    expect(files.length).toBeGreaterThan(2);
    const key = await readAuditKey(f.b.config.audit.key_file);
    const res = await verifyAuditFiles(key, files);
    expect(res).toMatchObject({ ok: true, fromGenesis: true, firstSeq: expected[0], partialLines: [] });
    expect(res.checked).toBeGreaterThanOrEqual(expected.length);
  });

  it("sends the configured headers, and OCSF events answer the four questions", () => {
    const first = httpJson.raw[0] as { headers: Record<string, string>; body: any[] };
    expect(first.headers.authorization).toBe("Bearer sink-secret-xyz");
    expect(first.body[0]).toMatchObject({ seq: expect.any(String), hash: expect.stringMatching(/^[0-9a-f]{64}$/), prev: expect.any(String), link_kind: "hmac-sha256" });
    const ocsf = (httpOcsf.raw as { body: any[] }[]).flatMap((r) => r.body);
    const mint = ocsf.find((e) => e.api.operation === "mint");
    expect(mint).toMatchObject({
      class_uid: 6003,
      activity_id: 1,
      type_uid: 600301,
      status_id: 1,
      actor: {
        user: { uid: "agent", name: "agent-1" },
        idp: { name: "idp" },
        authorizations: [{ decision: "allow", policy: { uid: expect.stringMatching(/^[0-9a-f]{64}$/), name: expect.any(String) } }],
      },
      resources: expect.arrayContaining([expect.objectContaining({ type: "lease", name: "orders-read" })]),
      metadata: { version: "1.1.0", uid: expect.any(String), event_code: "mint" },
      unmapped: { chain: { seq: expect.any(String), hash: expect.any(String), prev: expect.any(String), link_kind: "hmac-sha256" } },
    });
    const revoked = ocsf.find((e) => e.api.operation === "revoked");
    expect(revoked).toMatchObject({ activity_id: 4, activity_name: "Delete", status_detail: "task_completed", actor: { user: { uid: "agent" } } });
    // no credential ever reaches a sink
    expect(JSON.stringify([httpJson.raw, httpOcsf.raw, syslog.raw])).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./);
  });

  it("syslog messages are RFC 5424 with the chain in structured data", () => {
    const msg = syslog.raw[0] as string;
    expect(msg).toMatch(/^<(108|110)>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ jitbroker \d+ [a-z_]+ \[jitbroker@32473 seq="\d+-\d+" hash="[0-9a-f]{64}" prev="[0-9a-f]{64}" link_kind="hmac-sha256"\] \uFEFF\{/);
  });
});

describe("audit sinks: the delivering process is killed mid-batch", () => {
  let f: Fixture;
  let receiver: Receiver;
  beforeAll(async () => {
    receiver = await startHttpReceiver({ delayMs: 150 });
    // This process serves the API only; a `jitbroker serve` child runs the worker and the sinks.
    f = await startFixture({ worker: false, extra: { audit: { sinks: [{ type: "http", name: "siem", url: receiver.url, batch_size: 3 }] } } });
  });
  afterAll(async () => {
    await f?.close();
    await receiver?.close();
  });

  it("a SIGKILL while a batch is in flight loses nothing: the next process resends from the confirmed position", async () => {
    for (let i = 0; i < 8; i++) expect((await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: `k-${i}` } })).status).toBe(201);
    const first = await startServeProcess(["serve", "--config", f.b.config.file]);
    await waitFor(async () => receiver.seqs.length >= 3 && receiver.inflight() > 0, 30_000, "a batch in flight after the first one");
    first.child.kill("SIGKILL");
    await new Promise((r) => first.child.once("exit", r));
    const atKill = receiver.seqs.length;
    for (let i = 8; i < 12; i++) expect((await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: `k-${i}` } })).status).toBe(201);
    const second = await startServeProcess(["serve", "--config", f.b.config.file]);
    try {
      const expected = (await f.b.broker.audit.range({ count: 10000 })).map((e) => e.seq);
      await waitFor(async () => new Set(receiver.seqs).size >= expected.length, 60_000, "every event delivered after the restart");
      expect(deliveryProblems(receiver.seqs, expected)).toEqual([]);
      expect(receiver.seqs.length).toBeGreaterThan(atKill);
    } finally {
      await second.stop();
    }
  });
});
