/**
 * The reload workflow (docs/ARCHITECTURE.md, Revocation paths: policy change): reloads the
 * inventory (workloads, roles) and the policies together (SIGHUP, POST /v1/admin/policy/reload),
 * or the policies alone when a policy file changes, and re-authorizes the active leases when
 * either changed. Re-authorizations run one at a time, in order; each sees the policies current
 * when it starts. A configuration or policy set that does not load is refused and the running one
 * stays in force.
 */
import type { Logger } from "pino";
import type { AuditLedger } from "../audit/ledger";
import type { Inventory, InventoryCandidate } from "./inventory";
import type { ReauthorizationReport } from "./reauthorize";
import { createPolicyReloader, type ReloadResult } from "./reload";
import type { PolicyEngine } from "./engine";
import type { LoadedConfig } from "../config/load";

export interface ReloadReport {
  ok: boolean;
  inventory: Omit<InventoryCandidate, "apply">;
  policy: ReloadResult | null;
  /** The walk over active leases (null when nothing changed); it may outlive the answer. */
  reauthorization: Promise<ReauthorizationReport> | null;
}

type Cause = { actor: string; source: string };

export interface ReloadWorkflowOptions {
  engine: PolicyEngine;
  patterns: string[];
  /** The live inventory (src/policy/inventory.ts). */
  inventory: Pick<Inventory, "prepare">;
  load: () => LoadedConfig;
  audit: Pick<AuditLedger, "record">;
  logger: Logger;
  now: () => number;
  /** One walk over the active leases under the policies and inventory in force now. */
  reauthorize(cause: Cause): Promise<ReauthorizationReport>;
}

export function createReloadWorkflow(opts: ReloadWorkflowOptions) {
  const { audit, logger, now } = opts;
  const policyReloader = createPolicyReloader({
    engine: opts.engine,
    patterns: opts.patterns,
    logger,
    onReload: async (r, previous) => {
      if (r.changed || !r.ok) {
        audit.record({ type: "policy_reload", at: new Date(now()).toISOString(), actor: "system", ok: r.ok, policy_hash: r.hash, previous_policy_hash: previous, policies: r.policies, ...(r.problems ? { problems: r.problems } : {}) });
      }
      if (r.changed) changes++;
      // A policy file edited in place: re-authorize active leases (a reloadAll waiting does it itself).
      if (r.changed && reloadingAll === 0) void reauthorize({ actor: "system", source: "policy files changed" }).catch(() => undefined);
    },
  });

  // Re-authorizations run one at a time, in order; each sees the policies current when it starts.
  let reauthChain: Promise<unknown> = Promise.resolve();
  /** reloadAll calls waiting on a policy reload: a pass that ends meanwhile leaves its re-authorization to them. */
  let reloadingAll = 0;
  /** Passes that changed the policy set in force (each is re-authorized by its pass or by a reloadAll waiting). */
  let changes = 0;
  function reauthorize(cause: { actor: string; source: string }): Promise<ReauthorizationReport> {
    const run = reauthChain.then(() => opts.reauthorize(cause));
    reauthChain = run.catch((e: Error) => logger.error({ err: { message: e.message } }, "re-authorization of active leases failed; it runs again on the next reload"));
    return run;
  }

  /** Reloads the inventory (workloads, roles) and the policies together; re-authorizes if either changed. */
  async function reloadAll(cause: { actor: string; source: string }): Promise<ReloadReport> {
    const candidate = opts.inventory.prepare(opts.load);
    if (!candidate.ok) {
      audit.record({ type: "inventory_reload", at: new Date(now()).toISOString(), actor: cause.actor, source: cause.source, ok: false, problems: candidate.problems });
      logger.error({ problems: candidate.problems }, "configuration reload refused; the running inventory and policies stay in force");
      return { ok: false, inventory: summaryOf(candidate), policy: null, reauthorization: null };
    }
    // What a pass that ends while this call waits changes is re-authorized by this call, not by
    // the pass (onReload above). That pass may be one this call only joined (the file watcher's,
    // started first), whose result is its last pass's, "unchanged" when a second pass found
    // nothing new: so whether the policies changed is counted over every pass that ended while
    // this call waited, never read from that result alone. A refused last pass does not hide an
    // earlier change, and a change undone by a later pass is still re-authorized (leases may have
    // been issued under the set in between).
    const before = opts.engine.set().hash;
    const changesBefore = changes;
    reloadingAll++;
    let policy;
    try {
      policy = await policyReloader.reload();
    } finally {
      reloadingAll--;
    }
    const policyChanged = changes !== changesBefore || opts.engine.set().hash !== before;
    if (!policy.ok) {
      const reauthorization = policyChanged ? reauthorize(cause) : null;
      reauthorization?.catch(() => undefined);
      return { ok: false, inventory: { ...summaryOf(candidate), changed: false }, policy, reauthorization };
    }
    policy = { ...policy, changed: policyChanged };
    candidate.apply();
    if (candidate.changed) {
      audit.record({ type: "inventory_reload", at: new Date(now()).toISOString(), actor: cause.actor, source: cause.source, ok: true, workloads: candidate.workloads, roles: candidate.roles });
      logger.info({ workloads: candidate.workloads, roles: candidate.roles }, "inventory reloaded");
    }
    if (candidate.restart_required.length > 0) logger.warn({ sections: candidate.restart_required }, "configuration sections changed that take effect only after a restart");
    const reauthorization = candidate.changed || policy.changed ? reauthorize(cause) : null;
    reauthorization?.catch(() => undefined); // logged by reauthorize(); the caller may stop waiting
    return { ok: true, inventory: summaryOf(candidate), policy, reauthorization };
  }
  return { policyReloader, reloadAll, reauthorize };
}

/** What a reload reports of the inventory it loaded (without the function that applies it). */
function summaryOf({ apply: _apply, ...summary }: InventoryCandidate): Omit<InventoryCandidate, "apply"> {
  return summary;
}
