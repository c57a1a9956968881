/**
 * One route table (docs/ARCHITECTURE.md, How to add a route): every API route is declared once as
 * an `ApiRoute` spec in its feature's `api.ts` and reaches express only through `mount`, so the
 * router and the OpenAPI document cannot drift apart. Only the console's and the dev issuer's
 * browser pages (not part of the API, not in the document) register paths directly.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

const SRC = path.join(__dirname, "../../src");
const NOT_API = [path.join("src", "console"), path.join("src", "dev")];

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    if (statSync(p).isDirectory()) return files(p);
    return p.endsWith(".ts") && !p.endsWith(".test.ts") ? [p] : [];
  });
}

describe("the route table exists once", () => {
  it("no API route is registered on express except through mount(router, spec, ...)", () => {
    const direct: string[] = [];
    for (const f of files(SRC)) {
      const rel = path.relative(path.join(SRC, ".."), f);
      if (NOT_API.some((d) => rel.startsWith(d + path.sep))) continue;
      const text = readFileSync(f, "utf8");
      for (const m of text.matchAll(/\b\w+\.(get|post|put|patch|delete|all)\(\s*(["'`]\/|[A-Z_]+_PATH\b)/g)) {
        const line = text.slice(0, m.index).split("\n").length;
        direct.push(`${rel}:${line}: ${m[0]}`);
      }
    }
    expect(direct).toEqual([]);
  });

  it("every feature's spec has a unique operationId and method + path", async () => {
    const { apiRoutes } = await import("../../src/api");
    const routes = apiRoutes();
    const keys = routes.map((r) => `${r.method} ${r.path}`);
    expect(new Set(keys).size).toBe(keys.length);
    expect(new Set(routes.map((r) => r.operationId)).size).toBe(routes.length);
  });
});
