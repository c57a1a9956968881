/**
 * Operators are workloads of kind `human` that Cedar allows an admin action (admin_read,
 * admin_revoke) on the broker itself, `Broker::"jitbroker"`. One check for every admin route.
 */
import { BrokerError } from "../core/errors";
import type { LeaseMetrics } from "../leases/metrics";
import { principalOf } from "../leases/service";
import { decisionContext } from "../policy/context";
import { BROKER_RESOURCE_ID, type Decision, type DecisionRequest, type PolicyEngine } from "../policy/engine";
import type { AuthContext } from "./app";

export type AdminAction = "admin_read" | "admin_revoke";

export interface OperatorCheck {
  policy: () => PolicyEngine;
  metrics: LeaseMetrics;
  timeZone?: string;
  now?: () => number;
}

/**
 * The decision of an operator action: null for a workload that is not `human` (never an
 * operator, whatever the policies say); otherwise Cedar's decision. Counted in the metrics.
 */
export function operatorDecision(
  auth: AuthContext,
  action: AdminAction | "approve",
  resource: DecisionRequest["resource"],
  context: DecisionRequest["context"],
  c: OperatorCheck,
): Decision | null {
  const d = auth.workload.kind !== "human" ? null : c.policy().decide({ principal: principalOf(auth), action, resource, context });
  c.metrics.decisions.inc({ action, decision: d?.decision ?? "deny" });
  return d;
}

export function isOperator(auth: AuthContext, action: AdminAction, c: OperatorCheck): boolean {
  const context = decisionContext({ task: {}, ttlSeconds: 0, approved: false, atMs: (c.now ?? Date.now)(), timeZone: c.timeZone });
  return operatorDecision(auth, action, { type: "Broker", id: BROKER_RESOURCE_ID }, context, c)?.decision === "allow";
}

export function requireOperator(auth: AuthContext, action: AdminAction, c: OperatorCheck): AuthContext {
  if (!isOperator(auth, action, c)) throw new BrokerError("policy_denied", `${action} requires an operator (a human workload allowed by policy)`);
  return auth;
}
