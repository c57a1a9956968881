/**
 * What every client command shares: `--broker URL` (or JITBROKER_URL), the workload token
 * source flags, and one mapping from client errors to one stderr line and an exit code
 * (docs/ARCHITECTURE.md, Errors: 1 refused, 2 usage or configuration, 3 broker or backend unavailable).
 */
import { Command, Option } from "commander";
import { BrokerClient } from "../../client/client";
import { ApprovalError, BrokerApiError, BrokerUnreachableError, TokenSourceError } from "../../client/errors";
import { envToken, fileToken, githubActionsToken, type TokenProvider } from "../../client/token";
import { parseDuration } from "../../core/duration";
import { CliError } from "../errors";
import { visible } from "../text";

export const DEFAULT_GITLAB_VAR = "JITBROKER_ID_TOKEN";
export const DEV_TOKEN_VAR = "JITBROKER_WORKLOAD_TOKEN";

export interface ClientFlags {
  broker?: string;
  tokenFile?: string;
  githubActions?: boolean;
  gitlab?: boolean;
  gitlabVar: string;
  audience: string;
  retries: string;
  timeout: string;
}

/** Adds the broker and token-source flags to a client command. */
export function withClientFlags(cmd: Command): Command {
  return cmd
    .addOption(new Option("--broker <url>", "the broker's URL").env("JITBROKER_URL"))
    .option("--token-file <file>", "read the workload token from this file (re-read on every call; Kubernetes projected tokens)")
    .option("--github-actions", "get the job's OIDC token from GitHub Actions (needs permissions: id-token: write)")
    .option("--gitlab", "read the job's OIDC token from a GitLab CI id_tokens variable (see --gitlab-var)")
    .option("--gitlab-var <name>", "the id_tokens variable --gitlab reads", DEFAULT_GITLAB_VAR)
    .option("--audience <aud>", "audience of the token --github-actions asks for (the broker's server.audience)", "jitbroker")
    .option("--retries <n>", "retries when the broker is unavailable (503, connection refused)", "2")
    .option("--timeout <duration>", "timeout of each HTTP request", "30s")
    .addHelpText(
      "after",
      `\nWithout a token flag the token is read from $${DEV_TOKEN_VAR}.\nExit codes: 0 success, 1 refused, 2 usage or configuration error, 3 broker or backend unavailable.`,
    );
}

export function duration(value: string, flag: string): number {
  if (value === "0") return 0;
  try {
    return parseDuration(value);
  } catch (e) {
    throw new CliError(`${flag} ${value}: ${(e as Error).message}`, 2);
  }
}

function tokenSource(f: ClientFlags): TokenProvider {
  const chosen = [f.tokenFile !== undefined && "--token-file", f.githubActions && "--github-actions", f.gitlab && "--gitlab"].filter(Boolean);
  if (chosen.length > 1) throw new CliError(`give one token source, not ${chosen.join(" and ")}`, 2);
  if (f.tokenFile !== undefined) return fileToken(f.tokenFile);
  if (f.githubActions) return githubActionsToken({ audience: f.audience });
  if (f.gitlab) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(f.gitlabVar)) throw new CliError(`--gitlab-var ${f.gitlabVar}: not a variable name`, 2);
    if (!process.env[f.gitlabVar]) {
      throw new CliError(`${f.gitlabVar} is not set: declare it in the job's id_tokens (${f.gitlabVar}: { aud: jitbroker }) or pass --gitlab-var`, 2);
    }
    return envToken(f.gitlabVar);
  }
  if (!process.env[DEV_TOKEN_VAR]) throw new CliError(`no workload token: pass --token-file, --github-actions or --gitlab, or set ${DEV_TOKEN_VAR}`, 2);
  return envToken(DEV_TOKEN_VAR);
}

export function clientFrom(f: ClientFlags): BrokerClient {
  if (!f.broker) throw new CliError("no broker URL: pass --broker URL or set JITBROKER_URL", 2);
  const retries = Number(f.retries);
  if (!Number.isInteger(retries) || retries < 0 || retries > 10) throw new CliError(`--retries ${f.retries}: a whole number from 0 to 10`, 2);
  const timeoutMs = duration(f.timeout, "--timeout");
  const token = tokenSource(f);
  try {
    return new BrokerClient({ url: f.broker, token, retry: { attempts: retries + 1 }, timeoutMs, userAgent: "jitbroker-cli" });
  } catch (e) {
    throw new CliError(`--broker ${f.broker}: ${(e as Error).message.replace(/^url: /, "")}`, 2);
  }
}

/** Exit code for a broker answer: 400-class input errors are usage errors, 5xx unavailable, the rest refused. */
export function exitCodeFor(status: number): 1 | 2 | 3 {
  if (status >= 500) return 3;
  if (status === 400 || status === 413 || status === 415) return 2;
  return 1;
}

/** One line and an exit code for anything a client command can fail with. */
export function cliErrorOf(e: unknown): CliError {
  if (e instanceof CliError) return e;
  if (e instanceof BrokerApiError) {
    const hint = e.code === "token_expired" ? " (get a fresh token)" : "";
    return new CliError(`${visible(e.code)}: ${visible(e.detail)}${hint}`, exitCodeFor(e.status));
  }
  if (e instanceof BrokerUnreachableError) return new CliError(`broker_unreachable: ${visible(e.message)}`, 3);
  if (e instanceof TokenSourceError) return new CliError(`token_source: ${visible(e.message)}`, e.kind === "config" ? 2 : e.kind === "unavailable" ? 3 : 1);
  if (e instanceof ApprovalError) {
    const code = e.state === "pending_approval" ? "approval_pending" : e.state === "denied" ? "approval_denied" : e.state === "expired" ? "approval_expired" : `approval_${e.state}`;
    return new CliError(`${visible(code)}: ${visible(e.message)}`, 1);
  }
  return new CliError(visible((e as Error)?.message ?? String(e)), 1);
}

/** Wraps an action so that every failure becomes one line on stderr and the right exit code. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      throw cliErrorOf(e);
    }
  };
}
