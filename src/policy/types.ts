/** Types of the policy engine (docs/ARCHITECTURE.md, Request path). Re-exported by engine.ts, the module to import. */

export interface PolicyFile {
  path: string;
  text: string;
}

export interface CompiledPolicy {
  /** The `@id("...")` annotation, else `<file basename>#<0-based index of the policy in its file>`. */
  id: string;
  effect: "permit" | "forbid";
  /** Every annotation of the policy; an annotation without a value (`@foo`) maps to "". */
  annotations: Record<string, string>;
  /** Path of the file the policy came from. */
  file: string;
  /** The policy as written (from its first annotation to its `;`), comments before it excluded. */
  text: string;
  /** 1-based line of the policy's first token in `file`. */
  line?: number;
}

export interface PolicySet {
  policies: CompiledPolicy[];
  /** sha256 hex of the canonical set: JSON of [[id, text], ...] sorted by id (see hashPolicies). */
  hash: string;
}

export type ClaimValue = string | number | boolean;

export interface PrincipalInfo {
  id: string;
  kind: string;
  owner: string;
  issuer: string;
  subject: string;
  claims: Record<string, ClaimValue | ClaimValue[]>;
}

export interface ResourceInfo {
  name: string;
  backend: string;
  labels: Record<string, string>;
}

/** The broker itself, the resource of admin actions: `Broker::"jitbroker"`. */
export interface BrokerResource {
  type: "Broker";
  id: string;
}

export type ActionName = "request" | "admin_read" | "admin_revoke" | "approve" | "delegate";

export interface TaskContext {
  id: string;
  intent: string;
  tool: string;
  destination: string;
  sensitivity: string;
}

export interface DecisionRequest {
  principal: PrincipalInfo;
  action: ActionName;
  resource: ResourceInfo | BrokerResource;
  context: {
    task: TaskContext;
    ttl_seconds: number;
    approved: boolean;
    [k: string]: unknown;
  };
}

export interface Decision {
  decision: "allow" | "deny";
  /**
   * The determining policies, sorted: on allow the permits that were satisfied; on deny the
   * forbids that were satisfied (or failed to evaluate, see engine.ts); empty on default deny.
   */
  policyIds: string[];
  policyHash: string;
  /** On allow: the minimum `@max_ttl` over the determining permits (absent if none has one). */
  maxTtlSeconds?: number;
  /** On allow: some determining permit has `@approval("required")`. Always false on deny. */
  approvalRequired: boolean;
  /** Evaluation problems, as `policy <id>: <message>` (or the engine failure that denied). */
  errors: string[];
}

export interface PolicyEngine {
  decide(req: DecisionRequest): Decision;
  set(): PolicySet;
  /** Swaps in a new set atomically; if it cannot be loaded, throws and keeps the current one. */
  replace(set: PolicySet): void;
}

/** A policy set that does not compile; `problems` lists every problem as "file:line: message". */
export class PolicyError extends Error {
  readonly problems: string[];

  constructor(problems: string[], summary?: string) {
    const head = summary ?? `${problems.length} policy problem${problems.length === 1 ? "" : "s"}`;
    super(problems.length > 0 ? `${head}:\n  ${problems.join("\n  ")}` : head);
    this.name = "PolicyError";
    this.problems = problems;
  }
}
