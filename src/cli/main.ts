#!/usr/bin/env node
/**
 * The `jitbroker` command (docs/ARCHITECTURE.md, Feature folders; a public contract). Exit codes: 0 success, 1 refused,
 * 2 usage or configuration error, 3 broker or backend unavailable. Every failure prints one
 * line on stderr.
 */
import { existsSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { Command, CommanderError, Option } from "commander";
import type { LoadedConfig } from "../config/load";
import type { Broker } from "../broker";
import { parseDuration } from "../core/duration";
import { createLogger } from "../core/logger";
import { devConfigYaml } from "../dev/config";
import { DEV_OIDC_ISSUER, ensureDevIssuer, signDevToken } from "../dev/issuer";
import { describeConfig } from "./describe";
import { verifyAuditChain } from "../audit/ledger";
import { AuditKeyFileError, readAuditKey } from "../audit/key";
import { verifyAuditFiles } from "../audit/files";
import { rotateSigningKey, SigningKeyFileError } from "../backends/jwt/keys";
import { PolicyError } from "../policy/engine";
import { createKeyspace } from "../redis/keys";
import { EmbeddedRedisError, embeddedRedisUrl } from "../redis/embedded";
import type { Redis } from "ioredis";
import { createRedisFactory, type RedisFactory } from "../redis/connect";
import { describeRedisError } from "../redis/health";
import { mkdirSync } from "node:fs";
import { examplePolicies, packageVersion } from "../release/build-info";
import { registerClientCommands } from "./client";
import { CliError, load } from "./errors";
import { printErr } from "./text";
import { configWarnings, registerPolicyCommands } from "./policy-commands";
import { configFileProblems, offlineConfigFile } from "./config-files";

/** Text from files or Redis, with control characters escaped before it reaches a terminal. */
const safeText = (s: string): string => s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

const devDir = () => path.resolve(process.env.JITBROKER_HOME ?? ".jitbroker");

async function serve(cfg: LoadedConfig, banner?: (url: string) => string, only?: "api" | "worker"): Promise<void> {
  const logger = createLogger();
  let broker: Broker;
  try {
    const { createBroker } = require("../broker") as typeof import("../broker");
    broker = await createBroker(cfg, { logger, parts: { api: only !== "worker", worker: only !== "api" } });
  } catch (e) {
    if (e instanceof PolicyError || e instanceof SigningKeyFileError || e instanceof AuditKeyFileError) {
      process.stderr.write(`${e.message}\n`);
      throw new CliError(e instanceof PolicyError ? "the policy set has errors; nothing was started" : e instanceof AuditKeyFileError ? "the audit key file is unusable; nothing was started" : "the signing key file is unusable; nothing was started", 2);
    }
    if (e instanceof EmbeddedRedisError) throw new CliError(`cannot start: ${e.message}`, 2);
    throw new CliError(`cannot start: ${(e as Error).message.split("\n")[0]}`, 3);
  }
  const stopOn = (what: string) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, `shutting down ${what}`);
      broker.close().then(
        () => process.exit(0),
        (e: unknown) => {
          logger.error({ err: e }, "shutdown failed");
          process.exit(1);
        },
      );
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGHUP", () => {
      // Policies and inventory (workloads, roles) together; active leases are re-authorized.
      void broker.reload({ actor: "system", source: "SIGHUP" }).catch(() => undefined);
      void broker.reloadSigningKeys();
    });
  };
  if (only === "worker") {
    const at = cfg.worker.listen;
    if (!at) {
      logger.info({ config: cfg.file }, "jitbroker revocation worker running (no HTTP listener; set worker.listen for /healthz, /readyz and /metrics)");
      stopOn("worker");
      return;
    }
    try {
      const { url } = await broker.listen(at.port, at.host);
      logger.info({ url, config: cfg.file }, "jitbroker revocation worker running (/healthz, /readyz and /metrics only)");
    } catch (e) {
      await broker.close();
      const code = (e as NodeJS.ErrnoException).code;
      throw new CliError(code === "EADDRINUSE" ? `${at.text} is already in use (change worker.listen)` : `cannot listen on ${at.text}: ${code ?? (e as Error).message}`, 3);
    }
    stopOn("worker");
    return;
  }
  let url: string;
  try {
    ({ url } = await broker.listen());
  } catch (e) {
    await broker.close();
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(
      code === "EADDRINUSE" ? `${cfg.server.listen.text} is already in use (change server.listen, or set JITBROKER_LISTEN)` : `cannot listen on ${cfg.server.listen.text}: ${code ?? (e as Error).message}`,
      3,
    );
  }
  logger.info({ url, config: cfg.file, public_url: cfg.server.public_url }, "jitbroker listening");
  if (banner) process.stdout.write(banner(url));
  stopOn("broker");
}

/** Redis for CLI commands: the configured mode (REDIS_URL, redis.url, sentinel, cluster), or the running embedded Redis. */
function cliRedisFactory(cfg: LoadedConfig): RedisFactory {
  if (cfg.redis.url !== "embedded") return createRedisFactory(cfg.redis);
  const url = embeddedRedisUrl(cfg.redis.data_dir);
  if (!url) throw new CliError(`redis.url is embedded and no embedded Redis is running for ${cfg.redis.data_dir} (start the broker, or set REDIS_URL)`, 3);
  return createRedisFactory({ ...cfg.redis, url });
}

async function withRedis<T>(cfg: LoadedConfig, fn: (redis: Redis) => Promise<T>): Promise<T> {
  const factory = cliRedisFactory(cfg);
  const redis = factory.connect("jitbroker-cli", "cli");
  redis.on("error", () => undefined);
  try {
    await redis.connect();
  } catch (e) {
    throw new CliError(`cannot reach Redis (${factory.target}): ${describeRedisError(e)}`, 3);
  }
  try {
    return await fn(redis);
  } finally {
    redis.disconnect();
  }
}

export function buildProgram(): Command {
  const program = new Command("jitbroker")
    .description("Just-in-time ephemeral credentials for workloads")
    .version(packageVersion())
    .exitOverride();

  program
    .command("serve")
    .description("run the broker (API and revocation worker)")
    .option("--config <file>", "configuration file (default: $JITBROKER_CONFIG or config/broker.yaml)")
    .addOption(new Option("--only <part>", "run only part of the broker").choices(["api", "worker"]))
    .action(async (opts: { config?: string; only?: "api" | "worker" }) => {
      await serve(load(opts.config), undefined, opts.only);
    });

  program
    .command("dev")
    .description("run everything locally: embedded Redis, a dev identity issuer, demo workloads and roles")
    .option("--port <port>", "listen port", "8080")
    .option("--host <address>", "listen address (0.0.0.0 in a container whose port is published on the host's loopback)", "127.0.0.1")
    .option("--reset", "write the dev configuration anew")
    .action(async (opts: { port: string; host: string; reset?: boolean }) => {
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new CliError(`--port ${opts.port}: not a port number`, 2);
      if (net.isIP(opts.host) === 0 && opts.host !== "localhost") throw new CliError(`--host ${opts.host}: not an IP address`, 2);
      const dir = devDir();
      await ensureDevIssuer(dir);
      const file = path.join(dir, "dev.yaml");
      if (opts.reset || !existsSync(file)) writeFileSync(file, devConfigYaml(), { mode: 0o600 });
      const policies = path.join(dir, "policies");
      if (opts.reset || !existsSync(policies)) {
        mkdirSync(policies, { recursive: true });
        for (const [f, text] of Object.entries(examplePolicies())) writeFileSync(path.join(policies, f), text);
      }
      const cfg = load(file);
      cfg.server.listen = { host: opts.host, port, text: `${opts.host}:${port}` };
      // The URL clients use (and the iss of broker JWTs): this machine's loopback, also when a
      // container listens on 0.0.0.0 behind a published port.
      cfg.server.public_url = `http://127.0.0.1:${port}`;
      const cmd = process.env.JITBROKER_CMD ?? "jitbroker";
      await serve(cfg, (bound) => {
        const url = opts.host === "127.0.0.1" ? bound : cfg.server.public_url;
        return [
          ``,
          `jitbroker dev is running at ${url}`,
          `  config:    ${path.relative(process.cwd(), file) || file}  (${cfg.redis.url === "embedded" ? `embedded Redis under ${path.relative(process.cwd(), cfg.redis.data_dir)}` : `Redis from REDIS_URL`})`,
          `  workloads: ${cfg.workloads.map((w) => `${w.id} (${w.kind})`).join(", ")}`,
          ``,
          `Try, in another terminal:`,
          `  TOKEN=$(${cmd} token dev --workload support-agent)`,
          `  curl -s -H "Authorization: Bearer $TOKEN" ${url}/v1/whoami`,
          `  curl -s -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \\`,
          `       -d '{"role":"orders-read","task":{"id":"ticket-42","intent":"answer a ticket"}}' ${url}/v1/credentials`,
          `  curl -s -X POST -H "Authorization: Bearer $TOKEN" ${url}/v1/tasks/ticket-42/complete`,
          `  ${cmd} audit verify --config ${path.relative(process.cwd(), file) || file}`,
          `  (README.md walks through the rest: introspection, operators, force-revocation)`,
          ``,
          `Stop with Ctrl-C.`,
          ``,
        ].join("\n");
      });
    });

  const token = program.command("token").description("workload tokens for local testing");
  token
    .command("dev")
    .description("print a token from the dev identity issuer (dev mode only)")
    .requiredOption("--workload <id>", "workload id from the dev configuration")
    .option("--config <file>", "dev configuration (default: $JITBROKER_HOME/dev.yaml, i.e. .jitbroker/dev.yaml)")
    .option("--ttl <duration>", "token lifetime", "10m")
    .action(async (opts: { workload: string; config?: string; ttl: string }) => {
      const file = opts.config ?? process.env.JITBROKER_CONFIG ?? path.join(devDir(), "dev.yaml");
      if (!existsSync(file)) throw new CliError(`${file} not found: start \`jitbroker dev\` first`, 2);
      const cfg = load(file);
      if (!cfg.dev) throw new CliError(`${cfg.file} is not a dev configuration (no dev: section); dev tokens are for dev mode only`, 2);
      const workload = cfg.workloads.find((w) => w.id === opts.workload);
      if (!workload) throw new CliError(`unknown workload "${opts.workload}" (known: ${cfg.workloads.map((w) => w.id).join(", ")})`, 2);
      const issuer = cfg.identity.issuers.find((i) => i.name === workload.issuer)!;
      if (issuer.type === "oidc" && issuer.issuer !== DEV_OIDC_ISSUER) throw new CliError(`workload ${workload.id} is not bound to the dev issuer`, 2);
      let ttlMs: number;
      try {
        ttlMs = parseDuration(opts.ttl);
      } catch (e) {
        throw new CliError(`--ttl: ${(e as Error).message}`, 2);
      }
      if (ttlMs > issuer.max_token_lifetime) throw new CliError(`--ttl ${opts.ttl} exceeds the issuer's max_token_lifetime`, 2);
      const claims = Object.fromEntries(Object.entries(workload.claims).map(([k, v]) => [k, Array.isArray(v) ? v[0] : v]));
      const jwt = await signDevToken({
        keyFile: cfg.dev.issuer_key_file,
        kind: issuer.type,
        issuer: issuer.type === "oidc" ? issuer.issuer : undefined,
        subject: workload.subject ?? `dev:${workload.id}`,
        audience: cfg.server.audience,
        claims,
        ttlSeconds: Math.max(1, Math.floor(ttlMs / 1000)),
      });
      process.stdout.write(`${jwt}\n`);
    });

  const config = program.command("config").description("configuration tools");
  config
    .command("check")
    .description("validate the configuration and its policies, print what it defines and warn about risky entries")
    .option("--config <file>", "configuration file")
    .option("--strict", "exit 1 when there are warnings")
    .action(async (opts: { config?: string; strict?: boolean }) => {
      const cfg = load(opts.config);
      const problems = await configFileProblems(cfg);
      if (problems.length === 1) throw new CliError(problems[0]!, 2);
      if (problems.length > 1) {
        process.stderr.write(`${problems.join("\n")}\n`);
        throw new CliError(`configuration has ${problems.length} problems`, 2);
      }
      const warnings = await configWarnings(cfg);
      process.stdout.write(describeConfig(cfg, warnings));
      if (opts.strict && warnings.length > 0) throw new CliError(`${warnings.length} warning${warnings.length === 1 ? "" : "s"} (--strict)`, 1);
    });

  const keysCmd = program.command("keys").description("the signing keys of broker-issued JWTs");
  keysCmd
    .command("rotate")
    .description("make a new current signing key; the previous ones stay in the JWKS")
    .option("--config <file>", "configuration file (backends.jwt.signing_key_file; default: $JITBROKER_CONFIG, the running jitbroker dev's, or config/broker.yaml)")
    .action(async (opts: { config?: string }) => {
      const cfg = load(offlineConfigFile(opts.config));
      try {
        const keys = await rotateSigningKey(cfg.backends.jwt.signing_key_file);
        process.stdout.write(
          `new signing key ${keys.current.kid} in ${cfg.backends.jwt.signing_key_file}; ${keys.jwks().keys.length - 1} previous key(s) stay in the JWKS\n` +
            `send SIGHUP to running brokers (or restart them) to sign with it\n`,
        );
      } catch (e) {
        if (e instanceof SigningKeyFileError) throw new CliError(e.message, 2);
        throw e;
      }
    });

  const audit = program.command("audit").description("the audit ledger");
  audit
    .command("verify")
    .description("check the keyed chain of the audit ledger in Redis, or of exported sink files with --file (exit 1 on a break)")
    .option("--config <file>", "configuration file (Redis is read from it or REDIS_URL; the key from audit.key_file; default: $JITBROKER_CONFIG, the running jitbroker dev's, or config/broker.yaml)")
    .option("--file <file>", "an exported JSON-lines file (repeat for rotated files; any order); no Redis is read", (v: string, prev: string[] = []) => [...prev, v])
    .option("--key-file <file>", "the chain key (default: audit.key_file of the configuration)")
    .action(async (opts: { config?: string; file?: string[]; keyFile?: string }) => {
      // Read (and announce) the configuration at most once: for the key file and for Redis.
      let loaded: LoadedConfig | undefined;
      const config = () => (loaded ??= load(offlineConfigFile(opts.config)));
      const keyFile = opts.keyFile ? path.resolve(opts.keyFile) : config().audit.key_file;
      let key;
      try {
        key = await readAuditKey(keyFile);
      } catch (e) {
        if (e instanceof AuditKeyFileError) throw new CliError(e.message, 2);
        throw e;
      }
      if (opts.file && opts.file.length > 0) {
        let res;
        try {
          res = await verifyAuditFiles(key, opts.file.map((f) => path.resolve(f)));
        } catch (e) {
          throw new CliError(`cannot read ${safeText((e as NodeJS.ErrnoException).path ?? "a file")}: ${(e as NodeJS.ErrnoException).code ?? "error"}`, 2);
        }
        for (const f of res.partialLines) process.stderr.write(`note: ${safeText(f)} ends with an incomplete line (a crash while writing); skipped\n`);
        if (!res.ok) throw new CliError(`audit export BROKEN at position ${res.firstBreak!.position} (seq ${res.firstBreak!.seq}): ${safeText(res.firstBreak!.reason)} (${res.checked} events checked)`, 1);
        const span = res.checked === 0 ? "" : ` from seq ${res.firstSeq} to ${res.lastSeq}`;
        const start = res.checked === 0 || res.fromGenesis ? "" : " (starts after earlier events not in these files)";
        process.stdout.write(`audit export OK: ${res.checked} events verified${span}${start}; ${res.duplicates} duplicate line(s) ignored; key ${key.kid}\n`);
        return;
      }
      const cfg = config();
      const keys = createKeyspace(cfg.redis.prefix, cfg.redis.shards);
      const res = await withRedis(cfg, (redis) => verifyAuditChain(redis, { key, streamKey: keys.audit, headKey: keys.auditHead, anchorKey: keys.auditAnchor }));
      if (!res.ok) {
        throw new CliError(
          `audit chain BROKEN at position ${res.firstBreak?.position ?? "?"} (seq ${res.firstBreak?.seq || "-"}): ${res.firstBreak?.reason ?? "unknown"} (${res.checked} events checked)`,
          1,
        );
      }
      const legacy = res.legacy > 0 ? ` (${res.legacy} written before the key, fixed by the switch-over event)` : "";
      process.stdout.write(`audit chain OK: ${res.checked} events verified${legacy}; key ${key.kid}\n`);
    });

  registerClientCommands(program);
  registerPolicyCommands(program);
  oneLineUsageErrors(program, "jitbroker");

  return program;
}

/**
 * Commander's usage errors (unknown option or command, missing option, bad choice) as one line
 * in the CLI's format: `jitbroker: usage: <what> (jitbroker <command> --help)`.
 */
function oneLineUsageErrors(cmd: Command, name: string): void {
  cmd.configureOutput({
    outputError: (str, write) => write(`jitbroker: usage: ${str.replace(/^error: /, "").replace(/\s*\n\s*/g, " ").trim()} (${name} --help)\n`),
  });
  for (const sub of cmd.commands) oneLineUsageErrors(sub, `${name} ${sub.name()}`);
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help") return 0;
      return 2; // commander already printed the one-line reason
    }
    if (e instanceof CliError) {
      printErr(`jitbroker: ${e.message}\n`);
      return e.exitCode;
    }
    printErr(`jitbroker: ${(e as Error).message ?? String(e)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      // Long-running commands (serve, dev) keep the event loop alive; others exit now.
      if (code !== 0) process.exit(code);
    },
    (e: unknown) => {
      printErr(`jitbroker: ${String(e)}\n`);
      process.exit(1);
    },
  );
}
