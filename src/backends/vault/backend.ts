/**
 * The `vault` credential backend: the broker as the per-task, policy-checked front door to
 * Vault's dynamic secrets and child tokens.
 *
 * Two kinds of role (`role.vault`):
 * - `path`: any dynamic-secret endpoint that answers with a lease (database/creds/<r>,
 *   aws/creds/<r>, rabbitmq/creds/<r>...). The lease TTL is pushed to Vault as `ttl` (POST) where
 *   the engine takes it (`ttl_param`, default: try, and fall back to GET on 405). A Vault lease
 *   longer than the broker's lease is recorded as `backend_expires_at` and revocation covers the
 *   gap (I2). Revoked with `PUT sys/leases/revoke {lease_id}`. Handle `{lease_id}`.
 * - `token_role`: a child token from `POST auth/token/create/<role>` with `ttl` and
 *   `explicit_max_ttl` = the lease's remaining seconds, `renewable: false`, the role's `policies`
 *   and metadata (workload, task, lease id). Revoked by accessor (`POST
 *   auth/token/revoke-accessor`). Handle `{accessor}`: the token itself is never stored (I6).
 *
 * Revocation (I4): 400/404 (unknown lease or accessor) is "already gone", i.e. success; sealed,
 * unreachable, slow, 429 and 5xx throw a retryable BackendError (the revoker retries with capped
 * backoff and bounds concurrency per backend). A sealed Vault makes `status()` unavailable
 * (/readyz, `jitbroker_vault_up`) without making the broker unready.
 *
 * Reconciliation (worker only, `reconcile_interval`): see reconcile.ts.
 */
import type { LoadedConfig } from "../../config/load";
import type { RoleConfig } from "../../config/schema";
import type { Lease } from "../../leases/types";
import type { BackendDeps } from "../registry";
import { BackendError, remainingSeconds, type Backend, type MintResult, type RevocationTarget } from "../types";
import { createVaultSession, vaultTimings, VaultCallError, type VaultResponse, type VaultSession } from "./client";
import { createReconciler, type ReconcileReport } from "./reconcile";
import { repeat } from "../../core/repeat";

export interface VaultBackend extends Backend {
  kind: "vault";
  revocation: "revocable";
  /** Compares Vault's leases under the path roles with the broker's and revokes orphans, once. */
  reconcile(): Promise<ReconcileReport>;
  /** Resolves once the first login attempt is over (either way). */
  ready(): Promise<void>;
  /** Probes Vault's health now (the periodic check does the same). */
  probe(): Promise<void>;
}

/** Vault's display_name: the workload id, in the characters Vault keeps (it prefixes "token-"). */
export function displayName(workload: string): string {
  return `jitbroker-${workload.replace(/[^A-Za-z0-9_-]/g, "-")}`.slice(0, 64);
}

/** Maps a failed Vault call to what the revoker and the service expect. */
function backendError(e: unknown, what: string): BackendError {
  if (e instanceof BackendError) return e;
  if (e instanceof VaultCallError) {
    // A refusal (403) is the broker's token or policy: an operator fixes it and the retries
    // pick it up. A 400/404/405 or a redirect is the role's path or the address: misconfigured.
    // A 403 or a redirect may also clear by itself (an expired token: the session logs in again).
    const code = e.transient ? "unavailable" : e.failure === "denied" ? "denied" : "misconfigured";
    return new BackendError(`${what}: ${e.message}`, code, { retryable: e.transient || e.failure === "denied" || e.failure === "redirect" });
  }
  return new BackendError(`${what}: ${(e as Error)?.message ?? "unexpected error"}`, "unavailable");
}

const isGone = (e: unknown) => e instanceof VaultCallError && (e.status === 400 || e.status === 404);

/** What the vault backend uses of the broker (BackendDeps without the Redis connection it does not need). */
export type VaultBackendDeps = Pick<BackendDeps, "logger" | "registry" | "now" | "store" | "audit" | "parts" | "roles">;

export function createVaultBackend(cfg: LoadedConfig, deps: VaultBackendDeps): VaultBackend {
  const vcfg = cfg.backends.vault;
  if (!vcfg) throw new Error("backends.vault is not configured");
  const logger = deps.logger.child({ backend: "vault" });
  const timings = vaultTimings(vcfg);
  const now = deps.now;
  const session: VaultSession = createVaultSession({ cfg: vcfg, dir: cfg.dir, logger, registry: deps.registry, now });

  /** Paths whose engine refused POST with a ttl (405): read with GET from then on. */
  const refusesTtl = new Set<string>();

  async function mintLease(lease: Lease, role: RoleConfig, p: string, ttl: number, ttlParam: boolean | undefined): Promise<MintResult> {
    const what = `minting ${role.name}`;
    let res: VaultResponse;
    const post = ttlParam === true || (ttlParam === undefined && !refusesTtl.has(p));
    try {
      res = post ? await session.call("mint", "POST", p, { ttl: `${ttl}s` }) : await session.call("mint", "GET", p);
    } catch (e) {
      if (!(post && ttlParam === undefined && e instanceof VaultCallError && e.failure === "unsupported")) throw backendError(e, what);
      refusesTtl.add(p);
      logger.info({ role: role.name, path: p }, "vault engine takes no ttl on this path (405 on POST); reading it with GET and relying on revocation");
      try {
        res = await session.call("mint", "GET", p);
      } catch (e2) {
        throw backendError(e2, what);
      }
    }
    const leaseId = typeof res.lease_id === "string" ? res.lease_id : "";
    if (leaseId === "") {
      // A static secret (kv) has no lease: the broker could never revoke it.
      throw new BackendError(`${what}: vault path ${p} answered without a lease; only dynamic-secret endpoints can back a role`, "misconfigured");
    }
    if (res.data === null || typeof res.data !== "object") {
      await session.call("undo_mint", "PUT", "sys/leases/revoke", { lease_id: leaseId }).catch(() => undefined);
      throw new BackendError(`${what}: vault answered without data`, "invalid_response");
    }
    const duration = Number(res.lease_duration ?? 0);
    const out: MintResult = {
      credential: { type: "vault", data: res.data, lease_id: leaseId, lease_duration: duration > 0 ? Math.min(duration, ttl) : ttl },
      handle: { lease_id: leaseId },
    };
    // I2: Vault may keep the secret longer than the lease (database/creds ignores ttl): say so.
    if (duration > ttl + 1) out.backendExpiresAt = new Date(now() + duration * 1000);
    return out;
  }

  async function mintToken(lease: Lease, role: RoleConfig, tokenRole: string, policies: string[] | undefined, ttl: number): Promise<MintResult> {
    const what = `minting ${role.name}`;
    // One path segment, never `.`/`..` (auth/token/create/. would be auth/token/create/: a child
    // of the broker's own token). The configuration refuses these; this is the last line.
    if (!/^[A-Za-z0-9_.@-]+$/.test(tokenRole) || tokenRole === "." || tokenRole === "..") {
      throw new BackendError(`${what}: token_role "${tokenRole.slice(0, 130)}" is not a Vault token role name`, "misconfigured");
    }
    let res: VaultResponse;
    try {
      res = await session.call("mint", "POST", `auth/token/create/${tokenRole}`, {
        ttl: `${ttl}s`,
        explicit_max_ttl: `${ttl}s`,
        renewable: false,
        ...(policies ? { policies } : {}),
        meta: { workload: lease.workload, task: lease.task_id, lease_id: lease.id },
        display_name: displayName(lease.workload),
      });
    } catch (e) {
      throw backendError(e, what);
    }
    const a = res.auth;
    const secret = typeof a?.client_token === "string" && a.client_token !== "" ? a.client_token : null;
    const accessor = typeof a?.accessor === "string" && a.accessor !== "" ? a.accessor : null;
    if (!secret || !accessor) {
      if (accessor) await session.call("undo_mint", "POST", "auth/token/revoke-accessor", { accessor }).catch(() => undefined);
      else if (secret) await session.call("undo_mint", "POST", "auth/token/revoke", { token: secret }).catch(() => undefined);
      throw new BackendError(`${what}: vault answered without a token and its accessor`, "invalid_response");
    }
    const duration = Number(a?.lease_duration ?? 0);
    const out: MintResult = {
      credential: {
        type: "vault",
        data: { token: secret, accessor, policies: Array.isArray(a?.policies) ? a.policies : [] },
        lease_duration: duration > 0 ? Math.min(duration, ttl) : ttl,
      },
      handle: { accessor },
    };
    if (duration > ttl + 1) out.backendExpiresAt = new Date(now() + duration * 1000);
    return out;
  }

  async function mint(lease: Lease, role: RoleConfig): Promise<MintResult> {
    const v = role.vault;
    if (!v) throw new BackendError(`role ${role.name} has no vault section`, "misconfigured");
    const ttl = remainingSeconds(lease, now());
    if (!(ttl >= 1)) throw new BackendError(`lease ${lease.id} expires before a credential could be valid`, "misconfigured");
    if (v.token_role !== undefined) return mintToken(lease, role, v.token_role, v.policies, ttl);
    return mintLease(lease, role, v.path!, ttl, v.ttl_param);
  }

  /** Revokes one Vault lease by id; "already gone" (400/404) is success (I4). */
  async function revokeLeaseId(leaseId: string, op: string): Promise<"revoked" | "gone"> {
    try {
      await session.call(op, "PUT", "sys/leases/revoke", { lease_id: leaseId });
      return "revoked";
    } catch (e) {
      if (isGone(e)) return "gone";
      throw e;
    }
  }

  async function revoke(lease: RevocationTarget, handle: Record<string, string>): Promise<void> {
    try {
      if (handle.lease_id) {
        if ((await revokeLeaseId(handle.lease_id, "revoke")) === "gone") logger.info({ lease_id: lease.id }, "vault lease already gone");
        return;
      }
      if (handle.accessor) {
        try {
          await session.call("revoke", "POST", "auth/token/revoke-accessor", { accessor: handle.accessor });
        } catch (e) {
          if (!isGone(e)) throw e;
          logger.info({ lease_id: lease.id }, "vault token already gone");
        }
        return;
      }
    } catch (e) {
      throw backendError(e, `revoking lease ${lease.id}`);
    }
    throw new BackendError(`lease ${lease.id} has no vault handle (lease_id or accessor)`, "misconfigured");
  }

  const reconciler = createReconciler({
    session,
    store: deps.store,
    audit: deps.audit,
    logger,
    registry: deps.registry,
    now,
    // Read at each pass: a reload may add, change or remove path roles.
    roles: () => [...deps.roles().values()].filter((r) => r.backend === "vault" && r.vault?.path !== undefined).map((r) => ({ name: r.name, path: r.vault!.path! })),
    // A lease younger than this may belong to a mint whose handle is not recorded yet.
    graceMs: Math.max(timings.reconcile_grace, cfg.worker.mint_timeout + 5000),
    revoke: (id) => revokeLeaseId(id, "reconcile_revoke"),
  });

  session.start();
  const every = timings.reconcile_interval;
  // Jittered (80-100% of the interval) so that several workers do not list Vault in step.
  const reconciliation =
    deps.parts.worker && every > 0
      ? repeat(
          () => reconciler.run(),
          () => Math.round(every * (0.8 + Math.random() * 0.2)),
          (e) => logger.warn({ error: e.message }, "vault reconciliation failed"),
        )
      : null;

  return {
    kind: "vault",
    revocation: "revocable",
    mint,
    revoke,
    status: () => session.status(),
    reconcile: () => reconciler.run(),
    ready: () => session.ready(),
    probe: () => session.probe(),
    async close() {
      reconciliation?.stop();
      session.close();
    },
  };
}
