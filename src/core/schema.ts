/**
 * zod building blocks shared by the configuration schema (src/config/schema.ts) and the config
 * sections that feature folders own (src/backends/<kind>/config.ts): durations, URLs and the
 * refinement that runs even when another field of the same object is invalid.
 */
import { z } from "zod";
import { parseDuration } from "./duration";

export const duration = z.string().transform((text, ctx) => {
  try {
    return parseDuration(text);
  } catch (e) {
    ctx.addIssue({ code: "custom", message: (e as Error).message });
    return z.NEVER;
  }
});

export const isObject = (v: unknown): v is object => v !== null && typeof v === "object" && !Array.isArray(v);
/** Run a refinement even after an aborting issue elsewhere in the object (a bad duration...). */
export const evenIfInvalid = { when: (payload: { value: unknown }) => isObject(payload.value) };

export const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

/** A duration, or 0 / "0" to switch the periodic job off. */
export const durationOrOff = z.union([z.literal(0), z.literal("0"), duration]).transform((v) => (v === "0" ? 0 : v));

/** `text` as a URL, or null after adding `message` (default: "<text>" is not a URL) as an issue. */
export function parseUrl(text: string, ctx: z.RefinementCtx, message = `"${text}" is not a URL`): URL | null {
  try {
    return new URL(text);
  } catch {
    ctx.addIssue({ code: "custom", message });
    return null;
  }
}

/** An http(s) URL; plain http only towards loopback, where TLS buys nothing. */
export const httpsUrl = z.string().superRefine((text, ctx) => {
  const url = parseUrl(text, ctx);
  if (url === null) return;
  if (url.protocol === "https:") return;
  if (url.protocol === "http:" && LOOPBACK.has(url.hostname)) return;
  ctx.addIssue({ code: "custom", message: `must be an https URL (http only for localhost), got "${text}"` });
});
