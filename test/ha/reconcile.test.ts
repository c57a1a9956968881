/**
 * I3 after a failover: a lease whose activation was lost (the write did not survive the
 * failover, or the API process died between mint and activation) stays `issuing`. The worker
 * ends it once worker.mint_timeout has passed, instead of leaving it live until its expiry.
 */
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { newLeaseId } from "../../src/leases/service";
import { readable } from "../../src/leases/store";

jest.setTimeout(60_000);

let f: Fixture;
beforeAll(async () => {
  f = await startFixture({ extra: { worker: { sweep_interval: "200ms", sweep_grace: "1s", fail_after: 2, mint_timeout: "2s" } } });
});
afterAll(async () => {
  await f?.close();
});

it("a lease stuck in issuing (activation lost) is ended as issue_failed within mint_timeout plus a scan, long before its expiry", async () => {
  const store = f.b.broker.store;
  const id = newLeaseId();
  const issuedAt = Date.now();
  // What a failover leaves behind: the lease record as `create` wrote it, no handle, no activation.
  expect(
    await store.create(
      {
        id,
        role: "orders-read",
        backend: "jwt",
        workload: "agent",
        task: { id: "R-1", intent: "", tool: "", destination: "", sensitivity: "" },
        issuedAt,
        expiresAt: issuedAt + 10 * 60_000,
        identity: { kind: "oidc", issuer: "idp", subject: "agent-1" },
        policy: { ids: ["agents-request-read"], hash: "00".repeat(32) },
      },
      0,
    ),
  ).toBe("ok");
  const ended = await waitFor(async () => {
    const l = readable(await store.get(id));
    return l && (l.state === "revoked" || l.state === "expired") ? l : null;
  }, 20_000, "the stuck lease ended");
  expect(ended.state).toBe("revoked");
  expect(ended.revocation).toMatchObject({ trigger: "issue_failed" });
  expect(Date.parse(ended.revoked_at!)).toBeGreaterThanOrEqual(issuedAt + 2000); // never before mint_timeout
  expect(Date.parse(ended.revoked_at!)).toBeLessThan(issuedAt + 60_000); // long before its expiry
  // An active lease of the same age is left alone.
  const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: "R-2" } });
  expect(r.status).toBe(201);
  await new Promise((res) => setTimeout(res, 3500));
  expect((readable(await store.get(r.body.lease.id)))!.state).toBe("active");
});
