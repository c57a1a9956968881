/**
 * `jitbroker serve --only worker` with `worker.listen`: a revocation worker that serves
 * /healthz, /readyz and /metrics for its orchestrator, and no API (a real child process; run
 * `npm run build` first when calling jest directly).
 */
import { getJson } from "../support/broker";
import { startServeProcess } from "../support/cli";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { findFreePort } from "../support/redis-server";

describe("serve --only worker", () => {
  let f: Fixture;
  let worker: Awaited<ReturnType<typeof startServeProcess>>;
  beforeAll(async () => {
    const port = await findFreePort();
    // The in-process broker is the API only; the child process is the only worker.
    f = await startFixture({ worker: false, extra: { worker: { sweep_interval: "200ms", sweep_grace: "1s", fail_after: 2, listen: `127.0.0.1:${port}` } } });
    worker = await startServeProcess(["serve", "--only", "worker", "--config", f.b.config.file], { port, env: { JITBROKER_LISTEN: "127.0.0.1:1" } });
  }, 60_000);
  afterAll(async () => {
    await worker?.stop();
    await f?.close();
  });

  it("serves health and metrics on worker.listen, and no API", async () => {
    expect((await getJson(`${worker.url}/healthz`)).body).toEqual({ status: "ok" });
    const ready = await getJson(`${worker.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(ready.body.redis).toBe("ok");
    const metrics = await getJson(`${worker.url}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.body).toMatch(/^jitbroker_leases\{state="live"\} \d+$/m);
    for (const p of ["/v1/whoami", "/openapi.json", "/.well-known/jwks.json"]) {
      const r = await getJson(`${worker.url}${p}`);
      expect(r.status).toBe(404);
      expect(r.body.code).toBe("not_found");
    }
  });

  it("is the worker: it revokes a lease the API issued when it expires", async () => {
    const r = await f.call("POST", "/v1/credentials", "agent", { role: "short-read", task: { id: "w-1" } });
    expect(r.status).toBe(201);
    const lease = await waitFor(async () => {
      const l = (await f.call("GET", `/v1/leases/${r.body.lease.id}`, "agent")).body.lease;
      return l.state === "expired" ? l : null;
    }, 15_000, "the worker to expire the lease");
    expect(lease.revocation.trigger).toBe("expiry");
  });
});
