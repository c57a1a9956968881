"use strict";
/**
 * Micro-benchmarks of the fixed per-exchange work, in this process, to explain benchmark 1:
 * what one POST /v1/credentials costs in CPU besides HTTP and Redis round trips.
 *
 *   rs256_verify   jose jwtVerify of a workload token (RS256, 2048-bit), as the verifier does
 *   es256_mint     the jwt backend's mint (SignJWT, ES256)
 *   cedar_decide   the policy engine's decide() for an agent request, example policies
 *                  (context: task, ttl_seconds, approved, as before context.time existed)
 *   cedar_decide_time  the same with the context the broker builds now (decisionContext:
 *                  context.time formatted with Intl in policy.timezone), formatting included
 *   log_request    one access-log line (pino, the broker's redaction list) to /dev/null
 *   log_audit      one "audit" log line carrying a mint event (the ledger logs every event)
 *   audit_prepare  canonical JSON + sha256 of one mint event (done per event by the ledger)
 *
 * Each: 300 warm-up calls, then ITER calls; µs per call = wall time / ITER (single-threaded,
 * nothing else runs in this process). Median of 3 rounds.
 *
 * Usage: node scripts/bench/micro.js [--iter 3000]
 */
const fs = require("node:fs");
const path = require("node:path");
const L = require("./lib");

const argv = process.argv.slice(2);
const ITER = (() => {
  const i = argv.indexOf("--iter");
  return i >= 0 ? Number(argv[i + 1]) : 3000;
})();

async function timeIt(fn) {
  for (let i = 0; i < 300; i++) await fn(i);
  const rounds = [];
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    for (let i = 0; i < ITER; i++) await fn(i);
    rounds.push(((performance.now() - t0) * 1000) / ITER);
  }
  return L.median(rounds);
}

async function main() {
  const dir = L.tmpdir("micro");
  try {
    const { jwtVerify, importJWK } = require("jose");
    const pino = require("pino");
    const issuer = await L.createIssuer(dir);
    const jwk = JSON.parse(fs.readFileSync(issuer.jwksFile, "utf8")).keys[0];
    const pub = await importJWK(jwk, "RS256");
    const token = await issuer.token("agent-0");

    const { createPolicyEngine, compilePolicies, loadPolicyFiles } = L.dist("policy/engine.js");
    const engine = createPolicyEngine(compilePolicies(await loadPolicyFiles([path.join(L.ROOT, "config/policies/*.cedar")])));
    const decisionRequest = (i) => ({
      principal: { id: "agent-0", kind: "agent", owner: "agents@example.com", issuer: "idp", subject: "agent-0", claims: {} },
      action: "request",
      resource: { name: "orders-read", backend: "jwt", labels: { sensitivity: "internal", access: "read" } },
      context: { task: { id: `m-${i}`, intent: "", tool: "", destination: "", sensitivity: "" }, ttl_seconds: 300, approved: false },
    });
    if (engine.decide(decisionRequest(0)).decision !== "allow") throw new Error("policy fixture does not allow");
    const { decisionContext } = L.dist("policy/context.js");
    const decisionRequestNow = (i) => ({ ...decisionRequest(i), context: decisionContext({ task: { id: `m-${i}` }, ttlSeconds: 300, approved: false, atMs: Date.now() }) });

    const { createJwtBackend } = L.dist("backends/jwt/backend.js");
    const { loadOrCreateSigningKeys } = L.dist("backends/jwt/keys.js");
    const jwt = createJwtBackend({ keys: await loadOrCreateSigningKeys(path.join(dir, "signing-key.json"), Date.now), issuer: "http://127.0.0.1:8080" });
    const role = { name: "orders-read", backend: "jwt", ttl: { default: 300000, max: 900000 }, labels: {}, jwt: { audience: "https://orders.internal", scope: "orders:read" } };
    const exp = new Date(Math.floor((Date.now() + 300_000) / 1000) * 1000).toISOString();
    const lease = (i) => ({ id: `l_${String(i).padStart(22, "0")}`, role: "orders-read", backend: "jwt", workload: "agent-0", task_id: `m-${i}`, state: "issuing", issued_at: new Date().toISOString(), expires_at: exp });

    const { createLogger } = L.dist("core/logger.js");
    const logger = createLogger({ level: "info", destination: pino.destination({ dest: "/dev/null", sync: true }) });
    const { canonicalJSON, auditHash } = L.dist("audit/ledger.js");
    const mintEvent = (i) => ({
      type: "mint",
      at: new Date().toISOString(),
      lease_id: `l_${String(i).padStart(22, "0")}`,
      workload: "agent-0",
      task_id: `m-${i}`,
      actor: "agent-0",
      role: "orders-read",
      backend: "jwt",
      identity: { kind: "oidc", issuer: "idp", subject: "agent-0" },
      policy_ids: ["agents-request-read"],
      policy_hash: "42ad143044a289f340802c994088aca22795cfed79b9b384663e2ed6c117bfaa",
      expires_at: exp,
      task: { id: `m-${i}`, intent: "", tool: "", destination: "", sensitivity: "" },
    });
    const prev = "0".repeat(64);

    const results = {
      rs256_verify: await timeIt(() => jwtVerify(token, pub, { algorithms: ["RS256"], audience: "jitbroker" })),
      es256_mint: await timeIt((i) => jwt.mint(lease(i), role)),
      cedar_decide: await timeIt((i) => engine.decide(decisionRequest(i))),
      cedar_decide_time: await timeIt((i) => engine.decide(decisionRequestNow(i))),
      log_request: await timeIt((i) => logger.info({ request_id: "0f8fad5b-d9cb-469f-a165-70867728950e", method: "POST", path: "/v1/credentials", status: 201, ms: 1.234, workload: `agent-${i % 50}` }, "request")),
      log_audit: await timeIt((i) => logger.info({ audit: { ...mintEvent(i), seq: `${Date.now()}-${i}`, hash: prev, prev } }, "audit")),
      audit_prepare: await timeIt((i) => auditHash(prev, canonicalJSON(mintEvent(i)))),
    };
    for (const [k, v] of Object.entries(results)) process.stderr.write(`${k.padEnd(18)} ${v.toFixed(1)} µs\n`);
    L.emit("micro", { iter: ITER, us_per_call: results });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

L.runMain(main);
