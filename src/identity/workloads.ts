/**
 * Maps a verified identity to exactly one workload of the inventory (docs/ARCHITECTURE.md, Request path):
 * same issuer, the exact `subject` if the workload names one, and every listed claim equal to
 * one of its configured values. Pure: the inventory is compiled once, matching does no I/O.
 */
import { BrokerError } from "../core/errors";
import type { WorkloadConfig } from "../config/schema";
import type { Identity } from "./verify";

type Scalar = string | number | boolean;

export interface Workload {
  id: string;
  kind: WorkloadConfig["kind"];
  owner: string;
  purpose: string;
  issuer: string;
  subject: string | undefined;
  claims: Record<string, Scalar[]>;
  /** Per-workload overrides of the broker's limits. */
  limits?: { requests_per_minute?: number; active_leases?: number };
}

export interface WorkloadMatcher {
  match(identity: Pick<Identity, "issuer" | "subject" | "claims">): Workload;
  get(id: string): Workload | undefined;
  all(): Workload[];
}

export function claimMatches(actual: unknown, allowed: readonly Scalar[]): boolean {
  // Exact match of a scalar claim. Numbers and strings compare by their text so that a YAML
  // `912345` and a token's "912345" agree; arrays and objects in the token never match.
  if (typeof actual !== "string" && typeof actual !== "number" && typeof actual !== "boolean") return false;
  return allowed.some((v) => v === actual || (typeof v !== "boolean" && typeof actual !== "boolean" && String(v) === String(actual)));
}

export function compileWorkloads(configs: WorkloadConfig[]): WorkloadMatcher {
  const workloads: Workload[] = configs.map((w) => ({
    id: w.id,
    kind: w.kind,
    owner: w.owner,
    purpose: w.purpose,
    issuer: w.issuer,
    subject: w.subject,
    claims: Object.fromEntries(Object.entries(w.claims).map(([k, v]) => [k, Array.isArray(v) ? v : [v]])),
    ...(w.limits ? { limits: w.limits } : {}),
  }));
  const byIssuer = new Map<string, Workload[]>();
  for (const w of workloads) byIssuer.set(w.issuer, [...(byIssuer.get(w.issuer) ?? []), w]);
  const byId = new Map(workloads.map((w) => [w.id, w]));

  return {
    match(identity) {
      const candidates = (byIssuer.get(identity.issuer) ?? []).filter(
        (w) =>
          (w.subject === undefined || w.subject === identity.subject) &&
          Object.entries(w.claims).every(([name, allowed]) => claimMatches(identity.claims[name], allowed)),
      );
      if (candidates.length === 1) return candidates[0]!;
      if (candidates.length === 0) {
        throw new BrokerError("unknown_workload", "the token is valid but matches no workload of the inventory", { reason: "no_match" });
      }
      // Fail closed: an identity matching several workloads is an inventory error, never a guess.
      throw new BrokerError("unknown_workload", `the token matches ${candidates.length} workloads; the inventory must be unambiguous`, {
        reason: "ambiguous",
      });
    },
    get: (id) => byId.get(id),
    all: () => workloads,
  };
}
