/**
 * Receivers for the audit sinks' tests: an HTTP endpoint taking JSON arrays, and an RFC 5424
 * syslog listener over tcp (octet counting). Both can be stopped and started again on the same
 * port, and record the seq of every event in arrival order.
 */
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";

export interface Receiver {
  url: string;
  port: number;
  /** Seqs in arrival order (repeats included). */
  seqs: string[];
  /** Whole bodies / messages received. */
  raw: unknown[];
  /** Requests being held (http with delayMs). */
  inflight(): number;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function startHttpReceiver(opts: { delayMs?: number; seqOf?: (item: any) => string } = {}): Promise<Receiver> {
  const seqs: string[] = [];
  const raw: unknown[] = [];
  const seqOf = opts.seqOf ?? ((e: any) => e.seq);
  let server: http.Server | undefined;
  let port = 0;
  const sockets = new Set<net.Socket>();
  let holding = 0;
  const start = async () => {
    server = http.createServer((req, res) => {
      holding++;
      res.on("close", () => holding--);
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const done = () => {
          try {
            const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown[];
            raw.push({ headers: req.headers, body });
            for (const e of body) seqs.push(seqOf(e));
            res.writeHead(204).end();
          } catch {
            res.writeHead(400).end();
          }
        };
        if (opts.delayMs) setTimeout(done, opts.delayMs);
        else done();
      });
    });
    server.on("connection", (s) => {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    });
    await new Promise<void>((resolve) => server!.listen(port, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  };
  const stop = async () => {
    if (!server) return;
    const s = server;
    server = undefined;
    for (const sock of sockets) sock.destroy();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  await start();
  return {
    get url() {
      return `http://127.0.0.1:${port}/ingest`;
    },
    get port() {
      return port;
    },
    seqs,
    raw,
    inflight: () => holding,
    start,
    stop,
    close: stop,
  };
}

export async function startSyslogTcpReceiver(): Promise<Receiver> {
  const seqs: string[] = [];
  const raw: unknown[] = [];
  let server: net.Server | undefined;
  let port = 0;
  const sockets = new Set<net.Socket>();
  const start = async () => {
    server = net.createServer((sock) => {
      sockets.add(sock);
      sock.on("close", () => sockets.delete(sock));
      sock.on("error", () => undefined);
      let buf = Buffer.alloc(0);
      sock.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const sp = buf.indexOf(0x20);
          if (sp < 0) return;
          const len = Number(buf.subarray(0, sp).toString("ascii"));
          if (buf.length < sp + 1 + len) return;
          const msg = buf.subarray(sp + 1, sp + 1 + len).toString("utf8");
          buf = buf.subarray(sp + 1 + len);
          raw.push(msg);
          const m = /\[jitbroker@32473 seq="([^"]+)"/.exec(msg);
          seqs.push(m ? m[1]! : "?");
        }
      });
    });
    await new Promise<void>((resolve) => server!.listen(port, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  };
  const stop = async () => {
    if (!server) return;
    const s = server;
    server = undefined;
    for (const sock of sockets) sock.destroy();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  await start();
  return {
    get url() {
      return `tcp://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    seqs,
    raw,
    inflight: () => 0,
    start,
    stop,
    close: stop,
  };
}

/**
 * Checks at-least-once, in-order delivery: after removing repeats, the seqs are exactly
 * `expected`, and every arrival is either the next new seq or a repeat of one already seen
 * (a re-sent batch), never a jump over a missing one.
 */
export function deliveryProblems(received: string[], expected: string[]): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  let next = 0;
  for (const s of received) {
    if (seen.has(s)) continue;
    if (s !== expected[next]) {
      problems.push(`got ${s} where ${expected[next] ?? "nothing more"} was due`);
      if (problems.length > 5) break;
    }
    seen.add(s);
    next++;
  }
  if (next < expected.length && problems.length === 0) problems.push(`${expected.length - next} events never arrived (first ${expected[next]})`);
  return problems;
}
