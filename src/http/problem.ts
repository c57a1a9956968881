/**
 * RFC 9457 problem details: the only place where a BrokerError becomes an HTTP response.
 * Unknown errors become 500 `internal` with no detail beyond the request id.
 */
import type { Response } from "express";
import { BrokerError, ERROR_TITLES, type ErrorCode } from "../core/errors";

export const PROBLEM_TYPE_BASE = "urn:jitbroker:problem:";

export interface ProblemDocument {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  instance?: string;
  request_id?: string;
  [extra: string]: unknown;
}

export function toProblem(err: BrokerError, instance?: string, requestId?: string): ProblemDocument {
  const doc: ProblemDocument = {
    type: `${PROBLEM_TYPE_BASE}${err.code}`,
    title: ERROR_TITLES[err.code],
    status: err.status,
    detail: err.message,
    code: err.code,
    ...(instance === undefined ? {} : { instance }),
    ...(requestId === undefined ? {} : { request_id: requestId }),
  };
  // Extension members follow the standard ones and never replace them.
  for (const [k, v] of Object.entries(err.extra ?? {})) if (!(k in doc)) doc[k] = v;
  return doc;
}

/** A header value we may send: visible ASCII and spaces only (anything else makes setHeader throw). */
const SAFE_HEADER_VALUE = /^[\x20-\x7e]{0,1024}$/;

/** The last resort when building or sending a problem failed: a fixed document, no detail. */
const FALLBACK = JSON.stringify({ type: `${PROBLEM_TYPE_BASE}internal`, title: ERROR_TITLES.internal, status: 500, detail: "internal error", code: "internal" });

/**
 * Sends `err` as problem+json. Never throws, whatever `err` holds: header values that are not
 * plain visible ASCII are left out, and if the document cannot be built or sent a fixed 500
 * document goes out instead (or, when the headers are already gone, the connection ends).
 * Nothing from the request or a token is ever copied into a header (RFC 6750's
 * error_description is the code's fixed title).
 */
export function sendProblem(res: Response, err: BrokerError, requestId?: string): void {
  try {
    if (res.headersSent) {
      res.end();
      return;
    }
    let body: string;
    try {
      const path = String(res.req?.originalUrl ?? "").split("?")[0];
      body = JSON.stringify(toProblem(err, path === "" ? undefined : path, requestId));
    } catch {
      body = JSON.stringify(toProblem(new BrokerError(err.code, ERROR_TITLES[err.code]), undefined, requestId));
    }
    for (const [name, value] of Object.entries(err.headers ?? {})) {
      if (/^[A-Za-z0-9-]{1,64}$/.test(name) && SAFE_HEADER_VALUE.test(value)) res.setHeader(name, value);
    }
    if (err.status === 401) {
      // RFC 6750 section 3: tell the client which scheme and why, in fixed words.
      res.setHeader("WWW-Authenticate", `Bearer error="invalid_token", error_description="${ERROR_TITLES[err.code]}"`);
    }
    res.status(err.status).type("application/problem+json").send(body);
  } catch {
    sendFallback(res);
  }
}

/** A fixed 500 problem document; ends the connection if even that cannot be written. */
export function sendFallback(res: Response): void {
  try {
    if (res.headersSent) {
      res.end();
      return;
    }
    for (const name of res.getHeaderNames()) if (name !== "x-request-id") res.removeHeader(name);
    res.statusCode = 500;
    res.setHeader("Content-Type", "application/problem+json");
    res.setHeader("Cache-Control", "no-store");
    res.end(FALLBACK);
  } catch {
    res.destroy();
  }
}
