/**
 * The console's only way to the broker: fetch to /console/api with the session cookie (HttpOnly,
 * never visible here) and, on every change, the session's CSRF token, which lives in this
 * module's memory only (never in localStorage, sessionStorage or a cookie readable by script).
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken = "";
let onSignedOut: (reason: string) => void = () => undefined;

export function setCsrf(token: string): void {
  csrfToken = token;
}
export function whenSignedOut(fn: (reason: string) => void): void {
  onSignedOut = fn;
}

export interface CallOptions {
  method?: "GET" | "POST";
  body?: unknown;
  /** A background refresh: does not count as use of the session (its idle clock keeps running). */
  refresh?: boolean;
}

export async function api<T>(path: string, opts: CallOptions = {}): Promise<T> {
  const method = opts.method ?? "GET";
  const headers: Record<string, string> = { accept: "application/json" };
  if (method !== "GET") {
    headers["content-type"] = "application/json";
    headers["x-csrf-token"] = csrfToken;
  }
  if (opts.refresh) headers["x-console-refresh"] = "1";
  let res: Response;
  try {
    res = await fetch(`/console/api${path}`, { method, headers, credentials: "same-origin", cache: "no-store", ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}) });
  } catch {
    throw new ApiError(0, "network", "The broker cannot be reached.");
  }
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!res.ok) {
    const p = (body ?? {}) as { code?: string; detail?: string; title?: string };
    const err = new ApiError(res.status, p.code ?? "error", p.detail ?? p.title ?? `HTTP ${res.status}`);
    if (res.status === 401) onSignedOut(err.message);
    throw err;
  }
  return body as T;
}

export const q = (params: Record<string, string | undefined>): string => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") s.set(k, v);
  const text = s.toString();
  return text ? `?${text}` : "";
};
