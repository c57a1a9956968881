/**
 * The HTTP shell: express 5 with request ids, access logs, metrics, a 16 KiB JSON body limit,
 * workload authentication on /v1, and problem+json for every error. Feature routes are mounted
 * by the composition root; this module owns only cross-cutting concerns.
 */
import { withoutRedaction } from "../core/logger";
import { randomUUID } from "node:crypto";
import express, { type Express, type NextFunction, type Request, type RequestHandler, type Response } from "express";
import type { Logger } from "pino";
import type { z } from "zod";
import { BrokerError, isBrokerError } from "../core/errors";
import type { AuthContext } from "../authz/principal";
import type { TokenVerifier } from "../identity/verify";
import type { WorkloadMatcher } from "../identity/workloads";
import type { Metrics } from "./metrics";
import { sendFallback, sendProblem } from "./problem";
import type { Tracing } from "../telemetry/tracing";

/** The authenticated caller, defined with the principal built from it (src/authz/principal.ts). */
export type { AuthContext };

declare module "express-serve-static-core" {
  interface Request {
    id: string;
    auth?: AuthContext;
  }
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

export interface HttpAppOptions {
  logger: Logger;
  metrics: Metrics;
  bodyLimit: string;
  trustProxy: boolean | string | number;
  /** OpenTelemetry (src/telemetry): a root span per request, its trace id in the access log line. */
  tracing?: Pick<Tracing, "enabled" | "request">;
}

export function createHttpApp(opts: HttpAppOptions): Express {
  const app = express();
  // The access line's keys are fixed and none is on the redaction list (src/core/logger.ts).
  const access = withoutRedaction(opts.logger);
  app.disable("x-powered-by");
  // express's own last-resort handler prints stack traces outside "production"; ours answers
  // every error first, and this keeps the fallback quiet whatever NODE_ENV says.
  app.set("env", "production");
  app.set("trust proxy", opts.trustProxy);
  app.set("etag", false);
  app.set("query parser", "simple");

  app.use((req, res, next) => {
    const incoming = req.get("x-request-id");
    req.id = incoming !== undefined && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    res.setHeader("X-Request-Id", req.id);
    res.setHeader("Cache-Control", "no-store");
    res.setHeader("X-Content-Type-Options", "nosniff");
    const started = process.hrtime.bigint();
    res.on("finish", () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = req.route?.path !== undefined ? `${req.baseUrl}${String(req.route.path)}` : "unmatched";
      opts.metrics.httpRequests.inc({ method: req.method, route, status: String(res.statusCode) });
      opts.metrics.httpDuration.observe({ method: req.method, route }, seconds);
      access.info(
        {
          request_id: req.id,
          method: req.method,
          path: req.path,
          status: res.statusCode,
          ms: Math.round(seconds * 1e6) / 1e3,
          workload: req.auth?.workload.id,
          ...(req.traceId ? { trace_id: req.traceId } : {}),
        },
        "request",
      );
    });
    if (opts.tracing?.enabled) opts.tracing.request(req, res, next);
    else next();
  });
  app.use(express.json({ limit: opts.bodyLimit, type: ["application/json", "application/*+json"], strict: true }));
  return app;
}

/** Rejects bodies that are not JSON objects with 415/400 before a handler sees them. */
export const requireJsonObject: RequestHandler = (req, _res, next) => {
  if (!req.is(["application/json", "application/*+json"])) {
    throw new BrokerError("unsupported_media_type", "send the body as application/json");
  }
  if (req.body === null || typeof req.body !== "object" || Array.isArray(req.body)) {
    throw new BrokerError("invalid_request", "the body must be a JSON object");
  }
  next();
};

/** Validates input with a zod schema; every problem becomes one 400 invalid_request with its field. */
export function parse<T>(schema: z.ZodType<T>, value: unknown, where: string): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => ({ field: i.path.length ? i.path.join(".") : where, message: i.message }));
  throw new BrokerError("invalid_request", problems.map((p) => `${p.field}: ${p.message}`).join("; "), { extra: { errors: problems } });
}

/** An optional JSON body: none (or `{}`) gives `{}`, anything else must match the schema. */
export function optionalBody<T extends object>(schema: z.ZodType<T>, body: unknown): T | Record<string, never> {
  if (body === undefined || (typeof body === "object" && body !== null && !Array.isArray(body) && Object.keys(body).length === 0)) return {};
  return parse(schema, body, "body");
}

/** Authenticates the workload token and maps it to a workload; sets `req.auth`. */
export function authenticate(verifier: TokenVerifier, workloads: WorkloadMatcher, metrics: Metrics): RequestHandler {
  return async (req: Request, _res: Response, next: NextFunction) => {
    try {
      const header = req.get("authorization");
      const m = header === undefined ? null : /^Bearer ([^\s]+)$/i.exec(header.trim());
      if (!m) throw new BrokerError("invalid_token", "send the workload token as Authorization: Bearer <jwt>", { reason: "missing_token" });
      const identity = await verifier.verify(m[1]!);
      req.auth = { identity, workload: workloads.match(identity) };
      next();
    } catch (e) {
      if (isBrokerError(e) && (e.status === 401 || e.code === "unknown_workload")) {
        metrics.authFailures.inc({ reason: e.reason ?? e.code });
      }
      throw e;
    }
  };
}

/** Final handlers: 404 for unknown routes, and the one error-to-problem mapping. */
export function finishApp(app: Express, logger: Logger): void {
  app.use((req: Request) => {
    throw new BrokerError("not_found", `no route ${req.method} ${req.path}`);
  });
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    // This handler cannot fail: whatever `err` is, the answer is a problem document without a
    // stack trace or a path (and never express's HTML error page).
    try {
      const problem = problemOf(err);
      try {
        // A Redis outage refuses every request: its changes of state are logged once by the Redis
        // health (src/redis/health.ts) and each refusal is counted in jitbroker_http_requests_total, so
        // one line per refused request would only be a log storm.
        const redisOutage = problem.code === "store_unavailable" && (problem.reason === "redis" || problem.reason === "durability");
        if (problem.status >= 500 && redisOutage) {
          logger.debug({ request_id: req.id, code: problem.code, reason: problem.reason }, "request refused: Redis cannot be used");
        } else if (problem.status >= 500) {
          logger.error({ request_id: req.id, code: problem.code, err: isBrokerError(err) ? (err.cause ?? err) : err }, "request failed");
        } else {
          logger.info({ request_id: req.id, code: problem.code, reason: problem.reason }, "request refused");
        }
      } catch {
        /* a log line is not worth a failed answer */
      }
      sendProblem(res, problem, req.id);
    } catch {
      sendFallback(res);
    }
  });
}

/** express's and body-parser's errors (with `type` or `status`), and anything else, as a BrokerError. */
export function problemOf(err: unknown): BrokerError {
  if (isBrokerError(err)) return err;
  const e = (typeof err === "object" && err !== null ? err : {}) as { type?: unknown; status?: unknown; statusCode?: unknown };
  const status = typeof e.status === "number" ? e.status : typeof e.statusCode === "number" ? e.statusCode : undefined;
  switch (e.type) {
    case "entity.too.large":
      return new BrokerError("payload_too_large", "request body exceeds the size limit");
    case "entity.parse.failed":
      return new BrokerError("invalid_request", "request body is not valid JSON");
    case "encoding.unsupported":
    case "charset.unsupported":
      return new BrokerError("unsupported_media_type", "request body encoding is not supported");
    case "request.aborted":
    case "request.size.invalid":
    case "entity.verify.failed":
    case "stream.encoding.set":
    case "stream.not.readable":
    case "parameters.too.many":
      return new BrokerError("invalid_request", "malformed request body");
  }
  if (status === 413) return new BrokerError("payload_too_large", "request body exceeds the size limit");
  if (status === 415) return new BrokerError("unsupported_media_type", "request body media type is not supported");
  if (status !== undefined && status >= 400 && status < 500) return new BrokerError("invalid_request", "malformed request");
  return new BrokerError("internal", "internal error; quote the request id when reporting it");
}

/**
 * What the HTTP parser refuses before express sees a request (a malformed request line or
 * header, bytes that are not HTTP) is answered as a problem document too, never with Node's bare
 * "400 Bad Request"; the connection is then closed.
 */
export function answerClientErrors(server: import("node:http").Server): void {
  const body = JSON.stringify({ type: "urn:jitbroker:problem:invalid_request", title: "Invalid request", status: 400, detail: "malformed HTTP request", code: "invalid_request" });
  server.on("clientError", (err: NodeJS.ErrnoException, socket: import("node:stream").Duplex) => {
    if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    socket.end(
      `HTTP/1.1 400 Bad Request\r\nContent-Type: application/problem+json\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  });
}
