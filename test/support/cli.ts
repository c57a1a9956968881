/**
 * Running the built CLI (`node dist/cli/main.js`) as a child process, with an environment
 * cleared of anything of the developer's or of a CI runner's that would change its behaviour.
 * `scripts/test` builds dist/ first; run `npm run build` before calling jest directly.
 */
import { execFile, type ExecFileException } from "node:child_process";
import path from "node:path";

export const ROOT = path.resolve(__dirname, "../..");
export const CLI = path.join(ROOT, "dist/cli/main.js");

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(JITBROKER_|GITHUB_|ACTIONS_|GITLAB_|CI_)/.test(k) || k === "REDIS_URL" || k === "VAULT_TOKEN") continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

/** Runs `jitbroker ARGS`; resolves with its exit code and output, rejects only if it could not run or timed out. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { cwd: opts.cwd ?? ROOT, env: cleanEnv(opts.env), timeout: opts.timeoutMs ?? 30_000, maxBuffer: 64 * 1024 * 1024 },
      (err: ExecFileException | null, stdout, stderr) => {
        if (err && typeof err.code !== "number") {
          reject(new Error(`jitbroker ${args.join(" ")}: ${err.killed ? "timed out" : err.message}\n${stderr}`));
          return;
        }
        resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
      },
    );
  });
}

/** Non-blank lines. */
export const lines = (text: string) => text.split("\n").filter((l) => l.trim() !== "");
