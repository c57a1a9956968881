/**
 * Every route of the broker's API, as the OpenAPI document lists them (src/http/openapi.ts):
 * the specs each feature declares once in its `api.ts` and mounts on express with `mount`
 * (docs/ARCHITECTURE.md, How to add a route).
 */
import { APPROVALS_API } from "./approvals/api";
import type { ApiRoute } from "./http/api";
import { OPERATIONS_API } from "./http/operations";
import { IDENTITY_API } from "./identity/api";
import { LEASES_API } from "./leases/api";
import { TOKENS_API } from "./oauth/api";
import { oauthApiRoutes } from "./oauth/openapi";
import { POLICY_API } from "./policy/api";

export function apiRoutes(): ApiRoute[] {
  const o = OPERATIONS_API;
  const l = LEASES_API;
  return [
    o.health,
    o.readiness,
    o.metrics,
    o.openapi,
    ...Object.values(TOKENS_API),
    ...Object.values(IDENTITY_API),
    l.requestCredential,
    l.completeTask,
    l.getLease,
    l.revokeLease,
    o.operatorReadiness,
    l.listLeases,
    l.startRevocation,
    l.getRevocation,
    l.leaseHistory,
    ...Object.values(APPROVALS_API),
    ...Object.values(POLICY_API),
    ...oauthApiRoutes(),
  ];
}
