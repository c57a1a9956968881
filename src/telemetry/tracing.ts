/**
 * OpenTelemetry tracing (`telemetry.otlp_endpoint`, `telemetry.service_name`;
 * docs/ARCHITECTURE.md, Telemetry).
 *
 * Off (no endpoint): `createTracing` returns NOOP_TRACING, whose functions call straight
 * through; the composition root wraps nothing and no OpenTelemetry package is loaded (the SDK is
 * `require`d only when configured, in ./otel.ts).
 *
 * On: a trace per API request (a SERVER root span, named `<METHOD> <route>` once the route is
 * known) and per worker job (`job <name>`), with child spans the composition root
 * (src/broker.ts) adds by wrapping the objects it builds: token verification (`token.verify`),
 * the policy decision (`policy.decide`), each lease store script (`redis.script CREATE`,
 * `ACTIVATE`, ...), the backend calls (`backend.mint`, `backend.revoke`) and the audit append
 * (`audit.append`). The trace id goes into the request's access log line (`trace_id`) and into
 * every audit event written while the trace is current (field `trace_id`, covered by the
 * chain's MAC like the rest of the event; OCSF `metadata.correlation_uid`).
 *
 * Context is carried by an AsyncLocalStorage of this broker's own, not the global OpenTelemetry
 * context manager or tracer provider: nothing global is registered, so two brokers in one
 * process (tests) keep their traces apart, and no library is monkey-patched. A request's trace
 * starts at the broker: an incoming `traceparent` is not continued (a caller could otherwise
 * choose the trace id written into the audit).
 *
 * Spans carry names, ids, methods, routes and status codes only (I6): an error is recorded as
 * its code (a BrokerError's) or its class name, never its message.
 */
import type { NextFunction, Request, Response } from "express";

export type SpanAttributes = Record<string, string | number | boolean>;

export interface Tracing {
  readonly enabled: boolean;
  /**
   * Runs `fn` inside a child span of the current one (a root span when there is none; `root`
   * starts a new trace whatever is current). A returned promise ends the span when it settles.
   */
  span<T>(name: string, fn: () => T, opts?: { attributes?: SpanAttributes; root?: boolean }): T;
  /** The W3C trace id (32 hex) of the current span, if one is recorded. */
  traceId(): string | undefined;
  /** Express middleware: the request's root span; sets `req.traceId`. */
  request(req: Request, res: Response, next: NextFunction): void;
  /**
   * A view of `obj` whose named methods run in a span each (`names` maps method to span name).
   * Everything else is read through from `obj` (its prototype).
   */
  wrap<T extends object>(obj: T, names: Partial<Record<keyof T, string>>, attributes?: SpanAttributes): T;
  /** Sends what is buffered and stops. */
  shutdown(): Promise<void>;
}

declare module "express-serve-static-core" {
  interface Request {
    /** The request's trace id while tracing is on (src/telemetry). */
    traceId?: string;
  }
}

export const NOOP_TRACING: Tracing = {
  enabled: false,
  span: (_name, fn) => fn(),
  traceId: () => undefined,
  request: (_req, _res, next) => next(),
  wrap: (obj) => obj,
  shutdown: async () => undefined,
};

export interface TracingConfig {
  /** OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318 (traces go to <endpoint>/v1/traces). */
  otlp_endpoint?: string | undefined;
  service_name: string;
}

export interface TracingOptions {
  /** Most time between two exports (ms). Default 2000. */
  exportDelayMs?: number;
  serviceVersion?: string;
  onExportError?: (e: Error) => void;
}

/** The tracing the configuration asks for: NOOP_TRACING without an endpoint. */
export function createTracing(cfg: TracingConfig, opts: TracingOptions = {}): Tracing {
  if (!cfg.otlp_endpoint) return NOOP_TRACING;
  // Loaded only here, so a broker without telemetry never loads the SDK.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const otel = require("./otel") as typeof import("./otel");
  return otel.createOtelTracing({ endpoint: cfg.otlp_endpoint, serviceName: cfg.service_name, ...opts });
}
