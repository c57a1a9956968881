/**
 * The live inventory (workloads and roles) and its reload from the configuration file. Only
 * `workloads` and `roles` take effect without a restart; a change to any other section is
 * reported as needing one. A file that does not load is refused and the running inventory stays.
 */
import type { LoadedConfig } from "../config/load";
import { ConfigError } from "../config/load";
import type { RoleConfig } from "../config/schema";
import { compileWorkloads, type WorkloadMatcher } from "../identity/workloads";

export interface InventoryCandidate {
  ok: boolean;
  changed: boolean;
  workloads: number;
  roles: number;
  /** Top-level sections that changed in the file but only take effect after a restart. */
  restart_required: string[];
  problems?: string[];
  apply(): void;
}

const LIVE = new Set(["workloads", "roles", "file", "dir"]);

export function createInventory(initial: LoadedConfig, load?: () => LoadedConfig) {
  let cfg = initial;
  // What the file said at start: command-line overrides (dev --port, JITBROKER_LISTEN) are not
  // changes of the file, so sections are compared file to file.
  let lastLoaded: LoadedConfig = initial;
  try {
    if (load) lastLoaded = load();
  } catch {
    /* the running configuration is the baseline */
  }
  let matcher = compileWorkloads(initial.workloads);
  let roles = new Map<string, RoleConfig>(initial.roles.map((r) => [r.name, r]));
  let version = 0;

  /** A matcher that always reads the current inventory (handed to long-lived components). */
  const workloads: WorkloadMatcher = {
    match: (identity) => matcher.match(identity),
    get: (id) => matcher.get(id),
    all: () => matcher.all(),
  };

  return {
    workloads,
    roles: () => roles,
    /** Bumped by every reload that changed workloads or roles. */
    version: () => version,
    /** Loads the next inventory without applying it; `apply()` swaps it in. */
    prepare(load: () => LoadedConfig): InventoryCandidate {
      let next: LoadedConfig;
      try {
        next = load();
      } catch (e) {
        const problems = e instanceof ConfigError ? e.problems : [(e as Error).message];
        return { ok: false, changed: false, workloads: matcher.all().length, roles: roles.size, restart_required: [], problems, apply() {} };
      }
      const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
      const changed = !same(next.workloads, cfg.workloads) || !same(next.roles, cfg.roles);
      const sections = new Set([...Object.keys(lastLoaded), ...Object.keys(next)]);
      const before = lastLoaded as unknown as Record<string, unknown>;
      const restart = [...sections].filter((s) => !LIVE.has(s) && !same(before[s], (next as unknown as Record<string, unknown>)[s])).sort();
      return {
        ok: true,
        changed,
        workloads: next.workloads.length,
        roles: next.roles.length,
        restart_required: restart,
        apply() {
          lastLoaded = next;
          if (!changed) return;
          matcher = compileWorkloads(next.workloads);
          roles = new Map(next.roles.map((r) => [r.name, r]));
          cfg = { ...cfg, workloads: next.workloads, roles: next.roles };
          version++;
        },
      };
    },
  };
}

export type Inventory = ReturnType<typeof createInventory>;
