import { Router } from "express";
import { mount } from "../http/api";
import { IDENTITY_API } from "./api";

/** `GET /v1/whoami`: the workload the token maps to and the identity it was read from. */
export function identityRoutes(): Router {
  const r = Router();
  mount(r, IDENTITY_API.whoami, (req, res) => {
    const { identity, workload } = req.auth!;
    res.json({
      workload: { id: workload.id, kind: workload.kind, owner: workload.owner, purpose: workload.purpose },
      identity: {
        kind: identity.kind,
        issuer: identity.issuer,
        iss: identity.iss ?? null,
        subject: identity.subject,
        // Only the claims the inventory matched on: tokens may carry personal data.
        matched_claims: Object.fromEntries(Object.keys(workload.claims).map((c) => [c, identity.claims[c]])),
        expires_at: new Date(identity.expiresAt).toISOString(),
      },
    });
  });
  return r;
}
