// @ts-check
/**
 * esbuild bundles of jitbroker, shared by scripts/release and the tests that check them:
 * - the CLI in one CommonJS file (the npm tarball's `jitbroker` bin and the single executable's
 *   main script): every dependency inlined, the version and the example policies inlined
 *   (src/release/build-info.ts), the Cedar wasm read from beside the bundle or, in a single
 *   executable, from its `cedar_wasm_bg.wasm` asset;
 * - the GitHub Action (actions/exchange/dist/main.js and post.js): the client and the output
 *   formatting only, committed to the repository so that a workflow runs it without installing
 *   anything.
 * Plain JavaScript so that it runs with `node` alone, before anything is compiled.
 */
"use strict";
const { readdirSync, readFileSync } = require("node:fs");
const path = require("node:path");
const esbuild = require("esbuild");

const ROOT = path.resolve(__dirname, "../..");
const CEDAR_WASM = "cedar_wasm_bg.wasm";

/** The Cedar wasm file the bundle needs beside it (or as a single-executable asset). */
function cedarWasmPath() {
  return path.join(path.dirname(require.resolve("@cedar-policy/cedar-wasm/nodejs", { paths: [ROOT] })), CEDAR_WASM);
}

function buildInfo() {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));
  const dir = path.join(ROOT, "config/policies");
  /** @type {Record<string, string>} */
  const examplePolicies = {};
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".cedar")).sort()) examplePolicies[f] = readFileSync(path.join(dir, f), "utf8");
  return { version: String(pkg.version), examplePolicies };
}

/**
 * cedar-wasm's Node build reads `${__dirname}/cedar_wasm_bg.wasm` when it loads. In a single
 * executable there is no such file: the bytes come from the executable's asset instead. The build
 * fails if cedar-wasm no longer has the line this replaces, rather than shipping a CLI that
 * cannot load its policy engine.
 */
const cedarWasmPlugin = {
  name: "cedar-wasm-asset",
  /** @param {import("esbuild").PluginBuild} build */
  setup(build) {
    build.onLoad({ filter: /[\\/]@cedar-policy[\\/]cedar-wasm[\\/]nodejs[\\/]cedar_wasm\.js$/ }, (args) => {
      const text = readFileSync(args.path, "utf8");
      const line = "const wasmBytes = require('fs').readFileSync(wasmPath);";
      if (!text.includes(line)) {
        return { errors: [{ text: `${args.path} no longer reads its wasm with "${line}": update scripts/lib/bundle.js` }] };
      }
      const replacement = [
        "const wasmBytes = (() => {",
        "  let sea = null;",
        "  try { sea = require('node:sea'); } catch { /* Node without single executable support */ }",
        `  if (sea && sea.isSea()) return new Uint8Array(sea.getRawAsset(${JSON.stringify(CEDAR_WASM)}));`,
        `  return require('fs').readFileSync(require('path').join(__dirname, ${JSON.stringify(CEDAR_WASM)}));`,
        "})();",
      ].join("\n");
      return { contents: text.replace(line, replacement), loader: "js" };
    });
  },
};

/** @param {Partial<import("esbuild").BuildOptions>} extra */
function common(extra) {
  return {
    bundle: true,
    platform: /** @type {const} */ ("node"),
    format: /** @type {const} */ ("cjs"),
    target: "node20",
    legalComments: /** @type {const} */ ("none"),
    logLevel: /** @type {const} */ ("silent"),
    absWorkingDir: ROOT,
    ...extra,
  };
}

/**
 * The CLI (src/cli/main.ts) in one file. `msgpackr-extract` (BullMQ's optional native msgpack
 * speed-up) stays out: msgpackr falls back to its JavaScript implementation without it.
 * @param {string} outfile
 */
async function bundleCli(outfile) {
  const result = await esbuild.build(
    common({
      entryPoints: [path.join(ROOT, "src/cli/main.ts")],
      outfile,
      define: { __JITBROKER_BUILD__: JSON.stringify(buildInfo()) },
      external: ["msgpackr-extract"],
      plugins: [cedarWasmPlugin],
      metafile: true,
    }),
  );
  return { wasm: cedarWasmPath(), warnings: result.warnings, metafile: result.metafile };
}

const ACTION_DIR = path.join(ROOT, "actions/exchange/dist");
const ACTION_ENTRIES = { main: "src/action/main.ts", post: "src/action/post.ts" };

/**
 * The GitHub Action's two entry points. With `write: false` nothing is written and the files'
 * texts are returned (the test that checks the committed copies are up to date).
 * @param {{ write?: boolean }} [opts]
 * @returns {Promise<Record<string, string>>} path relative to the repository → contents
 */
async function bundleAction(opts = {}) {
  const write = opts.write !== false;
  const result = await esbuild.build(
    common({
      entryPoints: Object.fromEntries(Object.entries(ACTION_ENTRIES).map(([name, src]) => [name, path.join(ROOT, src)])),
      outdir: ACTION_DIR,
      banner: { js: "// Built by scripts/release from src/action (do not edit; a test checks this copy is up to date)." },
      write,
    }),
  );
  /** @type {Record<string, string>} */
  const out = {};
  for (const f of result.outputFiles ?? []) out[path.relative(ROOT, f.path)] = f.text;
  if (write) for (const name of Object.keys(ACTION_ENTRIES)) out[path.join("actions/exchange/dist", `${name}.js`)] = readFileSync(path.join(ACTION_DIR, `${name}.js`), "utf8");
  return out;
}

module.exports = { bundleCli, bundleAction, cedarWasmPath, buildInfo, CEDAR_WASM, ROOT };
