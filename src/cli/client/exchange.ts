/**
 * CI commands: `exchange` (the job's OIDC token in, a task-scoped credential out) and
 * `complete` (the job's last step: the task's leases are revoked and the task is final).
 */
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { Command, Option } from "commander";
import type { BrokerClient } from "../../client/client";
import { ApprovalError } from "../../client/errors";
import type { CredentialGrant } from "../../client/types";
import { CliError } from "../errors";
import { print, printErr, visible } from "../text";
import { action, clientFrom, duration, withClientFlags, type ClientFlags } from "./common";
import { credentialVars, envLines, githubFileCommands, maskCommands, OutputError, type ExportVar } from "./output";

interface ExchangeFlags extends ClientFlags {
  role?: string;
  task?: string;
  subjectToken?: string;
  subjectTokenType: "access_token" | "id_token";
  resource?: string;
  ttl?: string;
  scope?: string;
  intent?: string;
  tool?: string;
  destination?: string;
  sensitivity?: string;
  format: "json" | "env" | "github";
  wait: string;
  poll: string;
}

/** GitHub Actions' file-command files; checked before anything is minted. */
function githubFiles(): { env: string; output: string } {
  const env = process.env.GITHUB_ENV;
  const output = process.env.GITHUB_OUTPUT;
  if (!env || !output) throw new CliError("--format github needs GITHUB_ENV and GITHUB_OUTPUT (it runs inside a GitHub Actions step)", 2);
  for (const f of [env, output]) if (!existsSync(f)) throw new CliError(`--format github: ${f} does not exist`, 2);
  return { env, output };
}

function parseScope(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new CliError(`--scope: not JSON: ${(e as Error).message}`, 2);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new CliError("--scope: must be a JSON object", 2);
  return v as Record<string, unknown>;
}

/** Revokes a credential the command could not hand over (best effort: it expires anyway). */
async function giveBack(client: BrokerClient, grant: CredentialGrant, why: string): Promise<void> {
  await client.revoke(grant.lease.id, `not delivered by jitbroker exchange: ${why}`).catch(() => undefined);
}

/** Reads the subject token from a file (or stdin for -): never from the command line, where other users could see it. */
function readSubjectToken(file: string): string {
  let text: string;
  try {
    text = readFileSync(file === "-" ? 0 : file, "utf8");
  } catch (e) {
    throw new CliError(`--subject-token: cannot read ${file === "-" ? "stdin" : file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 2);
  }
  const t = text.trim();
  if (t === "" || /\s/.test(t)) throw new CliError(`--subject-token: ${file === "-" ? "stdin" : file} does not hold a single token`, 2);
  return t;
}

/** `exchange --subject-token F`: RFC 8693 delegation, or on-behalf-of with --subject-token-type id_token. */
async function tokenExchange(f: ExchangeFlags, ttl: string | number | undefined, files: { env: string; output: string } | null): Promise<void> {
  const subject = readSubjectToken(f.subjectToken!);
  const client = clientFrom(f);
  const narrow = { ...(f.scope !== undefined ? { scope: f.scope } : {}), ...(f.resource !== undefined ? { resource: f.resource } : {}), ...(ttl !== undefined ? { ttl } : {}) };
  let answer;
  if (f.subjectTokenType === "id_token") {
    if (f.role === undefined || f.task === undefined) throw new CliError("--subject-token-type id_token needs --role and --task", 2);
    answer = await client.onBehalfOf(subject, { ...narrow, role: f.role, task: f.task });
  } else {
    answer = await client.delegate(subject, narrow);
  }
  if (f.format === "json") {
    process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
    return;
  }
  const vars: ExportVar[] = [{ name: "JITBROKER_TOKEN", value: answer.access_token, secret: true }];
  if (f.format === "env") {
    process.stdout.write(envLines(vars));
    return;
  }
  process.stdout.write(maskCommands(vars));
  try {
    appendFileSync(files!.env, githubFileCommands(vars), { encoding: "utf8" });
    appendFileSync(files!.output, githubFileCommands(vars), { encoding: "utf8" });
  } catch (e) {
    await client.revoke(answer.lease_id, "not delivered by jitbroker exchange: could not write GITHUB_ENV/GITHUB_OUTPUT").catch(() => undefined);
    throw new CliError(`cannot write GITHUB_ENV/GITHUB_OUTPUT: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (lease ${answer.lease_id} revoked)`, 2);
  }
  process.stdout.write(`jitbroker: lease ${answer.lease_id} for ${answer.expires_in}s; set JITBROKER_TOKEN in the job's environment and step outputs\n`);
}

export function registerExchangeCommands(program: Command): void {
  withClientFlags(
    program
      .command("exchange")
      .description("exchange this workload's token (e.g. a CI job's OIDC token) for a credential for one task")
      .option("--role <role>", "the role to request (required, except to delegate a --subject-token)")
      .option("--task <id>", "the task id (1-128 of [A-Za-z0-9._:@-]); end it with `jitbroker complete --task` (required, except to delegate)")
      .option("--subject-token <file>", "RFC 8693 token exchange: a file holding the subject token (- for stdin): a broker credential to delegate, or a person's ID token (with --subject-token-type id_token)")
      .addOption(new Option("--subject-token-type <type>", "access_token: delegate a broker credential; id_token: act on behalf of a person (needs --role and --task)").choices(["access_token", "id_token"]).default("access_token"))
      .option("--resource <uri>", "with --subject-token: the one resource (RFC 8707 audience) the new token is bound to")
      .option("--ttl <duration>", "lease lifetime, e.g. 10m (default: the role's)")
      .option("--scope <json>", "backend-specific narrowing of the role, a JSON object (aws_sts: an IAM policy document); with --subject-token: space-separated OAuth scopes")
      .option("--intent <text>", "task context for the policy: what the task is for")
      .option("--tool <text>", "task context: the tool that will use the credential")
      .option("--destination <text>", "task context: where the credential will be used")
      .option("--sensitivity <text>", "task context: the data's sensitivity")
      .addOption(new Option("--format <format>", "json: the lease and credential; env: export lines for eval; github: masked GITHUB_ENV and GITHUB_OUTPUT").choices(["json", "env", "github"]).default("json"))
      .option("--wait <duration>", "when the policy requires approval, wait this long for it (0: do not wait, exit 1)", "0")
      .option("--poll <duration>", "interval between approval checks while waiting", "2s"),
  ).action(
    action(async (f: ExchangeFlags) => {
      const waitMs = duration(f.wait, "--wait");
      const pollMs = duration(f.poll, "--poll");
      const ttl = f.ttl === undefined ? undefined : /^\d+$/.test(f.ttl) ? Number(f.ttl) : f.ttl;
      const files = f.format === "github" ? githubFiles() : null;
      if (f.subjectToken !== undefined) return tokenExchange(f, ttl, files);
      if (f.role === undefined || f.task === undefined) throw new CliError("give --role and --task (or --subject-token to exchange a token)", 2);
      if (f.resource !== undefined) throw new CliError("--resource goes with --subject-token", 2);
      const scope = parseScope(f.scope);
      const client = clientFrom(f);
      const task = {
        id: f.task,
        ...(f.intent === undefined ? {} : { intent: f.intent }),
        ...(f.tool === undefined ? {} : { tool: f.tool }),
        ...(f.destination === undefined ? {} : { destination: f.destination }),
        ...(f.sensitivity === undefined ? {} : { sensitivity: f.sensitivity }),
      };
      let grant: CredentialGrant;
      try {
        grant = await client.requestCredential({
          role: f.role,
          task,
          ...(ttl === undefined ? {} : { ttl }),
          ...(scope === undefined ? {} : { scope }),
          ...(waitMs > 0 ? { waitForApproval: { timeoutMs: waitMs, pollMs } } : {}),
          onPending: (r) => {
            if (waitMs > 0) printErr(`jitbroker: request ${visible(r.id)} for role ${f.role} needs an operator's approval; waiting up to ${f.wait}\n`);
          },
        });
      } catch (e) {
        if (e instanceof ApprovalError && e.state === "pending_approval" && waitMs === 0) {
          throw new CliError(`approval_pending: request ${e.requestId} for role ${f.role} needs an operator's approval (pass --wait 15m to wait for it)`, 1);
        }
        throw e;
      }
      if (f.format === "json") {
        process.stdout.write(`${JSON.stringify(grant, null, 2)}\n`);
        return;
      }
      let vars: ExportVar[];
      try {
        vars = credentialVars(grant, (note) => printErr(`jitbroker: ${note}\n`));
      } catch (e) {
        if (e instanceof OutputError) {
          await giveBack(client, grant, e.message);
          throw new CliError(`${e.message} (lease ${grant.lease.id} revoked)`, 1);
        }
        throw e;
      }
      if (f.format === "env") {
        process.stdout.write(envLines(vars));
        return;
      }
      // github: masks first, so that nothing printed later can show a secret.
      process.stdout.write(maskCommands(vars));
      try {
        appendFileSync(files!.env, githubFileCommands(vars), { encoding: "utf8" });
        appendFileSync(files!.output, githubFileCommands(vars), { encoding: "utf8" });
      } catch (e) {
        await giveBack(client, grant, "could not write GITHUB_ENV/GITHUB_OUTPUT");
        throw new CliError(`cannot write GITHUB_ENV/GITHUB_OUTPUT: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (lease ${grant.lease.id} revoked)`, 2);
      }
      print(
        `jitbroker: lease ${visible(grant.lease.id)} (${visible(grant.lease.role)}, task ${visible(grant.lease.task_id)}) until ${visible(grant.lease.expires_at)}; ` +
          `set ${vars.map((v) => v.name).join(", ")} in the job's environment and step outputs\n`,
      );
    }),
  );

  withClientFlags(
    program
      .command("complete")
      .description("complete a task: revoke its leases held by this workload; no new lease is issued for it")
      .requiredOption("--task <id>", "the task id")
      .option("--json", "print the broker's answer as JSON"),
  ).action(
    action(async (f: ClientFlags & { task: string; json?: boolean }) => {
      const out = await clientFrom(f).completeTask(f.task);
      if (f.json) process.stdout.write(`${JSON.stringify(out)}\n`);
      else print(`task ${visible(out.task_id)} completed: ${out.revoked} lease${out.revoked === 1 ? "" : "s"} revoked\n`);
    }),
  );
}
