/**
 * The `http` audit sink: each batch is one POST of a JSON array (`format: json`: the exported
 * events; `format: ocsf`: OCSF 1.1.0 API Activity events, src/audit/ocsf.ts), with the
 * configured headers. Any 2xx confirms the batch; anything else (or no answer within `timeout`)
 * fails it and the runner sends the same batch again with backoff. Redirects are not followed.
 * The receiver sees each event at least once; `seq` (and `metadata.uid` in OCSF) identifies
 * repeats. The answer's body is never logged or kept (it could echo the headers).
 */
import type { AuditSinkConfig } from "../config/schema";
import { toOcsf } from "./ocsf";
import type { SinkTransport } from "./sinks";

type HttpSinkConfig = Extract<AuditSinkConfig, { type: "http" }>;

export function createHttpSink(cfg: HttpSinkConfig): SinkTransport {
  return {
    async deliver(events) {
      const body = JSON.stringify(cfg.format === "ocsf" ? events.map(toOcsf) : events);
      let res: Response;
      try {
        res = await fetch(cfg.url, {
          method: "POST",
          headers: { ...cfg.headers, "content-type": "application/json" },
          body,
          redirect: "manual",
          signal: AbortSignal.timeout(cfg.timeout),
        });
      } catch (e) {
        const cause = (e as { cause?: { code?: string } }).cause?.code;
        throw new Error(`POST to the audit receiver failed: ${(e as Error).name === "TimeoutError" ? "timed out" : (cause ?? (e as Error).message)}`);
      }
      await res.body?.cancel().catch(() => undefined);
      if (res.status < 200 || res.status > 299) throw new Error(`the audit receiver answered HTTP ${res.status}`);
    },
    async close() {
      /* fetch keeps no state of ours */
    },
  };
}
