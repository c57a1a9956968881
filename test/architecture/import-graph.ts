/**
 * The value-import graph of `src/`, read with the TypeScript compiler's parser (no type
 * checking): every `import`/`export ... from` that is not type-only, `import x = require()`,
 * `require("…")` and `import("…")` calls. An `import { type A, type B }` whose every binding is
 * a type counts as a type import; anything else is a runtime dependency. Used by
 * `imports.test.ts` (docs/ARCHITECTURE.md, Feature folders).
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import ts from "typescript";

export const ROOT = path.resolve(__dirname, "../..");
export const SRC = path.join(ROOT, "src");

export interface ImportEdge {
  /** Importing file, relative to `src/` (e.g. `leases/service.ts`). */
  from: string;
  /** Imported file, relative to `src/`, without extension (e.g. `policy/engine`). */
  to: string;
  line: number;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) return sourceFiles(p);
    return name.endsWith(".ts") && !name.endsWith(".test.ts") && !name.endsWith(".d.ts") ? [p] : [];
  });
}

/** The module specifiers a file imports values from (type-only imports and exports left out). */
export function valueSpecifiers(file: string, text: string): { spec: string; line: number }[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const out: { spec: string; line: number }[] = [];
  const add = (node: ts.Node, spec: ts.Expression | undefined) => {
    if (spec && ts.isStringLiteralLike(spec)) out.push({ spec: spec.text, line: sf.getLineAndCharacterOfPosition(node.getStart()).line + 1 });
  };
  const visit = (node: ts.Node) => {
    if (ts.isImportDeclaration(node)) {
      const c = node.importClause;
      const typeOnly =
        c !== undefined &&
        (c.isTypeOnly ||
          (c.name === undefined &&
            c.namedBindings !== undefined &&
            ts.isNamedImports(c.namedBindings) &&
            c.namedBindings.elements.length > 0 &&
            c.namedBindings.elements.every((e) => e.isTypeOnly)));
      if (!typeOnly) add(node, node.moduleSpecifier);
    } else if (ts.isExportDeclaration(node)) {
      const typeOnly =
        node.isTypeOnly ||
        (node.exportClause !== undefined &&
          ts.isNamedExports(node.exportClause) &&
          node.exportClause.elements.length > 0 &&
          node.exportClause.elements.every((e) => e.isTypeOnly));
      if (!typeOnly) add(node, node.moduleSpecifier);
    } else if (ts.isImportEqualsDeclaration(node)) {
      if (!node.isTypeOnly && ts.isExternalModuleReference(node.moduleReference)) add(node, node.moduleReference.expression);
    } else if (ts.isCallExpression(node)) {
      const callee = node.expression;
      const isDynamicImport = callee.kind === ts.SyntaxKind.ImportKeyword;
      const isRequire = ts.isIdentifier(callee) && callee.text === "require";
      if (isDynamicImport || isRequire) add(node, node.arguments[0]);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

/** Every value import from one file of `src/` to another. */
export function importEdges(): ImportEdge[] {
  const edges: ImportEdge[] = [];
  for (const abs of sourceFiles(SRC)) {
    const from = path.relative(SRC, abs).split(path.sep).join("/");
    for (const { spec, line } of valueSpecifiers(abs, readFileSync(abs, "utf8"))) {
      if (!spec.startsWith(".")) continue;
      const target = path.relative(SRC, path.resolve(path.dirname(abs), spec)).split(path.sep).join("/").replace(/\.(ts|js)$/, "");
      if (target.startsWith("..")) continue;
      edges.push({ from, to: target, line });
    }
  }
  return edges;
}

/** The top-level unit of `src/` a file belongs to: its folder, or the file itself (`broker`). */
export function folderOf(rel: string): string {
  const first = rel.split("/")[0]!;
  return rel.includes("/") ? first : first.replace(/\.ts$/, "");
}

/** Folder → folders it imports values from, with the file-level edges behind each. */
export function folderGraph(edges: ImportEdge[]): Map<string, Map<string, ImportEdge[]>> {
  const g = new Map<string, Map<string, ImportEdge[]>>();
  for (const e of edges) {
    const a = folderOf(e.from);
    const b = folderOf(e.to);
    if (a === b) continue;
    const row = g.get(a) ?? new Map<string, ImportEdge[]>();
    row.set(b, [...(row.get(b) ?? []), e]);
    g.set(a, row);
  }
  return g;
}

/** Strongly connected components with more than one folder (Tarjan). */
export function cycles(g: Map<string, Map<string, unknown>>): string[][] {
  const nodes = new Set<string>([...g.keys(), ...[...g.values()].flatMap((r) => [...r.keys()])]);
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const strong = (v: string) => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    on.add(v);
    for (const w of g.get(v)?.keys() ?? []) {
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1) out.push(comp.sort());
    }
  };
  for (const v of [...nodes].sort()) if (!idx.has(v)) strong(v);
  return out;
}
