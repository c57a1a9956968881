/**
 * The Cedar entity model of the broker (docs/ARCHITECTURE.md, Request path): how a DecisionRequest becomes the
 * principal, action, resource, context and entities of a Cedar authorization call.
 *
 *   principal  Workload::"<workload id>"  attrs { kind, owner, issuer, subject, claims }
 *              claims is a record: strings, longs, booleans, and sets of those (a list claim)
 *   action     Action::"request" | Action::"admin_read" | Action::"admin_revoke" | Action::"approve"
 *              | Action::"delegate" (a narrower copy of another lease, RFC 8693: src/oauth)
 *   resource   Role::"<role name>"  attrs { backend, labels }  (labels: record of strings)
 *                - for Action::"request" (minting a credential for that role) and "delegate";
 *              Broker::"jitbroker"  no attrs
 *                - for the admin actions (admin_read, admin_revoke) and approve, which act on the
 *                  broker as a whole. (The engine accepts either resource for any action: a
 *                  caller may authorize an approval against the Role being approved instead.)
 *   context    { task: { id, intent, tool, destination, sensitivity }, ttl_seconds, approved, ... }
 *              absent task fields are empty strings; ttl_seconds is a long; approved a bool;
 *              extra keys are passed through as Cedar values (null/undefined members dropped).
 *
 * There is no schema (policies are not validated against one), so policies must guard optional
 * attributes: `resource.labels has access && resource.labels.access == "read"`.
 */
import type * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import type { ActionName, DecisionRequest } from "./types";

/** The broker as a resource is named by the authorization module (src/authz/context.ts). */
export { BROKER_RESOURCE_ID } from "../authz/context";

const ACTIONS: ReadonlySet<string> = new Set<ActionName>(["request", "admin_read", "admin_revoke", "approve", "delegate"]);

type Json = cedar.CedarValueJson;

/** Keys that Cedar's JSON format reads as entity references or extension values. */
const RESERVED_KEYS = new Set(["__entity", "__extn", "__expr"]);

/**
 * Converts a JS value to a Cedar JSON value. Throws on what Cedar cannot represent faithfully
 * (the decision then fails closed), except that, with `lossyNumbers`, a number that is not a
 * safe integer becomes its decimal string (Cedar has only 64-bit longs; token claims such as
 * `"auth_time": 1.5` should not make every decision of a workload fail).
 */
export function toCedarValue(v: unknown, where: string, lossyNumbers = false): Json {
  switch (typeof v) {
    case "string":
    case "boolean":
      return v;
    case "number":
      if (Number.isSafeInteger(v)) return v;
      if (lossyNumbers && Number.isFinite(v)) return String(v);
      throw new Error(`${where}: ${v} is not an integer Cedar can represent`);
    case "object": {
      if (v === null) break;
      if (Array.isArray(v)) return v.map((x, i) => toCedarValue(x, `${where}[${i}]`, lossyNumbers));
      const proto = Object.getPrototypeOf(v) as unknown;
      if (proto !== Object.prototype && proto !== null) break;
      const out: Record<string, Json> = {};
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        if (RESERVED_KEYS.has(k)) throw new Error(`${where}.${k}: reserved key`);
        if (x === undefined || x === null) continue;
        out[k] = toCedarValue(x, `${where}.${k}`, lossyNumbers);
      }
      return out;
    }
  }
  throw new Error(`${where}: cannot pass ${v === null ? "null" : typeof v} to a policy`);
}

function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}

export interface CedarRequest {
  principal: cedar.EntityUid;
  action: cedar.EntityUid;
  resource: cedar.EntityUid;
  context: cedar.Context;
  entities: cedar.Entities;
}

/** Builds the Cedar request. Throws if the request cannot be represented (caller denies). */
export function toCedarRequest(req: DecisionRequest): CedarRequest {
  if (!ACTIONS.has(req.action)) throw new Error(`unknown action ${JSON.stringify(req.action)}`);
  const p = req.principal;
  const principal = { type: "Workload", id: p.id };
  const principalEntity: cedar.EntityJson = {
    uid: principal,
    attrs: {
      kind: p.kind,
      owner: p.owner,
      issuer: p.issuer,
      subject: p.subject,
      claims: toCedarValue(p.claims ?? {}, "principal.claims", true),
    },
    parents: [],
  };

  const r = req.resource;
  let resource: cedar.TypeAndId;
  let resourceEntity: cedar.EntityJson;
  if ("type" in r && r.type === "Broker") {
    resource = { type: "Broker", id: r.id };
    resourceEntity = { uid: resource, attrs: {}, parents: [] };
  } else {
    const role = r as Exclude<typeof r, { type: "Broker" }>;
    resource = { type: "Role", id: role.name };
    resourceEntity = {
      uid: resource,
      attrs: { backend: role.backend, labels: toCedarValue(role.labels ?? {}, "resource.labels") },
      parents: [],
    };
  }

  const { task, ttl_seconds, approved, ...extra } = req.context;
  if (!Number.isSafeInteger(ttl_seconds)) throw new Error(`context.ttl_seconds: ${String(ttl_seconds)} is not an integer`);
  if (typeof approved !== "boolean") throw new Error("context.approved: not a boolean");
  const context: cedar.Context = {};
  for (const [k, x] of Object.entries(extra)) {
    if (x === undefined || x === null) continue;
    if (RESERVED_KEYS.has(k)) throw new Error(`context.${k}: reserved key`);
    context[k] = toCedarValue(x, `context.${k}`);
  }
  context["task"] = {
    id: str(task?.id),
    intent: str(task?.intent),
    tool: str(task?.tool),
    destination: str(task?.destination),
    sensitivity: str(task?.sensitivity),
  };
  context["ttl_seconds"] = ttl_seconds;
  context["approved"] = approved;

  return {
    principal,
    action: { type: "Action", id: req.action },
    resource,
    context,
    entities: [principalEntity, resourceEntity],
  };
}
