/**
 * The release as a user gets it (scripts/release): built into a temp directory, then used the
 * way the README's install section says, on a directory with no checkout:
 * - SHA256SUMS matches the files (the pin CI snippets verify);
 * - `npm install --offline ./jitbroker-<v>.tgz` works (the tarball has no dependencies: nothing
 *   is fetched from a registry, so no registry name can stand in for it), gives the `jitbroker`
 *   bin and the `jitbroker/client` module (require and import);
 * - the installed CLI runs `jitbroker dev`, and the client talks to it;
 * - the single executable runs `--version`, `exchange` and `complete` against that broker with no
 *   `node` on PATH.
 * Slow (bundling, `node --build-sea`): about a minute on 2 busy cores.
 */
import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { cleanEnv, ROOT } from "../support/cli";
import { startDevBroker, type DevBroker } from "../support/dev-broker";

jest.setTimeout(180_000);
const run = promisify(execFile);
const VERSION = (JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string }).version;
const EXE = `jitbroker-${VERSION}-${process.platform}-${process.arch}`;
const TGZ = `jitbroker-${VERSION}.tgz`;

let tmp: string;
let out: string;
let scratch: string;
let broker: DevBroker | undefined;
let bin: string;

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), "jit-release-"));
  out = path.join(tmp, "release");
  await run(process.execPath, [path.join(ROOT, "scripts/release"), "--out", out], { cwd: ROOT, timeout: 170_000, maxBuffer: 16 << 20 });
  scratch = path.join(tmp, "scratch");
  mkdirSync(scratch);
  writeFileSync(path.join(scratch, "package.json"), JSON.stringify({ name: "scratch", private: true }));
  bin = path.join(scratch, "node_modules/.bin/jitbroker");
});

afterAll(async () => {
  await broker?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

it("writes the tarball, the executable and SHA256SUMS that match them", () => {
  expect(readdirSync(out).sort()).toEqual(["SHA256SUMS", EXE, TGZ].sort());
  const sums = readFileSync(path.join(out, "SHA256SUMS"), "utf8").trim().split("\n");
  expect(sums).toHaveLength(2);
  for (const line of sums) {
    const m = /^([0-9a-f]{64}) {2}(\S+)$/.exec(line);
    expect(m).not.toBeNull();
    expect(createHash("sha256").update(readFileSync(path.join(out, m![2]!))).digest("hex")).toBe(m![1]);
  }
  // the format `sha256sum -c` reads
  expect(execFileSync("sha256sum", ["-c", "SHA256SUMS"], { cwd: out, encoding: "utf8" }).split("\n").filter(Boolean).sort()).toEqual([`${EXE}: OK`, `${TGZ}: OK`].sort());
});

it("the tarball installs offline (no dependencies to fetch) and gives the jitbroker bin", async () => {
  await run("npm", ["install", "--offline", "--no-audit", "--no-fund", path.join(out, TGZ)], {
    cwd: scratch,
    env: cleanEnv({ npm_config_update_notifier: "false" }),
    timeout: 60_000,
  });
  const installed = JSON.parse(readFileSync(path.join(scratch, "node_modules/jitbroker/package.json"), "utf8")) as Record<string, unknown>;
  expect(installed).toMatchObject({ name: "jitbroker", version: VERSION, private: true, bin: { jitbroker: "cli/jitbroker.cjs" } });
  expect(installed.dependencies).toBeUndefined();
  expect(readdirSync(path.join(scratch, "node_modules")).filter((n) => !n.startsWith("."))).toEqual(["jitbroker"]);
  const { stdout } = await run(bin, ["--version"], { cwd: scratch, env: cleanEnv() });
  expect(stdout).toBe(`${VERSION}\n`);
});

it("jitbroker/client imports from the installed package, with require and import, and nothing internal is exported", async () => {
  const script = `
    const c = require("jitbroker/client");
    import("jitbroker/client").then((m) => {
      let internal;
      try { require("jitbroker/cli/jitbroker.cjs"); internal = "resolved"; } catch (e) { internal = e.code; }
      console.log(JSON.stringify({ cjs: Object.keys(c).sort(), esm: m.BrokerClient === c.BrokerClient, internal, types: require("fs").existsSync(require.resolve("jitbroker/client").replace(/\\.js$/, ".d.ts")) }));
    });`;
  const { stdout } = await run(process.execPath, ["-e", script], { cwd: scratch, env: cleanEnv() });
  expect(JSON.parse(stdout)).toEqual({
    cjs: expect.arrayContaining(["BrokerClient", "BrokerApiError", "fileToken", "githubActionsToken"]),
    esm: true,
    internal: "ERR_PACKAGE_PATH_NOT_EXPORTED",
    types: true,
  });
});

describe("against a broker run by the installed CLI (jitbroker dev)", () => {
  let home: string;
  let tokenFile: string;

  beforeAll(async () => {
    home = path.join(tmp, "home");
    broker = await startDevBroker(bin, [], { home, cwd: scratch });
    const { stdout } = await run(bin, ["token", "dev", "--workload", "payments-deployer"], { cwd: scratch, env: cleanEnv({ JITBROKER_HOME: home }) });
    tokenFile = path.join(tmp, "ci-token");
    writeFileSync(tokenFile, stdout);
  });

  it("the client module asks it who the token is", async () => {
    const script = `
      const { BrokerClient } = require("jitbroker/client");
      new BrokerClient({ url: process.argv[1], token: { file: process.argv[2] } }).whoami().then((w) => console.log(JSON.stringify(w.workload)));`;
    const { stdout } = await run(process.execPath, ["-e", script, broker!.url, tokenFile], { cwd: scratch, env: cleanEnv() });
    expect(JSON.parse(stdout)).toMatchObject({ id: "payments-deployer", kind: "ci" });
  });

  it("the single executable runs --version, exchange and complete with no node on PATH", async () => {
    const exeDir = path.join(tmp, "ci-image");
    const emptyPath = path.join(tmp, "empty-path");
    mkdirSync(exeDir);
    mkdirSync(emptyPath);
    const exe = path.join(exeDir, "jitbroker");
    copyFileSync(path.join(out, EXE), exe);
    execFileSync("chmod", ["+x", exe]);
    const env = { ...cleanEnv(), PATH: emptyPath, NODE_OPTIONS: "--require /nonexistent-should-be-ignored.js" };
    expect(existsSync(path.join(emptyPath, "node"))).toBe(false);

    expect((await run(exe, ["--version"], { cwd: exeDir, env })).stdout).toBe(`${VERSION}\n`);
    const ex = await run(exe, ["exchange", "--broker", broker!.url, "--token-file", tokenFile, "--role", "orders-read", "--task", "release-1", "--format", "env"], { cwd: exeDir, env });
    expect(ex.stdout).toMatch(/^export JITBROKER_TOKEN='ey[\w-]+\.[\w-]+\.[\w-]+'\nexport JITBROKER_LEASE_ID='l_[\w-]+'\nexport JITBROKER_EXPIRES_AT='\d{4}-[^']+'\n$/);
    const done = await run(exe, ["complete", "--broker", broker!.url, "--token-file", tokenFile, "--task", "release-1"], { cwd: exeDir, env });
    expect(done.stdout).toBe("task release-1 completed: 1 lease revoked\n");
    // a refusal is one line and exit 1, as from the Node CLI
    const denied = await run(exe, ["exchange", "--broker", broker!.url, "--token-file", tokenFile, "--role", "orders-write", "--task", "release-2"], { cwd: exeDir, env }).catch((e: { code: number; stderr: string }) => e);
    expect(denied).toMatchObject({ code: 1, stderr: "jitbroker: policy_denied: policy does not allow payments-deployer to request orders-write\n" });
  });
});
