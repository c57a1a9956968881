/**
 * Who is asking (docs/ARCHITECTURE.md, Operators and authorization): the authenticated caller
 * (`AuthContext`: the verified token's identity and the inventory workload it matched) and the
 * Cedar principal built from it, `Workload::"<id>"` {kind, owner, issuer, subject, claims}.
 * `claims` holds only the claims the workload's inventory entry constrains: a policy never sees
 * a claim the matcher did not check.
 */
import type { Identity } from "../identity/verify";
import type { Workload } from "../identity/workloads";
import type { ClaimValue, PrincipalInfo } from "../policy/types";

export interface AuthContext {
  identity: Identity;
  workload: Workload;
}

/** The principal of a request by an authenticated caller. */
export function principalOf(auth: AuthContext) {
  const w = auth.workload;
  return {
    id: w.id,
    kind: w.kind,
    owner: w.owner,
    issuer: auth.identity.issuer,
    subject: auth.identity.subject,
    claims: Object.fromEntries(Object.keys(w.claims).map((c) => [c, auth.identity.claims[c] as string | number | boolean])),
  };
}

/**
 * The principal of a lease decided again (re-authorization): the workload as the inventory
 * has it now, with the identity and the claims the lease was issued with.
 */
export function leasePrincipal(w: Pick<Workload, "id" | "kind" | "owner">, lease: { identity: { issuer: string; subject: string }; claims: Record<string, unknown> }): PrincipalInfo {
  return { id: w.id, kind: w.kind, owner: w.owner, issuer: lease.identity.issuer, subject: lease.identity.subject, claims: lease.claims as Record<string, ClaimValue> };
}
