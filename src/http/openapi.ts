/**
 * The OpenAPI 3.1 description of the REST API, served at `GET /openapi.json`.
 *
 * It is generated, not written: each feature declares its routes once (`ApiRoute` specs in its
 * `api.ts`, registered on express by `mount`, src/http/api.ts); request bodies and query strings
 * are the very zod schemas the handlers validate with, and responses are zod schemas that the
 * tests check real responses against (test/openapi). JSON Schema comes from zod 4's
 * `z.toJSONSchema` (draft 2020-12, the dialect of OpenAPI 3.1). `apiRoutes()` (src/api.ts)
 * collects every feature's routes; a test walks the express router and fails on any route
 * without a spec, and the reverse.
 */
import { z } from "zod";
import { ERROR_STATUS, ERROR_TITLES, type ErrorCode } from "../core/errors";
import { namedSchemas, type ApiRoute } from "./api";

export type { ApiResponse, ApiRoute, HttpMethod } from "./api";

/** Problems any authenticated call can answer. */
const AUTH_ERRORS: ErrorCode[] = ["invalid_token", "token_expired", "unknown_workload", "issuer_unavailable", "store_unavailable", "internal"];
const PUBLIC_ERRORS: ErrorCode[] = ["internal"];

// --- the document -------------------------------------------------------------------------------

type JsonSchema = Record<string, unknown>;

/** `/v1/leases/:id` → `/v1/leases/{id}` */
export function openApiPath(expressPath: string): string {
  return expressPath.replace(/:([A-Za-z0-9_]+)/g, "{$1}");
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });

function strip(schema: JsonSchema): JsonSchema {
  const { $schema: _s, $id: _i, ...rest } = schema;
  return rest;
}

function inline(schema: z.ZodType, io: "input" | "output"): JsonSchema {
  return strip(z.toJSONSchema(schema, { target: "draft-2020-12", io, unrepresentable: "any" }) as JsonSchema);
}

export interface OpenApiOptions {
  version?: string;
  /** `server.public_url`. */
  serverUrl?: string;
}

export function buildOpenApiDocument(routes: ApiRoute[], opts: OpenApiOptions = {}): Record<string, unknown> {
  const inputs = z.registry<{ id: string }>();
  const outputs = z.registry<{ id: string }>();
  const names = new Map<z.ZodType, string>();
  const used = new Set<string>();
  const register = (schema: z.ZodType, fallback: string, io: "input" | "output"): string => {
    const known = namedSchemas().get(schema);
    const name = known?.name ?? names.get(schema) ?? fallback;
    if (!names.has(schema)) {
      if (used.has(name)) throw new Error(`OpenAPI component name ${name} is used by two schemas`);
      used.add(name);
      names.set(schema, name);
      (io === "input" ? inputs : outputs).add(schema, { id: name });
    }
    return name;
  };
  // Every named component is documented, used by a route or not (feature modules may name more).
  for (const [schema, c] of namedSchemas()) register(schema, c.name, c.io);

  const paths: Record<string, Record<string, unknown>> = {};
  const operationIds = new Set<string>();
  for (const r of routes) {
    if (operationIds.has(r.operationId)) throw new Error(`operationId ${r.operationId} is used twice`);
    operationIds.add(r.operationId);
    const p = openApiPath(r.path);
    const parameters: Record<string, unknown>[] = [];
    for (const name of [...r.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]!)) {
      const param = r.params?.[name];
      parameters.push({ name, in: "path", required: true, description: param?.description ?? name, schema: param ? inline(param.schema, "input") : { type: "string" } });
    }
    if (r.query) {
      const q = inline(r.query, "input") as { properties?: Record<string, JsonSchema>; required?: string[] };
      for (const [name, schema] of Object.entries(q.properties ?? {})) {
        const { description, ...s } = schema;
        parameters.push({ name, in: "query", required: (q.required ?? []).includes(name) && !("default" in s), ...(description ? { description } : {}), schema: s });
      }
    }
    const responses: Record<string, unknown> = {};
    for (const [status, res] of Object.entries(r.responses)) {
      responses[status] = {
        description: res.description,
        ...(res.headers ? { headers: Object.fromEntries(Object.entries(res.headers).map(([h, d]) => [h, { description: d.description, schema: inline(d.schema, "output") }])) } : {}),
        ...(res.schema
          ? {
              content: {
                [res.contentType ?? "application/json"]: {
                  schema: res.contentType && res.contentType !== "application/json" ? inline(res.schema, "output") : ref(register(res.schema, `${r.operationId}Response${status}`, "output")),
                },
              },
            }
          : {}),
      };
    }
    const byStatus = new Map<number, ErrorCode[]>();
    for (const code of [...new Set([...(r.auth === "workload" ? AUTH_ERRORS : PUBLIC_ERRORS), ...(r.errors ?? [])])]) {
      const st = ERROR_STATUS[code];
      byStatus.set(st, [...(byStatus.get(st) ?? []), code]);
    }
    for (const [st, codes] of [...byStatus].sort(([a], [b]) => a - b)) {
      if (responses[st]) continue;
      responses[st] = {
        description: codes.map((c) => `\`${c}\` (${ERROR_TITLES[c]})`).join(", "),
        content: { "application/problem+json": { schema: ref("Problem") } },
      };
    }
    paths[p] ??= {};
    paths[p][r.method] = {
      operationId: r.operationId,
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      tags: r.tags,
      ...(r.auth === "none" ? { security: [] } : {}),
      ...(parameters.length ? { parameters } : {}),
      ...(r.body
        ? {
            requestBody: {
              required: !r.bodyOptional,
              content: Object.fromEntries((r.bodyMediaTypes ?? ["application/json"]).map((t) => [t, { schema: ref(register(r.body!, `${r.operationId}Request`, "input")) }])),
            },
          }
        : {}),
      responses,
    };
  }

  const schemas: Record<string, JsonSchema> = {};
  const uri = (id: string) => `#/components/schemas/${id}`;
  for (const [registry, io] of [
    [outputs, "output"],
    [inputs, "input"],
  ] as const) {
    const out = z.toJSONSchema(registry, { target: "draft-2020-12", io, uri, unrepresentable: "any" }) as { schemas: Record<string, JsonSchema> };
    for (const [name, s] of Object.entries(out.schemas)) schemas[name] = strip(s);
  }

  return {
    openapi: "3.1.0",
    info: {
      title: "jitbroker",
      version: opts.version ?? "0.1.0",
      summary: "Just-in-time ephemeral credentials for workloads",
      description:
        "A workload proves who it is with a JWT (OIDC or SPIFFE JWT-SVID), names a task and a role, and gets a short-lived credential scoped to that task. Every credential is a lease, revoked when its task completes, when it expires, or when its owner or an operator says so. Errors are RFC 9457 problem documents with a stable `code`.",
      license: { name: "Apache-2.0", identifier: "Apache-2.0" },
    },
    ...(opts.serverUrl ? { servers: [{ url: opts.serverUrl }] } : {}),
    security: [{ workloadToken: [] }],
    tags: [
      { name: "credentials", description: "Agents and CI jobs: credentials for tasks" },
      { name: "leases", description: "One lease, by its owner or an operator" },
      { name: "operators", description: "Human workloads allowed by policy: listing, bulk revocation, history" },
      { name: "approvals", description: "Credential requests that need an operator's approval" },
      { name: "identity", description: "Who the caller is" },
      { name: "tokens", description: "Verifying broker-issued JWTs" },
      { name: "operations", description: "Health, readiness, metrics, this document" },
    ],
    paths,
    components: {
      securitySchemes: {
        workloadToken: { type: "http", scheme: "bearer", bearerFormat: "JWT", description: "The workload's OIDC token or SPIFFE JWT-SVID, audience = server.audience" },
      },
      schemas,
    },
  };
}
