/**
 * Which characters free text may hold (docs/ARCHITECTURE.md, Errors), in one place for the API's
 * input schemas and the CLI's output escaping.
 *
 * Never accepted in free-text fields (a task's intent, tool, destination and sensitivity, a
 * revocation or approval reason), and never written raw to a terminal by the CLI: C0 controls
 * (including tab, CR and LF), DEL, C1 controls (U+0080-U+009F), the Arabic letter mark (U+061C),
 * zero width space (U+200B), the left-to-right and right-to-left marks (U+200E, U+200F), the
 * line and paragraph separators (U+2028, U+2029), the bidi embeddings, overrides and isolates
 * (U+202A-U+202E, U+2066-U+2069), the invisible operators U+2060-U+2065, and the byte order
 * mark (U+FEFF); and lone surrogates. Everything else of Unicode is fine: letters of any script,
 * emoji (with U+200D joiners), punctuation, spaces.
 */
export const UNSAFE_TEXT_CLASS = "\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2069\\ufeff";

/** Matches a whole string free of unsafe characters (no lone-surrogate check: see `isSafeText`). */
export const SAFE_TEXT = new RegExp(`^[^${UNSAFE_TEXT_CLASS}]*$`);

/** True when `s` may be stored and shown as free text. */
export const isSafeText = (s: string): boolean => SAFE_TEXT.test(s) && isWellFormed(s);

/** No lone surrogates (String.prototype.isWellFormed, which the compile target does not declare). */
export const isWellFormed = (s: string): boolean => !/\p{Cs}/u.test(s);
