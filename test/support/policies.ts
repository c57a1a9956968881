/**
 * A writable copy of the shipped policies (config/policies), or of a test's own, for tests that
 * change the policy set.
 *
 * The broker reads `files` (`<root>/policies/*.cedar`) through a symlink, and `change()` applies an
 * edit to a fresh copy and points the link at it in one rename. The broker's file watcher
 * (src/policy/reload.ts) watches the directory the link pointed to when the broker started, so it
 * never sees such a change: only the reload the test makes (POST /v1/admin/policy/reload, SIGHUP)
 * reads it. A test about what the reload call does and reports needs that: a file written in the
 * watched directory is also reloaded by the watcher 200 ms later (debounced), which on a loaded
 * machine may come first (the call then finds nothing changed, and the walk it would have waited
 * for is the watcher's, still running, with actor "system") or at the same time.
 *
 * `edit()` writes in the directory the broker started with (the watched one): for tests of the
 * watcher itself.
 */
import { cpSync, mkdirSync, mkdtempSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

export const SHIPPED_POLICIES = path.resolve(__dirname, "../../config/policies");

export interface PolicyDir {
  /** The pattern for `policy.files`. */
  files: string;
  /** The directory the broker reads now (through the link). */
  current(): string;
  /**
   * Copies the current policies, lets `edit` change the copy (`write`/`remove` by file name), and
   * switches the broker's policy directory to it atomically, unseen by the file watcher.
   */
  change(edit: { write?: Record<string, string>; remove?: string[] }): void;
  /** Writes in place, in the directory the broker reads now (the file watcher sees it while that is the one it started with). */
  edit(name: string, text: string): void;
  close(): void;
}

/** The shipped policies, or the given files (name → text) instead. */
export function policyDir(opts: { files?: Record<string, string> } = {}): PolicyDir {
  const root = mkdtempSync(path.join(os.tmpdir(), "jit-policies-"));
  const link = path.join(root, "policies");
  let version = 1;
  if (opts.files) {
    mkdirSync(path.join(root, "v1"));
    for (const [name, text] of Object.entries(opts.files)) writeFileSync(path.join(root, "v1", name), text);
  } else cpSync(SHIPPED_POLICIES, path.join(root, "v1"), { recursive: true });
  symlinkSync(path.join(root, "v1"), link);
  return {
    files: path.join(link, "*.cedar"),
    current: () => realpathSync(link),
    change({ write = {}, remove = [] }) {
      const next = path.join(root, `v${++version}`);
      cpSync(realpathSync(link), next, { recursive: true });
      for (const [name, text] of Object.entries(write)) writeFileSync(path.join(next, name), text);
      for (const name of remove) rmSync(path.join(next, name), { force: true });
      const tmp = path.join(root, `link-v${version}`);
      symlinkSync(next, tmp);
      renameSync(tmp, link);
    },
    edit(name, text) {
      writeFileSync(path.join(realpathSync(link), name), text);
    },
    close() {
      rmSync(root, { recursive: true, force: true });
    },
  };
}
