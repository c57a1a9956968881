/**
 * POST /v1/admin/policy/reload — reloads the policies and the inventory (workloads, roles) now
 * and re-authorizes every active lease if either changed. Reloading can revoke leases, so it
 * takes `admin_revoke`. The answer waits for the re-authorization up to `waitMs` (200 with its
 * report); a longer walk (several thousand leases a second, docs/BENCHMARKS.md) goes on after a 202
 * `{reauthorization: {state: "running"}}`, and its report lands in the audit ledger
 * (`reauthorization` event) and the log, so no proxy timeout cuts an operator off mid-walk. A policy set or configuration that does not load is refused (422
 * policy_invalid, with every problem) and the running set stays in force.
 */
import { Router } from "express";
import { mount } from "../http/api";
import { POLICY_API } from "./api";
import type { ReloadReport } from "./workflow";
import { BrokerError } from "../core/errors";
import { requireOperator, type OperatorCheck } from "../authz/operators";

export function policyRoutes(opts: OperatorCheck & { reload(cause: { actor: string; source: string }): Promise<ReloadReport>; waitMs: number }): Router {
  const r = Router();
  mount(r, POLICY_API.reloadPolicy, async (req, res) => {
    const auth = requireOperator(req.auth!, "admin_revoke", opts);
    const out = await opts.reload({ actor: auth.workload.id, source: "POST /v1/admin/policy/reload" });
    const inventory = out.inventory;
    const problems = [...(inventory.problems ?? []), ...(out.policy?.problems ?? [])];
    if (!out.ok) throw new BrokerError("policy_invalid", `reload refused; the running policies and inventory stay in force: ${problems.join("; ")}`, { extra: { problems } });
    const policy = out.policy!;
    const head = {
      policy: { changed: policy.changed, hash: policy.hash, policies: policy.policies },
      inventory: { changed: inventory.changed, workloads: inventory.workloads, roles: inventory.roles, restart_required: inventory.restart_required },
    };
    if (!out.reauthorization) {
      res.json({ ...head, reauthorization: { state: "completed", reevaluated: 0, revoked: 0, kept: 0, skipped: 0, policy_hash: policy.hash } });
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      out.reauthorization,
      new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), opts.waitMs);
      }),
    ]).finally(() => clearTimeout(timer));
    if (done) res.json({ ...head, reauthorization: { state: "completed", ...done } });
    else res.status(202).json({ ...head, reauthorization: { state: "running", policy_hash: policy.hash } });
  });
  return r;
}
