/**
 * SPIFFE ID parsing per the SPIFFE ID specification (section 2): `spiffe://<trust domain>/<path>`,
 * lowercase trust domain of [a-z0-9.-_], path segments of [A-Za-z0-9.-_] that are neither
 * empty, "." nor "..", no query, fragment, port or user info. Workload SVIDs need a path.
 */
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

export interface SpiffeId {
  trustDomain: string;
  path: string;
}

export function parseSpiffeId(text: unknown): SpiffeId | null {
  if (typeof text !== "string" || text.length > 2048 || !text.startsWith("spiffe://")) return null;
  const rest = text.slice("spiffe://".length);
  const slash = rest.indexOf("/");
  if (slash <= 0) return null;
  const trustDomain = rest.slice(0, slash);
  const path = rest.slice(slash);
  if (!TRUST_DOMAIN.test(trustDomain) || trustDomain.length > 255) return null;
  const segments = path.slice(1).split("/");
  for (const s of segments) {
    if (!SEGMENT.test(s) || s === "." || s === "..") return null;
  }
  return { trustDomain, path };
}

/** The trust domain of something that looks like a SPIFFE ID, for routing; null if it does not. */
export function spiffeTrustDomainOf(text: unknown): string | null {
  if (typeof text !== "string" || !text.startsWith("spiffe://")) return null;
  const rest = text.slice("spiffe://".length);
  const end = rest.indexOf("/");
  return end > 0 ? rest.slice(0, end) : rest || null;
}
