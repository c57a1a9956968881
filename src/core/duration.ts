import ms from "ms";

const DURATION = /^(\d{1,9})(ms|s|m|h|d)$/;

/**
 * Parses a duration such as "30s", "5m", "1h" into milliseconds. Only the compact
 * `<integer><unit>` form is accepted (units ms, s, m, h, d): "1 year", "1.5h" or a bare
 * number are refused, so a typo never silently becomes milliseconds.
 */
export function parseDuration(text: string): number {
  const m = DURATION.exec(text.trim());
  if (!m) throw new Error(`"${text}" is not a duration (use e.g. 30s, 5m, 1h)`);
  const value = ms(`${m[1]}${m[2]}` as ms.StringValue);
  if (!Number.isFinite(value)) throw new Error(`"${text}" is not a duration`);
  return value;
}

export function formatDuration(millis: number): string {
  return ms(millis);
}
