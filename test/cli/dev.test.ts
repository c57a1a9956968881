/**
 * `jitbroker dev` end to end: the real binary with its embedded redis-server, tokens from
 * `jitbroker token dev`, whoami and readiness over HTTP, and a clean stop on SIGTERM that takes
 * the embedded redis-server with it. JITBROKER_HOME and the working directory are temp dirs,
 * so the repository's .jitbroker is never touched.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { DEV_OIDC_ISSUER, DEV_TRUST_DOMAIN } from "../../src/dev/issuer";
import { rawCommand } from "../support/redis-server";

const ROOT = path.resolve(__dirname, "../..");
const CLI = path.join(ROOT, "dist/cli/main.js");

function cleanEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("JITBROKER_") || k === "REDIS_URL") continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** True if something accepts connections on 127.0.0.1:port (or on a unix socket path). */
function accepting(port: number | string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = typeof port === "string" ? net.connect({ path: port }) : net.connect({ host: "127.0.0.1", port });
    s.setTimeout(1000);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
    s.once("timeout", () => {
      s.destroy();
      resolve(false);
    });
  });
}

/**
 * redis-server processes whose working directory is under `dir`. redis-server rewrites its
 * process title (`redis-server 127.0.0.1:PORT`), so `pgrep -af` does not show `--dir`; but it
 * chdir()s into its --dir, which /proc/PID/cwd shows.
 */
function redisServersUnder(dir: string): { pid: number; cwd: string }[] {
  let pids: number[];
  try {
    pids = execFileSync("pgrep", ["-x", "redis-server"], { encoding: "utf8" }).split("\n").filter(Boolean).map(Number);
  } catch (e) {
    if ((e as { status?: number }).status === 1) return []; // pgrep: no process matched
    throw e;
  }
  const out: { pid: number; cwd: string }[] = [];
  for (const pid of pids) {
    try {
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      if (cwd === dir || cwd.startsWith(`${dir}/`)) out.push({ pid, cwd });
    } catch {
      // gone meanwhile, or not ours to inspect
    }
  }
  return out;
}

function tokenFor(workload: string, home: string, cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, "token", "dev", "--workload", workload], { cwd, env: cleanEnv({ JITBROKER_HOME: home }), timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`token dev --workload ${workload} failed (${String(err.code)}): ${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

async function getJson(url: string, token?: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // leave as text
  }
  return { status: res.status, body };
}

describe("jitbroker dev", () => {
  let home: string;
  let cwd: string;
  let port: number;
  let child: ChildProcess | undefined;
  let stdout = "";
  let stderr = "";
  let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  let redisSocket: string | undefined;

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} does not exist: build first (npm run build, or run the suite with ./scripts/test)`);
    home = mkdtempSync(path.join(os.tmpdir(), "jit-dev-home-"));
    cwd = mkdtempSync(path.join(os.tmpdir(), "jit-dev-cwd-"));
    port = await freePort();
    child = spawn(process.execPath, [CLI, "dev", "--port", String(port)], {
      cwd,
      env: cleanEnv({ JITBROKER_HOME: home, JITBROKER_LOG_LEVEL: "info" }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    exited = new Promise((resolve) => child!.once("exit", (code, signal) => resolve({ code, signal })));
    child.stdout!.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString("utf8")));

    const deadline = Date.now() + 25_000;
    let running = false;
    let gone = false;
    void exited.then(() => (gone = true));
    while (Date.now() < deadline && !gone) {
      if (stdout.includes("jitbroker dev is running")) {
        running = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!running) {
      throw new Error(`jitbroker dev did not start (${gone ? "it exited" : "timeout"})\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`);
    }
    // The embedded redis-server's unix socket, from the structured (JSON) log.
    const m = /"redis":"([^"]+\/redis\.sock)"/.exec(stdout + stderr);
    redisSocket = m ? m[1] : undefined;
  }, 40_000);

  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    for (const { pid } of redisServersUnder(home ?? "/nonexistent")) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    for (const d of [home, cwd]) if (d) rmSync(d, { recursive: true, force: true });
  });

  it("prints how to use it, on the port it was given", () => {
    expect(stdout).toContain(`jitbroker dev is running at http://127.0.0.1:${port}\n`);
    expect(stdout).toContain("workloads: payments-deployer (ci), support-agent (agent), billing-api (service), alice (human)");
    expect(stdout).toContain("token dev --workload support-agent");
    expect(stdout).toContain(`/v1/whoami`);
  });

  it("writes its state under JITBROKER_HOME, not the working directory", () => {
    expect(readdirSync(cwd)).toEqual([]);
    expect(readdirSync(home)).toEqual(expect.arrayContaining(["dev.yaml", "dev-issuer-keys.json", "dev-jwks.json", "dev-bundle.json", "redis"]));
  });

  it("runs an embedded redis-server with its data under JITBROKER_HOME", async () => {
    expect(redisSocket).toBe(path.join(home, "redis", "redis.sock"));
    expect(await accepting(redisSocket!)).toBe(true);
    expect(redisServersUnder(home).map((p) => p.cwd)).toEqual([path.join(home, "redis")]);
  });

  it("embedded Redis without authentication (issue 13, finding 3): no TCP port, a 0700 socket in a 0700 directory", async () => {
    const info = await rawCommand(redisSocket!, ["INFO", "server"]);
    expect(info).toMatch(/^tcp_port:0\r?$/m);
    expect(statSync(path.join(home, "redis")).mode & 0o777).toBe(0o700);
    expect(statSync(redisSocket!).mode & 0o077).toBe(0);
    expect(readFileSync(path.join(home, "redis", "redis.url"), "utf8").trim()).toBe(redisSocket);
    expect(statSync(path.join(home, "redis", "redis.url")).mode & 0o077).toBe(0);
  });

  it("two dev instances never share one data directory: the second exits 2 with a clear message, the first keeps running", async () => {
    const other = await freePort();
    const second = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, [CLI, "dev", "--port", String(other)], { cwd, env: cleanEnv({ JITBROKER_HOME: home }), timeout: 60_000 }, (err, _out, stderrText) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr: stderrText }),
      );
    });
    expect(second.code).toBe(2);
    expect(second.stderr).toMatch(/^jitbroker: cannot start: the embedded Redis data directory .*redis is in use by another jitbroker \(pid \d+\)/m);
    expect(redisServersUnder(home)).toHaveLength(1);
    expect(readFileSync(path.join(home, "redis", "redis.url"), "utf8").trim()).toBe(redisSocket);
    expect(await accepting(redisSocket!)).toBe(true);
    expect((await getJson(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
  }, 90_000);

  it("is ready", async () => {
    const r = await getJson(`http://127.0.0.1:${port}/readyz`);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ status: "ready", redis: "ok" });
  });

  it("maps a dev SPIFFE token to support-agent", async () => {
    const token = await tokenFor("support-agent", home, cwd);
    const r = await getJson(`http://127.0.0.1:${port}/v1/whoami`, token);
    expect(r.status).toBe(200);
    expect(r.body.workload).toEqual({ id: "support-agent", kind: "agent", owner: "alice@example.com", purpose: "Answers support tickets" });
    expect(r.body.identity).toMatchObject({ kind: "spiffe", issuer: "dev-mesh", iss: null, subject: `spiffe://${DEV_TRUST_DOMAIN}/agents/support`, matched_claims: {} });
  });

  it("maps a dev OIDC token to payments-deployer", async () => {
    const token = await tokenFor("payments-deployer", home, cwd);
    const r = await getJson(`http://127.0.0.1:${port}/v1/whoami`, token);
    expect(r.status).toBe(200);
    expect(r.body.workload).toEqual({ id: "payments-deployer", kind: "ci", owner: "platform-team@example.com", purpose: "Deploys the payments service from main" });
    expect(r.body.identity).toMatchObject({
      kind: "oidc",
      issuer: "dev-oidc",
      iss: DEV_OIDC_ISSUER,
      subject: "repo:acme/payments:ref:refs/heads/main",
      matched_claims: { repository_id: "912345", repository_owner_id: "4242", ref: "refs/heads/main" },
    });
  });

  it("refuses a request without a token", async () => {
    const r = await getJson(`http://127.0.0.1:${port}/v1/whoami`);
    expect(r.status).toBe(401);
  });

  it("exits 0 within 10 s on SIGTERM and stops its embedded redis-server", async () => {
    expect(redisServersUnder(home)).toHaveLength(1);
    const started = Date.now();
    child!.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([exited, new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), 10_000)))]);
    clearTimeout(timer);
    expect(result).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(10_000);
    // The redis-server is a separate process: give it a moment to be reaped.
    const deadline = Date.now() + 2_000;
    while (redisServersUnder(home).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(redisServersUnder(home)).toEqual([]);
    expect(await accepting(redisSocket!)).toBe(false);
    expect(await accepting(port)).toBe(false);
  }, 20_000);
});
