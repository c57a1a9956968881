/**
 * Reading policy files from glob patterns (config `policy.files`, already made absolute by the
 * config loader).
 *
 * Node 22+ has `fs.promises.glob`, which is used when present. Node 20 does not, so the fallback
 * supports what the configuration needs: wildcards (`*`, `?`) in the last path segment only,
 * matched against the entries of that directory (dotfiles are matched only by a pattern that
 * starts with a dot, as in shells). A pattern with a wildcard elsewhere is refused with a
 * PolicyError rather than half-supported.
 *
 * A pattern that matches nothing, or whose directory does not exist, contributes no file: an
 * empty policy set is valid and denies everything. Files are returned sorted by path, each once.
 */
import { promises as fsp } from "node:fs";
import path from "node:path";
import { PolicyError, type PolicyFile } from "./types";

const WILDCARD = /[*?[\]{}]/;

type GlobFn = (pattern: string) => AsyncIterable<string>;

function nativeGlob(): GlobFn | undefined {
  const g = (fsp as unknown as { glob?: GlobFn }).glob;
  return typeof g === "function" ? g.bind(fsp) : undefined;
}

function segmentRegExp(segment: string): RegExp {
  let re = "^";
  for (const ch of segment) {
    if (ch === "*") re += "[^/]*";
    else if (ch === "?") re += "[^/]";
    else re += ch.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(re + "$");
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await fsp.stat(p)).isFile();
  } catch {
    return false;
  }
}

async function expandFallback(pattern: string): Promise<string[]> {
  const dir = path.dirname(pattern);
  const last = path.basename(pattern);
  if (WILDCARD.test(dir) || /[[\]{}]/.test(last)) {
    throw new PolicyError([`${pattern}: only * and ? in the last path segment are supported on this Node version`]);
  }
  if (!WILDCARD.test(last)) return (await isFile(pattern)) ? [pattern] : [];
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return [];
    throw e;
  }
  const re = segmentRegExp(last);
  const out: string[] = [];
  for (const name of names) {
    if (name.startsWith(".") && !last.startsWith(".")) continue;
    if (!re.test(name)) continue;
    const full = path.join(dir, name);
    if (await isFile(full)) out.push(full);
  }
  return out;
}

export async function loadPolicyFiles(patterns: string[]): Promise<PolicyFile[]> {
  const relative = patterns.filter((p) => !path.isAbsolute(p));
  if (relative.length > 0) {
    throw new PolicyError(relative.map((p) => `${p}: policy file patterns must be absolute paths`));
  }
  const glob = nativeGlob();
  const paths = new Set<string>();
  for (const pattern of patterns) {
    if (glob) {
      for await (const p of glob(pattern)) if (await isFile(p)) paths.add(path.resolve(p));
    } else {
      for (const p of await expandFallback(pattern)) paths.add(path.resolve(p));
    }
  }
  const sorted = [...paths].sort();
  return Promise.all(sorted.map(async (p) => ({ path: p, text: await fsp.readFile(p, "utf8") })));
}
