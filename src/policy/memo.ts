/**
 * Decisions taken once for many identical requests (docs/ARCHITECTURE.md, Revocation paths:
 * re-authorization). A Cedar decision is a pure function of the policy set and of the request
 * Cedar is given: the principal entity (id, kind, owner, issuer, subject, claims), the action,
 * the resource entity (role name, backend, labels) and the context. Cedar has no clock and the
 * broker gives it no other entities. Two requests that agree on all of that, except context
 * fields no policy of the set reads (src/policy/context-reads.ts), get the same decision.
 *
 * `memoizeDecisions(engine)` is an engine whose `decide` keys each request by the canonical text
 * of exactly that: the Cedar request as `toCedarRequest` builds it (so what Cedar sees, after
 * its conversions, is what is compared), with the context projected on what the set reads. The
 * memo is bound to one policy set: when the engine's set is replaced, it is emptied before the
 * next decision. A request that cannot be converted is decided by the engine itself (it fails
 * closed there, per request). Bounded: at most `maxEntries` decisions, the least recently used
 * dropped first.
 *
 * Meant for a re-authorization walk (one memo per walk, src/policy/reauthorize.ts), where
 * thousands of leases share a workload, role, task intent and issue hour: the walk then costs a
 * Cedar call per distinct request instead of one per lease.
 */
import { contextReads, projected, type ReadTree } from "./context-reads";
import { toCedarRequest } from "./request";
import type { BrokerResource, Decision, DecisionRequest, PolicyEngine, PolicySet, ResourceInfo } from "./types";

export interface MemoStats {
  /** Requests answered. */
  decisions: number;
  /** Of those, the ones that needed a Cedar call. */
  evaluated: number;
}

export interface DecisionMemo extends PolicyEngine {
  stats(): MemoStats;
}

/** The key of a request under `reads`: undefined if the request cannot be keyed (decide it alone). */
export function decisionKey(req: DecisionRequest, reads: ReadTree): string | undefined {
  try {
    const call = toCedarRequest(req);
    // Claims, labels and the context went through toCedarValue (plain JSON); these did not.
    const p = req.principal;
    const r = req.resource as Partial<ResourceInfo & BrokerResource>;
    const plain = [p.id, p.kind, p.owner, p.issuer, p.subject, ...("type" in r ? [r.id] : [r.name, r.backend])];
    if (!plain.every((s) => typeof s === "string")) return undefined;
    // A JSON text is self-delimiting: the two parts cannot run into each other.
    return JSON.stringify([req.action, call.entities]) + projected(call.context, reads);
  } catch {
    return undefined;
  }
}

export function memoizeDecisions(engine: PolicyEngine, opts: { maxEntries?: number } = {}): DecisionMemo {
  const max = Math.max(1, opts.maxEntries ?? 10_000);
  const memo = new Map<string, Decision>();
  let boundTo: PolicySet | undefined;
  let reads: ReadTree | undefined;
  const stats: MemoStats = { decisions: 0, evaluated: 0 };

  function decide(req: DecisionRequest): Decision {
    stats.decisions++;
    // Synchronous from here to the engine's answer: the set checked is the set that decides.
    const set = engine.set();
    if (set !== boundTo) {
      memo.clear();
      boundTo = set;
      reads = contextReads(set);
    }
    const key = decisionKey(req, reads!);
    if (key === undefined) {
      stats.evaluated++;
      return engine.decide(req);
    }
    const hit = memo.get(key);
    if (hit) {
      // Least recently used goes first: move the entry to the end.
      memo.delete(key);
      memo.set(key, hit);
      return copy(hit);
    }
    stats.evaluated++;
    const d = engine.decide(req);
    if (memo.size >= max) memo.delete(memo.keys().next().value!);
    memo.set(key, copy(d));
    return d;
  }

  return {
    decide,
    set: () => engine.set(),
    replace: (set) => engine.replace(set),
    stats: () => ({ ...stats }),
  };
}

/** Callers get their own arrays: a caller that edits a decision cannot change the memo's. */
function copy(d: Decision): Decision {
  return { ...d, policyIds: [...d.policyIds], errors: [...d.errors] };
}
