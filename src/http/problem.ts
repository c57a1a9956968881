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

export function sendProblem(res: Response, err: BrokerError, requestId?: string): void {
  for (const [name, value] of Object.entries(err.headers ?? {})) res.setHeader(name, value);
  if (err.status === 401) {
    // RFC 6750 section 3: tell the client which scheme and why.
    res.setHeader("WWW-Authenticate", `Bearer error="invalid_token", error_description="${err.message.replace(/["\\]/g, "")}"`);
  }
  res.status(err.status).type("application/problem+json").send(JSON.stringify(toProblem(err, res.req.originalUrl.split("?")[0], requestId)));
}
