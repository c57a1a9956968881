/** Time zones (policy.timezone, docs/ARCHITECTURE.md, Operators and authorization). */

/** Throws a RangeError naming the zone when it is not an IANA time zone this Node knows. */
export function checkTimeZone(timeZone: string): void {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone });
  } catch {
    throw new RangeError(`"${timeZone}" is not a known IANA time zone`);
  }
}
