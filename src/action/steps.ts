/**
 * The two steps of the GitHub Action actions/exchange (action.yml): `exchangeStep` (main) trades
 * the job's OIDC token for a credential of one task and exports it as masked environment
 * variables and step outputs; `completeStep` (post, run when the job ends, whatever happened)
 * completes the task, so that every lease of it is revoked at once.
 */
import { existsSync } from "node:fs";
import type { CredentialGrant } from "../client/types";
import { credentialVars, maskCommands, OutputError, type ExportVar } from "../cli/client/output";
import { ActionError, brokerClient, commandData, fileCommand, input, type Env, type Runner } from "./runner";

const TASK_ID = /^[A-Za-z0-9._:@-]{1,128}$/;

/** The task when the workflow names none: one per job run and attempt, e.g. `gha-912345-77-1-deploy`. */
export function defaultTask(env: Env): string {
  const run = env.GITHUB_RUN_ID;
  if (!run) throw new ActionError("input task is required (GITHUB_RUN_ID is not set, so no default task can be named)");
  const parts = ["gha", env.GITHUB_REPOSITORY_ID, run, env.GITHUB_RUN_ATTEMPT ?? "1", env.GITHUB_JOB].filter((p): p is string => !!p);
  return parts
    .join("-")
    .replace(/[^A-Za-z0-9._:@-]/g, "-")
    .slice(0, 128);
}

function requireFile(env: Env, name: "GITHUB_ENV" | "GITHUB_OUTPUT" | "GITHUB_STATE"): void {
  const f = env[name];
  if (!f) throw new ActionError(`${name} is not set: this runs as a step of a GitHub Actions job`);
  if (!existsSync(f)) throw new ActionError(`${name} names ${f}, which does not exist`);
}

const plain = (name: string, value: string): ExportVar => ({ name, value, secret: false });

export async function exchangeStep(r: Runner): Promise<void> {
  const url = input(r.env, "broker-url", { required: true });
  const role = input(r.env, "role", { required: true });
  const task = input(r.env, "task") || defaultTask(r.env);
  if (!TASK_ID.test(task)) throw new ActionError(`input task ${JSON.stringify(task)}: 1-128 characters of [A-Za-z0-9._:@-]`);
  const ttlText = input(r.env, "ttl");
  const ttl = ttlText === "" ? undefined : /^\d+$/.test(ttlText) ? Number(ttlText) : ttlText;
  const audience = input(r.env, "audience", { default: "jitbroker" });
  // Everything the step writes is checked before anything is minted.
  for (const f of ["GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_STATE"] as const) requireFile(r.env, f);
  const client = brokerClient(r, url, audience);
  // Saved first: the post step completes the task even if this step fails from here on.
  fileCommand(r.env, "GITHUB_STATE", [plain("task", task), plain("broker_url", url), plain("audience", audience)]);

  const grant: CredentialGrant = await client.requestCredential({ role, task: { id: task }, ...(ttl === undefined ? {} : { ttl }) });
  const giveBack = (why: string) => client.revoke(grant.lease.id, `not delivered by the jitbroker action: ${why}`).catch(() => undefined);
  let vars: ExportVar[];
  try {
    vars = credentialVars(grant);
  } catch (e) {
    if (!(e instanceof OutputError)) throw e;
    await giveBack(e.message);
    throw new ActionError(`${e.message} (lease ${grant.lease.id} revoked)`);
  }
  // Masks first, so that nothing printed later can show a secret.
  const masks = maskCommands(vars).trimEnd();
  if (masks) r.log(masks);
  try {
    fileCommand(r.env, "GITHUB_ENV", vars);
    fileCommand(r.env, "GITHUB_OUTPUT", [...vars, plain("lease-id", grant.lease.id), plain("expires-at", grant.lease.expires_at), plain("task", task)]);
    fileCommand(r.env, "GITHUB_STATE", [plain("lease_id", grant.lease.id)]);
  } catch (e) {
    await giveBack("could not write the runner's files");
    throw new ActionError(`cannot write GITHUB_ENV/GITHUB_OUTPUT: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (lease ${grant.lease.id} revoked)`);
  }
  r.log(
    commandData(
      `jitbroker: lease ${grant.lease.id} (${grant.lease.role}, task ${task}) until ${grant.lease.expires_at}; ` +
        `set ${vars.map((v) => v.name).join(", ")} in the job's environment; the post step completes the task`,
    ),
  );
}

export async function completeStep(r: Runner): Promise<void> {
  const task = r.env.STATE_task ?? "";
  const url = r.env.STATE_broker_url ?? "";
  if (task === "" || url === "") {
    r.log("jitbroker: no task was started (the main step stopped before asking for a credential); nothing to complete");
    return;
  }
  const client = brokerClient(r, url, r.env.STATE_audience || "jitbroker");
  const out = await client.completeTask(task);
  r.log(commandData(`jitbroker: task ${out.task_id} completed: ${out.revoked} lease${out.revoked === 1 ? "" : "s"} revoked`));
}
