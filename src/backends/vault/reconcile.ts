/**
 * Reconciliation of Vault leases with the broker's (issue 5): a mint whose lease record never
 * made it (the broker died between Vault's answer and the handle's write, or the answer was lost
 * to a timeout) leaves a Vault lease nobody will revoke. For each `path` role, the leases Vault
 * holds under the role's prefix (`GET sys/leases/lookup/<path>/?list=true`, which needs `list`
 * and `sudo` on that path) are compared with the handles of the role's live leases in the store;
 * a Vault lease that no live lease names, and that is older than the grace period (a mint in
 * flight has no handle yet; Vault's issue_time comes from `PUT sys/leases/lookup`), is revoked
 * and recorded as a `vault_orphan_revoked` audit event.
 *
 * Leases are listed before the known handles are read, so a mint finishing in between is known.
 * Several workers may reconcile at once: revocation is idempotent.
 *
 * Token roles are not reconciled. A child token whose mint answer was lost is held by nobody
 * (its secret was only in that answer) and dies at its explicit_max_ttl, the lease's remaining
 * lifetime at mint (I2): never after the lease's expires_at. Finding it would take `LIST
 * auth/token/accessors` (sudo; every token of the namespace, no filter by role or metadata) and
 * a lookup of each unknown accessor every pass; with the broker's revoke-accessor grant, that
 * list would let the broker revoke any token in Vault. The bound is documented instead (README).
 */
import type { Logger } from "pino";
import { Counter, type Registry } from "prom-client";
import type { AuditLedger } from "../../audit/ledger";
import type { LeaseStore } from "../../leases/store";
import type { VaultSession } from "./client";

export interface ReconcileReport {
  /** Vault leases examined, over all prefixes. */
  listed: number;
  /** Orphans revoked (full Vault lease ids). */
  revoked: string[];
  /** Unknown leases left alone because they are younger than the grace period. */
  young: string[];
  /** Problems met (one prefix or lease each); the run goes on past them. */
  errors: string[];
}

export interface ReconcilerOptions {
  session: VaultSession;
  store: LeaseStore;
  audit: AuditLedger;
  logger: Logger;
  registry: Registry;
  now: () => number;
  /** The path roles now (the inventory is reloadable): name and Vault path. Roles sharing a path share its leases. */
  roles: () => { name: string; path: string }[];
  graceMs: number;
  /** Revokes one Vault lease ("gone" when Vault no longer has it). */
  revoke(leaseId: string): Promise<"revoked" | "gone">;
}

export function createReconciler(opts: ReconcilerOptions) {
  const { session, store, logger, now } = opts;
  const orphans = new Counter({ name: "jitbroker_vault_orphans_revoked_total", help: "Vault leases revoked by reconciliation because no broker lease named them", registers: [opts.registry] });
  /**
   * Every role name that has had each path since start-up. A reload may rename or remove a role
   * (re-authorization revokes its leases) or move it to another path (its leases stay active):
   * either way its live leases under the old path are still known there, never taken for orphans.
   */
  const namesSeen = new Map<string, Set<string>>();
  function currentByPath(): Map<string, string[]> {
    const byPath = new Map<string, string[]>();
    for (const r of opts.roles()) {
      byPath.set(r.path, [...(byPath.get(r.path) ?? []), r.name]);
      namesSeen.set(r.path, (namesSeen.get(r.path) ?? new Set<string>()).add(r.name));
    }
    return byPath;
  }
  currentByPath();

  /** The Vault lease ids named by live leases of these roles. */
  async function knownLeaseIds(roles: string[]): Promise<Set<string>> {
    const known = new Set<string>();
    for (const role of roles) {
      for await (const ids of store.liveIds("role", role)) {
        // An unreadable lease (a malformed record in Redis) names no Vault lease: one it held is
        // an orphan here, revoked once it is old enough (fail closed). (Tested inline, not with
        // the store's isUnreadable: a backend imports only the leases folder's types.)
        for (const l of await store.getMany(ids)) if (l && !("unreadable" in l) && l.handle?.lease_id) known.add(l.handle.lease_id);
      }
    }
    return known;
  }

  async function issuedAt(leaseId: string): Promise<number> {
    const res = await session.call("lease_lookup", "PUT", "sys/leases/lookup", { lease_id: leaseId });
    const t = Date.parse(String(res.data?.issue_time ?? ""));
    if (Number.isNaN(t)) throw new Error(`vault gave no issue_time for a lease under ${leaseId.slice(0, leaseId.lastIndexOf("/") + 1)}`);
    return t;
  }

  let running: Promise<ReconcileReport> | null = null;

  async function runOnce(): Promise<ReconcileReport> {
    const report: ReconcileReport = { listed: 0, revoked: [], young: [], errors: [] };
    // The path roles of the inventory now: a reload adds or drops paths from the next pass.
    for (const [p, roles] of currentByPath()) {
      const prefix = `${p}/`;
      let keys: string[];
      try {
        keys = (await session.list("lease_list", `sys/leases/lookup/${prefix}`)).filter((k) => !k.endsWith("/"));
      } catch (e) {
        report.errors.push(`listing ${prefix}: ${(e as Error).message}`);
        continue;
      }
      report.listed += keys.length;
      if (keys.length === 0) continue;
      let known: Set<string>;
      const names = [...namesSeen.get(p)!];
      try {
        known = await knownLeaseIds(names);
      } catch (e) {
        report.errors.push(`reading the leases of ${names.join(", ")}: ${(e as Error).message}`);
        continue;
      }
      for (const key of keys) {
        const leaseId = `${prefix}${key}`;
        if (known.has(leaseId)) continue;
        try {
          if (now() - (await issuedAt(leaseId)) < opts.graceMs) {
            report.young.push(leaseId);
            continue;
          }
          const outcome = await opts.revoke(leaseId);
          if (outcome === "gone") continue;
          report.revoked.push(leaseId);
          orphans.inc();
          logger.warn({ vault_lease_id: leaseId, role: roles[0] }, "revoked a vault lease the broker does not know (orphan)");
          await opts.audit.append({
            type: "vault_orphan_revoked",
            at: new Date(now()).toISOString(),
            actor: "system",
            vault_lease_id: leaseId,
            role: roles[0]!,
            ...(roles.length > 1 ? { roles } : {}),
            path: p,
          });
        } catch (e) {
          report.errors.push(`${leaseId}: ${(e as Error).message}`);
        }
      }
    }
    if (report.revoked.length > 0 || report.errors.length > 0) {
      logger.info({ listed: report.listed, revoked: report.revoked.length, young: report.young.length, errors: report.errors.length }, "vault reconciliation finished");
    }
    for (const err of report.errors) logger.warn({ error: err }, "vault reconciliation problem");
    return report;
  }

  return {
    /** One pass over every path role; concurrent callers share a pass in progress. */
    run(): Promise<ReconcileReport> {
      running ??= runOnce().finally(() => {
        running = null;
      });
      return running;
    },
  };
}
