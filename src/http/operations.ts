/**
 * The broker's operational endpoints (health, readiness, metrics, this API's document), their
 * specs and response schemas; the handlers are wired in src/broker.ts.
 */
import { z } from "zod";
import { apiComponent, defineRoutes, text, time } from "./api";

export const openApiDocumentSchema = apiComponent("OpenApiDocument", z.looseObject({ openapi: z.string() }));
export const healthSchema = apiComponent("Health", z.strictObject({ status: z.literal("ok") }));
const backendStates = z.array(z.looseObject({ name: text, state: z.enum(["ok", "degraded", "unavailable"]), detail: text.optional() }));
const sinkState = z.strictObject({
  name: text,
  type: z.enum(["file", "http", "syslog"]),
  state: z.enum(["ok", "failing", "starting", "standby"]),
  position: text.nullable().describe("Last seq the sink confirmed"),
  lag_seconds: z.number().describe("Age of the oldest event the sink has not confirmed"),
  consecutive_failures: z.number().int(),
  last_error: text.optional(),
});
const backlogState = z
  .strictObject({
    events: z.number().int().nullable().describe("Audit events the slowest sink has not confirmed (null until measured)"),
    max: z.number().int().describe("audit.max_backlog"),
    full: z.boolean().describe("true while new issuance is refused with 503 audit_backlog_full"),
    slowest: text.optional().describe("The sink furthest behind"),
  })
  .describe("The hard bound of the audit store (API processes with sinks configured); the broker stays ready while full: it still revokes (I9)");
export const readinessSchema = apiComponent(
  "Readiness",
  z
    .strictObject({
      status: z.enum(["ready", "unavailable"]),
      redis: z.enum(["ok", "unreachable"]),
      issuers: z.array(z.strictObject({ name: text, state: z.enum(["ok", "degraded", "unavailable"]), keys: z.number().int(), loaded_at: time.nullable() })),
      backends: backendStates,
      audit_sinks: z.array(sinkState.omit({ last_error: true })).optional().describe("Delivery of audit events to each sink (worker processes), states only"),
      audit_backlog: backlogState.optional(),
    })
    .describe("Unauthenticated: states only, never an issuer's error, file path or URL (operators: GET /v1/admin/readiness)"),
);
export const operatorReadinessSchema = apiComponent(
  "OperatorReadiness",
  z.strictObject({
    status: z.enum(["ready", "unavailable"]),
    redis: z
      .enum(["ok", "unreachable", "readonly", "moved", "clusterdown", "timeout", "auth", "loading", "oom", "no_primary", "durability", "shards", "other"])
      .describe("ok, or why the broker's keys are not writable from here with the configured durability (I10); shards: redis.shards does not match the data (or was not checked yet)"),
    redis_error: text.optional().describe("What is wrong with Redis, when redis is not ok"),
    issuers: z.array(z.strictObject({ name: text, keys: z.number().int(), loaded_at: time.nullable(), last_error: text.nullable() })),
    backends: backendStates,
    audit_sinks: z
      .array(sinkState)
      .optional()
      .describe("Delivery of audit events to each configured sink (worker processes only); a failing sink does not make the broker unready"),
    audit_backlog: backlogState.optional(),
  }),
);

export const OPERATIONS_API = defineRoutes({
  health: { method: "get", path: "/healthz", operationId: "health", summary: "Liveness", tags: ["operations"], auth: "none", responses: { 200: { description: "The process is alive", schema: healthSchema } } },
  readiness: {
      method: "get",
      path: "/readyz",
      operationId: "readiness",
      summary: "Readiness: Redis reachable; issuers' and backends' status",
      tags: ["operations"],
      auth: "none",
      responses: { 200: { description: "Ready", schema: readinessSchema }, 503: { description: "Redis is unreachable: nothing is issued (fail closed)", schema: readinessSchema } },
    },
  metrics: {
      method: "get",
      path: "/metrics",
      operationId: "metrics",
      summary: "Prometheus metrics",
      tags: ["operations"],
      auth: "none",
      responses: { 200: { description: "Prometheus text exposition format", schema: z.string(), contentType: "text/plain" } },
    },
  openapi: {
      method: "get",
      path: "/openapi.json",
      operationId: "openapi",
      summary: "This document",
      tags: ["operations"],
      auth: "none",
      responses: { 200: { description: "OpenAPI 3.1", schema: openApiDocumentSchema } },
    },
  operatorReadiness: {
      method: "get",
      path: "/v1/admin/readiness",
      operationId: "operatorReadiness",
      summary: "Readiness with each issuer's last key-set error (operators)",
      tags: ["operators"],
      auth: "workload",
      responses: { 200: { description: "The same checks as /readyz, with details", schema: operatorReadinessSchema } },
      errors: ["policy_denied"],
    },
});
