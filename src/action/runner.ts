/**
 * What the GitHub Action (actions/exchange) needs from the runner, without @actions/core:
 * inputs (`INPUT_<NAME>`), saved state (`STATE_<name>`), the file commands (`GITHUB_ENV`,
 * `GITHUB_OUTPUT`, `GITHUB_STATE`, each `NAME<<DELIMITER` blocks) and workflow commands on
 * stdout (`::add-mask::`, `::error::`), as GitHub's documentation for JavaScript actions says.
 */
import { appendFileSync } from "node:fs";
import { BrokerClient } from "../client/client";
import { ApprovalError, BrokerApiError, BrokerUnreachableError, TokenSourceError } from "../client/errors";
import { githubActionsToken, type TokenProvider } from "../client/token";
import { githubFileCommands, type ExportVar } from "../cli/client/output";

export class ActionError extends Error {}

export type Env = Record<string, string | undefined>;

/** `with: { broker-url: ... }` arrives as INPUT_BROKER-URL (upper case, spaces as `_`). */
export function input(env: Env, name: string, opts: { required?: boolean; default?: string } = {}): string {
  const v = (env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] ?? "").trim();
  if (v !== "") return v;
  if (opts.required) throw new ActionError(`input ${name} is required`);
  return opts.default ?? "";
}

/** Escapes a workflow command's data as @actions/core does, and drops other control characters. */
export function commandData(s: string): string {
  return s
    .replace(/%/g, "%25")
    .replace(/\r/g, "%0D")
    .replace(/\n/g, "%0A")
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g, "?");
}

export interface Runner {
  env: Env;
  /** Writes to the step's log (stdout): workflow commands and plain lines. */
  log(line: string): void;
}

export function fileCommand(env: Env, which: "GITHUB_ENV" | "GITHUB_OUTPUT" | "GITHUB_STATE", vars: ExportVar[]): void {
  const file = env[which];
  if (!file) throw new ActionError(`${which} is not set: this runs as a step of a GitHub Actions job`);
  if (vars.length) appendFileSync(file, githubFileCommands(vars), { encoding: "utf8" });
}

/** The job's OIDC token; every token obtained is masked before anything else can print it. */
export function maskedJobToken(r: Runner, audience: string): TokenProvider {
  const inner = githubActionsToken({ env: r.env, audience });
  return {
    refreshable: true,
    invalidate: () => inner.invalidate?.(),
    async get() {
      const t = await inner.get();
      r.log(`::add-mask::${commandData(t)}`);
      return t;
    },
  };
}

export function brokerClient(r: Runner, url: string, audience: string): BrokerClient {
  try {
    return new BrokerClient({ url, token: maskedJobToken(r, audience), retry: { attempts: 3 }, userAgent: "jitbroker-github-action" });
  } catch (e) {
    throw new ActionError(`broker-url ${url}: ${(e as Error).message.replace(/^url: /, "")}`);
  }
}

/** One line for the step's log, in the CLI's format (`<code>: <detail>`). */
export function failureText(e: unknown): string {
  if (e instanceof ActionError) return e.message;
  if (e instanceof BrokerApiError) return `${e.code}: ${e.detail}`;
  if (e instanceof BrokerUnreachableError) return `broker_unreachable: ${e.message}`;
  if (e instanceof TokenSourceError) return `token_source: ${e.message}`;
  if (e instanceof ApprovalError) return `approval_${e.state}: ${e.message}`;
  return (e as Error)?.message ?? String(e);
}

/** Runs an entry point: a failure is one `::error::` line and exit status 1. */
export function runStep(fn: (r: Runner) => Promise<void>): void {
  const r: Runner = { env: process.env, log: (line) => process.stdout.write(`${line}\n`) };
  fn(r).then(
    () => undefined,
    (e: unknown) => {
      r.log(`::error title=jitbroker::${commandData(failureText(e))}`);
      process.exitCode = 1;
    },
  );
}
