/** Free-text fields of the API (intent, reason, ...): which characters they accept (src/core/text.ts). */
import { z } from "zod";
import { isWellFormed, SAFE_TEXT } from "../core/text";

const RULE =
  "Free text: any Unicode letters, digits, punctuation, symbols, emoji and spaces; no control characters (C0 including tab and newlines, DEL, C1), " +
  "no bidi embeddings, overrides, isolates or marks (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), no line or paragraph separators, " +
  "no zero-width space, invisible operators or byte order mark (U+200B, U+2060-U+2065, U+FEFF), no lone surrogates";

/** A free-text field of at most `max` characters, with the accepted characters in its OpenAPI schema. */
export function freeText(max: number, min = 0) {
  return z
    .string()
    .min(min)
    .max(max)
    .regex(SAFE_TEXT, "must not contain control, bidi or invisible formatting characters")
    .refine(isWellFormed, "must not contain lone surrogates")
    .describe(`${RULE}; at most ${max} characters`);
}
