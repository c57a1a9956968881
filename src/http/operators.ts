/**
 * Operators are workloads of kind `human` that Cedar allows an admin action (admin_read,
 * admin_revoke) on the broker itself, `Broker::"jitbroker"`. One check for every admin route.
 */
import { BrokerError } from "../core/errors";
import type { LeaseMetrics } from "../leases/metrics";
import { principalOf } from "../leases/service";
import { decisionContext } from "../policy/context";
import { BROKER_RESOURCE_ID, type PolicyEngine } from "../policy/engine";
import type { AuthContext } from "./app";

export type AdminAction = "admin_read" | "admin_revoke";

export interface OperatorCheck {
  policy: () => PolicyEngine;
  metrics: LeaseMetrics;
  timeZone?: string;
  now?: () => number;
}

export function isOperator(auth: AuthContext, action: AdminAction, c: OperatorCheck): boolean {
  if (auth.workload.kind !== "human") return false;
  const d = c.policy().decide({
    principal: principalOf(auth),
    action,
    resource: { type: "Broker", id: BROKER_RESOURCE_ID },
    context: decisionContext({ task: {}, ttlSeconds: 0, approved: false, atMs: (c.now ?? Date.now)(), timeZone: c.timeZone }),
  });
  c.metrics.decisions.inc({ action, decision: d.decision });
  return d.decision === "allow";
}

export function requireOperator(auth: AuthContext, action: AdminAction, c: OperatorCheck): AuthContext {
  if (!isOperator(auth, action, c)) throw new BrokerError("policy_denied", `${action} requires an operator (a human workload allowed by policy)`);
  return auth;
}
