/**
 * Loads the broker's YAML configuration (docs/ARCHITECTURE.md, How to add a config section): finds the file, substitutes
 * `${VAR}` from the environment, validates with the zod schema, resolves relative paths against
 * the file's own directory and applies environment overrides. Every problem is collected and
 * reported at once, each with its path in the file.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { LineCounter, parseDocument } from "yaml";
import type { z } from "zod";
import { configSchema, listenSchema, redisUrlSchema, type Config } from "./schema";
import { formatPath } from "./path";

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: string[],
  ) {
    // One problem fits on one line (e.g. "<file>: file not found ..."); several are listed.
    super(problems.length === 1 ? `${file}: ${problems[0]}` : `${file}: ${problems.length} problems\n${problems.map((p) => `  ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

export interface LoadedConfig extends Config {
  /** Absolute path of the file the configuration came from. */
  file: string;
  /** Directory that relative paths were resolved against. */
  dir: string;
}

export function resolveConfigPath(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(explicit ?? env.JITBROKER_CONFIG ?? "config/broker.yaml");
}

const VAR = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$\{/g;

/** Replaces `${VAR}` (and `${VAR:-default}`) in every string value; `$${` is a literal `${`. */
function substitute(value: unknown, env: NodeJS.ProcessEnv, at: PropertyKey[], problems: string[]): unknown {
  if (typeof value === "string") {
    return value.replace(VAR, (match, name: string | undefined, dflt: string | undefined) => {
      if (match === "$${") return "${";
      const v = env[name!];
      if (v !== undefined && v !== "") return v;
      if (dflt !== undefined) return dflt;
      problems.push(`${formatPath(at)}: environment variable ${name} is not set`);
      return "";
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substitute(v, env, [...at, i], problems));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, env, [...at, k], problems)]));
  }
  return value;
}

/** Parses configuration text. `file` is used for messages and to resolve relative paths. */
export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const problems: string[] = [];
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false, lineCounter });
  for (const err of doc.errors) {
    // err.linePos is only filled in with prettyErrors (which also rewrites the message).
    const pos = err.linePos?.[0] ?? lineCounter.linePos(err.pos[0]);
    problems.push(`${pos ? `line ${pos.line}, column ${pos.col}` : "(yaml)"}: ${err.message.split("\n")[0]}`);
  }
  if (problems.length > 0) throw new ConfigError(file, problems);
  const raw = doc.toJS({ maxAliasCount: 100 }) as unknown;
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(file, ["(root): must be a mapping with server, identity, workloads, roles..."]);
  }
  const substituted = substitute(raw, env, [], problems);

  const parsed = configSchema.safeParse(substituted);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      if (issue.code === "unrecognized_keys") {
        // A typo is reported where it is, with the key itself in the path.
        for (const key of issue.keys) problems.push(`${formatPath([...issue.path, key])}: unknown key (check the spelling)`);
      } else if (/expected \w+, received undefined$/.test(issue.message)) {
        problems.push(`${formatPath(issue.path)}: required`);
      } else {
        problems.push(`${formatPath(issue.path)}: ${issue.message}`);
      }
    }
  }
  if (problems.length > 0 || !parsed.success) throw new ConfigError(file, problems);

  const dir = path.dirname(path.resolve(file));
  const cfg = parsed.data;
  const rel = (p: string) => path.resolve(dir, p);
  for (const iss of cfg.identity.issuers) {
    if (iss.type === "oidc" && iss.jwks_file) iss.jwks_file = rel(iss.jwks_file);
    if (iss.type === "spiffe" && iss.bundle_file) iss.bundle_file = rel(iss.bundle_file);
  }
  cfg.backends.jwt.signing_key_file = rel(cfg.backends.jwt.signing_key_file);
  cfg.audit.key_file = rel(cfg.audit.key_file);
  for (const s of cfg.audit.sinks) {
    if (s.type === "file") s.path = rel(s.path);
    if (s.type === "syslog" && s.ca_file) s.ca_file = rel(s.ca_file);
  }
  cfg.policy.files = cfg.policy.files.map(rel);
  cfg.redis.data_dir = rel(cfg.redis.data_dir);
  for (const mode of [cfg.redis.sentinel, cfg.redis.cluster]) {
    if (mode && typeof mode.tls === "object" && mode.tls.ca_file) mode.tls.ca_file = rel(mode.tls.ca_file);
  }
  if (cfg.dev) cfg.dev.issuer_key_file = rel(cfg.dev.issuer_key_file);

  // Environment overrides (for containers and CI), validated like the file's own values.
  const override = <T>(name: string, value: string | undefined, schema: z.ZodType<T>, apply: (v: T) => void) => {
    if (value === undefined || value === "") return;
    const r = schema.safeParse(value);
    if (r.success) apply(r.data);
    else problems.push(...r.error.issues.map((i) => `${name}: ${i.message}`));
  };
  override("REDIS_URL", env.REDIS_URL, redisUrlSchema, (v) => {
    // REDIS_URL selects the single-node mode; it cannot silently replace a Sentinel or Cluster setup.
    const other = cfg.redis.sentinel ? "redis.sentinel" : cfg.redis.cluster ? "redis.cluster" : null;
    if (other) problems.push(`REDIS_URL: set while ${other} is configured (use exactly one Redis mode; unset REDIS_URL)`);
    else cfg.redis.url = v;
  });
  override("JITBROKER_LISTEN", env.JITBROKER_LISTEN, listenSchema, (v) => (cfg.server.listen = v));
  if (problems.length > 0) throw new ConfigError(file, problems);
  return { ...cfg, file: path.resolve(file), dir };
}

export function loadConfig(explicit?: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const file = resolveConfigPath(explicit, env);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(file, [code === "ENOENT" ? "file not found (use --config PATH or JITBROKER_CONFIG)" : `cannot read: ${code ?? String(e)}`]);
  }
  return parseConfig(text, file, env);
}
