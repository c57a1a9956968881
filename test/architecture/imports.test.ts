/**
 * The dependency rule of docs/ARCHITECTURE.md (Feature folders), checked over the value imports
 * of `src/` (import-graph.ts: `import type` and all-type bindings do not count; `require()` and
 * `import()` do):
 *
 *  1. no import cycle between the top-level units of `src/` (its folders, and `broker.ts`);
 *  2. no unit imports another folder's `service.ts` or `routes.ts` but the composition roots
 *     (`src/broker.ts`, the CLI and the GitHub Action, which build and mount them);
 *  3. the shared layers stay below the features: `core` imports nothing of `src/`, `redis` and
 *     the HTTP shell (`http`) only `core`, the authorization module (`authz`) only `core` and
 *     `identity`;
 *  4. nothing imports the composition roots.
 *
 * PENDING lists, one by one, the file edges that still break a rule, with why; the test also
 * fails when one of them is gone, so the list only shrinks.
 */
import { cycles, folderGraph, folderOf, importEdges, valueSpecifiers, type ImportEdge } from "./import-graph";

const PENDING: { from: string; to: string; why: string }[] = [];

/** The composition roots: the broker process, the CLI, and the GitHub Action (a CLI client). */
const ROOTS = (file: string) => file === "broker.ts" || file.startsWith("cli/") || file.startsWith("action/");
const SHARED: Record<string, string[]> = { core: [], redis: ["core"], http: ["core"], authz: ["core", "identity"] };

const pending = (e: ImportEdge) => PENDING.some((p) => p.from === e.from && p.to === e.to);
const where = (e: ImportEdge) => `src/${e.from}:${e.line} imports src/${e.to}`;

describe("the dependency rule between the folders of src/ (docs/ARCHITECTURE.md, Feature folders)", () => {
  const all = importEdges();
  const edges = all.filter((e) => !pending(e));

  it("reads the whole tree (the graph is not empty)", () => {
    expect(all.length).toBeGreaterThan(200);
    expect([...new Set(all.map((e) => folderOf(e.from)))].sort()).toEqual(expect.arrayContaining(["authz", "leases", "policy", "approvals", "http", "broker"]));
  });

  it("has no import cycle between folders", () => {
    const found = cycles(folderGraph(edges));
    if (found.length > 0) {
      const g = folderGraph(edges);
      const detail = found.map((comp) => {
        const inside = new Set(comp);
        const lines = comp.flatMap((a) => [...(g.get(a) ?? new Map<string, ImportEdge[]>())].filter(([b]) => inside.has(b)).flatMap(([, es]) => es.map(where)));
        return `cycle between ${comp.join(", ")}:\n    ${lines.join("\n    ")}`;
      });
      throw new Error(`import cycles (move the shared piece down: src/authz, src/core, a types file):\n  ${detail.join("\n  ")}`);
    }
    expect(found).toEqual([]);
  });

  it("no feature imports another feature's service or routes module (only the composition roots do)", () => {
    const bad = edges.filter((e) => !ROOTS(e.from) && folderOf(e.from) !== folderOf(e.to) && /(^|\/)(service|routes)$/.test(e.to)).map(where);
    expect(bad).toEqual([]);
  });

  it("the shared layers import only what is below them", () => {
    const bad = edges
      .filter((e) => folderOf(e.from) in SHARED && folderOf(e.to) !== folderOf(e.from) && !SHARED[folderOf(e.from)]!.includes(folderOf(e.to)))
      .map(where);
    expect(bad).toEqual([]);
  });

  it("nothing imports the composition roots", () => {
    const bad = edges.filter((e) => !ROOTS(e.from) && (e.to === "broker" || e.to.startsWith("cli/"))).map(where);
    expect(bad).toEqual([]);
  });

  it("every pending exception still exists (remove it from PENDING once fixed)", () => {
    const gone = PENDING.filter((p) => !all.some((e) => e.from === p.from && e.to === p.to));
    expect(gone).toEqual([]);
  });
});

describe("the import graph reader", () => {
  const specs = (text: string) => valueSpecifiers("x.ts", text).map((s) => s.spec);

  it("counts value imports, re-exports, require() and import(), not type-only imports", () => {
    const text = [
      'import { a } from "./value";',
      'import type { T } from "./type-only";',
      'import { type T2, type T3 } from "./all-type-bindings";',
      'import { type T4, b } from "./mixed";',
      'import * as ns from "./namespace";',
      'import "./side-effect";',
      'export { c } from "./re-export";',
      'export type { T5 } from "./type-re-export";',
      'export * from "./star";',
      'const d = require("./required");',
      'const e = () => import("./dynamic");',
      'let f: import("./type-position").T;',
      'import g = require("./import-equals");',
    ].join("\n");
    expect(specs(text).sort()).toEqual(["./dynamic", "./import-equals", "./mixed", "./namespace", "./re-export", "./required", "./side-effect", "./star", "./value"].sort());
  });

  it("finds a cycle through three folders, and none in a chain", () => {
    const g = (pairs: [string, string][]) => new Map(pairs.map(([a, b]) => [a, new Map([[b, []]])]));
    expect(cycles(g([["leases", "policy"], ["policy", "http"], ["http", "leases"]]))).toEqual([["http", "leases", "policy"]]);
    expect(cycles(g([["leases", "policy"], ["policy", "authz"], ["authz", "core"]]))).toEqual([]);
  });
});
