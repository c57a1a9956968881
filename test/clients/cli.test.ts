/**
 * The client commands of the `jitbroker` binary as CI jobs and operators run them: child
 * processes of `node dist/cli/main.js` against a real broker (test/support/fixture.ts), a local
 * server standing in for GitHub Actions' token endpoint, and recording servers standing in for a
 * broker where a test needs answers a real one would not give. Exit codes: docs/ARCHITECTURE.md, Errors.
 * Runs dist/: `npm run build` first (scripts/test does).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { BackendError, type Backend } from "../../src/backends/types";
import { newLeaseId } from "../../src/leases/service";
import { getJson } from "../support/broker";
import { startFixture, waitFor, type Fixture } from "../support/fixture";
import { startRecordingServer } from "../support/http-server";
import { execFile } from "node:child_process";
import { CLI, cleanEnv, runCli, type Run } from "../support/cli";


// Each CLI run is a fresh Node process loading the whole CLI: about a second on a quiet machine,
// several on a loaded 2-core CI machine, and a test here runs up to 7 of them one after the other.
// Jest's default 30 s per test was a deadline too tight for that (tests of the "operators" and
// "approval commands" groups timed out in loaded full runs); each run keeps its own 30 s bound.
jest.setTimeout(120_000);

const run = (args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000) => runCli(args, { env, timeoutMs });

const lines = (t: string) => t.split("\n").filter((l) => l !== "");

/** Parses GitHub Actions file-command blocks `NAME<<DELIM\nvalue\nDELIM\n`. */
function parseFileCommands(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /^([A-Za-z_][A-Za-z0-9_]*)<<(ghadelimiter_[0-9a-f]+)\n([\s\S]*?)\n\2\n/gm;
  let consumed = 0;
  for (const m of text.matchAll(re)) {
    out[m[1]!] = m[3]!;
    consumed += m[0].length;
  }
  expect(consumed).toBe(text.length); // nothing else in the file
  return out;
}

/** One line on stderr, no stack trace. */
function oneLine(r: Run, re: RegExp) {
  expect(lines(r.stderr)).toHaveLength(1);
  expect(r.stderr.trimEnd()).toMatch(re);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

/** The jwt backend, failing revocations of chosen leases. */
function revokeFailer() {
  let real: Backend | null = null;
  const failing = new Set<string>();
  return {
    failing,
    use: (b: Backend) => (real = b),
    backend: {
      kind: "jwt",
      revocation: "revocable",
      mint: (lease, role) => real!.mint(lease, role),
      async revoke(lease, handle) {
        if (failing.has(lease.id)) throw new BackendError(`test backend cannot revoke ${lease.id} (HTTP 500)`, "unavailable");
        return real!.revoke(lease, handle);
      },
    } as Backend,
  };
}

let f: Fixture;
let tmp: string;
const failer = revokeFailer();
let broker: string;

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} does not exist: build first (npm run build)`);
  f = await startFixture({ backends: { jwt: failer.backend } });
  failer.use(f.b.broker.jwt);
  broker = f.b.url;
  tmp = mkdtempSync(path.join(os.tmpdir(), "jit-cli-client-"));
});
afterAll(async () => {
  await f?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

let n = 0;
async function tokenFile(who: Parameters<Fixture["token"]>[0]): Promise<string> {
  const file = path.join(tmp, `token-${who}-${++n}`);
  writeFileSync(file, await f.token(who));
  return file;
}
/** A lease made over HTTP (setup for operator commands; the CLI's own exchange is tested above). */
async function lease(who: Parameters<Fixture["call"]>[2], role: string, task: string, intent?: string): Promise<string> {
  const r = await f.call("POST", "/v1/credentials", who, { role, task: { id: task, ...(intent ? { intent } : {}) } });
  expect(r.status).toBe(201);
  return r.body.lease.id as string;
}
const introspect = async (token: string) => (await f.call("POST", "/v1/introspect", "agent2", { token })).body as { active: boolean; lease_id?: string };

describe("exchange in GitHub Actions", () => {
  /** Stands in for the runner's ID token endpoint: signs a token for the CI workload with the asked audience. */
  async function actionsEndpoint(opts: { status?: number } = {}) {
    const seen: { url: string; authorization?: string }[] = [];
    const srv = await startRecordingServer((req, res) => {
      seen.push({ url: req.url ?? "", authorization: req.headers.authorization });
      const aud = new URL(req.url ?? "/", "http://x").searchParams.get("audience") ?? "default";
      if (opts.status) {
        res.statusCode = opts.status;
        res.end('{"message":"nope"}');
        return;
      }
      void f.issuer.token({ sub: "repo:acme/app", repository: "acme/app" }, { aud }).then((value) => {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ count: 1, value }));
      });
    });
    return { srv, seen };
  }

  function githubEnv(srvUrl: string) {
    const env = path.join(tmp, `github_env_${++n}`);
    const output = path.join(tmp, `github_output_${++n}`);
    writeFileSync(env, "EARLIER=kept\n");
    writeFileSync(output, "");
    return {
      files: { env, output },
      vars: {
        ACTIONS_ID_TOKEN_REQUEST_URL: `${srvUrl}/_apis/pipelines/1/idtoken?api-version=2.0`,
        ACTIONS_ID_TOKEN_REQUEST_TOKEN: "runner-request-token-xyz",
        GITHUB_ENV: env,
        GITHUB_OUTPUT: output,
        GITHUB_ACTIONS: "true",
      },
    };
  }

  it("--github-actions --format github: fetches the job's token, exchanges it, masks every secret first, writes GITHUB_ENV and GITHUB_OUTPUT", async () => {
    const { srv, seen } = await actionsEndpoint();
    try {
      const gh = githubEnv(srv.url);
      const r = await run(["exchange", "--github-actions", "--role", "orders-read", "--task", "gh-run-1", "--format", "github", "--broker", broker], gh.vars);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      // The token endpoint was asked as @actions/core asks it.
      expect(seen).toHaveLength(1);
      expect(seen[0]!.url).toBe("/_apis/pipelines/1/idtoken?api-version=2.0&audience=jitbroker");
      expect(seen[0]!.authorization).toMatch(/^bearer runner-request-token-xyz$/i);

      const envVars = parseFileCommands(readFileSync(gh.files.env, "utf8").replace(/^EARLIER=kept\n/, ""));
      expect(readFileSync(gh.files.env, "utf8").startsWith("EARLIER=kept\n")).toBe(true);
      expect(Object.keys(envVars)).toEqual(["JITBROKER_TOKEN", "JITBROKER_LEASE_ID", "JITBROKER_EXPIRES_AT"]);
      expect(parseFileCommands(readFileSync(gh.files.output, "utf8"))).toEqual(envVars);
      const token = envVars.JITBROKER_TOKEN!;
      expect(await introspect(token)).toMatchObject({ active: true, lease_id: envVars.JITBROKER_LEASE_ID });

      // stdout: the mask comes before anything else, and the secret appears nowhere else.
      const out = lines(r.stdout);
      expect(out[0]).toBe(`::add-mask::${token}`);
      expect(out.filter((l) => l.includes(token))).toEqual([out[0]]);
      expect(out[out.length - 1]).toMatch(new RegExp(`^jitbroker: lease ${envVars.JITBROKER_LEASE_ID} \\(orders-read, task gh-run-1\\) until .*; set JITBROKER_TOKEN, JITBROKER_LEASE_ID, JITBROKER_EXPIRES_AT`));

      // The job's last step completes the task: the credential dies at once.
      const done = await run(["complete", "--github-actions", "--task", "gh-run-1", "--broker", broker], gh.vars);
      expect(done).toEqual({ code: 0, stdout: "task gh-run-1 completed: 1 lease revoked\n", stderr: "" });
      expect(await introspect(token)).toEqual({ active: false });
      expect(seen).toHaveLength(2);
    } finally {
      await srv.close();
    }
  });

  it("--audience is what the token endpoint is asked for; a token for another audience is refused (exit 1)", async () => {
    const { srv, seen } = await actionsEndpoint();
    try {
      const gh = githubEnv(srv.url);
      const r = await run(["exchange", "--github-actions", "--audience", "https://other.example", "--role", "orders-read", "--task", "gh-2", "--broker", broker], gh.vars);
      expect(seen[0]!.url).toBe("/_apis/pipelines/1/idtoken?api-version=2.0&audience=https%3A%2F%2Fother.example");
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      oneLine(r, /^jitbroker: invalid_token: /);
      expect(readFileSync(gh.files.env, "utf8")).toBe("EARLIER=kept\n");
    } finally {
      await srv.close();
    }
  });

  it("without id-token: write (no request variables) it says so and exits 2; an endpoint refusing exits 1", async () => {
    const r = await run(["exchange", "--github-actions", "--role", "orders-read", "--task", "gh-3", "--broker", broker]);
    expect(r.code).toBe(2);
    oneLine(r, /^jitbroker: token_source: ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: .*permissions: id-token: write/);
    const { srv } = await actionsEndpoint({ status: 403 });
    try {
      const refused = await run(["exchange", "--github-actions", "--role", "orders-read", "--task", "gh-3", "--broker", broker], githubEnv(srv.url).vars);
      expect(refused.code).toBe(1);
      oneLine(refused, /^jitbroker: token_source: the GitHub Actions token endpoint answered HTTP 403$/);
      expect(refused.stderr).not.toContain("runner-request-token");
    } finally {
      await srv.close();
    }
  });

  it("--format github outside a step (no GITHUB_ENV) is a usage error, before anything is minted", async () => {
    const before = (await f.call("GET", "/v1/admin/leases?workload=ci&task_id=gh-4", "alice")).body.leases.length;
    const r = await run(["exchange", "--token-file", await tokenFile("ci"), "--role", "orders-read", "--task", "gh-4", "--format", "github", "--broker", broker]);
    expect(r.code).toBe(2);
    oneLine(r, /^jitbroker: --format github needs GITHUB_ENV and GITHUB_OUTPUT/);
    expect((await f.call("GET", "/v1/admin/leases?workload=ci&task_id=gh-4", "alice")).body.leases.length).toBe(before);
  });
});

describe("exchange --format env and json", () => {
  it("prints export lines that a shell evals into a working credential", async () => {
    const file = await tokenFile("agent");
    const cmd = `eval "$("${process.execPath}" "${CLI}" exchange --token-file "${file}" --role orders-read --task env-1 --intent 'answer a ticket' --format env)"; printf '%s\\n%s\\n%s' "$JITBROKER_TOKEN" "$JITBROKER_LEASE_ID" "$JITBROKER_EXPIRES_AT"`;
    const out = await new Promise<string>((resolve, reject) =>
      execFile("bash", ["-c", cmd], { env: cleanEnv({ JITBROKER_URL: broker }) }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
    );
    const [token, leaseId, expiresAt] = out.split("\n");
    expect(leaseId).toMatch(/^l_/);
    expect(Date.parse(expiresAt!)).toBeGreaterThan(Date.now());
    expect(await introspect(token!)).toMatchObject({ active: true, lease_id: leaseId });
    const lease = (await f.call("GET", `/v1/leases/${leaseId}`, "agent")).body.lease;
    expect(lease.task).toMatchObject({ id: "env-1", intent: "answer a ticket" });
  });

  it("values with quotes, spaces, newlines and $ survive eval (a vault secret from a stand-in broker)", async () => {
    const data = { username: "v-ci-O'Brien", password: `p "a$$w0rd" \`x\` $(id)\nline 2`, "db-host": "db 1.internal", api_key: "'" };
    const fake = await startRecordingServer((req, res) => {
      res.setHeader("content-type", "application/json");
      res.statusCode = 201;
      res.end(JSON.stringify({ lease: { id: "l_fakefakefakefake", expires_at: "2030-01-01T00:00:00.000Z" }, credential: { type: "vault", data, lease_duration: 600 } }));
    });
    try {
      const cmd = `eval "$("${process.execPath}" "${CLI}" exchange --role db --task t1 --format env)" && printf '%s\\0' "$JITBROKER_SECRET_USERNAME" "$JITBROKER_SECRET_PASSWORD" "$JITBROKER_SECRET_DB_HOST" "$JITBROKER_SECRET_API_KEY" "$JITBROKER_LEASE_ID"`;
      const out = await new Promise<string>((resolve, reject) =>
        execFile("bash", ["-c", cmd], { env: cleanEnv({ JITBROKER_URL: fake.url, JITBROKER_WORKLOAD_TOKEN: "a.b.c" }) }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
      );
      expect(out.split("\0").slice(0, -1)).toEqual([data.username, data.password, data["db-host"], data.api_key, "l_fakefakefakefake"]);
    } finally {
      await fake.close();
    }
  });

  it("--format json prints the lease and the credential; --gitlab reads the id_tokens variable", async () => {
    const ciToken = await f.token("ci");
    const r = await run(["exchange", "--gitlab", "--role", "orders-read", "--task", "gl-1", "--ttl", "90"], { JITBROKER_URL: broker, JITBROKER_ID_TOKEN: ciToken });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.lease).toMatchObject({ workload: "ci", role: "orders-read", task_id: "gl-1", state: "active" });
    expect([89, 90]).toContain(out.lease.ttl_seconds);
    expect(out.credential.type).toBe("jwt");
    const custom = await run(["exchange", "--gitlab", "--gitlab-var", "MY_ID_TOKEN", "--role", "orders-read", "--task", "gl-2", "--broker", broker], { MY_ID_TOKEN: ciToken });
    expect(custom.code).toBe(0);
    const missing = await run(["exchange", "--gitlab", "--role", "orders-read", "--task", "gl-3", "--broker", broker]);
    expect(missing.code).toBe(2);
    oneLine(missing, /^jitbroker: JITBROKER_ID_TOKEN is not set: declare it in the job's id_tokens/);
  });
});

describe("exit codes and one-line errors", () => {
  it("denied by policy: 1", async () => {
    const r = await run(["exchange", "--token-file", await tokenFile("agent"), "--role", "orders-write", "--task", "x-1", "--broker", broker]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    oneLine(r, /^jitbroker: policy_denied: policy does not allow agent to request orders-write$/);
  });

  it("an invalid token: 1, and the token is not echoed", async () => {
    const file = path.join(tmp, "garbage");
    writeFileSync(file, "eyJnot.a.token");
    const r = await run(["whoami", "--token-file", file, "--broker", broker]);
    expect(r.code).toBe(1);
    oneLine(r, /^jitbroker: invalid_token: /);
    expect(r.stderr).not.toContain("eyJnot");
  });

  it("unknown role 1, bad task id 2, no broker 2, two token sources 2, missing token 2", async () => {
    const file = await tokenFile("agent");
    const unknown = await run(["exchange", "--token-file", file, "--role", "nope", "--task", "x-2", "--broker", broker]);
    expect(unknown.code).toBe(1);
    oneLine(unknown, /^jitbroker: policy_denied: policy does not allow agent to request nope$/);
    const bad = await run(["exchange", "--token-file", file, "--role", "orders-read", "--task", "no spaces", "--broker", broker]);
    expect(bad.code).toBe(2);
    oneLine(bad, /^jitbroker: invalid_request: task\.id: /);
    const noBroker = await run(["exchange", "--token-file", file, "--role", "orders-read", "--task", "x-3"]);
    expect(noBroker.code).toBe(2);
    oneLine(noBroker, /^jitbroker: no broker URL: pass --broker URL or set JITBROKER_URL$/);
    const two = await run(["whoami", "--token-file", file, "--gitlab", "--broker", broker]);
    expect(two.code).toBe(2);
    oneLine(two, /^jitbroker: give one token source, not --token-file and --gitlab$/);
    const none = await run(["whoami", "--broker", broker]);
    expect(none.code).toBe(2);
    oneLine(none, /^jitbroker: no workload token: /);
    const noFile = await run(["whoami", "--token-file", path.join(tmp, "nope"), "--broker", broker]);
    expect(noFile.code).toBe(2);
    oneLine(noFile, /^jitbroker: token_source: cannot read the token file .*: no such file$/);
  });

  it("nothing listening: 3", async () => {
    const gone = await startRecordingServer((_q, s) => s.end());
    await gone.close();
    const r = await run(["exchange", "--token-file", await tokenFile("agent"), "--role", "orders-read", "--task", "x-4", "--broker", gone.url, "--retries", "1"]);
    expect(r.code).toBe(3);
    oneLine(r, new RegExp(`^jitbroker: broker_unreachable: cannot reach the broker at ${gone.url}: ECONNREFUSED$`));
  });

  it("a 503 from the broker: retried, then 3 with its code", async () => {
    const down = await startRecordingServer((_req, res) => {
      res.statusCode = 503;
      res.setHeader("content-type", "application/problem+json");
      res.setHeader("retry-after", "0");
      res.end(JSON.stringify({ type: "urn:jitbroker:problem:store_unavailable", title: "Lease store unavailable", status: 503, detail: "the lease store is unreachable", code: "store_unavailable" }));
    });
    try {
      const r = await run(["exchange", "--role", "orders-read", "--task", "x-5", "--broker", down.url, "--retries", "2"], { JITBROKER_WORKLOAD_TOKEN: "a.b.c" });
      expect(r.code).toBe(3);
      oneLine(r, /^jitbroker: store_unavailable: the lease store is unreachable$/);
      expect(down.hits).toEqual(["/v1/credentials", "/v1/credentials", "/v1/credentials"]);
    } finally {
      await down.close();
    }
  });
});

describe("approval", () => {
  it("without --wait a pending request exits 1 naming it; with --wait it waits for an operator and prints the credential", async () => {
    const file = await tokenFile("agent");
    const args = ["exchange", "--token-file", file, "--role", "orders-write", "--intent", "refund order 7", "--broker", broker];
    const r = await run([...args, "--task", "ap-1"]);
    expect(r.code).toBe(1);
    oneLine(r, /^jitbroker: approval_pending: request rq_[A-Za-z0-9_-]+ for role orders-write needs an operator's approval \(pass --wait 15m to wait for it\)$/);

    const waiting = run([...args, "--task", "ap-2", "--wait", "20s", "--poll", "100ms"]);
    const pending = await waitFor(async () => {
      const list = await f.call("GET", "/v1/admin/requests?state=pending_approval&workload=agent", "alice");
      return (list.body.requests as { id: string; task_id: string }[]).find((q) => q.task_id === "ap-2");
    }, 20_000, "the pending request"); // the CLI's start included (seconds on a loaded machine)
    expect((await f.call("POST", `/v1/admin/requests/${pending.id}/approve`, "alice", { reason: "INC-7" })).status).toBe(200);
    const done = await waiting;
    expect(done.code).toBe(0);
    expect(done.stderr).toBe(`jitbroker: request ${pending.id} for role orders-write needs an operator's approval; waiting up to 20s\n`);
    const out = JSON.parse(done.stdout);
    expect(out.lease).toMatchObject({ role: "orders-write", task_id: "ap-2", approval: { request_id: pending.id, approved_by: "alice" } });
    expect(out.request).toMatchObject({ id: pending.id, state: "collected" });
  });

  it("a denied request exits 1", async () => {
    const waiting = run(["exchange", "--token-file", await tokenFile("agent"), "--role", "orders-write", "--intent", "refund", "--task", "ap-3", "--wait", "20s", "--poll", "100ms", "--broker", broker]);
    const pending = await waitFor(async () => {
      const list = await f.call("GET", "/v1/admin/requests?state=pending_approval&workload=agent", "alice");
      return (list.body.requests as { id: string; task_id: string }[]).find((q) => q.task_id === "ap-3");
    }, 20_000, "the pending request"); // the CLI's start included (seconds on a loaded machine)
    await f.call("POST", `/v1/admin/requests/${pending.id}/deny`, "alice", { reason: "no" });
    const r = await waiting;
    expect(r.code).toBe(1);
    expect(lines(r.stderr)[1]).toBe(`jitbroker: approval_denied: request ${pending.id} was denied`);
  });
});

describe("approval commands for operators", () => {
  it("requests lists the queue; approve and deny decide with a reason; the requester never approves its own", async () => {
    const ids: string[] = [];
    for (const t of ["cq-1", "cq-2"]) {
      const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-write", task: { id: t, intent: "refund" } });
      expect(r.status).toBe(202);
      ids.push(r.body.request.id);
    }
    const alice = await tokenFile("alice");
    const list = await run(["requests", "--token-file", alice, "--workload", "agent", "--broker", broker]);
    expect(list.code).toBe(0);
    const rows = lines(list.stdout);
    expect(rows[0]).toMatch(/^REQUEST\s+STATE\s+WORKLOAD\s+ROLE\s+TASK\s+INTENT\s+CREATED\s+DECIDED$/);
    for (const id of ids) expect(rows.find((l) => l.startsWith(id))).toMatch(new RegExp(`^${id}\\s+pending_approval\\s+agent\\s+orders-write\\s+cq-\\d\\s+refund\\s+\\S+Z$`));

    const own = await run(["approve", ids[0]!, "--token-file", await tokenFile("agent"), "--broker", broker]);
    expect(own.code).toBe(1);
    // The agent is not human: refused before its request is looked up (issue 13, decide first).
    oneLine(own, /^jitbroker: policy_denied: agent may not approve or deny requests$/);

    const ok = await run(["approve", ids[0]!, "--reason", "INC-9", "--token-file", alice, "--broker", broker]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(new RegExp(`^request ${ids[0]} \\(agent → orders-write, task cq-1\\) approved by alice; the requester collects the credential by \\S+Z\n$`));
    const no = await run(["deny", ids[1]!, "--reason", "not now", "--json", "--token-file", alice, "--broker", broker]);
    expect(no.code).toBe(0);
    expect(JSON.parse(no.stdout)).toMatchObject({ id: ids[1], state: "denied", decided_by: "alice", reason: "not now" });
    const again = await run(["deny", ids[1]!, "--token-file", alice, "--broker", broker]);
    expect(again.code).toBe(1);
    oneLine(again, /^jitbroker: request_not_pending: request rq_\S+ is denied$/);
    const all = await run(["requests", "--all", "--json", "--workload", "agent", "--token-file", alice, "--broker", broker]);
    const states = Object.fromEntries((JSON.parse(all.stdout) as { id: string; state: string }[]).map((r) => [r.id, r.state]));
    expect(states[ids[0]!]).toBe("approved");
    expect(states[ids[1]!]).toBe("denied");
    const bad = await run(["approve", "nope", "--token-file", alice, "--broker", broker]);
    expect(bad.code).toBe(2);
  });
});

describe("operators", () => {
  it("leases: a table with filters, --json, --limit", async () => {
    const file = await tokenFile("agent2");
    const ids: string[] = [];
    for (const t of ["tbl-1", "tbl-2", "tbl-3"]) ids.push(await lease("agent2", "orders-read", t));
    const alice = await tokenFile("alice");
    const table = await run(["leases", "--token-file", alice, "--workload", "agent2", "--role", "orders-read", "--state", "active", "--broker", broker]);
    expect(table.code).toBe(0);
    const rows = lines(table.stdout);
    expect(rows[0]).toMatch(/^LEASE\s+STATE\s+WORKLOAD\s+ROLE\s+TASK\s+ISSUED\s+EXPIRES\s+ENDED$/);
    for (const [i, id] of ids.entries()) expect(rows.find((l) => l.startsWith(id))).toMatch(new RegExp(`^${id}\\s+active\\s+agent2\\s+orders-read\\s+tbl-${i + 1}\\s+\\S+Z\\s+\\S+Z$`));
    // Columns line up under their headers.
    for (const row of rows.slice(1)) expect(row.indexOf("active")).toBe(rows[0]!.indexOf("STATE"));

    const json = await run(["leases", "--token-file", alice, "--workload", "agent2", "--task", "tbl-2", "--json", "--broker", broker]);
    expect(JSON.parse(json.stdout).map((l: { id: string }) => l.id)).toEqual([ids[1]]);
    const limited = await run(["leases", "--token-file", alice, "--workload", "agent2", "--limit", "2", "--json", "--broker", broker]);
    expect(JSON.parse(limited.stdout)).toHaveLength(2);
    expect(limited.stderr).toBe("(the first 2; more leases match: raise --limit, 0 for all)\n");
    const none = await run(["leases", "--token-file", alice, "--workload", "nobody", "--broker", broker]);
    expect(none.stdout).toBe("no leases match\n");
    // bob may read; the agent may not.
    expect((await run(["leases", "--token-file", await tokenFile("bob"), "--limit", "1", "--broker", broker])).code).toBe(0);
    const agent = await run(["leases", "--token-file", file, "--broker", broker]);
    expect(agent.code).toBe(1);
    oneLine(agent, /^jitbroker: policy_denied: admin_read requires an operator/);
  });

  it("history answers the four questions in plain words", async () => {
    const id = await lease("agent", "orders-read", "hist-1", "answer ticket 9");
    expect((await run(["revoke", "--token-file", await tokenFile("alice"), "--lease", id, "--reason", "suspicious use", "--broker", broker])).code).toBe(0);
    const h = await run(["history", id, "--token-file", await tokenFile("alice"), "--broker", broker]);
    expect(h.code).toBe(0);
    const out = lines(h.stdout);
    expect(out[0]).toBe(`lease ${id}: role orders-read (jwt) for workload agent, task hist-1: revoked`);
    expect(out[1]).toMatch(/^ {2}who requested it: {8}workload agent, at \S+Z, for task hist-1 \(intent "answer ticket 9"\)$/);
    expect(out[2]).toBe(`  with which identity:     oidc token from issuer idp, subject agent-1`);
    expect(out[3]).toMatch(/^ {2}which policy allowed it: agents-request-read \(policy set [0-9a-f]{64}\)$/);
    expect(out[4]).toMatch(/^ {2}how it ended: {12}revoked at \S+Z by operator alice: "suspicious use"$/);
    expect(out[5]).toMatch(/^events \(\d+\):$/);
    expect(out.slice(6).map((l) => l.trim().split(/\s+/)[1])).toEqual(expect.arrayContaining(["mint", "revoked"]));
    const json = await run(["history", id, "--json", "--token-file", await tokenFile("alice"), "--broker", broker]);
    expect(JSON.parse(json.stdout)).toMatchObject({ requested_by: { workload: "agent" }, allowed_by: { ids: ["agents-request-read"] }, ended: { trigger: "operator", by: "alice", reason: "suspicious use" } });
    const missing = await run(["history", "l_doesnotexist000", "--token-file", await tokenFile("alice"), "--broker", broker]);
    expect(missing.code).toBe(1);
    oneLine(missing, /^jitbroker: not_found: no such lease$/);
  });

  it("revoke with backend failures: the summary names them and why, exit 1", async () => {
    const ids: string[] = [];
    for (const t of ["fail-1", "fail-2", "fail-3"]) ids.push(await lease("agent", "orders-read", t));
    failer.failing.add(ids[1]!);
    try {
      const r = await run(["revoke", "--token-file", await tokenFile("alice"), "--task", "fail-2", "--reason", "rotate", "--interval", "100ms", "--broker", broker]);
      expect(r.code).toBe(1);
      const out = lines(r.stdout);
      expect(out[0]).toMatch(/^revocation op_\S+ completed_with_failures: 1 matched, 0 revoked, 1 failed \(\d+\.\d s\)$/);
      expect(out[1]).toBe("failed (the worker keeps retrying them):");
      // Failed after fail_after (2) attempts; the worker keeps retrying (backoff 0.5-1 s), so on a
      // loaded machine a third attempt may come before the CLI reads the lease: at least 2.
      const failed = new RegExp(`^  ${ids[1]}  agent  orders-read  after (\\d+) attempts: test backend cannot revoke ${ids[1]} \\(HTTP 500\\)$`).exec(out[2] ?? "");
      expect([out[2], Number(failed?.[1]) >= 2]).toEqual([out[2], true]);
      expect(lines(r.stderr)[0]).toMatch(/^revocation op_\S+ started: 1 live lease of task_id fail-2$/);
      expect(lines(r.stderr).pop()).toBe("jitbroker: 1 lease could not be revoked yet (backend errors above)");
    } finally {
      failer.failing.delete(ids[1]!);
    }
  });

  it("revoke --no-wait prints the revocation id; bob (read-only) is refused with 1; a bad selector is a usage error", async () => {
    const alice = await tokenFile("alice");
    await lease("agent2", "orders-read", "nowait-1");
    const r = await run(["revoke", "--token-file", alice, "--task", "nowait-1", "--reason", "x", "--no-wait", "--broker", broker]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^revocation op_\S+ started: 1 live lease of task_id nowait-1\n$/);
    const bob = await run(["revoke", "--token-file", await tokenFile("bob"), "--workload", "agent", "--reason", "x", "--broker", broker]);
    expect(bob.code).toBe(1);
    oneLine(bob, /^jitbroker: policy_denied: admin_revoke requires an operator/);
    const two = await run(["revoke", "--token-file", alice, "--workload", "a", "--role", "b", "--reason", "x", "--broker", broker]);
    expect(two.code).toBe(2);
    oneLine(two, /^jitbroker: give exactly one of --lease, --task, --workload, --role, --issuer \(got --workload, --role\)$/);
  });

  it("revoke that matches nothing (an unknown lease, a workload without live leases) exits 1 and says so", async () => {
    const alice = await tokenFile("alice");
    const unknown = await run(["revoke", "--token-file", alice, "--lease", "l_doesnotexist", "--reason", "x", "--broker", broker]);
    expect(unknown.code).toBe(1);
    expect(unknown.stdout).toBe("");
    oneLine(unknown, /^jitbroker: nothing_matched: lease l_doesnotexist is not live \(unknown, or already ended\); nothing was revoked$/);
    const none = await run(["revoke", "--token-file", alice, "--workload", "no-such-workload", "--reason", "x", "--no-wait", "--broker", broker]);
    expect(none.code).toBe(1);
    oneLine(none, /^jitbroker: nothing_matched: no live lease of workload no-such-workload; nothing was revoked$/);
  });

  it("revoke shows a progress bar when stderr is a terminal", async () => {
    for (const t of ["tty-1", "tty-2"]) await lease("agent2", "orders-read", t);
    const alice = readFileSync(await tokenFile("alice"), "utf8");
    // `script` gives the command a pseudo-terminal; the bar is drawn there, the summary follows.
    const cmd = `"${process.execPath}" "${CLI}" revoke --task tty-1 --reason tty --interval 50ms`;
    const out = await new Promise<string>((resolve, reject) =>
      execFile("script", ["-qec", cmd, "/dev/null"], { env: cleanEnv({ JITBROKER_URL: broker, JITBROKER_WORKLOAD_TOKEN: alice, TERM: "xterm" }) }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout),
      ),
    );
    expect(out).toMatch(/revoking \|[=\-\u2588\u2591]{40}\| 0\/1 done \(0 failed\)/);
    expect(out).toMatch(/revoking \|={40}\| 1\/1 done \(0 failed\)/);
    expect(out).toMatch(/revocation op_\S+ completed: 1 matched, 1 revoked, 0 failed/);
  });

  it("revoke follows a bulk revocation of 10,000 leases to the end and prints the summary", async () => {
    // 10,000 active leases of one workload, written straight into the lease store (what issuance
    // writes, minus 10,000 token signatures and policy decisions in this process).
    const store = f.b.broker.store;
    // A workload of its own (the store does not consult the inventory), so exactly N match.
    const workload = "mass-load";
    const now = Date.now();
    const N = 10_000;
    const ids = Array.from({ length: N }, () => newLeaseId());
    // 100 at a time: with 500 (1,000 scripts queued on the broker's connection) the last ones
    // waited past the store's 2 s command timeout on a loaded machine (store_unavailable).
    for (let i = 0; i < N; i += 100) {
      await Promise.all(
        ids.slice(i, i + 100).map(async (id, k) => {
          const draft = {
            id,
            role: "orders-read",
            backend: "jwt" as const,
            workload,
            task: { id: `mass-${i + k}`, intent: "", tool: "", destination: "", sensitivity: "" },
            issuedAt: now,
            expiresAt: now + 3_600_000,
            identity: { kind: "oidc" as const, issuer: "idp", subject: "repo:acme/app" },
            policy: { ids: ["ci-request-deploy-or-read"], hash: "0".repeat(64) },
          };
          expect(await store.create(draft, 0)).toBe("ok");
          expect(await store.activate(id, { jti: id })).toBe("active");
        }),
      );
    }
    const r = await run(["revoke", "--token-file", await tokenFile("alice"), "--workload", workload, "--reason", "mass revoke test", "--interval", "200ms", "--broker", broker], {}, 90_000);
    expect(r.code).toBe(0);
    const err = lines(r.stderr);
    expect(err[0]).toMatch(new RegExp(`^revocation op_\\S+ started: ${N} live leases of workload ${workload}$`));
    // Plain progress lines (stderr is not a terminal), never going backwards, ending at N.
    const progress = err.slice(1).map((l) => {
      const m = /^revoking: (\d+)\/(\d+) done \((\d+) revoked, (\d+) failed\)$/.exec(l);
      expect(m).not.toBeNull();
      return { done: Number(m![1]), total: Number(m![2]) };
    });
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress.every((p, i) => p.total === N && (i === 0 || p.done >= progress[i - 1]!.done))).toBe(true);
    expect(progress[progress.length - 1]!.done).toBe(N);
    expect(r.stdout).toMatch(new RegExp(`^revocation op_\\S+ completed: ${N} matched, ${N} revoked, 0 failed \\(\\d+\\.\\d s\\)\\n$`));
    expect((await store.getMany(ids.slice(0, 50))).map((l) => l!.state)).toEqual(Array(50).fill("revoked"));
    // None of them is still active: every page of the listing, to its end.
    const alice = await f.token("alice");
    let cursor: string | null = null;
    do {
      const left = await getJson(`${broker}/v1/admin/leases?workload=${workload}&state=active&limit=1${cursor ? `&cursor=${cursor}` : ""}`, alice);
      expect(left.status).toBe(200);
      expect(left.body.leases).toEqual([]);
      cursor = left.body.next_cursor;
    } while (cursor);
  }, 120_000);
});
