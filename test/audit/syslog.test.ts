/**
 * The syslog sink's udp and tls transports against real listeners (tcp is covered under load in
 * sinks.test.ts): RFC 5424 messages with the chain in structured data, one datagram per event
 * over udp; over tls the listener's certificate must chain to `ca_file` (a self-signed one made
 * here with openssl) and name the host: a listener with a certificate nobody vouched for, or one
 * for another name, gets nothing (a man in the middle cannot collect the audit).
 */
import { execFileSync } from "node:child_process";
import dgram from "node:dgram";
import { mkdtempSync, readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import pino from "pino";
import { createSyslogSink } from "../../src/audit/sink-syslog";
import type { ExportedAuditEvent } from "../../src/audit/ledger";

const logger = pino({ level: "silent" });

const events = (n: number): ExportedAuditEvent[] =>
  Array.from({ length: n }, (_, i) => ({
    type: "mint",
    at: new Date().toISOString(),
    actor: "agent",
    lease_id: `l_${i}`,
    seq: `1700000000000-${i}`,
    hash: "a".repeat(64),
    prev: "b".repeat(64),
    link_kind: "hmac-sha256" as const,
  }));

const seqOf = (msg: string) => /\[jitbroker@32473 seq="([^"]+)"/.exec(msg)?.[1];
const RFC5424 = /^<110>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ jitbroker \d+ mint \[jitbroker@32473 seq="[^"]+" hash="a{64}" prev="b{64}" link_kind="hmac-sha256"\] \uFEFF\{/;

describe("syslog over udp", () => {
  it("sends one RFC 5424 datagram per event, in chain order", async () => {
    const server = dgram.createSocket("udp4");
    const got: string[] = [];
    server.on("message", (m) => got.push(m.toString("utf8")));
    await new Promise<void>((r) => server.bind(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    const sink = createSyslogSink({ type: "syslog", address: `udp://127.0.0.1:${port}`, facility: 13, app_name: "jitbroker", batch_size: 200 }, logger);
    try {
      await sink.deliver(events(5));
      for (let i = 0; i < 100 && got.length < 5; i++) await new Promise((r) => setTimeout(r, 20));
      expect(got.map(seqOf)).toEqual(events(5).map((e) => e.seq));
      for (const m of got) expect(m).toMatch(RFC5424);
      expect(JSON.parse(got[0]!.slice(got[0]!.indexOf("\uFEFF") + 1))).toMatchObject({ type: "mint", lease_id: "l_0", seq: "1700000000000-0" });
    } finally {
      await sink.close();
      server.close();
    }
  });
});

describe("syslog over tls", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "jitbroker-syslog-tls-"));
  /** A self-signed certificate for `san`, made with openssl. */
  function selfSigned(name: string, san: string): { key: Buffer; cert: Buffer; certFile: string } {
    const keyFile = path.join(dir, `${name}.key`);
    const certFile = path.join(dir, `${name}.crt`);
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", `/CN=${name}`, "-addext", `subjectAltName=${san}`], { stdio: "ignore" });
    return { key: readFileSync(keyFile), cert: readFileSync(certFile), certFile };
  }
  const good = selfSigned("siem", "IP:127.0.0.1,DNS:localhost");
  const other = selfSigned("mallory", "IP:127.0.0.1,DNS:localhost");
  const wrongName = selfSigned("elsewhere", "DNS:siem.example.org");

  async function listener(cred: { key: Buffer; cert: Buffer }) {
    const got: string[] = [];
    let buf = Buffer.alloc(0);
    const server = tls.createServer({ key: cred.key, cert: cred.cert }, (sock) => {
      sock.on("error", () => undefined);
      sock.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const sp = buf.indexOf(0x20);
          if (sp < 0) return;
          const len = Number(buf.subarray(0, sp).toString("ascii"));
          if (buf.length < sp + 1 + len) return;
          got.push(buf.subarray(sp + 1, sp + 1 + len).toString("utf8"));
          buf = buf.subarray(sp + 1 + len);
        }
      });
    });
    server.on("tlsClientError", () => undefined);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return { got, port: (server.address() as AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
  }
  const sinkTo = (port: number, caFile: string | undefined, host = "127.0.0.1") =>
    createSyslogSink({ type: "syslog", address: `tls://${host}:${port}`, facility: 13, app_name: "jitbroker", batch_size: 200, ...(caFile ? { ca_file: caFile } : {}) }, logger, { settleMs: 50, connectTimeoutMs: 3000 });

  it("delivers octet-counted RFC 5424 messages to a listener whose certificate chains to ca_file", async () => {
    const l = await listener(good);
    const sink = sinkTo(l.port, good.certFile);
    try {
      await sink.deliver(events(3));
      await sink.deliver(events(6).slice(3));
      for (let i = 0; i < 100 && l.got.length < 6; i++) await new Promise((r) => setTimeout(r, 20));
      expect(l.got.map(seqOf)).toEqual(events(6).map((e) => e.seq));
      for (const m of l.got) expect(m).toMatch(RFC5424);
    } finally {
      await sink.close();
      await l.close();
    }
  });

  it("a listener presenting a certificate ca_file does not vouch for (a man in the middle) gets nothing", async () => {
    const l = await listener(other);
    const sink = sinkTo(l.port, good.certFile);
    try {
      await expect(sink.deliver(events(2))).rejects.toThrow(/syslog tls:\/\/127\.0\.0\.1/);
      expect(l.got).toEqual([]);
    } finally {
      await sink.close();
      await l.close();
    }
  });

  it("a self-signed listener is refused without ca_file (the system CAs do not know it)", async () => {
    const l = await listener(good);
    const sink = sinkTo(l.port, undefined);
    try {
      await expect(sink.deliver(events(1))).rejects.toThrow();
      expect(l.got).toEqual([]);
    } finally {
      await sink.close();
      await l.close();
    }
  });

  it("a trusted certificate issued for another name is refused", async () => {
    const l = await listener(wrongName);
    const sink = sinkTo(l.port, wrongName.certFile, "localhost");
    try {
      await expect(sink.deliver(events(1))).rejects.toThrow();
      expect(l.got).toEqual([]);
    } finally {
      await sink.close();
      await l.close();
    }
  });
});
