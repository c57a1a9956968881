"use strict";
/**
 * Benchmark: failover recovery time under Redis Sentinel (redis.sentinel mode).
 *
 * One topology for the whole run: a primary, a replica and three sentinels (loopback, private
 * redis-server processes, down-after-milliseconds 1000, failover-timeout 4000), and one broker
 * child process (`jitbroker serve`, API + worker) with `redis.sentinel` and
 * `redis.durability.replicas` as asked. A single client issues one credential at a time
 * (a new task each, short pauses). Each run is one event:
 *   kill      kill -9 of the current primary (it is restarted at once: Sentinel makes it a
 *             replica of the promoted one; with durability 1 that is when WAIT can succeed again)
 *   sentinel  SENTINEL FAILOVER (a planned switch)
 * and measures, from the event: the first refused request, and the first 201 after it
 * ("recovery": 0 when nothing was refused). Between runs the topology is back to a primary with
 * a replica in sync and /readyz 200. Prints each run and the median per kind.
 *
 * Usage: node scripts/bench/failover.js [--runs 3] [--kinds kill,sentinel] [--replicas 1]
 */
const { spawn, execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const { parseArgs } = require("node:util");
const L = require("./lib");

const { values: args } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    kinds: { type: "string", default: "kill,sentinel" },
    replicas: { type: "string", default: "1" },
  },
});
const RUNS = Number(args.runs);
const KINDS = args.kinds.split(",").map((k) => k.trim());
const REPLICAS = Number(args.replicas);
if (!(RUNS >= 1) || !KINDS.every((k) => k === "kill" || k === "sentinel") || !(REPLICAS === 0 || REPLICAS === 1)) {
  console.error("usage: node scripts/bench/failover.js [--runs N>=1] [--kinds kill,sentinel] [--replicas 0|1]");
  process.exit(2);
}
const MASTER = "benchmaster";

const cli = (port, ...a) => execFileSync("redis-cli", ["-p", String(port), ...a], { encoding: "utf8", timeout: 5000, stdio: ["ignore", "pipe", "ignore"] }).trim();
const cliSafe = (port, ...a) => {
  try {
    return cli(port, ...a);
  } catch {
    return "";
  }
};

/** A redis-server (or sentinel) process that can be killed with -9 and started again on its port. */
function node(dir, port, extra) {
  let child = null;
  const start = () => {
    child = spawn("redis-server", extra(), { stdio: "ignore" });
    const kill = () => child?.kill("SIGKILL");
    L.cleanups?.add?.(kill);
    process.on("exit", kill);
  };
  start();
  return {
    port,
    kill9: () => child.kill("SIGKILL"),
    restart: start,
    stop: () => child.kill("SIGKILL"),
  };
}

async function until(what, fn, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await L.sleep(50);
  }
}

async function topology(dir) {
  const data = (p) => ["--port", String(p), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no", "--dbfilename", `n${p}.rdb`];
  const pPort = await L.freePort();
  const rPort = await L.freePort();
  const redis = [node(dir, pPort, () => data(pPort)), node(dir, rPort, () => [...data(rPort), "--replicaof", "127.0.0.1", String(pPort)])];
  await until("replica in sync", () => /master_link_status:up/.test(cliSafe(rPort, "INFO", "replication")));
  const sentinels = [];
  for (let i = 0; i < 3; i++) {
    const port = await L.freePort();
    const conf = path.join(dir, `sentinel-${port}.conf`);
    fs.writeFileSync(
      conf,
      [`port ${port}`, "bind 127.0.0.1", `dir ${dir}`, `sentinel monitor ${MASTER} 127.0.0.1 ${pPort} 2`, `sentinel down-after-milliseconds ${MASTER} 1000`, `sentinel failover-timeout ${MASTER} 4000`, ""].join("\n"),
    );
    sentinels.push(node(dir, port, () => [conf, "--sentinel"]));
  }
  await until("sentinels discover each other", () => {
    const t = cliSafe(sentinels[0].port, "INFO", "sentinel");
    return /sentinels=3/.test(t) && /slaves=1/.test(t);
  });
  const primaryPort = () => Number(cliSafe(sentinels[0].port, "SENTINEL", "get-master-addr-by-name", MASTER).split("\n")[1]);
  return {
    redis,
    sentinels,
    primaryPort,
    /** A primary the sentinels agree on, with a replica in sync. */
    async healthy() {
      await until(
        "a primary with a replica in sync",
        () => {
          const p = primaryPort();
          if (!p) return false;
          const info = cliSafe(p, "INFO", "replication");
          return /role:master/.test(info) && /slave0:.*state=online/.test(info);
        },
        60_000,
      );
    },
    stop() {
      for (const n of [...redis, ...sentinels]) n.stop();
    },
  };
}

async function main() {
  const dir = L.tmpdir("failover");
  const topo = await topology(dir);
  const issuer = await L.createIssuer(dir);
  const port = await L.freePort();
  const cfg = L.brokerConfig({ dir, redisUrl: "unused", prefix: "fo", port, issuer });
  cfg.redis = { sentinel: { master: MASTER, nodes: topo.sentinels.map((s) => `127.0.0.1:${s.port}`) }, prefix: "fo", durability: { replicas: REPLICAS, timeout: "1s" } };
  const broker = await L.spawnBroker(dir, cfg, { logLevel: "warn" });
  const token = await issuer.token(L.agentId(0));
  const events = []; // { t, ok }
  let stop = false;
  let seq = 0;
  const load = (async () => {
    while (!stop) {
      const res = await fetch(`${broker.url}/v1/credentials`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ role: "short-read", task: { id: `fo-${seq++}` }, ttl: 30 }),
        signal: AbortSignal.timeout(10_000),
      }).catch(() => null);
      await res?.arrayBuffer().catch(() => undefined);
      events.push({ t: Date.now(), ok: res?.status === 201 });
      await L.sleep(res?.status === 201 ? 20 : 50);
    }
  })();
  const results = { kill: [], sentinel: [] };
  try {
    for (let run = 0; run < RUNS; run++) {
      for (const kind of KINDS) {
        await topo.healthy();
        await until("/readyz 200", async () => (await fetch(`${broker.url}/readyz`).catch(() => null))?.status === 200, 60_000);
        await L.sleep(1000);
        const before = topo.primaryPort();
        const victim = topo.redis.find((n) => n.port === before);
        const t0 = Date.now();
        if (kind === "kill") victim.kill9();
        else cli(topo.sentinels[0].port, "SENTINEL", "FAILOVER", MASTER);
        await until("a new primary", () => topo.primaryPort() && topo.primaryPort() !== before, 60_000);
        // Back once the replica is promoted (empty: no AOF, no RDB save): Sentinel makes it a
        // replica of the new primary. Restarted before the promotion, it would come back as an
        // empty primary and its replica would resync from it (the data loss Sentinel cannot see).
        if (kind === "kill") victim.restart();
        let firstFail = null;
        let recovered = null;
        await until(
          "a 201 after the failover",
          () => {
            const after = events.filter((e) => e.t > t0);
            firstFail = after.find((e) => !e.ok) ?? null;
            recovered = firstFail ? (after.find((e) => e.ok && e.t > firstFail.t) ?? null) : (after.find((e) => e.ok) ?? null);
            return recovered !== null && (firstFail !== null || Date.now() - t0 > 20_000);
          },
          120_000,
        );
        const r = { kind, first_refusal_ms: firstFail ? firstFail.t - t0 : null, recovery_ms: firstFail ? recovered.t - t0 : 0, outage_ms: firstFail ? recovered.t - firstFail.t : 0 };
        results[kind].push(r);
        process.stderr.write(`run ${run + 1} ${kind}: first refusal ${r.first_refusal_ms ?? "-"} ms, first 201 after it ${r.recovery_ms} ms after the event (outage ${r.outage_ms} ms)\n`);
      }
    }
    const summary = {};
    for (const kind of KINDS) summary[kind] = { runs: results[kind].length, median_recovery_ms: L.median(results[kind].map((r) => r.recovery_ms)), recovery_ms: results[kind].map((r) => r.recovery_ms), outage_ms: results[kind].map((r) => r.outage_ms) };
    L.emit("failover", { durability_replicas: REPLICAS, down_after_ms: 1000, summary, issued: events.filter((e) => e.ok).length });
  } finally {
    stop = true;
    await load;
    await broker.stop();
    topo.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

L.runMain(main);
