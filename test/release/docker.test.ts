/**
 * Dockerfile and docker-compose.yml checked against the code, without a Docker engine: the image
 * is Node 26 and installs with `npm ci` from the committed lock file; every `jitbroker` command the
 * compose file runs uses commands and flags the CLI has; the broker reaches the compose Redis
 * (AOF on, password required, never evicting) with that password; its state directory is a
 * volume; published ports stay on loopback and the Vault profile collides with nothing the
 * README runs; every file a service mounts exists.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { parse as parseYaml } from "yaml";
import { buildProgram } from "../../src/cli/main";
import { ROOT } from "../support/cli";

interface Service {
  image?: string;
  build?: string;
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  profiles?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}

const compose = parseYaml(readFileSync(path.join(ROOT, "docker-compose.yml"), "utf8")) as { services: Record<string, Service>; volumes: Record<string, unknown> };
const dockerfile = readFileSync(path.join(ROOT, "Dockerfile"), "utf8");
const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { bin: Record<string, string> };

/** Dockerfile instructions, continuation lines joined. */
const instructions = dockerfile
  .replace(/\\\n/g, " ")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l !== "" && !l.startsWith("#"));

/** `${VAR:-default}` as compose expands it with VAR unset. */
const expand = (s: string) => s.replace(/\$\{([A-Z_]+):-([^}]*)\}/g, (_m, _v, d: string) => d);

/** The subcommand an argv names, and the flags it passes that the command does not have. */
function unknownFlags(argv: string[]): { command: string; unknown: string[] } {
  let cmd: Command = buildProgram();
  let i = 0;
  for (; i < argv.length; i++) {
    const sub = cmd.commands.find((c) => c.name() === argv[i]);
    if (!sub) break;
    cmd = sub;
  }
  const names = new Set(cmd.options.flatMap((o) => [o.long, o.short].filter(Boolean) as string[]));
  const unknown = argv.slice(i).filter((a) => a.startsWith("-") && !names.has(a.split("=")[0]!));
  return { command: argv.slice(0, i).join(" "), unknown };
}

describe("Dockerfile", () => {
  it("builds on a Node 26 image, both stages", () => {
    const froms = instructions.filter((l) => l.startsWith("FROM "));
    expect(froms.length).toBeGreaterThanOrEqual(2);
    for (const f of froms) expect(f).toMatch(/^FROM node:26[-.\w]* ?(AS \w+)?$/);
  });

  it("installs with npm ci from the committed lock file, copied before the sources", () => {
    const copyLock = instructions.findIndex((l) => /^COPY package\.json package-lock\.json \.\/$/.test(l));
    const ci = instructions.findIndex((l) => /^RUN npm ci\b/.test(l));
    const src = instructions.findIndex((l) => /^COPY src /.test(l));
    expect(copyLock).toBeGreaterThanOrEqual(0);
    expect(ci).toBeGreaterThan(copyLock);
    expect(src).toBeGreaterThan(ci);
    expect(instructions.some((l) => /^RUN .*npm install\b/.test(l))).toBe(false);
    expect(existsSync(path.join(ROOT, "package-lock.json"))).toBe(true);
  });

  it("runs the package's bin as a non-root user, with its state directory where JITBROKER_HOME says", () => {
    const link = instructions.find((l) => l.includes("/usr/local/bin/jitbroker"));
    expect(link).toContain(`/app/${pkg.bin.jitbroker}`);
    expect(instructions).toContain('ENTRYPOINT ["jitbroker"]');
    expect(instructions).toContain("USER node");
    expect(instructions).toContain("ENV JITBROKER_HOME=/app/.jitbroker");
    // the default command is a real command with real flags
    const cmd = JSON.parse(instructions.find((l) => l.startsWith("CMD "))!.slice(4)) as string[];
    expect(unknownFlags(cmd)).toEqual({ command: "serve", unknown: [] });
  });

  it("the build context leaves out local state and dependencies", () => {
    const ignore = readFileSync(path.join(ROOT, ".dockerignore"), "utf8").split("\n");
    expect(ignore).toEqual(expect.arrayContaining(["node_modules", ".jitbroker", "dist", "release"]));
  });
});

describe("docker-compose.yml", () => {
  const { redis, broker } = compose.services;

  it("Redis keeps its data (AOF, a volume), never evicts, and requires a password", () => {
    const cmd = redis!.command!.join(" ");
    expect(cmd).toContain("--appendonly yes");
    expect(cmd).toContain("--maxmemory-policy noeviction");
    expect(cmd).toMatch(/--maxmemory \d+[kmg]b /); // else the broker's memory watch (store_full) cannot protect revocation
    expect(cmd).toMatch(/--requirepass "\$\$REDIS_PASSWORD"/);
    expect(redis!.volumes).toContain("redis-data:/data");
    expect(compose.volumes).toHaveProperty("redis-data");
    // the health check authenticates (REDISCLI_AUTH), otherwise it would never pass
    expect(redis!.environment!.REDISCLI_AUTH).toBe(redis!.environment!.REDIS_PASSWORD);
    expect(redis!.ports).toBeUndefined();
  });

  it("the broker reaches that Redis with that password, once it is healthy", () => {
    const url = new URL(expand(broker!.environment!.REDIS_URL!));
    expect(url.hostname).toBe("redis");
    expect(url.port).toBe("6379");
    expect(decodeURIComponent(url.password)).toBe(expand(redis!.environment!.REDIS_PASSWORD!));
    expect(broker!.depends_on).toEqual({ redis: { condition: "service_healthy" } });
  });

  it("runs `jitbroker dev` with flags the CLI has, listening where the published port points", () => {
    expect(unknownFlags(broker!.command!)).toEqual({ command: "dev", unknown: [] });
    const port = broker!.command![broker!.command!.indexOf("--port") + 1];
    expect(broker!.command![broker!.command!.indexOf("--host") + 1]).toBe("0.0.0.0");
    expect(broker!.ports).toEqual([`127.0.0.1:8080:${port}`]);
  });

  it("keeps the broker's state (dev config, issuer keys, signing key) in a volume at JITBROKER_HOME", () => {
    const home = broker!.environment!.JITBROKER_HOME!;
    expect(instructions).toContain(`ENV JITBROKER_HOME=${home}`);
    expect(broker!.volumes).toContain(`broker-data:${home}`);
    expect(compose.volumes).toHaveProperty("broker-data");
  });

  it("the commands its comments and the dev banner give exist (token dev --workload)", () => {
    expect(broker!.environment!.JITBROKER_CMD).toBe("docker compose exec -T broker jitbroker");
    expect(unknownFlags(["token", "dev", "--workload"])).toEqual({ command: "token dev", unknown: [] });
  });

  it("publishes ports on loopback only", () => {
    for (const [name, s] of Object.entries(compose.services)) for (const p of s.ports ?? []) expect(`${name} ${p}`).toMatch(new RegExp(`^${name} 127\\.0\\.0\\.1:\\d+:\\d+$`));
  });

  it("the Vault profile publishes nothing the README's broker uses, and the README starts only its services", () => {
    const vault = Object.entries(compose.services).filter(([, s]) => s.profiles?.includes("vault"));
    expect(vault.map(([n]) => n).sort()).toEqual(["vault", "vault-postgres", "vault-setup"]);
    const used = new Set(["8080"]);
    for (const [, s] of vault) for (const p of s.ports ?? []) expect(used.has(p.split(":")[1]!)).toBe(false);
    // `--profile vault up -d` alone would start the broker service too (it has no profile), on 8080
    expect(readme).toContain("docker compose --profile vault up -d vault-setup");
    expect(readme).not.toMatch(/docker compose --profile vault up -d(?! vault-setup)/);
    const header = readFileSync(path.join(ROOT, "config/examples/vault.yaml"), "utf8");
    expect(header).toContain("docker compose --profile vault up -d vault-setup");
    expect(compose.services["vault-setup"]!.depends_on).toEqual({ vault: { condition: "service_healthy" }, "vault-postgres": { condition: "service_healthy" } });
  });

  it("every file a service mounts from the checkout exists", () => {
    for (const s of Object.values(compose.services)) {
      for (const v of s.volumes ?? []) {
        const source = v.split(":")[0]!;
        if (source.startsWith(".")) expect(existsSync(path.join(ROOT, source))).toBe(true);
      }
    }
  });
});
