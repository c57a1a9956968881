/**
 * `jitbroker/client` as a user installs it: resolved through the package's `exports` map (a
 * node_modules/jitbroker link to this package, so Node and TypeScript resolve it exactly as an
 * installed copy), type-checked from a consumer under both TypeScript module resolutions, and
 * free of runtime dependencies beyond Node 20. Runs dist/: build first (`npm run build`).
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import type * as BrokerTypes from "../../src/leases/types";
import type * as ClientTypes from "../../src/client/types";
import type { publicRequest } from "../../src/approvals/store";

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, "../..");
const DIST_CLIENT = path.join(ROOT, "dist/client");
let tmp: string;

beforeAll(() => {
  if (!existsSync(path.join(DIST_CLIENT, "index.js"))) throw new Error("dist/client is not built: run npm run build first");
  tmp = mkdtempSync(path.join(os.tmpdir(), "jit-pkg-"));
  mkdirSync(path.join(tmp, "node_modules"));
  symlinkSync(ROOT, path.join(tmp, "node_modules", "jitbroker"), "dir");
});
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

it('require("jitbroker/client") resolves through the exports map; internals stay private', async () => {
  const script = `
    const c = require("jitbroker/client");
    const out = { resolved: require.resolve("jitbroker/client"), exports: Object.keys(c).sort(), root: require("jitbroker").BrokerClient === c.BrokerClient };
    try { require("jitbroker/dist/broker"); out.internal = "resolved"; } catch (e) { out.internal = e.code; }
    const b = new c.BrokerClient({ url: "http://127.0.0.1:1", token: "a.b.c" });
    out.url = b.url;
    console.log(JSON.stringify(out));`;
  const { stdout } = await run(process.execPath, ["-e", script], { cwd: tmp });
  const out = JSON.parse(stdout) as Record<string, unknown>;
  expect(out).toEqual({
    resolved: path.join(DIST_CLIENT, "index.js"),
    exports: ["ApprovalError", "BrokerApiError", "BrokerClient", "BrokerClientError", "BrokerUnreachableError", "CredentialRejectedError", "TokenSourceError", "createCredentialVerifier", "envToken", "fileToken", "githubActionsToken", "tokenProvider", "verifyCredential"],
    root: true,
    internal: "ERR_PACKAGE_PATH_NOT_EXPORTED",
    url: "http://127.0.0.1:1",
  });
});

const CONSUMER = `
import { BrokerApiError, BrokerClient, fileToken, type CredentialGrant, type Lease } from "jitbroker/client";
const broker = new BrokerClient({ url: "https://jitbroker.internal", token: fileToken("/var/run/secrets/tokens/jitbroker") });
export async function work(): Promise<string> {
  const grant: CredentialGrant = await broker.requestCredential({ role: "orders-read", task: { id: "ticket-42", intent: "answer" } });
  const lease: Lease = grant.lease;
  try {
    return await broker.withTask("ticket-43", async (t) => (await t.requestCredential("orders-read")).credential.type + lease.id);
  } catch (e) {
    if (e instanceof BrokerApiError) return e.code;
    throw e;
  }
}
// A type error must be reported: the client is typed, not any.
// @ts-expect-error role is required
void broker.requestCredential({ task: "x" });
`;

it.each([
  ["node16", "node16"],
  ["commonjs", "node10"],
])("a TypeScript consumer type-checks against the package (module %s, moduleResolution %s)", async (module, moduleResolution) => {
  const dir = path.join(tmp, `ts-${moduleResolution}`);
  mkdirSync(dir);
  symlinkSync(path.join(tmp, "node_modules"), path.join(dir, "node_modules"), "dir");
  writeFileSync(path.join(dir, "consumer.ts"), CONSUMER);
  writeFileSync(
    path.join(dir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        strict: true, noEmit: true, module, moduleResolution, target: "ES2022", lib: ["ES2022"], types: ["node"], typeRoots: [path.join(ROOT, "node_modules/@types")],
        // node10 is deprecated in TypeScript 6 (gone in 7) but still what many consumers use.
        ...(moduleResolution === "node10" ? { ignoreDeprecations: "6.0" } : {}),
      },
      files: ["consumer.ts"],
    }),
  );
  const tsc = path.join(ROOT, "node_modules/typescript/bin/tsc");
  const r = await run(process.execPath, [tsc, "-p", path.join(dir, "tsconfig.json")], { cwd: dir }).then(
    (x) => ({ code: 0, out: x.stdout }),
    (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
  );
  expect(r).toEqual({ code: 0, out: "" });
}, 60_000);

it("the client has no runtime dependency beyond Node's own modules", () => {
  const files = readdirSync(DIST_CLIENT).filter((f) => f.endsWith(".js") || f.endsWith(".d.ts"));
  expect(files).toEqual(expect.arrayContaining(["index.js", "client.js", "token.js", "errors.js", "types.js", "index.d.ts"]));
  const imported = new Set<string>();
  for (const f of files) {
    // Code only: doc comments may show imports for users.
    const text = readFileSync(path.join(DIST_CLIENT, f), "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
    for (const m of text.matchAll(/require\("([^"]+)"\)|from "([^"]+)"|import\("([^"]+)"\)/g)) imported.add(m[1] ?? m[2] ?? m[3]!);
  }
  expect([...imported].filter((m) => !m.startsWith("node:") && !/^\.\/[a-z]+$/.test(m))).toEqual([]);
});

// Compile-time: the client's own types agree with the broker's (a drift fails type checking).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const leaseTypesAgree: Same<ClientTypes.Lease, BrokerTypes.Lease> = true;
const statesAgree: Same<ClientTypes.LeaseState, BrokerTypes.LeaseState> = true;
const triggersAgree: Same<ClientTypes.RevocationTrigger, BrokerTypes.RevocationTrigger> = true;
const taskAgrees: Same<ClientTypes.TaskContext, BrokerTypes.TaskContext> = true;
const requestsAgree: Same<ClientTypes.ApprovalRequest, ReturnType<typeof publicRequest>> = true;
it("the client's types are the broker's (checked by the compiler)", () => {
  expect([leaseTypesAgree, statesAgree, triggersAgree, taskAgrees, requestsAgree]).toEqual([true, true, true, true, true]);
});
