/**
 * The Redis key layout of docs/ARCHITECTURE.md ("Redis key layout") cannot drift from the code.
 *
 * The table between the `redis-keys:start` / `redis-keys:end` markers lists one key pattern per
 * row: `{p}` is the hash tag, `<name>` one id (in this test never holding `:`), a trailing `*`
 * keys a library names itself (BullMQ). Three checks:
 *  1. every member of the keyspace (src/redis/keys.ts), called with placeholder ids, builds a
 *     key that the table lists (a member added without a row fails here, naming it);
 *  2. a real broker on its own redis-server goes through issuance, task completion, owner and
 *     operator revocation, a revocation that keeps failing, approval and collection, rate
 *     limiting and the sweeper, while Redis keyspace notifications report every key written:
 *     each must be listed (this catches keys built outside the keyspace module too);
 *  3. every row is built by the keyspace or was written in that run: the table lists nothing
 *     the code does not build.
 * Each row also names its owning file, which must exist.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { createKeyspace } from "../../src/redis/keys";
import { startRedisServer, type RedisServerHandle } from "../support/redis-server";
import { POLICIES, startFixture, waitFor, type Fixture } from "../support/fixture";
import { getJson } from "../support/broker";
import { createJwtBackend } from "../../src/backends/jwt/backend";
import { loadOrCreateSigningKeys } from "../../src/backends/jwt/keys";
import type { Backend } from "../../src/backends/types";

const ROOT = path.resolve(__dirname, "../..");
const DOC = path.join(ROOT, "docs/ARCHITECTURE.md");
const HOWTO = "add a row to the table of docs/ARCHITECTURE.md, Redis key layout (between the redis-keys markers)";

interface Row {
  pattern: string;
  owner: string;
  line: number;
}

function documentedRows(): Row[] {
  const lines = readFileSync(DOC, "utf8").split("\n");
  const start = lines.findIndex((l) => l.includes("<!-- redis-keys:start -->"));
  const end = lines.findIndex((l) => l.includes("<!-- redis-keys:end -->"));
  if (start < 0 || end < start) throw new Error("docs/ARCHITECTURE.md has no <!-- redis-keys:start --> ... <!-- redis-keys:end --> table");
  const rows: Row[] = [];
  for (let i = start + 1; i < end; i++) {
    const cells = lines[i]!.split("|").map((c) => c.trim());
    // | `pattern` | type | owner | meaning |
    const m = /^`([^`]+)`$/.exec(cells[1] ?? "");
    if (!m) continue;
    const owner = /`(src\/[^`]+)`/.exec(cells[3] ?? "")?.[1] ?? "";
    rows.push({ pattern: m[1]!, owner, line: i + 1 });
  }
  return rows;
}

/** A documented pattern as a regular expression over real keys of the hash tag `tag`. */
function patternRegex(pattern: string, tag: string): RegExp {
  let re = "";
  for (const part of pattern.split(/(\{p\}|<[^>]+>|\*$)/)) {
    if (part === "") continue;
    if (part === "{p}") re += tag.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    else if (part === "*") re += ".*";
    else if (part.startsWith("<")) re += "[^:]+";
    else re += part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

const PLACEHOLDERS = ["id0", "id1", "id2", "id3"];

/**
 * Every key the keyspace builds: string members (a member ending in `:` is a prefix, completed
 * with an id), functions called with placeholder ids, nested keyspaces walked. `tag` is the hash
 * tag itself, not a key.
 */
function keyspaceKeys(ks: object, where = "keyspace"): { member: string; key: string }[] {
  const out: { member: string; key: string }[] = [];
  for (const [name, value] of Object.entries(ks)) {
    if (name === "tag") continue;
    const member = `${where}.${name}`;
    let v: unknown = value;
    if (typeof value === "function") {
      try {
        v = (value as (...a: string[]) => unknown)(...PLACEHOLDERS.slice(0, Math.max(1, value.length)));
      } catch (e) {
        throw new Error(`${member} threw when called with placeholder ids (${(e as Error).message}); teach test/architecture/keys-doc.test.ts how to call it`);
      }
    }
    if (typeof v === "string") out.push({ member, key: v.endsWith(":") ? `${v}${PLACEHOLDERS[0]}` : v });
    else if (v !== null && typeof v === "object" && !Array.isArray(v)) out.push(...keyspaceKeys(v, member));
  }
  return out;
}

describe("docs/ARCHITECTURE.md, Redis key layout", () => {
  const rows = documentedRows();

  it("lists each pattern once, with an owning file that exists", () => {
    expect(rows.length).toBeGreaterThan(10);
    const seen = new Set<string>();
    for (const r of rows) {
      expect({ pattern: r.pattern, duplicate: seen.has(r.pattern) }).toEqual({ pattern: r.pattern, duplicate: false });
      seen.add(r.pattern);
      if (!r.pattern.startsWith("{p}:")) throw new Error(`line ${r.line}: ${r.pattern} is not under the hash tag {p}`);
      if (!r.owner || !existsSync(path.join(ROOT, r.owner))) throw new Error(`line ${r.line}: ${r.pattern} names no existing owner file (got "${r.owner}")`);
    }
  });

  it("lists every key the keyspace module builds (src/redis/keys.ts)", () => {
    const ks = createKeyspace("p");
    const missing = keyspaceKeys(ks)
      .filter(({ key }) => !rows.some((r) => patternRegex(r.pattern, ks.tag).test(key)))
      .map(({ member, key }) => `${member} builds ${key}`);
    if (missing.length > 0) throw new Error(`undocumented Redis keys: ${HOWTO}:\n  ${missing.join("\n  ")}`);
  });

  describe("against the keys a running broker writes", () => {
    let redisServer: RedisServerHandle;
    let sub: Redis;
    let f: Fixture;
    const written = new Set<string>();
    let tag = "";

    beforeAll(async () => {
      // Its own server: keyspace notifications are server-wide and other suites share theirs.
      redisServer = await startRedisServer({ appendonly: false });
      sub = new Redis(redisServer.url, { lazyConnect: true });
      await sub.connect();
      await sub.config("SET", "notify-keyspace-events", "KEA");
      sub.on("pmessage", (_pattern: string, _channel: string, key: string) => written.add(key));
      await sub.psubscribe("__keyevent@*__:*");

      // The real jwt backend, except that revoking a lease of task "backend-down" always fails.
      const dir = mkdtempSync(path.join(os.tmpdir(), "jitbroker-keysdoc-"));
      const real = createJwtBackend({ keys: await loadOrCreateSigningKeys(path.join(dir, "signing-key.json"), Date.now), issuer: "http://127.0.0.1:8080", now: Date.now });
      const jwt: Backend = {
        ...real,
        revoke: async (lease, handle) => {
          if (lease.task_id === "backend-down") throw new Error("backend down");
          return real.revoke(lease, handle);
        },
      };
      // The example policies, plus delegation of read roles between agents (token exchange).
      writeFileSync(path.join(dir, "delegate.cedar"), 'permit (principal, action == Action::"delegate", resource is Role) when { principal.kind == "agent" && resource.labels has access && resource.labels.access == "read" };');
      // The broker signs and verifies with the same key file as the wrapped backend.
      f = await startFixture({
        extra: { redis: { url: redisServer.url }, policy: { files: [POLICIES, path.join(dir, "*.cedar")] }, backends: { jwt: { signing_key_file: path.join(dir, "signing-key.json") } } },
        backends: { jwt },
      });
      tag = `{${f.b.config.redis.prefix}}`;

      const ok = (r: { status: number; body: unknown }, status: number) => {
        if (r.status !== status) throw new Error(`expected ${status}, got ${r.status}: ${JSON.stringify(r.body)}`);
        return r.body as any;
      };
      const read = { role: "orders-read", task: { id: "t-complete", intent: "read orders" } };
      // Issuance, then task completion.
      ok(await f.call("POST", "/v1/credentials", "agent", read), 201);
      ok(await f.call("POST", "/v1/tasks/t-complete/complete", "agent"), 200);
      // Delegation (RFC 8693): a child lease registered under its parent, revoked with it.
      const parent = ok(await f.call("POST", "/v1/credentials", "agent", { ...read, task: { id: "t-delegate" } }), 201);
      const form = new URLSearchParams({
        grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
        subject_token: parent.credential.token,
        subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
        actor_token: await f.token("agent2"),
        actor_token_type: "urn:ietf:params:oauth:token-type:jwt",
      });
      ok(await getJson(`${f.b.url}/v1/oauth/token`, undefined, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: form.toString() }), 200);
      ok(await f.call("DELETE", `/v1/leases/${parent.lease.id}`, "agent"), 200);
      // Owner revocation.
      const owned = ok(await f.call("POST", "/v1/credentials", "agent", { ...read, task: { id: "t-owner" } }), 201);
      ok(await f.call("DELETE", `/v1/leases/${owned.lease.id}`, "agent"), 200);
      // Operator bulk revocation.
      ok(await f.call("POST", "/v1/credentials", "agent2", { ...read, task: { id: "t-bulk" } }), 201);
      const op = ok(await f.call("POST", "/v1/admin/revocations", "alice", { workload: "agent2", reason: "key layout test" }), 202);
      await waitFor(async () => (await f.call("GET", `/v1/admin/revocations/${op.id}`, "alice")).body.state === "completed", 10_000, "bulk revocation");
      // Approval: requested, approved, collected.
      const pending = ok(await f.call("POST", "/v1/credentials", "agent", { role: "orders-write", task: { id: "t-approval", intent: "refund order 42" } }), 202);
      ok(await f.call("POST", `/v1/admin/requests/${pending.request.id}/approve`, "alice", { reason: "ticket" }), 200);
      ok(await f.call("GET", `/v1/requests/${pending.request.id}`, "agent"), 201);
      // A revocation that keeps failing ends in revoke_failed (fail_after: 2 in the fixture).
      const failing = ok(await f.call("POST", "/v1/credentials", "agent", { ...read, task: { id: "backend-down" } }), 201);
      ok(await f.call("DELETE", `/v1/leases/${failing.lease.id}`, "agent"), 200);
      await waitFor(async () => (await f.call("GET", `/v1/leases/${failing.lease.id}`, "agent")).body.lease?.state === "revoke_failed", 15_000, "revoke_failed");
      // The sweeper takes its lock every sweep_interval (200 ms in the fixture).
      await waitFor(async () => [...written].some((k) => k.endsWith(":sweeper")), 5_000, "a sweep");
      await new Promise((r) => setTimeout(r, 300)); // notifications of the last writes
    }, 60_000);

    afterAll(async () => {
      try {
        await f?.close();
      } finally {
        await sub?.quit().catch(() => sub.disconnect());
        await redisServer?.stop();
      }
    });

    it("writes only keys the table lists, all under the broker's hash tag", () => {
      expect(written.size).toBeGreaterThan(10);
      const outside = [...written].filter((k) => !k.startsWith(`${tag}:`));
      if (outside.length > 0) throw new Error(`keys outside the hash tag ${tag}:\n  ${outside.join("\n  ")}`);
      const missing = [...written].filter((k) => !rows.some((r) => patternRegex(r.pattern, tag).test(k)));
      if (missing.length > 0) throw new Error(`the broker wrote Redis keys the document does not list; ${HOWTO}:\n  ${missing.sort().join("\n  ")}`);
    });

    it("lists no pattern that neither the keyspace builds nor the broker wrote", () => {
      const built = keyspaceKeys(createKeyspace(f.b.config.redis.prefix)).map((k) => k.key);
      const all = [...built, ...written];
      const stale = rows.filter((r) => !all.some((k) => patternRegex(r.pattern, tag).test(k))).map((r) => `line ${r.line}: ${r.pattern}`);
      if (stale.length > 0) {
        throw new Error(
          `docs/ARCHITECTURE.md lists keys nothing builds (remove the row, or exercise the flow that writes it in test/architecture/keys-doc.test.ts):\n  ${stale.join("\n  ")}`,
        );
      }
    });
  });
});
