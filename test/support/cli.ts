/**
 * Running the built CLI (`node dist/cli/main.js`) as a child process, with an environment
 * cleared of anything of the developer's or of a CI runner's that would change its behaviour.
 * `scripts/test` builds dist/ first; run `npm run build` before calling jest directly.
 */
import { execFile, spawn, type ChildProcess, type ExecFileException } from "node:child_process";
import path from "node:path";
import { waitFor } from "./fixture";
import { findFreePort } from "./redis-server";

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

/**
 * Starts a long-running `jitbroker ARGS` (serve) with JITBROKER_LISTEN on a free port, or on the
 * port given, and waits until its /readyz answers 200. `stop()` sends SIGTERM and waits for exit.
 */
export async function startServeProcess(args: string[], opts: { port?: number; env?: NodeJS.ProcessEnv; readyTimeoutMs?: number } = {}): Promise<{ url: string; child: ChildProcess; stop(): Promise<void> }> {
  const port = opts.port ?? (await findFreePort());
  const child = spawn(process.execPath, [CLI, ...args], {
    env: cleanEnv({ JITBROKER_LISTEN: `127.0.0.1:${port}`, ...opts.env }),
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`jitbroker ${args.join(" ")} exited ${child.exitCode}: ${stderr}`);
        return (await fetch(`${url}/readyz`).catch(() => null))?.status === 200;
      },
      // A serve process starts in 1-3 s on a quiet machine; in loaded full runs 20 s was not always
      // enough ("timed out ... waiting for jitbroker serve", ratelimit and worker tests): a deadline
      // too tight for a loaded 2-core CI machine. 45 s fits the callers' 60 s set-up budgets.
      opts.readyTimeoutMs ?? 45_000,
      `jitbroker ${args.join(" ")}`,
    );
  } catch (e) {
    // Never ready: stop it (SIGTERM lets `dev` stop its embedded redis-server), so no process outlives the test.
    if (child.exitCode === null) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => (child.kill("SIGKILL"), resolve()), 10_000);
        child.once("exit", () => (clearTimeout(t), resolve()));
        child.kill("SIGTERM");
      });
    }
    throw e;
  }
  return {
    url,
    child,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}
