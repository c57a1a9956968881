/** Prometheus metrics of the audit ledger and its sinks. */
import { Counter, type Registry } from "prom-client";

export interface AuditMetrics {
  /** Failed appends by event type and outcome: failed (an awaited append; the caller got the error), retried, lost (logged instead), refused (invalid event). */
  appendFailures: Counter<"type" | "outcome">;
}

export function createAuditMetrics(registry: Registry): AuditMetrics {
  return {
    appendFailures: new Counter({
      name: "jitbroker_audit_append_failures_total",
      help: "Audit appends that failed, by event type and outcome (failed: the caller saw the error; retried: a background append retried; lost: given up after retries, the event is in the error log; refused: an invalid event)",
      labelNames: ["type", "outcome"],
      registers: [registry],
    }),
  };
}
