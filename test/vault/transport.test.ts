/**
 * The HTTP transport under node-vault (src/backends/vault/transport.ts): what it sends, what it
 * refuses to do (follow a redirect, use a proxy from the environment, read an endless answer,
 * wait forever), and that its errors carry a code, never the request.
 */
import type http from "node:http";
import { createVaultTransport, redirectTarget, VaultRedirectError } from "../../src/backends/vault/transport";
import { startRecordingServer } from "../support/http-server";

type Seen = { method: string; url: string; headers: http.IncomingHttpHeaders; body: string };

async function server(answer: (req: http.IncomingMessage, res: http.ServerResponse) => void) {
  const seen: Seen[] = [];
  const s = await startRecordingServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks).toString() });
      answer(req, res);
    });
  });
  return Object.assign(s, { seen });
}

const transport = createVaultTransport({ rejectUnauthorized: true, timeoutMs: 2000, maxResponseBytes: 1024 });
afterAll(() => transport.close());

it("sends the method, headers and JSON body as given, and parses a JSON answer", async () => {
  const s = await server((_req, res) => res.writeHead(200, { "content-type": "application/json" }).end('{"data":{"a":1}}'));
  const savedProxy = process.env.HTTP_PROXY;
  const proxy = await server((_req, res) => res.writeHead(200).end("{}"));
  process.env.HTTP_PROXY = proxy.url; // ignored: only the configuration counts
  try {
    const res = await transport.send({ method: "POST", uri: `${s.url}/v1/auth/approle/login`, headers: { "X-Vault-Namespace": "ns1" }, json: { role_id: "r", secret_id: "s" } });
    expect(res).toEqual({ statusCode: 200, body: { data: { a: 1 } }, request: { path: "/v1/auth/approle/login" } });
    expect(s.seen).toEqual([expect.objectContaining({ method: "POST", url: "/v1/auth/approle/login", body: '{"role_id":"r","secret_id":"s"}' })]);
    expect(s.seen[0]!.headers).toMatchObject({ "x-vault-namespace": "ns1", "content-type": "application/json" });
    expect(proxy.seen).toEqual([]);
  } finally {
    if (savedProxy === undefined) delete process.env.HTTP_PROXY;
    else process.env.HTTP_PROXY = savedProxy;
    await s.close();
    await proxy.close();
  }
});

it("hands back any non-3xx status with its body (text when not JSON, undefined when empty)", async () => {
  let n = 0;
  const s = await server((_req, res) => {
    n++;
    if (n === 1) res.writeHead(503, { "content-type": "application/json" }).end('{"errors":["Vault is sealed"]}');
    else if (n === 2) res.writeHead(502).end("<html>bad gateway</html>");
    else res.writeHead(204).end();
  });
  try {
    expect(await transport.send({ method: "GET", uri: `${s.url}/v1/x` })).toMatchObject({ statusCode: 503, body: { errors: ["Vault is sealed"] } });
    expect(await transport.send({ method: "GET", uri: `${s.url}/v1/x` })).toMatchObject({ statusCode: 502, body: "<html>bad gateway</html>" });
    expect(await transport.send({ method: "PUT", uri: `${s.url}/v1/x`, json: {} })).toMatchObject({ statusCode: 204, body: undefined });
  } finally {
    await s.close();
  }
});

it.each([300, 301, 302, 303, 304, 307, 308])("%i is a VaultRedirectError; nothing follows it", async (status) => {
  const elsewhere = await server((_req, res) => res.writeHead(200).end("{}"));
  const s = await server((_req, res) => res.writeHead(status, { location: `${elsewhere.url.replace("http://", "http://u:pw@")}/v1/steal?x=1` }).end('{"data":"ignored"}'));
  try {
    const e = await transport.send({ method: "POST", uri: `${s.url}/v1/auth/approle/login`, headers: { "X-Vault-Token": "hvs.tok" }, json: { secret_id: "sid" } }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(VaultRedirectError);
    expect(e).toMatchObject({ status, target: elsewhere.url, code: "EREDIRECT" });
    expect((e as Error).message).toBe(`vault answered ${status} (a redirect to ${elsewhere.url}), which is never followed`);
    expect(elsewhere.seen).toEqual([]);
  } finally {
    await s.close();
    await elsewhere.close();
  }
});

it("redirectTarget: the origin only, relative Locations resolved, other schemes named but not shown", () => {
  expect(redirectTarget("https://user:pw@vault-2.internal:8200/v1/x?token=t#f", "http://a")).toBe("https://vault-2.internal:8200");
  expect(redirectTarget("/v1/elsewhere", "http://127.0.0.1:8200/v1/x")).toBe("http://127.0.0.1:8200");
  expect(redirectTarget("javascript:alert(1)", "http://a")).toBe("javascript://…");
  expect(redirectTarget(undefined, "http://a")).toBeNull();
  expect(redirectTarget("http://[bad", "http://a")).toBeNull();
});

it("refuses an answer larger than the limit, and an answer slower than the deadline", async () => {
  const s = await server((req, res) => {
    if (req.url === "/big") res.writeHead(200).end("x".repeat(4096));
    // The slow answer comes 10x the 200 ms deadline later: room for a loaded 2-core CI machine's
    // late timers (it came 5x later, with 700 ms of room, before).
    else setTimeout(() => res.writeHead(200).end("{}"), 2000);
  });
  try {
    await expect(transport.send({ method: "GET", uri: `${s.url}/big` })).rejects.toMatchObject({ code: "ERESPONSETOOLARGE" });
    const t0 = Date.now();
    await expect(transport.send({ method: "GET", uri: `${s.url}/slow`, timeout: 200 })).rejects.toMatchObject({ code: "ETIMEDOUT" });
    expect(Date.now() - t0).toBeLessThan(1600);
  } finally {
    await s.close();
  }
});

it("a network error carries its code, not the request", async () => {
  const s = await server(() => undefined);
  const url = s.url;
  await s.close();
  const e = (await transport.send({ method: "POST", uri: `${url}/v1/auth/approle/login`, headers: { "X-Vault-Token": "hvs.secret-token" }, json: { secret_id: "the-secret-id" } }).catch((x: unknown) => x)) as Error & { code: string };
  expect(e.code).toBe("ECONNREFUSED");
  expect(JSON.stringify({ ...e, text: e.message })).not.toMatch(/secret|hvs\./);
  await expect(transport.send({ method: "GET", uri: "ftp://127.0.0.1/x" })).rejects.toMatchObject({ code: "EPROTOCOL" });
});
