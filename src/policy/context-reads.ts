/**
 * What the policies of a set can read of a decision's context (docs/ARCHITECTURE.md, Revocation
 * paths: re-authorization), from Cedar's JSON form of each policy. Used to decide once for every
 * request that agrees on all of it (src/policy/memo.ts): a context field no policy reads (a
 * lease's `task.id`, the minute it was issued at) cannot change a decision.
 *
 * A read is a chain of attribute accesses on `context`: `context.time.hour` reads the path
 * [time, hour]; `context has task.id` reads [task, id] (its presence, kept with its value);
 * `context.task` used as a value (`context.task == {...}`, `{a: context.task}`) reads all of
 * `task`. Any other use of `context` (`context == {}`, `[context]`, a construct this analysis
 * does not know) reads the whole context. So the analysis can be wrong only towards reading
 * more, which costs decisions, never correctness.
 */
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";
import type { PolicySet } from "./types";

/** A tree of read paths: `all` = the whole value here is read; otherwise only `children`. */
export interface ReadTree {
  all: boolean;
  children: Map<string, ReadTree>;
  /** `children` sorted by name (filled on first use). */
  sorted?: [string, ReadTree][];
}

const node = (): ReadTree => ({ all: false, children: new Map() });

function addPath(root: ReadTree, path: readonly string[]): void {
  let n = root;
  for (const attr of path) {
    if (n.all) return;
    let c = n.children.get(attr);
    if (!c) n.children.set(attr, (c = node()));
    n = c;
  }
  n.all = true;
  n.children.clear();
}

const isContextVar = (e: unknown): boolean => e !== null && typeof e === "object" && !Array.isArray(e) && (e as { Var?: unknown }).Var === "context";

/**
 * The attribute path of `e` if it is `context` followed only by attribute accesses
 * (`context.a.b` → [a, b], `context` → []); undefined otherwise.
 */
function accessPath(e: unknown): string[] | undefined {
  if (isContextVar(e)) return [];
  if (e === null || typeof e !== "object" || Array.isArray(e)) return undefined;
  const dot = (e as Record<string, unknown>)["."] as { left?: unknown; attr?: unknown } | undefined;
  if (!dot || typeof dot.attr !== "string" || Object.keys(e).length !== 1) return undefined;
  const left = accessPath(dot.left);
  return left === undefined ? undefined : [...left, dot.attr];
}

/** Adds to `reads` every read of `context` in a policy's JSON form (or its conditions). */
function collect(e: unknown, reads: ReadTree): void {
  if (Array.isArray(e)) {
    for (const x of e) collect(x, reads);
    return;
  }
  if (e === null || typeof e !== "object") return;
  const rec = e as Record<string, unknown>;
  if (isContextVar(rec)) {
    addPath(reads, []); // a bare `context`: everything
    return;
  }
  const path = accessPath(rec);
  if (path !== undefined) {
    addPath(reads, path);
    return;
  }
  const has = rec["has"] as { left?: unknown; attr?: unknown } | undefined;
  if (has && Object.keys(rec).length === 1) {
    const left = accessPath(has.left);
    const attrs = typeof has.attr === "string" ? [has.attr] : Array.isArray(has.attr) && has.attr.length > 0 && has.attr.every((a) => typeof a === "string") ? (has.attr as string[]) : undefined;
    if (left !== undefined && attrs !== undefined) {
      addPath(reads, [...left, ...attrs]);
      return;
    }
  }
  for (const v of Object.values(rec)) collect(v, reads);
}

const cache = new WeakMap<PolicySet, ReadTree>();

/** What the policies of `set` read of the context (computed once per set). */
export function contextReads(set: PolicySet): ReadTree {
  let reads = cache.get(set);
  if (reads) return reads;
  reads = node();
  for (const p of set.policies) {
    const r = cedar.policyToJson(p.text);
    // A compiled set always parses; if one did not, nothing is known of what it reads.
    if (r.type !== "success") addPath(reads, []);
    else collect(r.json, reads);
    if (reads.all) break;
  }
  cache.set(set, reads);
  return reads;
}

/** The read paths as dotted strings, sorted ("" = the whole context); for logs and tests. */
export function readPaths(reads: ReadTree): string[] {
  const out: string[] = [];
  const walk = (n: ReadTree, prefix: string[]) => {
    if (n.all) out.push(prefix.join("."));
    for (const [k, c] of n.children) walk(c, [...prefix, k]);
  };
  walk(reads, []);
  return out.sort();
}

/**
 * The text of the part of a Cedar JSON value (strings, integers, booleans, arrays, records, as
 * `toCedarRequest` builds them) that `reads` covers: the whole of what is read as a whole; of a
 * record read in part, each read attribute (`-` if absent); a value read in part that is not a
 * record (an access on it fails) is kept whole, after `!`. Two values have the same text only if
 * they agree on every read part (records whose keys come in another order may differ: that only
 * splits a group).
 */
export function projected(v: unknown, reads: ReadTree): string {
  if (reads.all) return JSON.stringify(v);
  if (reads.children.size === 0) return "_";
  if (v === null || typeof v !== "object" || Array.isArray(v)) return `!${JSON.stringify(v)}`;
  const rec = v as Record<string, unknown>;
  let out = "{";
  for (const [k, child] of reads.sorted ?? sortChildren(reads)) {
    out += `${JSON.stringify(k)}:${Object.hasOwn(rec, k) ? projected(rec[k], child) : "-"},`;
  }
  return `${out}}`;
}

function sortChildren(reads: ReadTree): [string, ReadTree][] {
  reads.sorted = [...reads.children].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return reads.sorted;
}
