import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { RevocationQueue } from "./queue";
import type { LeaseStore } from "./store";

export function createLeaseMetrics(registry: Registry) {
  return {
    issuance: new Histogram({
      name: "jitbroker_issuance_duration_seconds",
      help: "Time to issue a credential (authenticated request to response), by backend",
      labelNames: ["backend"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    issued: new Counter({ name: "jitbroker_leases_issued_total", help: "Leases issued, by backend and role", labelNames: ["backend", "role"], registers: [registry] }),
    decisions: new Counter({ name: "jitbroker_decisions_total", help: "Policy decisions, by action and decision", labelNames: ["action", "decision"], registers: [registry] }),
    leaseTransitions: new Counter({ name: "jitbroker_lease_terminal_total", help: "Leases reaching a terminal state", labelNames: ["state"], registers: [registry] }),
    revocationLag: new Histogram({
      name: "jitbroker_revocation_lag_seconds",
      help: "Time from a revocation trigger (expiry, completion, revoke) to the lease's terminal state",
      labelNames: ["trigger"],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300],
      registers: [registry],
    }),
    revocationFailures: new Counter({ name: "jitbroker_revocation_failures_total", help: "Failed revocation attempts, by backend", labelNames: ["backend"], registers: [registry] }),
    /** Alert on code="misconfigured" (retries slowed to one an hour) and code="denied" (the broker's own access). */
    revocationErrors: new Counter({ name: "jitbroker_revocation_errors_total", help: "Failed revocation attempts, by backend and error code (src/backends/types.ts BackendErrorCode)", labelNames: ["backend", "code"], registers: [registry] }),
    leasesByState: new Gauge({ name: "jitbroker_leases", help: "Leases by state (live states, sampled)", labelNames: ["state"], registers: [registry] }),
    queueDepth: new Gauge({ name: "jitbroker_revocation_queue_jobs", help: "Revocation queue jobs by state", labelNames: ["state"], registers: [registry] }),
    approvals: new Counter({ name: "jitbroker_approval_requests_total", help: "Approval requests by event (requested, approved, denied, expired, collected)", labelNames: ["event"], registers: [registry] }),
    reauthorized: new Counter({ name: "jitbroker_reauthorization_leases_total", help: "Active leases re-evaluated after a policy or inventory change, by outcome (kept, revoked)", labelNames: ["outcome"], registers: [registry] }),
    /** Alert on any: a lease record in Redis is malformed (a damaged or hostile Redis); its reads fail closed. */
    unreadable: new Counter({ name: "jitbroker_lease_unreadable_reads_total", help: "Reads that found a lease record malformed (a missing or malformed field), by field", labelNames: ["field"], registers: [registry] }),
    dueLeases: new Gauge({ name: "jitbroker_leases_due", help: "Live leases whose expiry or revocation is due (sweeper backlog)", registers: [registry] }),
  };
}

export type LeaseMetrics = ReturnType<typeof createLeaseMetrics>;

/** Sets the lease and queue gauges from Redis (when Prometheus scrapes); a Redis outage keeps the last sample (/readyz says why). */
export async function sampleLeaseGauges(metrics: LeaseMetrics, store: Pick<LeaseStore, "counts">, queue: Pick<RevocationQueue, "getJobCounts">): Promise<void> {
  try {
    const [counts, jobs] = await Promise.all([store.counts(), queue.getJobCounts("wait", "delayed", "active", "prioritized")]);
    metrics.leasesByState.set({ state: "live" }, counts.live);
    metrics.leasesByState.set({ state: "revoke_failed" }, counts.revoke_failed);
    for (const [state, n] of Object.entries(jobs)) metrics.queueDepth.set({ state }, n);
  } catch {
    /* keep the last sample */
  }
}
