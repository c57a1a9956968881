import { rm } from "node:fs/promises";
import { getJson, startTestBroker, type TestBroker } from "../support/broker";
import { startRedisServer, type RedisServerHandle } from "../support/redis-server";
import { startTestIssuer, type TestIssuer } from "../support/oidc-issuer";

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (await check()) return Date.now() - started;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}

describe("Redis outage", () => {
  let redis: RedisServerHandle;
  let issuer: TestIssuer;
  let b: TestBroker;

  beforeAll(async () => {
    redis = await startRedisServer();
    issuer = await startTestIssuer();
    b = await startTestBroker(
      {
        server: { public_url: "http://127.0.0.1:8080" },
        identity: { issuers: [{ name: "ci", type: "oidc", issuer: issuer.url, jwks_uri: `${issuer.url}/jwks`, algorithms: ["RS256"], single_use: true }] },
        workloads: [{ id: "w", kind: "service", owner: "o", purpose: "p", issuer: "ci", subject: "svc" }],
      },
      { redisUrl: redis.url },
    );
  });
  afterAll(async () => {
    await b.close();
    await issuer.close();
    await redis.stop();
    await rm(redis.dir, { recursive: true, force: true });
  });

  it("goes 503 while Redis is down, fails closed, and recovers by itself", async () => {
    expect((await getJson(`${b.url}/readyz`)).status).toBe(200);
    expect((await getJson(`${b.url}/v1/whoami`, await issuer.token({ sub: "svc", jti: "a" }))).status).toBe(200);

    await redis.stop();
    const down = await getJson(`${b.url}/readyz`);
    expect(down.status).toBe(503);
    expect(down.body).toMatchObject({ status: "unavailable", redis: "unreachable" });
    // Liveness is unaffected: the process is healthy, its dependency is not.
    expect((await getJson(`${b.url}/healthz`)).status).toBe(200);
    // A single-use token cannot be checked for replay without Redis: fail closed with 503.
    const closed = await getJson(`${b.url}/v1/whoami`, await issuer.token({ sub: "svc", jti: "b" }));
    expect(closed.status).toBe(503);
    expect(closed.body.code).toBe("store_unavailable");

    redis = await startRedisServer({ port: redis.port, dir: redis.dir });
    await waitFor(async () => (await getJson(`${b.url}/readyz`)).status === 200, 10_000);
    expect((await getJson(`${b.url}/v1/whoami`, await issuer.token({ sub: "svc", jti: "b" }))).status).toBe(200);
    // The jti recorded before the outage survived the restart (AOF): its replay is still refused.
    const replay = await getJson(`${b.url}/v1/whoami`, await issuer.token({ sub: "svc", jti: "a" }));
    expect(replay.status).toBe(401);
    expect(replay.body.code).toBe("invalid_token");
  });
});
