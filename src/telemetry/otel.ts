/**
 * The OpenTelemetry SDK behind `Tracing` (src/telemetry/tracing.ts), loaded only when
 * `telemetry.otlp_endpoint` is set: a TracerProvider of this broker's own with a batch span
 * processor and the OTLP/HTTP (JSON) trace exporter, and an AsyncLocalStorage carrying the
 * current span (nothing is registered globally).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Span } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { ExportResultCode } from "@opentelemetry/core";
import { BatchSpanProcessor, TracerProvider, type SpanExporter } from "@opentelemetry/sdk-trace";
import type { NextFunction, Request, Response } from "express";
import { isBrokerError } from "../core/errors";
import type { SpanAttributes, Tracing } from "./tracing";

/** What a failed span records: a stable code or the error's class, never its message (I6). */
function errorType(e: unknown): string {
  if (isBrokerError(e)) return e.code;
  return e instanceof Error ? e.name : "error";
}

function endFailed(span: Span, e: unknown): void {
  const type = errorType(e);
  span.setAttribute("error.type", type);
  span.setStatus({ code: SpanStatusCode.ERROR, message: type });
  span.end();
}

const isPromise = (v: unknown): v is Promise<unknown> => typeof (v as { then?: unknown } | null)?.then === "function";

/** Traces go to `<endpoint>/v1/traces` (OTLP/HTTP), unless the endpoint already names that path. */
export function tracesUrl(endpoint: string): string {
  const u = endpoint.replace(/\/+$/, "");
  return u.endsWith("/v1/traces") ? u : `${u}/v1/traces`;
}

export function createOtelTracing(opts: { endpoint: string; serviceName: string; serviceVersion?: string; exportDelayMs?: number; onExportError?: (e: Error) => void }): Tracing {
  const otlp = new OTLPTraceExporter({ url: tracesUrl(opts.endpoint), timeoutMillis: 10_000 });
  // The batch processor reports a failed export only to OpenTelemetry's global error handler;
  // this says it where the broker logs (the error's text names the endpoint, never a secret).
  const exporter: SpanExporter = {
    export(spans, done) {
      otlp.export(spans, (result) => {
        if (result.code !== ExportResultCode.SUCCESS) opts.onExportError?.(result.error ?? new Error("trace export failed"));
        done(result);
      });
    },
    shutdown: () => otlp.shutdown(),
    forceFlush: () => otlp.forceFlush(),
  };
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ "service.name": opts.serviceName, ...(opts.serviceVersion ? { "service.version": opts.serviceVersion } : {}) }),
    spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: opts.exportDelayMs ?? 2000, maxQueueSize: 8192, maxExportBatchSize: 512 })],
  });
  const tracer = provider.getTracer("jitbroker", opts.serviceVersion);
  const als = new AsyncLocalStorage<Context>();

  function span<T>(name: string, fn: () => T, o: { attributes?: SpanAttributes; root?: boolean; kind?: SpanKind } = {}): T {
    const parent = o.root ? ROOT_CONTEXT : (als.getStore() ?? ROOT_CONTEXT);
    const s = tracer.startSpan(name, { kind: o.kind ?? SpanKind.INTERNAL, ...(o.attributes ? { attributes: o.attributes } : {}) }, parent);
    let result: T;
    try {
      result = als.run(trace.setSpan(parent, s), fn);
    } catch (e) {
      endFailed(s, e);
      throw e;
    }
    if (isPromise(result)) {
      return result.then(
        (v) => {
          s.end();
          return v;
        },
        (e: unknown) => {
          endFailed(s, e);
          throw e;
        },
      ) as T;
    }
    s.end();
    return result;
  }

  return {
    enabled: true,
    span,
    traceId() {
      const ctx = als.getStore();
      const sc = ctx ? trace.getSpan(ctx)?.spanContext() : undefined;
      return sc && sc.traceFlags & 1 ? sc.traceId : undefined;
    },
    request(req: Request, res: Response, next: NextFunction) {
      const s = tracer.startSpan(req.method, { kind: SpanKind.SERVER, attributes: { "http.request.method": req.method, "url.path": req.path } }, ROOT_CONTEXT);
      req.traceId = s.spanContext().traceId;
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        const route = req.route?.path !== undefined ? `${req.baseUrl}${String(req.route.path)}` : undefined;
        if (route) {
          s.updateName(`${req.method} ${route}`);
          s.setAttribute("http.route", route);
        }
        s.setAttribute("http.response.status_code", res.statusCode);
        if (res.statusCode >= 500) s.setStatus({ code: SpanStatusCode.ERROR });
        s.end();
      };
      res.once("finish", end);
      res.once("close", end);
      als.run(trace.setSpan(ROOT_CONTEXT, s), next);
    },
    wrap<T extends object>(obj: T, names: Partial<Record<keyof T, string>>, attributes?: SpanAttributes): T {
      const view = Object.create(obj) as T;
      for (const [method, spanName] of Object.entries(names) as [keyof T & string, string][]) {
        const f = obj[method];
        if (typeof f !== "function") continue;
        Object.defineProperty(view, method, {
          value: (...args: unknown[]) => span(spanName, () => (f as (...a: unknown[]) => unknown).apply(obj, args), attributes ? { attributes } : {}),
          enumerable: true,
        });
      }
      return view;
    },
    async shutdown() {
      await provider.shutdown().catch((e: Error) => opts.onExportError?.(e));
    },
  };
}
