/**
 * The HTTP transport under node-vault: node:http / node:https, and nothing that follows a redirect.
 *
 * Why not node-vault's own (axios + follow-redirects): axios follows up to 21 redirects; on a
 * 307/308 it re-sends the method and the body (an AppRole secret_id, a login JWT) to wherever
 * `Location` points, keeping custom headers (X-Vault-Token, X-Vault-Namespace) because
 * follow-redirects only strips Authorization and Cookie on a change of host, including an
 * https -> http downgrade. node-vault's request wrapper forwards a fixed set of options to axios
 * (method, uri, headers, json, timeout, agents and TLS options): `maxRedirects` never reaches it.
 * Its `request-promise` option is the supported way to supply the HTTP client instead, and
 * this module is that client: any 3xx is a `VaultRedirectError` (the response body is not even
 * read), so a request and its secrets go to the configured address and nowhere else.
 *
 * Also: HTTP(S)_PROXY variables are not consulted (like VAULT_ADDR and friends: only the
 * configuration counts); the whole request (connect, TLS, answer) has one deadline; an answer
 * larger than `maxResponseBytes` is refused. Errors carry a code (ECONNREFUSED, ETIMEDOUT,
 * ERR_TLS_CERT_ALTNAME_INVALID...) and never the request (headers, body).
 */
import http from "node:http";
import https from "node:https";

/** What node-vault hands to its request function (`client.request` options plus `uri`). */
export interface TransportRequest {
  method: string;
  uri: string;
  headers?: Record<string, string>;
  json?: unknown;
  timeout?: number;
}

/** What node-vault's `handleVaultResponse` expects back. */
export interface TransportResponse {
  statusCode: number;
  body: unknown;
  request: { path: string };
}

export interface TransportOptions {
  /** PEM CA bundle (else the system CAs). */
  ca?: string;
  /** TLS server name (SNI and certificate check). */
  servername?: string;
  rejectUnauthorized: boolean;
  /** Deadline of a request without its own `timeout` (ms). */
  timeoutMs: number;
  /** Largest answer read (bytes); default 32 MiB. */
  maxResponseBytes?: number;
}

/** Vault answered 3xx: not followed. Carries the status and where it pointed (origin only, no credentials). */
export class VaultRedirectError extends Error {
  readonly code = "EREDIRECT";
  constructor(
    readonly status: number,
    /** `scheme://host:port` of the Location, or null when absent or not a URL. Never userinfo, path or query. */
    readonly target: string | null,
  ) {
    super(`vault answered ${status} (a redirect${target ? ` to ${target}` : ""}), which is never followed`);
    this.name = "VaultRedirectError";
  }
}

/** The origin of a Location header (relative to the request), without credentials, path or query. */
export function redirectTarget(location: string | undefined, base: string): string | null {
  if (!location) return null;
  try {
    const u = new URL(location, base);
    if (u.protocol !== "http:" && u.protocol !== "https:") return `${u.protocol}//…`;
    return `${u.protocol}//${u.host}`;
  } catch {
    return null;
  }
}

const codeError = (message: string, code: string) => Object.assign(new Error(message), { code });

export interface VaultTransport {
  /** Sends one request; resolves with any non-3xx answer, rejects on 3xx, network errors and the deadline. */
  send(req: TransportRequest): Promise<TransportResponse>;
  /** node-vault's `request-promise` option: `{ defaults: () => send }`. */
  readonly requestPromise: { defaults(): (req: TransportRequest) => Promise<TransportResponse> };
  /** Closes idle keep-alive connections. */
  close(): void;
}

export function createVaultTransport(opts: TransportOptions): VaultTransport {
  const maxBytes = opts.maxResponseBytes ?? 32 * 1024 * 1024;
  // Keep-alive, with idle connections dropped well before a server or load balancer would drop
  // them (a request written as the other side closes would fail).
  const idle = 15_000;
  const httpAgent = new http.Agent({ keepAlive: true, timeout: idle });
  const httpsAgent = new https.Agent({
    keepAlive: true,
    timeout: idle,
    rejectUnauthorized: opts.rejectUnauthorized,
    ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
    ...(opts.servername !== undefined ? { servername: opts.servername } : {}),
  });

  function send(req: TransportRequest): Promise<TransportResponse> {
    return new Promise<TransportResponse>((resolve, reject) => {
      let url: URL;
      try {
        url = new URL(req.uri);
      } catch {
        reject(codeError("invalid vault URL", "EINVALIDURL"));
        return;
      }
      const secure = url.protocol === "https:";
      if (!secure && url.protocol !== "http:") {
        reject(codeError("unsupported vault URL scheme", "EPROTOCOL"));
        return;
      }
      const payload = req.json !== undefined && req.json !== null ? Buffer.from(JSON.stringify(req.json), "utf8") : null;
      const headers: Record<string, string | number> = { accept: "application/json", ...(req.headers ?? {}) };
      if (payload) {
        headers["content-type"] = "application/json";
        headers["content-length"] = payload.length;
      }
      let done = false;
      const finish = (fn: () => void) => {
        if (done) return;
        done = true;
        clearTimeout(deadline);
        fn();
      };
      const call = (secure ? https : http).request(url, { method: req.method, headers, agent: secure ? httpsAgent : httpAgent }, (res) => {
        const status = res.statusCode ?? 0;
        if (status >= 300 && status < 400) {
          // Never followed, never read: the connection is dropped with whatever it carried.
          const target = redirectTarget(typeof res.headers.location === "string" ? res.headers.location : undefined, url.href);
          res.destroy();
          finish(() => reject(new VaultRedirectError(status, target)));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > maxBytes) {
            res.destroy();
            call.destroy();
            finish(() => reject(codeError(`vault's answer is larger than ${maxBytes} bytes`, "ERESPONSETOOLARGE")));
            return;
          }
          chunks.push(c);
        });
        res.on("error", (e: NodeJS.ErrnoException) => finish(() => reject(codeError("vault's answer was cut off", e.code ?? "ECONNRESET"))));
        res.on("end", () =>
          finish(() => {
            const text = Buffer.concat(chunks).toString("utf8");
            let body: unknown = text;
            if (text.trim() !== "") {
              try {
                body = JSON.parse(text) as unknown;
              } catch {
                /* not JSON: handed on as text (node-vault then reports the status) */
              }
            } else body = undefined;
            resolve({ statusCode: status, body, request: { path: url.pathname } });
          }),
        );
      });
      // Node's errors name the host and the code, never the request's headers or body.
      call.on("error", (e: NodeJS.ErrnoException) => finish(() => reject(codeError(`vault request failed (${e.code ?? "error"})`, e.code ?? "ECONNRESET"))));
      const ms = req.timeout ?? opts.timeoutMs;
      const deadline = setTimeout(() => {
        finish(() => reject(codeError(`vault did not answer within ${ms} ms`, "ETIMEDOUT")));
        call.destroy();
      }, ms);
      deadline.unref();
      call.end(payload ?? undefined);
    });
  }

  return {
    send,
    requestPromise: { defaults: () => send },
    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}
