/**
 * A `jitbroker dev` child process for end-to-end tests (the release, the README walk-through):
 * any command that runs the CLI (`node dist/cli/main.js`, an installed `jitbroker`, the single
 * executable), its state under a temp JITBROKER_HOME, on a free loopback port; `stop()` sends
 * SIGTERM (which stops the embedded redis-server too) and waits for the exit.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { cleanEnv } from "./cli";
import { findFreePort } from "./redis-server";

export interface DevBroker {
  url: string;
  port: number;
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

export async function startDevBroker(command: string, args: string[], opts: { home: string; cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<DevBroker> {
  const port = await findFreePort();
  const child = spawn(command, [...args, "dev", "--port", String(port)], {
    cwd: opts.cwd,
    env: cleanEnv({ JITBROKER_HOME: opts.home, JITBROKER_LOG_LEVEL: "warn", ...opts.env }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (c: Buffer) => (out += c.toString("utf8")));
  child.stderr!.on("data", (c: Buffer) => (out += c.toString("utf8")));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(killer);
    }
  };
  const deadline = Date.now() + (opts.timeoutMs ?? 40_000);
  while (!out.includes("jitbroker dev is running")) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`jitbroker dev did not start (${child.exitCode !== null ? `exit ${child.exitCode}` : "timeout"}):\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `http://127.0.0.1:${port}`, port, child, output: () => out, stop };
}
