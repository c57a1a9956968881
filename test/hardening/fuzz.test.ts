/**
 * Issue 13: a fuzz-style test of the HTTP API. Random and boundary bodies, headers, ids and
 * unicode against every route, from seeded randomness (a failure names its seed and case, and
 * reproduces), with a bounded number of requests. Every answer must be a documented success
 * (2xx JSON, or text for /metrics) or an RFC 9457 problem document with a known code and the
 * status that code maps to; never a 500, never a stack trace or a file path.
 */
import http from "node:http";
import net from "node:net";
import { ERROR_STATUS } from "../../src/core/errors";
import { startFixture, type Fixture } from "../support/fixture";
import { redisContents } from "../support/secrets";

const AGENT = process.env.FUZZ_NO_AGENT ? false : undefined;
const SEED = Number(process.env.JITBROKER_FUZZ_SEED ?? 20261205);
const CASES = Number(process.env.JITBROKER_FUZZ_CASES ?? 400);
const STACK_OR_PATH = /\bat [\w.<>$]+ \(|node_modules|\/src\/|\/work\/|\/home\/|\/tmp\/|[A-Z]:\\\\|<pre>|<html|Error: /i;

function mulberry32(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Who = "agent" | "agent2" | "ci" | "alice" | "bob";

const ROUTES: [string, string][] = [
  ["POST", "/v1/credentials"],
  ["GET", "/v1/requests/{id}"],
  ["POST", "/v1/tasks/{id}/complete"],
  ["GET", "/v1/leases/{id}"],
  ["DELETE", "/v1/leases/{id}"],
  ["GET", "/v1/whoami"],
  ["POST", "/v1/introspect"],
  ["GET", "/v1/admin/leases"],
  ["POST", "/v1/admin/revocations"],
  ["GET", "/v1/admin/revocations/{id}"],
  ["GET", "/v1/admin/leases/{id}/history"],
  ["GET", "/v1/admin/requests"],
  ["GET", "/v1/admin/requests/{id}"],
  ["POST", "/v1/admin/requests/{id}/approve"],
  ["POST", "/v1/admin/requests/{id}/deny"],
  ["GET", "/v1/admin/readiness"],
  ["GET", "/healthz"],
  ["GET", "/readyz"],
  ["GET", "/openapi.json"],
  ["GET", "/.well-known/jwks.json"],
  ["GET", "/.well-known/openid-configuration"],
  ["PUT", "/v1/credentials"],
  ["PATCH", "/v1/leases/{id}"],
  ["GET", "/v1/nope/{id}"],
];

const UNICODE = ["é", "日本", "😀", "\u202e", "\u0000", "\u001b[2K", "\r\n", "\ud800", "\ufeff", "\u00a0", "\u0085", "a\u0301", "𝔘"];
const IDS = ["", "a", ":", "::", "%", "%00", "%2F", "%3A", "..", ".", "x".repeat(129), "x".repeat(4000), "l_AAAAAAAAAAAAAAAA", "rq_AAAAAAAAAAAAAAAA", "op_AAAAAAAAAAAAAAAA", "team:x", "a%3Ab", "__proto__", "constructor", "-1", "1e309"];

/** encodeURIComponent, with lone surrogates (which it cannot encode) replaced. */
const urlPart = (s: string) => encodeURIComponent(s.replace(/\p{Cs}/gu, "\ufffd"));

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)]!;
}

function randomString(r: () => number, max = 40): string {
  const n = Math.floor(r() * max);
  let s = "";
  for (let i = 0; i < n; i++) {
    const k = r();
    if (k < 0.6) s += String.fromCharCode(0x20 + Math.floor(r() * 95));
    else if (k < 0.8) s += pick(r, UNICODE);
    else s += String.fromCodePoint(Math.floor(r() * 0x10ffff) & ~0xf800 || 0x41);
  }
  return s;
}

function randomValue(r: () => number, depth = 0): unknown {
  const k = r();
  if (depth > 3 || k < 0.15) return pick(r, [null, true, false, 0, -1, 2 ** 53, 1e308, -0.5, Number.MAX_SAFE_INTEGER]);
  if (k < 0.45) return r() < 0.5 ? randomString(r) : pick(r, IDS);
  if (k < 0.6) return Array.from({ length: Math.floor(r() * 4) }, () => randomValue(r, depth + 1));
  const o: Record<string, unknown> = {};
  for (let i = Math.floor(r() * 4); i > 0; i--) o[r() < 0.7 ? pick(r, ["role", "task", "id", "intent", "ttl", "scope", "reason", "token", "lease_id", "task_id", "workload", "issuer", "__proto__", "constructor"]) : randomString(r, 10)] = randomValue(r, depth + 1);
  return o;
}

/** A body: mostly plausible shapes with one thing off, sometimes anything at all. */
function randomBody(r: () => number): string | undefined {
  const k = r();
  if (k < 0.1) return undefined;
  if (k < 0.2) return pick(r, ["", "{", "[", "null", "nul", '{"a":1,}', "\u0000", "{}".repeat(5000), '"' + "x".repeat(20_000) + '"', "{\"a\":" + "[".repeat(2000) + "]".repeat(2000) + "}"]);
  if (k < 0.55) {
    const task: Record<string, unknown> = { id: r() < 0.6 ? `fz-${Math.floor(r() * 1e6)}` : randomValue(r) };
    if (r() < 0.5) task.intent = r() < 0.5 ? randomString(r, 300) : randomValue(r);
    const body: Record<string, unknown> = { role: r() < 0.6 ? pick(r, ["orders-read", "orders-write", "short-read", "nope"]) : randomValue(r), task };
    if (r() < 0.4) body.ttl = pick(r, ["5m", "1s", "0", -1, 1, 2, 1e9, "10000000h", "", "5 m", 3.5, randomString(r, 8)]);
    if (r() < 0.2) body.scope = randomValue(r);
    if (r() < 0.2) body[randomString(r, 6)] = randomValue(r);
    return JSON.stringify(body);
  }
  if (k < 0.7) return JSON.stringify({ reason: r() < 0.5 ? randomString(r, 600) : randomValue(r), ...(r() < 0.5 ? { [pick(r, ["lease_id", "task_id", "workload", "role", "issuer"])]: randomValue(r) } : {}) });
  if (k < 0.8) return JSON.stringify({ token: r() < 0.5 ? randomString(r, 200) : randomValue(r) });
  return JSON.stringify(randomValue(r));
}

function send(base: string, method: string, path: string, headers: Record<string, string>, body: string | undefined): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string } | null> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    let req: http.ClientRequest;
    try {
      // A body always goes with its length (Node sends a GET's or DELETE's body unframed otherwise).
      const framed = body === undefined ? headers : { ...headers, "content-length": String(Buffer.byteLength(body)) };
      req = http.request({ host: u.hostname, port: u.port, method, path, headers: framed, agent: AGENT }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      });
    } catch {
      resolve(null); // the client itself refuses it (an invalid header or path): nothing sent
      return;
    }
    req.on("error", (e: NodeJS.ErrnoException) => (e.code === "ECONNRESET" || e.code === "HPE_INVALID_CONSTANT" ? resolve(null) : reject(e)));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

describe(`fuzzing the HTTP API (seed ${SEED}, ${CASES} requests)`, () => {
  let f: Fixture;
  const tokens = new Map<Who, string>();
  beforeAll(async () => {
    f = await startFixture({ extra: { limits: { requests_per_minute: 10_000 } } });
    for (const w of ["agent", "agent2", "ci", "alice", "bob"] as const) tokens.set(w, await f.token(w));
  });
  afterAll(() => f.close());

  it("every answer is a documented success or a problem document; never a 500, a stack trace or a path", async () => {
    const r = mulberry32(SEED);
    const codes = new Map<string, number>();
    const failures: string[] = [];
    const minted: string[] = [];
    for (let i = 0; i < CASES; i++) {
      const [m, t] = ROUTES[Math.floor(r() * ROUTES.length)]!;
      const rawId = r() < 0.5 ? pick(r, IDS) : randomString(r, 20);
      const id = r() < 0.85 ? urlPart(rawId) : rawId.replace(/[^\x21-\x7e]/g, "");
      let path = t.replace("{id}", id);
      if (r() < 0.2) path += `?${pick(r, ["limit=0", "limit=-1", "limit=99999", "limit=abc", "cursor=%ZZ", "state=bogus", "workload=" + urlPart(randomString(r, 10)), "task_id=a&task_id=b", "cursor=" + "A".repeat(600), "x=" + "y".repeat(3000)])}`;
      const headers: Record<string, string> = {};
      const auth = r();
      if (auth < 0.7) headers.authorization = `Bearer ${tokens.get(pick(r, ["agent", "agent2", "ci", "alice", "bob"] as const))}`;
      else if (auth < 0.85) headers.authorization = pick(r, ["Bearer", "Bearer ", "Basic YTpi", "Bearer a.b.c", "Bearer " + "A".repeat(9000), "bearer   x", "Bearer eyJhbGciOiJub25lIn0.e30.", `Bearer ${Buffer.from(randomString(r, 30)).toString("base64url")}.e30.c2ln`]);
      const body = m === "GET" && r() < 0.8 ? undefined : randomBody(r);
      if (body !== undefined || r() < 0.3) {
        headers["content-type"] = pick(r, ["application/json", "application/json", "application/json; charset=utf-8", "application/problem+json", "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin1", "multipart/form-data; boundary=x", "", "*/*"]);
      }
      if (r() < 0.1) headers["content-encoding"] = pick(r, ["gzip", "deflate", "br", "identity", "x-bogus"]);
      if (r() < 0.1) headers["x-request-id"] = pick(r, ["ok-1", "x".repeat(100), "a b", "é"]);
      if (r() < 0.05) headers.accept = "text/html";
      const what = `case ${i}: ${m} ${path.slice(0, 120)} ${JSON.stringify(headers).slice(0, 200)} body ${JSON.stringify(body?.slice(0, 120))}`;
      const res = await send(f.b.url, m, path, headers, body);
      if (!res) continue;
      const ct = String(res.headers["content-type"] ?? "");
      codes.set(String(res.status), (codes.get(String(res.status)) ?? 0) + 1);
      if (res.status >= 500 && res.status !== 503) failures.push(`${what} → ${res.status} ${res.text.slice(0, 300)}`);
      if (STACK_OR_PATH.test(res.text)) failures.push(`${what} → a stack trace or path: ${res.text.slice(0, 300)}`);
      if (res.status >= 400) {
        if (!/^application\/problem\+json/.test(ct)) {
          failures.push(`${what} → ${res.status} with content-type ${ct}: ${res.text.slice(0, 200)}`);
          continue;
        }
        let doc: { status?: number; code?: string; type?: string; title?: string };
        try {
          doc = JSON.parse(res.text) as typeof doc;
        } catch {
          failures.push(`${what} → ${res.status} problem document is not JSON`);
          continue;
        }
        const code = doc.code as keyof typeof ERROR_STATUS;
        if (!(code in ERROR_STATUS) || ERROR_STATUS[code] !== res.status || doc.status !== res.status || !doc.type || !doc.title) {
          failures.push(`${what} → ${res.status} with an undocumented problem: ${res.text.slice(0, 200)}`);
        }
      } else if (res.status >= 200 && res.status < 300) {
        if (t === "/metrics") continue;
        if (!/^application\/json/.test(ct)) failures.push(`${what} → ${res.status} with content-type ${ct}`);
        else {
          try {
            const doc = JSON.parse(res.text) as { credential?: { token?: string } };
            if (typeof doc.credential?.token === "string") minted.push(doc.credential.token);
          } catch {
            failures.push(`${what} → ${res.status} body is not JSON`);
          }
        }
      } else {
        failures.push(`${what} → unexpected status ${res.status}`);
      }
    }
    expect(failures).toEqual([]);
    // I6 after the run: no workload token and no credential it was given is in Redis or the log.
    const secrets = [...tokens.values(), ...minted];
    const stored = await redisContents(f.b.broker.redis, f.b.config.redis.prefix);
    const logs = f.b.logs.join("");
    for (const t of secrets) {
      const sig = t.split(".")[2]!;
      expect(stored.text.includes(sig) || stored.dumps.some((d) => d.includes(sig)) || logs.includes(sig)).toBe(false);
    }
    // The run reached the handlers, not only the front door.
    expect([...codes.keys()].some((c) => c.startsWith("2"))).toBe(true);
    expect([...codes.keys()].filter((c) => c.startsWith("4")).length).toBeGreaterThanOrEqual(4);
  }, 240_000);

  it.each([
    ["bytes that are not HTTP", "GARBAGE\r\n\r\n"],
    ["a NUL in a header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\n\r\n"],
    ["a header without a colon", "GET /healthz HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n"],
    ["a body after a GET without framing", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n{\"a\":1}\r\n\r\n"],
    ["an oversized header block", `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(70_000)}\r\n\r\n`],
    ["two Content-Length values", "POST /v1/credentials HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"],
  ])("what the HTTP parser refuses (%s) is a problem document as well", async (_name, raw) => {
    const u = new URL(f.b.url);
    const answer = await new Promise<string>((resolve) => {
      const sock = net.connect({ host: u.hostname, port: Number(u.port) });
      let data = "";
      sock.on("data", (c: Buffer) => (data += c.toString("latin1")));
      sock.on("close", () => resolve(data));
      sock.on("error", () => resolve(data));
      sock.setTimeout(10_000, () => sock.destroy());
      sock.write(raw, "latin1");
    });
    // Every HTTP answer on the connection: each is a problem document or a documented success.
    const answers = answer.split(/(?=HTTP\/1\.1 )/).filter(Boolean);
    expect(answers.length).toBeGreaterThan(0);
    for (const a of answers) {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(a)?.[1]);
      expect(status).not.toBe(500);
      if (status >= 400) expect(a).toMatch(/\r\ncontent-type: application\/problem\+json/i);
      expect(a).not.toMatch(STACK_OR_PATH);
    }
  });
});
