/**
 * What `config check` verifies beyond the schema, offline: every `policy.files` pattern matches
 * a file (a pattern that matches nothing leaves the broker denying everything it was meant to
 * allow), and every issuer whose keys come from a file (`jwks_file`, `bundle_file`) has at least
 * one usable public key in it (a SPIFFE bundle needs keys with `use: "jwt-svid"`). Key sets
 * fetched from a URL are checked by the running broker (`/readyz`), not here.
 *
 * Also: which configuration offline commands read when none is named (the running
 * `jitbroker dev`'s, else the default), said on stderr so that nobody edits or rotates the
 * wrong broker's files.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { resolveConfigPath, type LoadedConfig } from "../config/load";
import { normaliseKeys } from "../identity/keyset";
import { loadPolicyFiles } from "../policy/files";
import { PolicyError } from "../policy/types";
import { embeddedRedisUrl } from "../redis/embedded";

const rel = (p: string) => path.relative(process.cwd(), p) || p;

export async function configFileProblems(cfg: LoadedConfig): Promise<string[]> {
  const problems: string[] = [];
  for (const [i, pattern] of cfg.policy.files.entries()) {
    try {
      if ((await loadPolicyFiles([pattern])).length === 0) problems.push(`policy.files[${i}]: ${rel(pattern)} matches no file`);
    } catch (e) {
      if (!(e instanceof PolicyError)) throw e;
      problems.push(`policy.files[${i}]: ${e.message}`);
    }
  }
  for (const [i, iss] of cfg.identity.issuers.entries()) {
    const [key, file, flavour] = iss.type === "oidc" ? (["jwks_file", iss.jwks_file, "oidc"] as const) : (["bundle_file", iss.bundle_file, "spiffe"] as const);
    if (file === undefined) continue;
    const where = `identity.issuers[${i}].${key}`;
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(file, "utf8"));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      problems.push(`${where}: ${rel(file)}: ${code === "ENOENT" ? "file not found" : code ?? `not JSON (${(e as Error).message})`}`);
      continue;
    }
    let keys: number;
    try {
      keys = normaliseKeys(doc, flavour).length;
    } catch (e) {
      problems.push(`${where}: ${rel(file)}: ${(e as Error).message}`);
      continue;
    }
    if (keys === 0) {
      problems.push(
        `${where}: ${rel(file)} has no usable key, so no token of issuer ${iss.name} can verify` +
          (flavour === "spiffe" ? ' (a SPIFFE bundle needs public keys with "use": "jwt-svid")' : " (it needs public RSA, EC or OKP signature keys)"),
      );
    }
  }
  return problems;
}

/** The dev configuration `jitbroker dev` writes (JITBROKER_HOME, default .jitbroker). */
export const devConfigFile = (): string => path.resolve(process.env.JITBROKER_HOME ?? ".jitbroker", "dev.yaml");

/** True when a `jitbroker dev` runs on that configuration (its embedded Redis left its URL file). */
function devRunning(file: string): boolean {
  return existsSync(file) && embeddedRedisUrl(path.join(path.dirname(file), "redis")) !== null;
}

/**
 * The configuration file an offline command (`policy why`, `policy test`, `keys rotate`,
 * `audit verify`) reads: `--config`, else JITBROKER_CONFIG, else the running `jitbroker dev`'s,
 * else config/broker.yaml. Unless it was named with --config, one line on stderr says which.
 */
export function offlineConfigFile(flag: string | undefined, say: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): string {
  if (flag !== undefined) return flag;
  if (process.env.JITBROKER_CONFIG) {
    say(`jitbroker: reading ${rel(process.env.JITBROKER_CONFIG)} (JITBROKER_CONFIG; --config to read another)`);
    return process.env.JITBROKER_CONFIG;
  }
  const dev = devConfigFile();
  if (devRunning(dev)) {
    say(`jitbroker: reading ${rel(dev)}, the configuration of the running jitbroker dev (--config to read another)`);
    return dev;
  }
  const file = resolveConfigPath(undefined, {});
  say(`jitbroker: reading ${rel(file)} (the default; --config to read another)`);
  return file;
}
