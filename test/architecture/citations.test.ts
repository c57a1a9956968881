/**
 * Comments cite docs/ARCHITECTURE.md by section ("docs/ARCHITECTURE.md, Request path", or an
 * anchor, "docs/ARCHITECTURE.md#request-path") and the invariants by name (I1 to I10). This
 * keeps those citations pointing at sections that exist, and keeps out citations of a design
 * document the repository does not contain.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

const ROOT = path.resolve(__dirname, "../..");
const DOC = readFileSync(path.join(ROOT, "docs/ARCHITECTURE.md"), "utf8");

/** Headings of the document, and their GitHub anchors. */
const headings = [...DOC.matchAll(/^#{2,4} (.+)$/gm)].map((m) => m[1]!.trim());
const anchor = (h: string) =>
  h
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, "")
    .replace(/ /g, "-");
const anchors = new Set(headings.map(anchor));
const invariants = headings.map((h) => /^(I\d+) /.exec(h)?.[1]).filter((x): x is string => x !== undefined);

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    if (name === "node_modules" || name.startsWith(".")) return [];
    if (statSync(p).isDirectory()) return files(p);
    return /\.(ts|js|mjs|cjs|sh)$/.test(name) || !name.includes(".") ? [p] : [];
  });
}

const sources = ["src", "test", "scripts"].flatMap((d) => files(path.join(ROOT, d))).filter((f) => !f.endsWith("citations.test.ts"));

/** Comment continuation markers removed, so a citation wrapped over two lines reads as one. */
const unwrap = (s: string) => s.replace(/\s*\n\s*(\*(?!\/)|\/\/|#)?\s*/g, " ");

describe("citations of docs/ARCHITECTURE.md", () => {
  it("the document defines the invariants I1 to I10", () => {
    expect(invariants).toEqual(["I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9", "I10"]);
  });

  it("the contents list every section, by its anchor", () => {
    const sections = [...DOC.matchAll(/^## (.+)$/gm)].map((m) => m[1]!.trim()).filter((h) => h !== "Contents");
    const listed = [...DOC.matchAll(/^- \[(.+?)\]\(#([\w-]+)\)/gm)].map((m) => [m[1], m[2]]);
    expect(listed).toEqual(sections.map((h) => [h, anchor(h)]));
  });

  it("every cited section exists", () => {
    const bad: string[] = [];
    let checked = 0;
    for (const file of sources) {
      const text = readFileSync(file, "utf8");
      const rel = path.relative(ROOT, file);
      for (const m of text.matchAll(/docs\/ARCHITECTURE\.md(#[\w-]+|, ?[\s\S]{0,120})?/g)) {
        const line = text.slice(0, m.index).split("\n").length;
        const tail = m[1];
        if (tail === undefined) continue;
        checked++;
        if (tail.startsWith("#")) {
          if (!anchors.has(tail.slice(1))) bad.push(`${rel}:${line}: no section with anchor ${tail}`);
          continue;
        }
        const cited = unwrap(tail.replace(/^, ?/, "")).replace(/^["'`“]/, "").toLowerCase();
        const ok = headings.some((h) => cited.startsWith(h.toLowerCase())) || invariants.some((i) => new RegExp(`^${i.toLowerCase()}\\b`).test(cited));
        if (!ok) bad.push(`${rel}:${line}: "docs/ARCHITECTURE.md, ${unwrap(tail.slice(1)).trim().slice(0, 50)}…" names no section (headings: ${headings.join(" | ")})`);
      }
    }
    if (bad.length > 0) throw new Error(`citations of sections that do not exist:\n  ${bad.join("\n  ")}`);
    expect(checked).toBeGreaterThan(20);
  });

  it("nothing cites DESIGN.md, which the repository does not contain", () => {
    const found: string[] = [];
    for (const file of sources) {
      readFileSync(file, "utf8")
        .split("\n")
        .forEach((l, i) => {
          if (/DESIGN\.md/.test(l)) found.push(`${path.relative(ROOT, file)}:${i + 1}: ${l.trim()}`);
        });
    }
    if (found.length > 0) throw new Error(`cite docs/ARCHITECTURE.md (a section heading, or I1-I10) instead:\n  ${found.join("\n  ")}`);
  });
});
