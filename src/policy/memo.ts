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
import { timeContext } from "../authz/context";
import { recheckLease, type Recheck, type RecheckInputs } from "../authz/recheck";
import type { DecisionInputs } from "../leases/store";
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

/**
 * The text of everything `recheckLease` reads of a lease, for leases decided against one policy
 * set and inventory: its grant (workload, identity, claims, role, backend, TTL, depth), its
 * task's attributes, asked TTL, approval (present or not), chain and person, and, only as far as
 * a policy of the set reads them (`reads`, src/policy/context-reads.ts), its task id and the time
 * it was issued at. Undefined when it cannot be built (decide the lease alone).
 */
export function recheckKey(lease: DecisionInputs, reads: ReadTree, timeZone?: string): string | undefined {
  try {
    const varying = projected({ task: { id: lease.task.id }, time: timeContext(lease.issued_ms, timeZone) }, reads);
    const t = lease.task;
    const d = lease.delegation;
    return JSON.stringify([
      lease.workload,
      lease.role,
      lease.backend,
      lease.identity.issuer,
      lease.identity.subject,
      lease.claims,
      t.intent,
      t.tool,
      t.destination,
      t.sensitivity,
      lease.ttl_seconds,
      lease.asked_ttl_seconds,
      lease.approval !== undefined,
      d ? [d.depth, d.chain] : null,
      lease.obo,
      varying,
    ]);
  } catch {
    return undefined;
  }
}

/**
 * `recheckLease` for the leases of one walk (src/policy/reauthorize.ts), answered once for every
 * lease with the same `recheckKey`: most leases of a walk share their workload, role, task
 * attributes and issue hour with many others, and building their Cedar requests one by one (the
 * decision memo's key, src/policy/memo.ts) was most of the walk's cost after reading them.
 * Bound to the engine's policy set (emptied when it is replaced, checked on every call); at most
 * `maxEntries` answers, then emptied. Meant for one walk: the inventory (`roles`, `workloads`)
 * is the one the walk was started with.
 */
export function memoizeRechecks(inputs: RecheckInputs, opts: { maxEntries?: number } = {}): (lease: DecisionInputs) => Recheck {
  const max = Math.max(1, opts.maxEntries ?? 10_000);
  const memo = new Map<string, Recheck>();
  let boundTo: PolicySet | undefined;
  let reads: ReadTree | undefined;
  return (lease) => {
    // Synchronous from here to the answer: the set checked is the set that decides.
    const set = inputs.policy.set();
    if (set !== boundTo) {
      memo.clear();
      boundTo = set;
      reads = contextReads(set);
    }
    const key = recheckKey(lease, reads!, inputs.timeZone);
    if (key === undefined) return recheckLease(lease, inputs);
    const hit = memo.get(key);
    if (hit) return { ...hit };
    const r = recheckLease(lease, inputs);
    if (memo.size >= max) memo.clear();
    memo.set(key, { ...r });
    return r;
  };
}
