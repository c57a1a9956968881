/**
 * Reconciliation: Vault leases under the path roles' prefixes that no live broker lease names
 * are revoked and audited; known leases, young leases (a mint in flight) and leases under other
 * paths are left alone.
 */
import { startVaultServer, type VaultTestServer } from "../support/vault-server";
import { startBackend, tempFile, type Harness } from "./helpers";
import { readable } from "../../src/leases/store";

const APPROLE = { roleId: "jitbroker-role-id", secretId: "approle-secret-for-reconcile-tests", ttl: 3600 };
const PATH = "database/creds/payments-ro";

describe("reconciliation of Vault leases", () => {
  let server: VaultTestServer;
  let h: Harness;
  beforeAll(async () => {
    server = await startVaultServer({
      approle: APPROLE,
      engines: { [PATH]: { ttlParam: false, defaultTtl: 3600 }, "database/creds/payments-ro-admin": { ttlParam: false, defaultTtl: 3600 } },
    });
    h = await startBackend(
      server,
      { auth: { method: "approle", role_id: APPROLE.roleId, secret_id_file: tempFile("sid", APPROLE.secretId) }, reconcile_grace: "1m" },
      {
        mintTimeout: "10s",
        roles: [
          { name: "payments-db", backend: "vault", ttl: { default: "10m", max: "30m" }, vault: { path: PATH } },
          // A second role on the same path: its leases are known too.
          { name: "payments-db-short", backend: "vault", ttl: { default: "1m", max: "5m" }, vault: { path: PATH } },
          { name: "kv-reader", backend: "vault", ttl: { default: "5m", max: "15m" }, vault: { token_role: "agent-readonly" } },
        ],
      },
    );
  });
  afterAll(async () => {
    await h.close();
    await server.close();
  });

  /** Mints through the backend for a lease written to the store, and records the handle, as the service does. */
  async function mintKnown(role: string): Promise<string> {
    const draft = await h.createLease(role, 300);
    const minted = await h.backend.mint(h.store.created(draft), h.cfg.roles.find((r) => r.name === role)!);
    expect(await h.store.activate(draft.id, minted.handle, minted.backendExpiresAt?.getTime())).toBe("active");
    return minted.handle.lease_id!;
  }

  it("revokes an old lease no broker lease names, audits it, and leaves known, young and unrelated leases alone", async () => {
    const known = await mintKnown("payments-db");
    const knownOtherRole = await mintKnown("payments-db-short");
    const orphan = server.addLease(PATH, 10 * 60_000); // a mint whose lease record never made it
    const young = server.addLease(PATH, 5_000); // maybe a mint in flight: younger than the grace
    const unrelated = server.addLease("database/creds/payments-ro-admin", 10 * 60_000); // no role of ours
    // A broker lease whose mint has not recorded its handle yet (issuing): names nothing.
    await h.createLease("payments-db", 300);

    const report = await h.backend.reconcile();
    expect(report).toEqual({ listed: 4, revoked: [orphan], young: [young], errors: [] });
    expect(server.leases().sort()).toEqual([known, knownOtherRole, young, unrelated].sort());

    // How it asked: a list under the prefix, then a lookup of the unknown ones only.
    expect(server.hits("GET", `sys/leases/lookup/${PATH}/`).map((r) => [r.query.get("list"), r.status])).toEqual([["true", 200]]);
    expect(server.hits("PUT", "sys/leases/lookup").map((r) => r.body.lease_id).sort()).toEqual([orphan, young].sort());
    expect(server.hits("PUT", "sys/leases/revoke").map((r) => r.body.lease_id)).toEqual([orphan]);

    const events = (await h.audit.range({ count: 100 })).filter((e) => e.type === "vault_orphan_revoked");
    expect(events).toEqual([expect.objectContaining({ type: "vault_orphan_revoked", actor: "system", vault_lease_id: orphan, role: "payments-db", roles: ["payments-db", "payments-db-short"], path: PATH })]);
    expect(await h.metric("jitbroker_vault_orphans_revoked_total")).toBe(1);

    // Idempotent: a second pass finds nothing more to do.
    expect(await h.backend.reconcile()).toEqual({ listed: 3, revoked: [], young: [young], errors: [] });
  });

  it("a lease whose broker lease has ended is an orphan too; an empty prefix is no error", async () => {
    // A lease minted 20 minutes ago, which the broker ended, but whose revocation never reached Vault.
    const stale = server.addLease(PATH, 20 * 60_000);
    const draft = await h.createLease("payments-db", 300);
    await h.store.activate(draft.id, { lease_id: stale });
    const [ended] = await h.store.trigger([draft.id], { trigger: "operator", by: "alice" });
    expect(await h.store.finish((readable(await h.store.get(ended!)))!)).toBe("revoked");

    const report = await h.backend.reconcile();
    expect(report.revoked).toEqual([stale]);
    expect(report.errors).toEqual([]);

    for (const id of server.leases()) server.dropLease(id);
    expect(await h.backend.reconcile()).toEqual({ listed: 0, revoked: [], young: [], errors: [] });
    expect(server.hits("GET", `sys/leases/lookup/${PATH}/`).at(-1)!.status).toBe(404); // Vault: nothing listed
  });

  it("a failure on one lease is reported and the pass goes on; a sealed Vault stops nothing but this pass", async () => {
    const a = server.addLease(PATH, 10 * 60_000);
    const b = server.addLease(PATH, 10 * 60_000);
    server.fail(500, { match: (r) => r.path === "sys/leases/revoke" && r.body.lease_id === a, times: 1 });
    const report = await h.backend.reconcile();
    expect(report.revoked).toEqual([b]);
    expect(report.errors).toEqual([expect.stringMatching(new RegExp(`^${a}: .*vault answered 500`))]);
    expect(server.leases()).toContain(a);

    server.seal();
    const sealed = await h.backend.reconcile();
    expect(sealed.revoked).toEqual([]);
    expect(sealed.errors).toEqual([expect.stringMatching(/vault is sealed/)]);
    server.unseal();
    expect((await h.backend.reconcile()).revoked).toEqual([a]);
  });

  it("reconciles the path roles of the live inventory: a path a reload adds from the next pass, a path it drops no more; a moved or removed role's leases stay known", async () => {
    const REPORTING = "database/creds/reporting";
    const server3 = await startVaultServer({ approle: APPROLE, engines: { [PATH]: { ttlParam: false, defaultTtl: 3600 }, [REPORTING]: { ttlParam: false, defaultTtl: 3600 } } });
    const payments = { name: "payments-db", backend: "vault", ttl: { default: "10m", max: "30m" }, vault: { path: PATH } };
    const other = { name: "payments-db-short", backend: "vault", ttl: { default: "1m", max: "5m" }, vault: { path: PATH } };
    const h3 = await startBackend(server3, { auth: { method: "approle", role_id: APPROLE.roleId, secret_id: APPROLE.secretId }, reconcile_grace: "1m" }, { mintTimeout: "10s", roles: [payments, other] });
    try {
      // A live lease of payments-db-short holding a Vault lease under PATH, older than the grace.
      const held = server3.addLease(PATH, 10 * 60_000);
      const draft = await h3.createLease("payments-db-short", 300);
      expect(await h3.store.activate(draft.id, { lease_id: held })).toBe("active");
      const first = server3.addLease(REPORTING, 10 * 60_000);
      expect(await h3.backend.reconcile()).toEqual({ listed: 1, revoked: [], young: [], errors: [] }); // no role of ours under REPORTING yet

      // payments-db-short moves to REPORTING: that path is reconciled now; its lease under PATH is still known there.
      h3.reload([payments, { ...other, vault: { path: REPORTING } }]);
      expect(await h3.backend.reconcile()).toEqual({ listed: 2, revoked: [first], young: [], errors: [] });
      const events = (await h3.audit.range({ count: 100 })).filter((e) => e.type === "vault_orphan_revoked");
      expect(events).toEqual([expect.objectContaining({ vault_lease_id: first, role: "payments-db-short", path: REPORTING })]);

      // Removed (re-authorization would revoke its leases): REPORTING is left alone, its lease under PATH still known.
      h3.reload([payments]);
      const second = server3.addLease(REPORTING, 10 * 60_000);
      expect(await h3.backend.reconcile()).toEqual({ listed: 1, revoked: [], young: [], errors: [] });
      expect(server3.leases().sort()).toEqual([held, second].sort());
    } finally {
      await h3.close();
      await server3.close();
    }
  });

  it("a tampered lease record does not stop the pass (its read used to throw): its Vault lease is an orphan, revoked; the others stay known", async () => {
    for (const id of server.leases()) server.dropLease(id);
    const held = server.addLease(PATH, 10 * 60_000);
    const tamperedHeld = server.addLease(PATH, 10 * 60_000);
    const kept = await h.createLease("payments-db", 300);
    expect(await h.store.activate(kept.id, { lease_id: held })).toBe("active");
    const tampered = await h.createLease("payments-db", 300);
    expect(await h.store.activate(tampered.id, { lease_id: tamperedHeld })).toBe("active");
    await h.redis.hset(h.store.keys.lease(tampered.id), "cl", '{"password":"do-not-echo"');

    const report = await h.backend.reconcile();
    expect(report).toMatchObject({ revoked: [tamperedHeld], errors: [] });
    expect(server.leases()).toEqual([held]);
  });

  it("the grace period is at least worker.mint_timeout", async () => {
    const server2 = await startVaultServer({ approle: APPROLE, engines: { [PATH]: { ttlParam: false, defaultTtl: 3600 } } });
    const h2 = await startBackend(
      server2,
      { auth: { method: "approle", role_id: APPROLE.roleId, secret_id: APPROLE.secretId }, reconcile_grace: "1s" },
      { mintTimeout: "2m", roles: [{ name: "payments-db", backend: "vault", ttl: { default: "10m", max: "30m" }, vault: { path: PATH } }] },
    );
    try {
      const inFlight = server2.addLease(PATH, 60_000); // older than reconcile_grace, younger than mint_timeout
      expect(await h2.backend.reconcile()).toMatchObject({ revoked: [], young: [inFlight] });
    } finally {
      await h2.close();
      await server2.close();
    }
  });
});
