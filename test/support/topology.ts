/**
 * Real Redis topologies for the high-availability tests, started by the test itself: Debian's
 * redis-server on 127.0.0.1, free ports, stopped by PID (SIGTERM; SIGKILL for a crash).
 *
 *   startCluster():  3 primaries + 3 replicas (redis-cli --cluster create), node timeout 1 s;
 *   startSentinel(): one primary, one replica, three sentinels (quorum 2, down-after 1 s).
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { findFreePort, pingRaw, rawCommand } from "../../src/redis/server";

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Node {
  port: number;
  pid: number;
  /** SIGTERM and wait (idempotent). */
  stop(): Promise<void>;
  /** SIGKILL: a crash. */
  kill9(): Promise<void>;
  /** Starts it again on the same port, with the same arguments and directory. */
  restart(): Promise<void>;
  alive(): boolean;
}

async function spawnRedis(args: string[], port: number, dir: string): Promise<Node> {
  let current = await spawnOnce(args, port, dir);
  const node: Node = {
    port,
    pid: current.pid,
    stop: () => current.end("SIGTERM"),
    kill9: () => current.end("SIGKILL"),
    alive: () => current.alive(),
    async restart() {
      await current.end("SIGKILL");
      current = await spawnOnce(args, port, dir);
      node.pid = current.pid;
    },
  };
  return node;
}

async function spawnOnce(args: string[], port: number, dir: string) {
  const child: ChildProcess = spawn("redis-server", args, { cwd: dir, stdio: ["ignore", "ignore", "ignore"] });
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once("exit", () => ((exited = true), resolve())));
  const killOnExit = () => !exited && child.kill("SIGKILL");
  process.on("exit", killOnExit);
  child.unref();
  const deadline = Date.now() + 10_000;
  while (!(await pingRaw(port))) {
    if (exited) throw new Error(`redis-server on ${port} exited early`);
    if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not answer`);
    await sleep(30);
  }
  const end = async (sig: NodeJS.Signals) => {
    if (!exited) child.kill(sig);
    await exit;
    process.removeListener("exit", killOnExit);
  };
  return { pid: child.pid!, end, alive: () => !exited };
}

const common = (port: number, dir: string) => ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--protected-mode", "yes", "--daemonize", "no"];

export interface Cluster {
  nodes: Node[];
  /** host:port seeds for redis.cluster.nodes. */
  seeds: string[];
  /** The primary owning `slot`. */
  primaryOf(slot: number): Promise<Node>;
  /** A replica of that primary. */
  replicaOf(primary: Node): Promise<Node>;
  /** Waits until every live node reports cluster_state:ok and agrees who owns `slot`. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

async function info(port: number, section: string): Promise<string> {
  return (await rawCommand(port, ["INFO", section], { timeoutMs: 1000 })) ?? "";
}

export async function startCluster(): Promise<Cluster> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "jit-cluster-"));
  const nodes: Node[] = [];
  try {
    for (let i = 0; i < 6; i++) {
      const port = await findFreePort();
      const d = path.join(dir, String(port));
      mkdirSync(d);
      nodes.push(
        await spawnRedis(
          [...common(port, d), "--appendonly", "yes", "--appendfsync", "everysec", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"],
          port,
          d,
        ),
      );
    }
    await run("redis-cli", ["--cluster", "create", ...nodes.map((n) => `127.0.0.1:${n.port}`), "--cluster-replicas", "1", "--cluster-yes"], { timeout: 30_000 });
  } catch (e) {
    for (const n of nodes) await n.kill9();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const byPort = new Map(nodes.map((n) => [n.port, n]));
  async function slotsOwner(slot: number): Promise<number> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const port = await slotsOwnerOnce(slot);
      if (port !== null) return port;
      if (Date.now() > deadline) {
        const text = await rawCommand(nodes.find((n) => n.alive())!.port, ["CLUSTER", "NODES"]).catch((e: Error) => e.message);
        throw new Error(`no primary owns slot ${slot}:\n${text}`);
      }
      await sleep(200);
    }
  }
  async function slotsOwnerOnce(slot: number): Promise<number | null> {
    for (const n of nodes.filter((x) => x.alive())) {
      try {
        const nodesText = (await rawCommand(n.port, ["CLUSTER", "NODES"])) ?? "";
        for (const line of nodesText.split("\n")) {
          const parts = line.split(" ");
          if (!parts[2]?.includes("master") || parts[2].includes("fail")) continue;
          for (const range of parts.slice(8)) {
            const [a, b] = range.split("-").map(Number);
            if (slot >= a! && slot <= (b ?? a)!) return Number(parts[1]!.split(":")[1]!.split("@")[0]);
          }
        }
      } catch {
        /* try the next node */
      }
    }
    return null;
  }
  const cluster: Cluster = {
    nodes,
    seeds: nodes.map((n) => `127.0.0.1:${n.port}`),
    async primaryOf(slot) {
      return byPort.get(await slotsOwner(slot))!;
    },
    async replicaOf(primary) {
      for (const n of nodes.filter((x) => x.alive() && x !== primary)) {
        const text = await info(n.port, "replication");
        if (/role:slave/.test(text) && new RegExp(`master_port:${primary.port}\\b`).test(text)) return n;
      }
      throw new Error(`no replica of ${primary.port}`);
    },
    async waitHealthy(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        let ok = true;
        for (const n of nodes.filter((x) => x.alive())) {
          const text = (await rawCommand(n.port, ["CLUSTER", "INFO"]).catch(() => "")) ?? "";
          if (!/cluster_state:ok/.test(text)) ok = false;
          // A replica that is still syncing cannot acknowledge a WAIT yet.
          const repl = await info(n.port, "replication").catch(() => "");
          if (/role:slave/.test(repl) && !/master_link_status:up/.test(repl)) ok = false;
        }
        if (ok) return;
        if (Date.now() > deadline) throw new Error("cluster did not become healthy");
        await sleep(100);
      }
    },
    async stop() {
      for (const n of nodes) await n.kill9();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await cluster.waitHealthy();
  return cluster;
}

export interface Sentinel {
  master: string;
  primary: Node;
  replica: Node;
  sentinels: Node[];
  /** host:port of the sentinels for redis.sentinel.nodes. */
  seeds: string[];
  /** The port the sentinels currently name as primary. */
  currentPrimaryPort(): Promise<number>;
  stop(): Promise<void>;
}

export async function startSentinel(master = "jitbroker"): Promise<Sentinel> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "jit-sentinel-"));
  const started: Node[] = [];
  try {
    const pPort = await findFreePort();
    const primary = await spawnRedis([...common(pPort, dir), "--appendonly", "no", "--dbfilename", `p${pPort}.rdb`], pPort, dir);
    started.push(primary);
    const rPort = await findFreePort();
    const replica = await spawnRedis([...common(rPort, dir), "--appendonly", "no", "--dbfilename", `r${rPort}.rdb`, "--replicaof", "127.0.0.1", String(pPort)], rPort, dir);
    started.push(replica);
    // Wait for the replica to be in sync, so a failover has a candidate.
    const deadline = Date.now() + 10_000;
    while (!/master_link_status:up/.test(await info(rPort, "replication"))) {
      if (Date.now() > deadline) throw new Error("replica did not sync");
      await sleep(50);
    }
    const sentinels: Node[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await findFreePort();
      const conf = path.join(dir, `sentinel-${port}.conf`);
      writeFileSync(
        conf,
        [
          `port ${port}`,
          "bind 127.0.0.1",
          `dir ${dir}`,
          `sentinel monitor ${master} 127.0.0.1 ${pPort} 2`,
          `sentinel down-after-milliseconds ${master} 1000`,
          `sentinel failover-timeout ${master} 4000`,
          `sentinel parallel-syncs ${master} 1`,
          "",
        ].join("\n"),
      );
      const s = await spawnRedis([conf, "--sentinel"], port, dir);
      sentinels.push(s);
      started.push(s);
    }
    // Sentinels discover each other and the replica through the primary's hello channel.
    const ready = Date.now() + 15_000;
    for (;;) {
      const text = (await rawCommand(sentinels[0]!.port, ["INFO", "sentinel"]).catch(() => "")) ?? "";
      if (/sentinels=3/.test(text) && /slaves=1/.test(text)) break;
      if (Date.now() > ready) throw new Error(`sentinels did not discover each other: ${text}`);
      await sleep(100);
    }
    return {
      master,
      primary,
      replica,
      sentinels,
      seeds: sentinels.map((s) => `127.0.0.1:${s.port}`),
      async currentPrimaryPort() {
        const out = await run("redis-cli", ["-p", String(sentinels.find((s) => s.alive())!.port), "SENTINEL", "get-master-addr-by-name", master]);
        return Number(out.stdout.trim().split("\n")[1]);
      },
      async stop() {
        for (const n of started) await n.kill9();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    for (const n of started) await n.kill9();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/** Runs redis-cli against a port (for CLUSTER FAILOVER, SENTINEL FAILOVER...). */
export async function redisCli(port: number, ...args: string[]): Promise<string> {
  return (await run("redis-cli", ["-p", String(port), ...args], { timeout: 10_000 })).stdout.trim();
}

/** The hash slot of a key (CRC16 of its hash tag, as Redis computes it). */
export async function slotOf(port: number, key: string): Promise<number> {
  return Number(await redisCli(port, "CLUSTER", "KEYSLOT", key));
}
