/**
 * Reloads the policy set when its files change (fs.watch on each pattern's directory, debounced)
 * or when asked (SIGHUP, the admin endpoint). A set that does not compile is refused and the
 * running set stays in force: a typo never opens or closes everything by accident.
 */
import { watch, type FSWatcher } from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import { compilePolicies, loadPolicyFiles, PolicyError, type PolicyEngine } from "./engine";

export interface ReloadResult {
  ok: boolean;
  changed: boolean;
  hash: string;
  policies: number;
  problems?: string[];
}

export function createPolicyReloader(opts: {
  engine: PolicyEngine;
  patterns: string[];
  logger: Logger;
  onReload?: (r: ReloadResult, previousHash: string) => Promise<void> | void;
  debounceMs?: number;
}) {
  let running: Promise<ReloadResult> | null = null;
  let again = false;

  async function reloadOnce(): Promise<ReloadResult> {
    const previous = opts.engine.set().hash;
    let result: ReloadResult;
    try {
      const set = compilePolicies(await loadPolicyFiles(opts.patterns));
      opts.engine.replace(set);
      result = { ok: true, changed: set.hash !== previous, hash: set.hash, policies: set.policies.length };
      if (result.changed) opts.logger.info({ hash: set.hash, previous, policies: set.policies.length }, "policy set reloaded");
    } catch (e) {
      const problems = e instanceof PolicyError ? e.problems : [(e as Error).message];
      result = { ok: false, changed: false, hash: previous, policies: opts.engine.set().policies.length, problems };
      opts.logger.error({ problems }, "policy reload refused; the previous policy set stays in force");
    }
    await opts.onReload?.(result, previous);
    return result;
  }

  /** Reloads now; concurrent calls share one reload (and one more runs if files changed meanwhile). */
  function reload(): Promise<ReloadResult> {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        let r = await reloadOnce();
        while (again) {
          again = false;
          r = await reloadOnce();
        }
        return r;
      } finally {
        running = null;
      }
    })();
    return running;
  }

  const watchers: FSWatcher[] = [];
  let timer: NodeJS.Timeout | undefined;
  for (const dir of new Set(opts.patterns.map((p) => path.dirname(p)))) {
    try {
      const w = watch(dir, { persistent: false }, () => {
        clearTimeout(timer);
        timer = setTimeout(() => void reload(), opts.debounceMs ?? 200);
      });
      w.on("error", () => undefined);
      watchers.push(w);
    } catch {
      opts.logger.warn({ dir }, "policy directory cannot be watched; reload with SIGHUP or the admin endpoint");
    }
  }

  return {
    reload,
    close(): void {
      clearTimeout(timer);
      for (const w of watchers) w.close();
    },
  };
}
