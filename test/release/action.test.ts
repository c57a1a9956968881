/**
 * The GitHub Action actions/exchange as a runner runs it: its committed entry points
 * (dist/main.js, dist/post.js, `node` and nothing installed) with the runner's environment: inputs
 * as INPUT_*, a stand-in of the Actions OIDC token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN,
 * answering a dev workload token), the file commands GITHUB_ENV, GITHUB_OUTPUT and GITHUB_STATE,
 * and the post step's STATE_* read back from GITHUB_STATE as the runner does; against a real
 * `jitbroker dev` broker. Also: the committed bundle is what src/action builds to.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { parse as parseYaml } from "yaml";
import { CLI, cleanEnv, ROOT } from "../support/cli";
import { startDevBroker, type DevBroker } from "../support/dev-broker";

const run = promisify(execFile);
const ACTION = path.join(ROOT, "actions/exchange");
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { bundleAction } = require("../../scripts/lib/bundle.js") as { bundleAction(o: { write: boolean }): Promise<Record<string, string>> };

/** `NAME<<DELIMITER\nvalue\nDELIMITER\n` blocks, as the runner reads them. */
function parseFileCommands(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const m = /^([^<]+)<<(.+)$/.exec(lines[i]!);
    if (!m) {
      if (lines[i] !== "") throw new Error(`not a file command: ${lines[i]}`);
      continue;
    }
    const value: string[] = [];
    for (i++; lines[i] !== m[2]; i++) {
      if (i >= lines.length) throw new Error(`no closing ${m[2]}`);
      value.push(lines[i]!);
    }
    out[m[1]!] = value.join("\n");
  }
  return out;
}

interface Step {
  code: number;
  stdout: string;
  stderr: string;
}

let tmp: string;
let broker: DevBroker;
let workloadToken: string;
let tokenServer: http.Server;
let tokenUrl: string;
const REQUEST_TOKEN = "runner-request-token-abc123";
const tokenRequests: { auth?: string; audience: string | null }[] = [];

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} does not exist: build first (npm run build)`);
  tmp = mkdtempSync(path.join(os.tmpdir(), "jit-action-"));
  const home = path.join(tmp, "home");
  broker = await startDevBroker(process.execPath, [CLI], { home, cwd: tmp });
  workloadToken = (await run(process.execPath, [CLI, "token", "dev", "--workload", "payments-deployer"], { cwd: tmp, env: cleanEnv({ JITBROKER_HOME: home }) })).stdout.trim();
  // The runner's OIDC token endpoint: GET with the request token, ?api-version=...&audience=...
  tokenServer = http.createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://x");
    tokenRequests.push({ auth: req.headers.authorization, audience: u.searchParams.get("audience") });
    if (req.headers.authorization !== `Bearer ${REQUEST_TOKEN}` || u.searchParams.get("api-version") !== "2.0") {
      res.writeHead(401).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ value: workloadToken }));
  });
  await new Promise<void>((r) => tokenServer.listen(0, "127.0.0.1", r));
  tokenUrl = `http://127.0.0.1:${(tokenServer.address() as AddressInfo).port}/token?api-version=2.0`;
}, 60_000);

afterAll(async () => {
  await broker?.stop();
  await new Promise((r) => tokenServer?.close(r));
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

let jobCount = 0;
function newJob(): { env: NodeJS.ProcessEnv; files: { GITHUB_ENV: string; GITHUB_OUTPUT: string; GITHUB_STATE: string } } {
  const n = ++jobCount;
  const files = {
    GITHUB_ENV: path.join(tmp, `env-${n}`),
    GITHUB_OUTPUT: path.join(tmp, `output-${n}`),
    GITHUB_STATE: path.join(tmp, `state-${n}`),
  };
  for (const f of Object.values(files)) writeFileSync(f, "");
  return {
    files,
    env: {
      ...files,
      GITHUB_ACTIONS: "true",
      GITHUB_RUN_ID: `7700${n}`,
      GITHUB_RUN_ATTEMPT: "1",
      GITHUB_JOB: "deploy",
      GITHUB_REPOSITORY_ID: "912345",
      ACTIONS_ID_TOKEN_REQUEST_URL: tokenUrl,
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: REQUEST_TOKEN,
      "INPUT_BROKER-URL": broker.url,
      INPUT_AUDIENCE: "jitbroker",
    },
  };
}

async function step(entry: "main" | "post", env: NodeJS.ProcessEnv): Promise<Step> {
  try {
    const r = await run(process.execPath, [path.join(ACTION, "dist", `${entry}.js`)], { cwd: tmp, env: cleanEnv(env), timeout: 30_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    if (typeof x.code !== "number") throw e;
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

/** The post step's environment: the runner passes what main saved in GITHUB_STATE as STATE_<name>. */
function postEnv(job: ReturnType<typeof newJob>): NodeJS.ProcessEnv {
  const state = parseFileCommands(readFileSync(job.files.GITHUB_STATE, "utf8"));
  return { ...job.env, ...Object.fromEntries(Object.entries(state).map(([k, v]) => [`STATE_${k}`, v])) };
}

async function leaseState(id: string): Promise<{ state: string; revocation?: { trigger: string } }> {
  const res = await fetch(`${broker.url}/v1/leases/${id}`, { headers: { authorization: `Bearer ${workloadToken}` } });
  expect(res.status).toBe(200);
  return ((await res.json()) as { lease: { state: string; revocation?: { trigger: string } } }).lease;
}

it("action.yml: the documented inputs, node24, main and post (post runs when the job failed too)", () => {
  const doc = parseYaml(readFileSync(path.join(ACTION, "action.yml"), "utf8")) as {
    inputs: Record<string, { required?: boolean; default?: string }>;
    runs: Record<string, string>;
  };
  expect(Object.keys(doc.inputs).sort()).toEqual(["audience", "broker-url", "role", "task", "ttl"]);
  expect(doc.inputs["broker-url"]!.required).toBe(true);
  expect(doc.inputs.role!.required).toBe(true);
  expect(doc.inputs.audience!.default).toBe("jitbroker");
  expect(doc.runs).toEqual({ using: "node24", main: "dist/main.js", post: "dist/post.js", "post-if": "always()" });
});

it("the committed dist/ is what src/action builds to (run scripts/release --action-only after changing it)", async () => {
  const built = await bundleAction({ write: false });
  expect(Object.keys(built).sort()).toEqual(["actions/exchange/dist/main.js", "actions/exchange/dist/post.js"]);
  for (const [file, text] of Object.entries(built)) expect(readFileSync(path.join(ROOT, file), "utf8")).toBe(text);
  // it runs from the repository: nothing to resolve from node_modules
  for (const file of Object.keys(built)) expect(readFileSync(path.join(ROOT, file), "utf8")).not.toMatch(/require\("(?!node:)[^"]+"\)/);
});

it("main exchanges the job's OIDC token, masks every secret before printing anything else, and writes env, outputs and state; post completes the task", async () => {
  const job = newJob();
  const before = tokenRequests.length;
  const main = await step("main", { ...job.env, INPUT_ROLE: "orders-read", INPUT_TTL: "2m" });
  expect(main).toMatchObject({ code: 0, stderr: "" });
  expect(tokenRequests.slice(before)).toEqual([{ auth: `Bearer ${REQUEST_TOKEN}`, audience: "jitbroker" }]);

  const env = parseFileCommands(readFileSync(job.files.GITHUB_ENV, "utf8"));
  expect(Object.keys(env)).toEqual(["JITBROKER_TOKEN", "JITBROKER_LEASE_ID", "JITBROKER_EXPIRES_AT"]);
  expect(env.JITBROKER_TOKEN).toMatch(/^ey[\w-]+\.[\w-]+\.[\w-]+$/);
  const outputs = parseFileCommands(readFileSync(job.files.GITHUB_OUTPUT, "utf8"));
  const task = "gha-912345-77001-1-deploy";
  expect(outputs).toMatchObject({ ...env, "lease-id": env.JITBROKER_LEASE_ID, "expires-at": env.JITBROKER_EXPIRES_AT, task });

  const log = main.stdout.split("\n").filter(Boolean);
  // the job's OIDC token and the credential are masked, first; no secret appears unmasked
  expect(log.slice(0, 2).sort()).toEqual([`::add-mask::${workloadToken}`, `::add-mask::${env.JITBROKER_TOKEN}`].sort());
  for (const line of log.slice(2)) {
    expect(line).not.toContain(env.JITBROKER_TOKEN);
    expect(line).not.toContain(workloadToken);
  }
  expect(log.at(-1)).toMatch(new RegExp(`^jitbroker: lease ${env.JITBROKER_LEASE_ID} \\(orders-read, task ${task}\\) until .*; set JITBROKER_TOKEN, JITBROKER_LEASE_ID, JITBROKER_EXPIRES_AT`));

  const lease = await leaseState(env.JITBROKER_LEASE_ID!);
  expect(lease.state).toBe("active");
  // 2m, as asked (the role's default is 5m)
  expect(Date.parse(env.JITBROKER_EXPIRES_AT!) - Date.now()).toBeLessThanOrEqual(120_000);

  const post = await step("post", postEnv(job));
  expect(post).toEqual({ code: 0, stdout: expect.stringContaining(`jitbroker: task ${task} completed: 1 lease revoked\n`), stderr: "" });
  expect(await leaseState(env.JITBROKER_LEASE_ID!)).toMatchObject({ state: "revoked", revocation: { trigger: "task_completed" } });
});

it("when main fails after naming the task (policy denied), it exits 1 with one ::error:: line and post still completes the task: nothing can be minted for it later", async () => {
  const job = newJob();
  const main = await step("main", { ...job.env, INPUT_ROLE: "orders-write", INPUT_TASK: "deploy-77" });
  expect(main.code).toBe(1);
  expect(main.stdout.split("\n").filter((l) => !l.startsWith("::add-mask::") && l !== "")).toEqual([
    "::error title=jitbroker::policy_denied: policy does not allow payments-deployer to request orders-write",
  ]);
  expect(readFileSync(job.files.GITHUB_ENV, "utf8")).toBe("");
  const post = await step("post", postEnv(job));
  expect(post.stdout).toContain("jitbroker: task deploy-77 completed: 0 leases revoked\n");
  const again = await step("main", { ...job.env, INPUT_ROLE: "orders-read", INPUT_TASK: "deploy-77" });
  expect(again.code).toBe(1);
  expect(again.stdout).toContain("::error title=jitbroker::task_completed: ");
});

it("a token endpoint that refuses the runner's request token: exit 1, nothing minted, nothing exported", async () => {
  const job = newJob();
  const main = await step("main", { ...job.env, ACTIONS_ID_TOKEN_REQUEST_TOKEN: "wrong", INPUT_ROLE: "orders-read" });
  expect(main.code).toBe(1);
  expect(main.stdout.trim()).toBe("::error title=jitbroker::token_source: the GitHub Actions token endpoint answered HTTP 401");
  expect(readFileSync(job.files.GITHUB_ENV, "utf8")).toBe("");
  expect(readFileSync(job.files.GITHUB_OUTPUT, "utf8")).toBe("");
});

it("without id-token: write (no ACTIONS_ID_TOKEN_REQUEST_URL) it says so", async () => {
  const job = newJob();
  const main = await step("main", { ...job.env, ACTIONS_ID_TOKEN_REQUEST_URL: undefined, INPUT_ROLE: "orders-read" });
  expect(main.code).toBe(1);
  expect(main.stdout).toContain("::error title=jitbroker::token_source: ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set");
});

it("checks the runner's files and inputs before asking for anything", async () => {
  const job = newJob();
  const before = tokenRequests.length;
  const noState = await step("main", { ...job.env, GITHUB_STATE: undefined, INPUT_ROLE: "orders-read" });
  expect(noState).toMatchObject({ code: 1, stdout: "::error title=jitbroker::GITHUB_STATE is not set: this runs as a step of a GitHub Actions job\n" });
  const badTask = await step("main", { ...job.env, INPUT_ROLE: "orders-read", INPUT_TASK: "bad task\n::set-env" });
  expect(badTask.code).toBe(1);
  expect(badTask.stdout).toBe('::error title=jitbroker::input task "bad task\\n::set-env": 1-128 characters of [A-Za-z0-9._:@-]\n');
  const noRole = await step("main", { ...job.env });
  expect(noRole.stdout).toBe("::error title=jitbroker::input role is required\n");
  expect(tokenRequests.length).toBe(before);
});

it("post without saved state (main stopped before naming a task) does nothing and succeeds", async () => {
  const job = newJob();
  const post = await step("post", job.env);
  expect(post).toEqual({ code: 0, stdout: expect.stringContaining("nothing to complete"), stderr: "" });
});
