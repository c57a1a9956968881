/**
 * How `exchange` hands a credential to the rest of a CI job: environment variables, as shell
 * `export` lines (`--format env`) or as GitHub Actions file commands (`--format github`).
 * Pure functions: the command does the I/O.
 */
import { randomBytes } from "node:crypto";
import type { CredentialGrant } from "../../client/types";
import { visible } from "../text";

export interface ExportVar {
  name: string;
  value: string;
  /** Secret values are masked in GitHub Actions logs. */
  secret: boolean;
}

export class OutputError extends Error {}

const SHELL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The prefix of a Vault secret's fields: they never name a variable outside the credential's own. */
export const SECRET_PREFIX = "JITBROKER_SECRET_";

/** Field names that may become a variable: ASCII letters, digits, `_` and `-` (as `_`), at most 64. */
const SAFE_FIELD = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * A Vault secret field's variable name, `JITBROKER_SECRET_<FIELD>` (upper case, `-` as `_`), or
 * null for a field whose name has any other character (it is not exported).
 */
export function envName(field: string): string | null {
  if (!SAFE_FIELD.test(field)) return null;
  return `${SECRET_PREFIX}${field.toUpperCase().replace(/-/g, "_")}`;
}

const str = (v: unknown): string => (typeof v === "string" ? v : v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));

/**
 * The variables for a credential (docs/ARCHITECTURE.md, How to add a backend):
 * - jwt: JITBROKER_TOKEN;
 * - vault: VAULT_TOKEN for a child token (token roles: `data` holds `token` and `accessor`, and
 *   there is no Vault `lease_id`), otherwise each field of the dynamic secret's `data` as
 *   JITBROKER_SECRET_<FIELD> (`username` → JITBROKER_SECRET_USERNAME, `db-password` →
 *   JITBROKER_SECRET_DB_PASSWORD). A field named `path` or `ld_preload` can never replace PATH or
 *   LD_PRELOAD after `eval`; a field whose name has other characters than letters, digits, `_`
 *   and `-` is skipped, and `onSkip` says so;
 * - aws: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, and AWS_CREDENTIAL_EXPIRATION
 *   (read by the AWS SDKs);
 * plus JITBROKER_LEASE_ID and JITBROKER_EXPIRES_AT (not secret).
 * Every credential value counts as secret, whatever its name.
 */
export function credentialVars(grant: CredentialGrant, onSkip: (note: string) => void = () => undefined): ExportVar[] {
  const c = grant.credential as unknown as Record<string, unknown> & { type: string };
  const vars: ExportVar[] = [];
  const secret = (name: string, value: unknown) => vars.push({ name, value: str(value), secret: true });
  if (c.type === "jwt") {
    secret("JITBROKER_TOKEN", c.token);
  } else if (c.type === "aws") {
    secret("AWS_ACCESS_KEY_ID", c.access_key_id);
    secret("AWS_SECRET_ACCESS_KEY", c.secret_access_key);
    secret("AWS_SESSION_TOKEN", c.session_token);
    if (c.expiration !== undefined) vars.push({ name: "AWS_CREDENTIAL_EXPIRATION", value: str(c.expiration), secret: false });
  } else if (c.type === "vault") {
    const data = (c.data ?? {}) as Record<string, unknown>;
    if (c.lease_id === undefined && typeof data.token === "string" && typeof data.accessor === "string") secret("VAULT_TOKEN", data.token);
    else {
      const fields = Object.entries(data);
      if (fields.length === 0) throw new OutputError("the vault credential has no data fields to export");
      for (const [k, v] of fields) {
        const name = envName(k);
        if (name === null || !SHELL_NAME.test(name)) {
          onSkip(`vault secret field "${visible(k.slice(0, 64))}" not exported: a field name must be 1-64 of letters, digits, _ and - (use --format json for every field)`);
          continue;
        }
        secret(name, v);
      }
      if (!vars.some((v) => v.name.startsWith(SECRET_PREFIX))) throw new OutputError("no field of the vault secret can be exported as an environment variable; use --format json");
    }
  } else {
    throw new OutputError(`credential type ${JSON.stringify(c.type)} has no environment form; use --format json`);
  }
  vars.push({ name: "JITBROKER_LEASE_ID", value: grant.lease.id, secret: false });
  vars.push({ name: "JITBROKER_EXPIRES_AT", value: grant.lease.expires_at, secret: false });
  const seen = new Set<string>();
  for (const v of vars) {
    if (seen.has(v.name)) throw new OutputError(`two credential fields map to the environment variable ${v.name}; use --format json`);
    seen.add(v.name);
    if (v.value.includes("\0")) throw new OutputError(`the value of ${v.name} contains a NUL byte and cannot be an environment variable; use --format json`);
  }
  return vars;
}

/** POSIX shell single quoting: safe for `eval` whatever the value holds (quotes, `$`, newlines). */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** `export NAME='value'` lines. */
export function envLines(vars: ExportVar[]): string {
  return vars.map((v) => `export ${v.name}=${shellQuote(v.value)}\n`).join("");
}

/** Escapes a workflow command's data as @actions/core does (%, CR, LF). */
function commandData(s: string): string {
  return s.replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}

/**
 * `::add-mask::` lines for every secret value (printed before anything else). A multi-line value
 * is masked whole and line by line, as GitHub's documentation advises for multi-line secrets.
 */
export function maskCommands(vars: ExportVar[]): string {
  const out: string[] = [];
  for (const v of vars) {
    if (!v.secret || v.value === "") continue;
    out.push(`::add-mask::${commandData(v.value)}`);
    const lines = v.value.split(/\r?\n/).filter((l) => l.trim() !== "");
    if (lines.length > 1) for (const l of lines) out.push(`::add-mask::${commandData(l)}`);
  }
  return out.map((l) => `${l}\n`).join("");
}

/**
 * `NAME<<DELIMITER` … `DELIMITER` blocks for $GITHUB_ENV and $GITHUB_OUTPUT (multi-line safe).
 * The delimiter is random and checked not to occur in any name or value, as @actions/core does.
 */
export function githubFileCommands(vars: ExportVar[], random: () => string = () => randomBytes(16).toString("hex")): string {
  return vars
    .map((v) => {
      let delimiter: string;
      do delimiter = `ghadelimiter_${random()}`;
      while (v.value.includes(delimiter) || v.name.includes(delimiter));
      return `${v.name}<<${delimiter}\n${v.value}\n${delimiter}\n`;
    })
    .join("");
}
