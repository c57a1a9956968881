/**
 * Terminal safety for the CLI's text output (docs/ARCHITECTURE.md, Errors): every text the broker or a
 * backend supplies (a task's intent, a revocation reason, a backend error, a workload id, a
 * problem's detail) is printed with its control characters made visible, so that a carriage
 * return, an erase-line code, an OSC 52 clipboard write or a bidi override cannot change what
 * the operator sees. `--json` output is JSON and escapes them itself.
 *
 * Two layers, one rule (`CONTROL`):
 * - `visible(s)` for a value put into a line: every control character, including newline and
 *   tab, becomes `\n`, `\t`, `\xHH` or `\u{HHHH}`; a backslash stays as it is.
 * - `print`/`printErr` for whole text the CLI writes: the same, except the newlines (and tabs)
 *   the CLI put there itself. A value that escaped the first layer still cannot carry ESC, CR or
 *   any other control sequence to the terminal.
 */
import { UNSAFE_TEXT_CLASS } from "../core/text";

/** The characters never written raw (src/core/text.ts), and the same without LF and tab. */
const CONTROL = new RegExp(`[${UNSAFE_TEXT_CLASS}]|\\p{Cs}`, "gu");
const CONTROL_EXCEPT_LAYOUT = new RegExp(`[${UNSAFE_TEXT_CLASS.replace("\\u0000-\\u001f", "\\u0000-\\u0008\\u000b-\\u001f")}]|\\p{Cs}`, "gu");

function escapeChar(c: string): string {
  if (c === "\n") return "\\n";
  if (c === "\r") return "\\r";
  if (c === "\t") return "\\t";
  const code = c.codePointAt(0)!;
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`;
}

/** A broker- or backend-supplied value, safe to put into one line of terminal output. */
export function visible(value: unknown): string {
  const s = typeof value === "string" ? value : value === undefined || value === null ? "" : String(value);
  return s.replace(CONTROL, escapeChar);
}

/** Whole text as the CLI writes it: control characters visible, the CLI's own newlines and tabs kept. */
export function safeText(text: string): string {
  return text.replace(CONTROL_EXCEPT_LAYOUT, escapeChar);
}

/** Writes text to stdout through `safeText`. */
export function print(text: string): void {
  process.stdout.write(safeText(text));
}

/** Writes text to stderr through `safeText`. */
export function printErr(text: string): void {
  process.stderr.write(safeText(text));
}

/** A broker answer with every string in it (keys and values, at any depth) passed through `visible`. */
export function visibleDeep<T>(value: T): T {
  if (typeof value === "string") return visible(value) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => visibleDeep(v)) as T;
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [visible(k), visibleDeep(v)])) as T;
  }
  return value;
}
