/**
 * The `syslog` audit sink: RFC 5424 messages over udp (RFC 5426, one datagram each), tcp
 * (RFC 6587 octet counting) or tls (RFC 5425, octet counting; the server's certificate is checked
 * against the system CAs or `ca_file`).
 *
 *   <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [jitbroker@32473 seq=".." hash=".." prev=".." link_kind=".."] BOM{json}
 *
 * PRI = facility (default 13, log audit) * 8 + severity (6 informational; 4 warning for failures
 * and denials). MSGID is the event type; the structured data carries the chain; MSG is the
 * exported event as JSON (UTF-8, with a BOM as RFC 5424 asks). 32473 is the private enterprise
 * number RFC 5612 reserves for documentation; the SD-ID only needs to be stable.
 *
 * Confirmation (RFC 5424 has no acknowledgement): a tcp/tls batch counts as delivered when it
 * was written and the connection is still up `settleMs` later; a listener that went away shows
 * as an error or close in that window, and the batch is sent again on a new connection.
 * Over udp a sent datagram counts as delivered: udp can lose events, use it only where that is
 * acceptable.
 */
import dgram from "node:dgram";
import { readFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import tls from "node:tls";
import type { Logger } from "pino";
import type { AuditSinkConfig } from "../config/schema";
import type { ExportedAuditEvent } from "./ledger";
import type { SinkTransport } from "./sinks";

type SyslogSinkConfig = Extract<AuditSinkConfig, { type: "syslog" }>;

const SD_ID = "jitbroker@32473";
const WARNING_TYPES = new Set(["issue_failed", "revoke_failed", "approval_refused", "aws_revocation_fallback"]);

const printable = (s: string, max: number): string => (s.replace(/[^!-~]/g, "_").slice(0, max) || "-");
const sdValue = (s: string): string => s.replace(/[\\"\]]/g, (c) => `\\${c}`);

export function formatSyslog(ev: ExportedAuditEvent, cfg: { facility: number; app_name: string }, host = os.hostname(), pid = process.pid): string {
  const severity = WARNING_TYPES.has(ev.type) || (ev.type === "decision" && ev.decision !== "allow") ? 4 : 6;
  const pri = cfg.facility * 8 + severity;
  const ts = Number.isNaN(Date.parse(ev.at)) ? "-" : new Date(ev.at).toISOString();
  const sd = `[${SD_ID} seq="${sdValue(ev.seq)}" hash="${sdValue(ev.hash)}" prev="${sdValue(ev.prev)}" link_kind="${sdValue(ev.link_kind)}"]`;
  return `<${pri}>1 ${ts} ${printable(host, 255)} ${printable(cfg.app_name, 48)} ${pid} ${printable(ev.type, 32)} ${sd} \uFEFF${JSON.stringify(ev)}`;
}

export function createSyslogSink(cfg: SyslogSinkConfig, logger: Logger, opts: { settleMs?: number; connectTimeoutMs?: number } = {}): SinkTransport {
  const url = new URL(cfg.address);
  const proto = url.protocol.replace(":", "") as "udp" | "tcp" | "tls";
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port);
  const settleMs = opts.settleMs ?? 150;
  const connectTimeout = opts.connectTimeoutMs ?? 5000;
  const ca = cfg.ca_file ? readFileSync(cfg.ca_file) : undefined;

  let udp: dgram.Socket | undefined;
  let stream: net.Socket | undefined;
  let broken: Error | undefined;

  function connect(): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = proto === "tls" ? tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, ...(ca ? { ca } : {}) }) : net.connect({ host, port });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`syslog ${proto}://${host}:${port}: connect timed out`));
      }, connectTimeout);
      s.once(proto === "tls" ? "secureConnect" : "connect", () => {
        clearTimeout(timer);
        s.setNoDelay(true);
        s.on("error", (e) => (broken ??= e));
        s.on("close", () => (broken ??= new Error("connection closed by the syslog receiver")));
        s.on("data", () => undefined); // a receiver has nothing to say; drain it
        resolve(s);
      });
      s.once("error", (e) => {
        clearTimeout(timer);
        reject(new Error(`syslog ${proto}://${host}:${port}: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
      });
    });
  }

  async function deliverStream(events: ExportedAuditEvent[]): Promise<void> {
    if (!stream || broken) {
      stream?.destroy();
      stream = undefined;
      broken = undefined;
      stream = await connect();
      logger.info({ address: `${proto}://${host}:${port}` }, "syslog sink connected");
    }
    const s = stream;
    const frames = events.map((ev) => {
      const msg = Buffer.from(formatSyslog(ev, cfg), "utf8");
      return Buffer.concat([Buffer.from(`${msg.length} `, "ascii"), msg]);
    });
    await new Promise<void>((resolve, reject) => s.write(Buffer.concat(frames), (e) => (e ? reject(e) : resolve())));
    await new Promise((r) => setTimeout(r, settleMs));
    const e = broken as Error | undefined; // set by the socket's listeners during the wait
    if (e) {
      s.destroy();
      stream = undefined;
      throw new Error(`syslog ${proto}://${host}:${port}: ${e.message}`);
    }
  }

  async function deliverUdp(events: ExportedAuditEvent[]): Promise<void> {
    udp ??= dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4");
    const sock = udp;
    for (const ev of events) {
      const msg = Buffer.from(formatSyslog(ev, cfg), "utf8");
      await new Promise<void>((resolve, reject) => sock.send(msg, port, host, (e) => (e ? reject(e) : resolve())));
    }
  }

  return {
    deliver: (events) => (proto === "udp" ? deliverUdp(events) : deliverStream(events)),
    async close() {
      stream?.end();
      stream?.destroy();
      udp?.close();
    },
  };
}
