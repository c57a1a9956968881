"use strict";
/**
 * The "limit server" of benchmark 1 (issue 17): only the work an exchange cannot avoid, with the
 * same libraries, keys, policies and token as the broker, in its own process like the broker.
 *
 *   POST /v1/credentials  {role, task: {id}}
 *     1. express 5 + express.json() (the same body parser the broker uses)
 *     2. jose jwtVerify of the workload token against the issuer's JWKS (createLocalJWKSet,
 *        RS256, iss, aud, exp: the checks the broker's verifier delegates to jose)
 *     3. one Cedar decision through the project's policy engine (dist/policy/engine.js) on the
 *        same policy files, with the principal, resource and context the broker builds
 *        (decisionContext, so context.time is included)
 *     4. the credential signed by the project's jwt backend (jose SignJWT, ES256, the broker's
 *        signing key file)
 *     5. one Redis round trip writing the lease: an EVALSHA that writes the same lease hash
 *        fields as the broker (its field names, its policy ref with the ref's `HSETNX` into
 *        `leases:policies`, its stored handle form: src/leases/store.ts, handle.ts) and adds it
 *        to the due set
 *   → 201 {lease, credential}
 *
 * What it leaves out is what the broker adds on top: the rate limiter, the task-completed check,
 * the quota and live sets, the expiry schedule, activation, the audit ledger, logging, metrics.
 *
 * Usage: node limit-server.js PORT CONFIG.json
 *   CONFIG.json: {redisUrl, prefix, jwksFile, issuer, audience, policyFiles, signingKeyFile, role}
 */
const fs = require("node:fs");
const { randomBytes } = require("node:crypto");
const express = require("express");
const { jwtVerify, createLocalJWKSet } = require("jose");
const { Redis } = require("ioredis");
const L = require("./lib");

const port = Number(process.argv[2]);
const cfg = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));

const WRITE = `
-- KEYS: 1 lease, 2 due, 3 leases:policies.  ARGV: 1 id, 2 expires_at ms, 3 policy ref, 4 its value,
--       5.. field/value pairs.  Output: 1
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
`;

async function main() {
  const { createPolicyEngine, compilePolicies, loadPolicyFiles } = L.dist("policy/engine.js");
  const { decisionContext, roleResource } = L.dist("policy/context.js");
  const { createJwtBackend } = L.dist("backends/jwt/backend.js");
  const { policyRef } = L.dist("leases/store.js");
  const { encodeHandle } = L.dist("leases/handle.js");
  const { loadOrCreateSigningKeys } = L.dist("backends/jwt/keys.js");
  const engine = createPolicyEngine(compilePolicies(await loadPolicyFiles(cfg.policyFiles)));
  const jwks = createLocalJWKSet(JSON.parse(fs.readFileSync(cfg.jwksFile, "utf8")));
  const backend = createJwtBackend({ keys: await loadOrCreateSigningKeys(cfg.signingKeyFile, Date.now), issuer: cfg.publicUrl });
  const role = cfg.role;
  const resource = roleResource(role);
  const redis = new Redis(cfg.redisUrl, { enableOfflineQueue: true, maxRetriesPerRequest: 1 });
  redis.defineCommand("limitWrite", { numberOfKeys: 3, lua: WRITE });
  const tag = `{${cfg.prefix}}`;

  const app = express();
  app.post("/v1/credentials", express.json(), async (req, res) => {
    try {
      const auth = req.headers.authorization ?? "";
      const { payload } = await jwtVerify(auth.slice(7), jwks, { algorithms: ["RS256"], issuer: cfg.issuer, audience: cfg.audience, requiredClaims: ["exp"] });
      const taskId = req.body.task.id;
      const task = { id: taskId, intent: "", tool: "", destination: "", sensitivity: "" };
      const ttlMs = role.ttl.default;
      const principal = { id: payload.sub, kind: "agent", owner: "agents@example.com", issuer: "idp", subject: payload.sub, claims: {} };
      const decision = engine.decide({ principal, action: "request", resource, context: decisionContext({ task, ttlSeconds: Math.floor(ttlMs / 1000), approved: false, atMs: Date.now() }) });
      if (decision.decision !== "allow") return res.status(403).json({ error: "denied" });
      const issuedAt = Date.now();
      const expiresAt = Math.floor((issuedAt + ttlMs) / 1000) * 1000;
      const id = `l_${randomBytes(12).toString("base64url")}`;
      const lease = { id, role: role.name, backend: "jwt", workload: payload.sub, task_id: taskId, state: "active", issued_at: new Date(issuedAt).toISOString(), expires_at: new Date(expiresAt).toISOString() };
      const minted = await backend.mint(lease, role);
      const policy = { ids: decision.policyIds, hash: decision.policyHash };
      await redis.limitWrite(`${tag}:lease:${id}`, `${tag}:leases:due`, `${tag}:leases:policies`, id, String(expiresAt),
        policyRef(policy), `${Buffer.from(policy.hash, "hex").toString("base64url")} ${JSON.stringify(policy.ids)}`,
        "r", role.name, "b", "jwt", "w", payload.sub, "t", taskId, "state", "active", "iat", String(issuedAt), "exp", String(expiresAt),
        "i", "idp", "s", payload.sub, "pr", policyRef(policy), "h", encodeHandle({ id, issuedMs: issuedAt, expiresMs: expiresAt }, minted.handle, false).value);
      res.status(201).json({ lease, credential: minted.credential });
    } catch (e) {
      res.status(e?.code === "ERR_JWT_EXPIRED" || e?.code?.startsWith?.("ERR_J") ? 401 : 500).json({ error: String(e?.message ?? e) });
    }
  });
  app.get("/healthz", (_req, res) => res.json({ status: "ok" }));
  const server = app.listen(port, "127.0.0.1");
  process.on("SIGTERM", () => {
    server.close(() => {
      redis.disconnect();
      process.exit(0);
    });
    server.closeAllConnections();
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
