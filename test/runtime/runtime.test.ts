/**
 * The runtime the project promises (docs/ARCHITECTURE.md, "Runtime"): Node >= 24, built and tested
 * on Node 26 LTS, a lock file that `npm ci` accepts as committed, no dependency install scripts,
 * and a Docker image on the same Node major.
 */
import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const root = path.resolve(__dirname, "../..");
const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as {
  engines: { node: string };
  allowScripts?: Record<string, boolean | string>;
};
const setup = readFileSync(path.join(root, "scripts/lib/setup.sh"), "utf8");

describe("runtime", () => {
  it("runs on Node 24 or later, and the tests run on at least that", () => {
    expect(pkg.engines.node).toBe(">=24");
    expect(Number(process.versions.node.split(".")[0])).toBeGreaterThanOrEqual(24);
    expect(setup).toMatch(/^JB_NODE_MIN=24$/m);
  });

  it("fetches a Node 26 release, pinned by integrity for each platform it knows", () => {
    const version = /^JB_NODE_VERSION=(\d+)\.\d+\.\d+$/m.exec(setup);
    expect(version?.[1]).toBe("26");
    const pins = [...setup.matchAll(/^\s+\[(linux-(?:x64|arm64))\]="(sha512-[A-Za-z0-9+/]{86}==)"$/gm)].map((m) => m[1]);
    expect(pins.sort()).toEqual(["linux-arm64", "linux-x64"]);
  });

  it("builds the Docker image on the Node 26 image", () => {
    const froms = [...readFileSync(path.join(root, "Dockerfile"), "utf8").matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]);
    expect(froms.length).toBeGreaterThan(0);
    for (const f of froms) expect(f).toMatch(/^node:26(-|$)/);
  });

  it("runs no dependency's install script: every package that has one is denied in allowScripts", () => {
    const lock = JSON.parse(readFileSync(path.join(root, "package-lock.json"), "utf8")) as {
      packages: Record<string, { hasInstallScript?: boolean }>;
    };
    const withScripts = Object.entries(lock.packages)
      .filter(([, p]) => p.hasInstallScript)
      .map(([k]) => k.replace(/^.*node_modules\//, ""));
    for (const name of withScripts) expect(pkg.allowScripts?.[name]).toBe(false);
  });

  it("has a lock file that npm ci accepts as committed (a scratch copy, --dry-run)", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "jitbroker-npm-ci-"));
    try {
      cpSync(path.join(root, "package.json"), path.join(dir, "package.json"));
      cpSync(path.join(root, "package-lock.json"), path.join(dir, "package-lock.json"));
      // npm ci validates that package.json and the lock agree (and that the lock is complete)
      // before it would install anything; --dry-run stops there.
      await run("npm", ["ci", "--dry-run", "--prefer-offline", "--no-audit", "--no-fund", "--no-update-notifier"], { cwd: dir, timeout: 110_000 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
