/**
 * Scrubbing of text that comes from Vault before it enters an error message (I6).
 *
 * Vault's error text ends up in `last_error` on the lease (Redis), `issue_failed` and
 * `revoke_failed` audit events, logs and the report of a reconciliation. Vault does not echo
 * tokens, but its plugins quote what they were given: a database plugin's connection string
 * (`postgres://vault:<password>@db:5432/app`, `password=...`), a Go `url.Parse` error, a
 * misconfigured engine's JSON. Whatever looks like a credential is replaced; the rest (status,
 * Vault's wording) is kept, because operators need it.
 */

const REDACTED = "[redacted]";

/** Key names whose value is a secret in `key=value` or `"key": "value"` form. */
const SECRET_KEYS = "pass(?:word|wd|phrase)?|pwd|secret(?:[_-]?(?:id|key|access[_-]?key))?|(?:client|session|access|auth|bearer|refresh|id|vault)[_-]?token|token|access[_-]?key(?:[_-]?id)?|private[_-]?key|api[_-]?key|credentials?|jwt";

const NOT_AFTER = "(?<![A-Za-z0-9])";

const RULES: [RegExp, string | ((m: string, ...groups: string[]) => string)][] = [
  // userinfo in a URL or DSN: scheme://user:password@host (a sloppy password may hold @ or /:
  // everything up to the last @ before a space or a quote goes).
  [/\b([a-z][a-z0-9+.-]*:\/\/)[^\s"'`<>@]*(?:@[^\s"'`<>@]*)*@/gi, `$1${REDACTED}@`],
  // Go MySQL DSNs: user:password@tcp(host:port)/db
  [/[^\s"'`<>@/:]+:[^\s"'`<>]*@(?=(?:tcp|udp|unix)\()/g, `${REDACTED}@`],
  // "password": "value" (JSON, single or double quotes; db_password, client_token... too)
  [new RegExp(`(["'])([A-Za-z0-9_-]*(?:${SECRET_KEYS}))\\1(\\s*:\\s*)(?:"(?:[^"\\\\]|\\\\.)*"|'[^']*'|[^\\s,}\\]]+)`, "gi"), (_m, q, k, sep) => `${q}${k}${q}${sep}"${REDACTED}"`],
  // password=value, password:value (DSN keywords, query strings, Go struct dumps); not
  // "token: expired" (prose), which has a space after the colon
  [new RegExp(`${NOT_AFTER}(${SECRET_KEYS})(\\s*=\\s*|:)(?:"(?:[^"\\\\]|\\\\.)*"|'[^']*'|[^\\s&;,"'})\\]]+)`, "gi"), (_m, k, sep) => `${k}${sep}${REDACTED}`],
  // Authorization-style values
  [/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/g, `$1 ${REDACTED}`],
  // JWTs (login JWTs, service account tokens)
  [/\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g, REDACTED],
  // Vault tokens: hvs./hvb./hvr. (1.10+), s./b./r. (older), with an optional namespace suffix
  [/\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9_-]{16,}(?:\.[A-Za-z0-9]{2,})?/g, REDACTED],
  // UUIDs: tokens of Vault before 1.0, AppRole secret ids
  [/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, REDACTED],
  // long opaque strings (keys, generated passwords, hashes): 32+ characters of base64 mixing
  // digits, lower and upper case, or 40+ hex digits
  [/[A-Za-z0-9+_=-]{32,}/g, (m) => ((/[0-9]/.test(m) && /[a-z]/.test(m) && /[A-Z]/.test(m)) || /^[0-9a-f]{40,}$/i.test(m) ? REDACTED : m)],
];

/** `text` with everything that looks like a credential replaced by `[redacted]`. */
export function scrubSecrets(text: string): string {
  let out = text;
  for (const [re, by] of RULES) out = out.replace(re, by as string);
  return out;
}
