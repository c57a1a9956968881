/** Prometheus metrics (prom-client), one registry per broker instance. */
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export interface Metrics {
  registry: Registry;
  httpRequests: Counter<"method" | "route" | "status">;
  httpDuration: Histogram<"method" | "route">;
  authFailures: Counter<"reason">;
  jwksLoads: Counter<"issuer" | "result">;
}

export function createMetrics(opts: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: "jitbroker_" });
  return {
    registry,
    httpRequests: new Counter({
      name: "jitbroker_http_requests_total",
      help: "HTTP requests by method, route template and status",
      labelNames: ["method", "route", "status"],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: "jitbroker_http_request_duration_seconds",
      help: "HTTP request latency by method and route template",
      labelNames: ["method", "route"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    authFailures: new Counter({
      name: "jitbroker_auth_failures_total",
      help: "Rejected workload tokens and unmatched workloads, by reason",
      labelNames: ["reason"],
      registers: [registry],
    }),
    jwksLoads: new Counter({
      name: "jitbroker_jwks_loads_total",
      help: "Key set loads of trusted issuers, by issuer and result",
      labelNames: ["issuer", "result"],
      registers: [registry],
    }),
  };
}
