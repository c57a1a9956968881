/**
 * The operator check (docs/ARCHITECTURE.md, Operators and authorization): operators are
 * workloads of kind `human` that Cedar allows an admin action (admin_read, admin_revoke) on the
 * broker itself, `Broker::"jitbroker"`, or `approve` on the role of a request. One check for
 * every admin route, the console and approvals.
 */
import { BrokerError } from "../core/errors";
import type { LeaseMetrics } from "../leases/metrics";
import type { Decision, DecisionRequest, PolicyEngine } from "../policy/types";
import { adminContext, BROKER_RESOURCE } from "./context";
import { principalOf, type AuthContext } from "./principal";
import { mayBeOperator, type OperatorAction } from "./refusals";

export type AdminAction = "admin_read" | "admin_revoke";

export interface OperatorCheck {
  policy: () => PolicyEngine;
  metrics: Pick<LeaseMetrics, "decisions">;
  timeZone?: string;
  now?: () => number;
}

/**
 * The decision of an operator action: null for a workload that is not `human` (never an
 * operator, whatever the policies say); otherwise Cedar's decision. Counted in the metrics.
 */
export function operatorDecision(auth: AuthContext, action: OperatorAction, resource: DecisionRequest["resource"], context: DecisionRequest["context"], c: OperatorCheck): Decision | null {
  const d = !mayBeOperator(auth.workload) ? null : c.policy().decide({ principal: principalOf(auth), action, resource, context });
  c.metrics.decisions.inc({ action, decision: d?.decision ?? "deny" });
  return d;
}

export function isOperator(auth: AuthContext, action: AdminAction, c: OperatorCheck): boolean {
  return operatorDecision(auth, action, BROKER_RESOURCE, adminContext((c.now ?? Date.now)(), c.timeZone), c)?.decision === "allow";
}

export function requireOperator(auth: AuthContext, action: AdminAction, c: OperatorCheck): AuthContext {
  if (!isOperator(auth, action, c)) throw new BrokerError("policy_denied", `${action} requires an operator (a human workload allowed by policy)`);
  return auth;
}
