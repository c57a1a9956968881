/**
 * What a release bundle carries inside itself: the package version and the example policies.
 * From a checkout (dist/ compiled by tsc) both are read from the repository's files; the release
 * bundle (scripts/release, esbuild) replaces `__JITBROKER_BUILD__` with their contents, so the
 * bundled CLI and the single executable need no file beside them but the Cedar wasm.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";

interface BuildInfo {
  version: string;
  /** file name → Cedar text of config/policies/*.cedar */
  examplePolicies: Record<string, string>;
}

declare const __JITBROKER_BUILD__: BuildInfo | undefined;

const ROOT = path.resolve(__dirname, "../..");

let cached: BuildInfo | undefined;

function info(): BuildInfo {
  if (cached) return cached;
  if (typeof __JITBROKER_BUILD__ !== "undefined") return (cached = __JITBROKER_BUILD__);
  const version = (JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string }).version;
  const dir = path.join(ROOT, "config/policies");
  const examplePolicies: Record<string, string> = {};
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".cedar")).sort()) examplePolicies[f] = readFileSync(path.join(dir, f), "utf8");
  return (cached = { version, examplePolicies });
}

/** The package version (`jitbroker --version`). */
export const packageVersion = (): string => info().version;

/** The example policies `jitbroker dev` copies to its policy directory. */
export const examplePolicies = (): Record<string, string> => info().examplePolicies;
