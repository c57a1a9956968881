/**
 * The API's route specs (docs/ARCHITECTURE.md, How to add a route): each feature declares its
 * routes once, as `ApiRoute` values in its own `api.ts`, and `mount` registers the express
 * handler at the spec's method and path, so the router and the OpenAPI document
 * (src/http/openapi.ts, built from `apiRoutes()` in src/api.ts) cannot disagree. Named schemas
 * (`apiComponent`) are collected here for the document's `components.schemas`.
 */
import type { Express, RequestHandler, Router } from "express";
import { z } from "zod";
import { ERROR_STATUS, type ErrorCode } from "../core/errors";
import { PROBLEM_TYPE_BASE } from "./problem";

export type HttpMethod = "get" | "post" | "put" | "patch" | "delete";

export interface ApiResponse {
  description: string;
  /** Body schema (omit for no body). Named with `apiComponent`, or named after the operation. */
  schema?: z.ZodType;
  /** Default application/json. */
  contentType?: string;
  headers?: Record<string, { description: string; schema: z.ZodType }>;
}

export interface ApiRoute {
  method: HttpMethod;
  /** Express syntax: `/v1/leases/:id`. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  /** "workload": `Authorization: Bearer <workload JWT>` (default for /v1); "none": public. */
  auth: "workload" | "none";
  params?: Record<string, { schema: z.ZodType; description: string }>;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** The body may be omitted (DELETE with an optional reason). */
  bodyOptional?: boolean;
  /** Media types the body may come in (default application/json). */
  bodyMediaTypes?: string[];
  responses: Record<number, ApiResponse>;
  /** Problem codes this operation answers besides the ones every authenticated call may. */
  errors?: ErrorCode[];
}

/** A feature's routes by operation id (the keys are the operationIds, checked by `apiRoutes`). */
export function defineRoutes<const K extends string>(routes: { [P in K]: ApiRoute & { operationId: P } }): { [P in K]: ApiRoute & { operationId: P } } {
  return routes;
}

/** Registers `handlers` on `router` at the spec's method and path: the only way an API route reaches express. */
export function mount(router: Router | Express, route: ApiRoute, ...handlers: RequestHandler[]): void {
  (router as unknown as Record<HttpMethod, (path: string, ...h: RequestHandler[]) => void>)[route.method](route.path, ...handlers);
}

// --- named schemas ------------------------------------------------------------------------------

const components = new Map<z.ZodType, { name: string; io: "input" | "output" }>();

/** Names a schema in `components.schemas` (output: responses; input: request bodies). */
export function apiComponent<T extends z.ZodType>(name: string, schema: T, io: "input" | "output" = "output"): T {
  for (const [s, c] of components) if (c.name === name && s !== schema) throw new Error(`OpenAPI component ${name} is defined twice`);
  components.set(schema, { name, io });
  return schema;
}

/** The named schemas registered so far (src/http/openapi.ts documents them all). */
export const namedSchemas = (): ReadonlyMap<z.ZodType, { name: string; io: "input" | "output" }> => components;

/** Building blocks of response schemas. */
export const time = z.iso.datetime().describe("RFC 3339, UTC");
export const text = z.string();

export const problemSchema = apiComponent(
  "Problem",
  z
    .looseObject({
      type: z.string().describe(`${PROBLEM_TYPE_BASE}<code>`),
      title: text,
      status: z.number().int(),
      detail: text.describe("What went wrong, safe to show; never contains secret material"),
      code: z.enum(Object.keys(ERROR_STATUS) as [ErrorCode, ...ErrorCode[]]).describe("Stable machine-readable code (docs/ARCHITECTURE.md, Errors)"),
      instance: text.optional(),
      request_id: text.optional().describe("Also in the X-Request-Id header; quote it when reporting a problem"),
      errors: z.array(z.strictObject({ field: text, message: text })).optional().describe("invalid_request: one entry per invalid field"),
    })
    .describe("RFC 9457 problem details; extension members may follow"),
);
