/**
 * Splitting Cedar policy text into statements, and mapping offsets to line numbers.
 *
 * Cedar's own `policySetTextToParts` stops at the first syntax error of a file and returns the
 * parts sorted by its generated ids ("policy0", "policy1", "policy10", ...), which loses both the
 * order in the file and the line of each policy. So the file is cut here at every top-level `;`
 * (outside string literals and `//` comments, the only places a `;` can hide in Cedar: there are
 * no block comments), and each statement is parsed on its own by Cedar. That reports every broken
 * policy of a file, not just the first, and gives each policy its index and line. compile.ts
 * cross-checks the cut against `policySetTextToParts` for files that parse.
 */

export interface Statement {
  /** Character offset of the statement's first token (annotations included) in the file. */
  start: number;
  /** Character offset just past the statement's `;` (or the end of the file if it has none). */
  end: number;
  /** `text.slice(start, end)`: the policy as written, without the comments that precede it. */
  text: string;
  /**
   * The statement with string contents and comments blanked out (same length as `text`), for
   * locating tokens such as `@max_ttl` without being fooled by strings or comments.
   */
  masked: string;
}

export function splitStatements(text: string): Statement[] {
  const out: Statement[] = [];
  const masked = text.split("");
  let start = -1; // first token of the current statement, -1 while only whitespace/comments seen
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i]!;
    if (c === "/" && text[i + 1] === "/") {
      while (i < n && text[i] !== "\n") masked[i++] = " ";
      continue;
    }
    if (start < 0 && !/\s/.test(c)) start = i;
    if (c === '"') {
      i++;
      while (i < n && text[i] !== '"') {
        if (text[i] === "\\" && i + 1 < n) masked[i++] = " ";
        if (text[i] !== "\n") masked[i] = " ";
        i++;
      }
      i++; // closing quote (or past the end for an unterminated string)
      continue;
    }
    if (c === ";") {
      const end = i + 1;
      out.push({ start, end, text: text.slice(start, end), masked: masked.slice(start, end).join("") });
      start = -1;
    }
    i++;
  }
  if (start >= 0) {
    out.push({ start, end: n, text: text.slice(start, n), masked: masked.slice(start, n).join("") });
  }
  return out;
}

/** 1-based line of a character offset. */
export function lineAt(text: string, offset: number): number {
  let line = 1;
  const stop = Math.min(offset, text.length);
  for (let i = 0; i < stop; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/** Cedar reports source locations as UTF-8 byte offsets; this converts one to a character offset. */
export function byteToCharOffset(text: string, byteOffset: number): number {
  const bytes = Buffer.from(text, "utf8");
  if (byteOffset >= bytes.length) return text.length;
  return bytes.subarray(0, byteOffset).toString("utf8").length;
}
