#!/usr/bin/env node
// Builds the operators' console front end (web/console) into dist/console-web: one bundled,
// minified ES module (Preact included, no CDN), the stylesheet and the HTML shell. Part of
// `npm run build`; prints the bundle sizes.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync, statSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const web = path.join(root, "web/console");
const out = path.join(root, "dist/console-web");
rmSync(out, { recursive: true, force: true });
mkdirSync(path.join(out, "assets"), { recursive: true });
await build({
  entryPoints: [path.join(web, "src/main.tsx")],
  outfile: path.join(out, "assets/app.js"),
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "none",
  logLevel: "warning",
});
copyFileSync(path.join(web, "app.css"), path.join(out, "assets/app.css"));
copyFileSync(path.join(web, "index.html"), path.join(out, "index.html"));
const size = (f) => {
  const p = path.join(out, f);
  return `${f} ${statSync(p).size} B (${gzipSync(readFileSync(p)).length} B gzip)`;
};
console.error(`console front end: ${size("assets/app.js")}, ${size("assets/app.css")}`);
