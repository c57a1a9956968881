/**
 * The broker's logger (pino). Secrets must never reach a log line (I6): call sites log ids and
 * names only, and the redaction list below is the safety net for anything that slips through.
 */
import pino, { type Logger, type DestinationStream } from "pino";

export const REDACT_PATHS = [
  "authorization",
  "*.authorization",
  "headers.authorization",
  "req.headers.authorization",
  "req.headers.cookie",
  "token",
  "*.token",
  "access_token",
  "*.access_token",
  "id_token",
  "*.id_token",
  "client_secret",
  "*.client_secret",
  "password",
  "*.password",
  "secret",
  "*.secret",
  "secret_id",
  "*.secret_id",
  "secret_access_key",
  "*.secret_access_key",
  "session_token",
  "*.session_token",
  "credential",
  "*.credential",
];

export function createLogger(opts: { level?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      name: "jitbroker",
      level: opts.level ?? process.env.JITBROKER_LOG_LEVEL ?? "info",
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      base: { pid: process.pid },
    },
    opts.destination,
  );
}

export type { Logger };

/**
 * A child of `logger` that skips the redaction pass, for lines whose fields are secret-free by
 * construction and where the pass costs most on the request path (issue 17): the access log
 * line (fixed keys, none on the redaction list) and the audit echo (the ledger refuses any event
 * with a secret-named key at any depth before it is written, a stricter rule than the list).
 * About 9 µs less per line (a 1 KB audit event: 27 → 18 µs).
 */
export function withoutRedaction(logger: Logger): Logger {
  return typeof logger.child === "function" ? logger.child({}, { redact: [] }) : logger;
}
