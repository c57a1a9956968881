/**
 * A broker with the example policies (config/policies), a test OIDC issuer and a small
 * inventory: an agent, a CI job, two operators (one allowed to revoke, one only to read).
 */
import path from "node:path";
import { getJson, startTestBroker, type TestBroker } from "./broker";
import { startTestIssuer, type TestIssuer } from "./oidc-issuer";
import type { Backend } from "../../src/backends/types";

export const POLICIES = path.resolve(__dirname, "../../config/policies/*.cedar");

export interface Fixture {
  b: TestBroker;
  issuer: TestIssuer;
  /** A fresh token for a workload of the inventory. */
  token(workload: "agent" | "agent2" | "ci" | "alice" | "bob"): Promise<string>;
  call(method: string, p: string, who: "agent" | "agent2" | "ci" | "alice" | "bob" | null, body?: unknown): Promise<{ status: number; body: any; headers: Headers }>;
  close(): Promise<void>;
}

export const SUBJECTS = { agent: "agent-1", agent2: "agent-2", ci: "repo:acme/app", alice: "alice", bob: "bob" } as const;

export async function startFixture(opts: { extra?: Record<string, unknown>; backends?: Partial<Record<string, Backend>>; worker?: boolean; reloadWaitMs?: number } = {}): Promise<Fixture> {
  const issuer = await startTestIssuer();
  const b = await startTestBroker(
    {
      server: { public_url: "http://127.0.0.1:8080" },
      identity: { issuers: [{ name: "idp", type: "oidc", issuer: issuer.url, jwks_uri: `${issuer.url}/jwks`, algorithms: ["RS256", "ES256"] }] },
      workloads: [
        { id: "agent", kind: "agent", owner: "a@example.com", purpose: "support", issuer: "idp", subject: SUBJECTS.agent },
        { id: "agent2", kind: "agent", owner: "a2@example.com", purpose: "support", issuer: "idp", subject: SUBJECTS.agent2 },
        { id: "ci", kind: "ci", owner: "ci@example.com", purpose: "deploys", issuer: "idp", subject: SUBJECTS.ci },
        { id: "alice", kind: "human", owner: "alice@example.com", purpose: "on-call", issuer: "idp", subject: SUBJECTS.alice },
        { id: "bob", kind: "human", owner: "bob@other.org", purpose: "auditor", issuer: "idp", subject: SUBJECTS.bob },
      ],
      roles: [
        { name: "orders-read", backend: "jwt", ttl: { default: "5m", max: "15m" }, labels: { sensitivity: "internal", access: "read" }, jwt: { audience: "https://orders.internal", scope: "orders:read" } },
        { name: "short-read", backend: "jwt", ttl: { default: "2s", max: "10s" }, labels: { sensitivity: "internal", access: "read" }, jwt: { audience: "https://orders.internal" } },
        { name: "orders-write", backend: "jwt", ttl: { default: "2m", max: "5m" }, labels: { sensitivity: "restricted", access: "write" }, jwt: { audience: "https://orders.internal" } },
      ],
      policy: { files: [POLICIES] },
      worker: { sweep_interval: "200ms", sweep_grace: "1s", fail_after: 2 },
      ...(opts.extra ?? {}),
    },
    { backends: opts.backends, worker: opts.worker, ...(opts.reloadWaitMs !== undefined ? { reloadWaitMs: opts.reloadWaitMs } : {}) },
  );
  const token = (w: keyof typeof SUBJECTS) => issuer.token({ sub: SUBJECTS[w] });
  return {
    b,
    issuer,
    token,
    async call(method, p, who, body) {
      const t = who ? await token(who) : undefined;
      return getJson(`${b.url}${p}`, t, {
        method,
        ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body), headers: { "content-type": "application/json" } }),
      });
    },
    async close() {
      await b.close();
      await issuer.close();
    },
  };
}

export async function waitFor<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs = 10_000, what = "condition"): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
