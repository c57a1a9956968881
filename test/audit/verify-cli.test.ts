/**
 * `jitbroker audit verify` (the built CLI) on the Redis chain of a running broker and on
 * exported files: every kind of tampering is named at its first bad position, exit 1.
 */
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { exportLine } from "../../src/audit/files";
import type { ExportedAuditEvent } from "../../src/audit/ledger";
import { startFixture, type Fixture } from "../support/fixture";
import { runCli } from "../support/cli";

describe("jitbroker audit verify", () => {
  let f: Fixture;
  let redis: Redis;
  let events: ExportedAuditEvent[];
  let tag: string;
  beforeAll(async () => {
    f = await startFixture();
    for (let i = 0; i < 4; i++) {
      const r = await f.call("POST", "/v1/credentials", "agent", { role: "orders-read", task: { id: `t-${i}` } });
      expect(r.status).toBe(201);
    }
    expect((await f.call("POST", "/v1/tasks/t-0/complete", "agent")).status).toBe(200);
    events = await f.b.broker.audit.exportRange({ count: 1000 });
    expect(events.length).toBeGreaterThanOrEqual(9);
    redis = new Redis(f.b.config.redis.url!);
    tag = `{${f.b.config.redis.prefix}}`;
  });
  afterAll(async () => {
    redis.disconnect();
    await f.close();
  });

  const verify = (...args: string[]) => runCli(["audit", "verify", "--config", f.b.config.file, ...args]);

  it("exports events with seq, link, previous link and link kind, never secret material", () => {
    for (const e of events) {
      expect(e).toMatchObject({ seq: expect.stringMatching(/^\d+-\d+$/), hash: expect.stringMatching(/^[0-9a-f]{64}$/), prev: expect.any(String), link_kind: "hmac-sha256" });
    }
    expect(JSON.stringify(events)).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\./); // no JWT
  });

  describe("offline, on exported files", () => {
    let dir: string;
    const write = async (name: string, evs: ExportedAuditEvent[], tail = ""): Promise<string> => {
      const file = path.join(dir, name);
      await writeFile(file, evs.map(exportLine).join("") + tail);
      return file;
    };
    beforeAll(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), "jitbroker-export-"));
    });

    it("accepts the chain split over rotated files given in any order, with duplicates after a crash and a torn last line", async () => {
      const a = await write("audit.jsonl.2", events.slice(0, 4));
      const b = await write("audit.jsonl.1", events.slice(3, 7)); // event 3 delivered twice
      const c = await write("audit.jsonl", events.slice(7), exportLine(events[events.length - 1]!).slice(0, 30));
      const r = await verify("--file", c, "--file", a, "--file", b);
      expect(r.stderr).toContain("incomplete line");
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`audit export OK: ${events.length} events verified from seq ${events[0]!.seq} to ${events[events.length - 1]!.seq}; 1 duplicate line(s) ignored`);
    });

    it("an export missing its older files verifies and says where it starts", async () => {
      const r = await verify("--file", await write("tail.jsonl", events.slice(3)));
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("starts after earlier events not in these files");
    });

    const broken = async (name: string, evs: ExportedAuditEvent[], position: number, seq: string, reason: RegExp): Promise<void> => {
      const r = await verify("--file", await write(name, evs));
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`BROKEN at position ${position} (seq ${seq})`);
      expect(r.stderr).toMatch(reason);
    };

    it("names a deleted line at the event after the gap", async () => {
      await broken("deleted.jsonl", [...events.slice(0, 5), ...events.slice(6)], 6, events[6]!.seq, /preceding entry/);
    });

    it("names a modified event", async () => {
      const evs = events.map((e, i) => (i === 2 ? { ...e, actor: "someone-else" } : e));
      await broken("modified.jsonl", evs, 3, events[2]!.seq, /link does not match/);
    });

    it("names an inserted event (made up, with a link computed without the key)", async () => {
      const fake = { ...events[4]!, seq: `${events[4]!.seq.split("-")[0]}-999`, type: "revoked", prev: events[4]!.hash };
      await broken("inserted.jsonl", [...events.slice(0, 5), fake, ...events.slice(5)], 6, fake.seq, /link does not match/);
    });

    it("names reordered events (seq of two lines swapped)", async () => {
      const evs = events.map((e, i) => (i === 3 ? { ...e, seq: events[4]!.seq } : i === 4 ? { ...e, seq: events[3]!.seq } : e));
      await broken("reordered.jsonl", evs, 4, events[3]!.seq, /./);
    });

    it("names two different events under one seq", async () => {
      const clash = { ...events[5]!, actor: "forged" };
      await broken("clash.jsonl", [...events, clash], 6, events[5]!.seq, /two different events carry seq/);
    });

    it("fails with the wrong key (exit 1), and on a missing key file (exit 2)", async () => {
      const keyFile = path.join(dir, "other.key");
      await writeFile(keyFile, `${"cd".repeat(32)}\n`, { mode: 0o600 });
      const file = await write("all.jsonl", events);
      const r = await verify("--file", file, "--key-file", keyFile);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("BROKEN at position 1");
      expect((await verify("--file", file, "--key-file", path.join(dir, "none.key"))).code).toBe(2);
    });
  });

  describe("on the Redis chain", () => {
    it("accepts the broker's chain", async () => {
      const r = await verify();
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^audit chain OK: \d+ events verified; key [0-9a-f]{16}\n$/);
    });

    // Last: it changes the stream.
    it("names a deleted event, then a rolled-back head", async () => {
      const all = await f.b.broker.audit.exportRange({ count: 1000 });
      await redis.xdel(`${tag}:audit`, all[2]!.seq);
      let r = await verify();
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`BROKEN at position 3 (seq ${all[3]!.seq})`);
      // the attacker also deletes the newest event and points the head at... anything they can write
      await redis.set(`${tag}:audit:head`, all[all.length - 2]!.hash);
      r = await verify();
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`BROKEN at position 3`);
      const text = await readFile(f.b.config.audit.key_file, "utf8");
      expect(r.stderr + r.stdout).not.toContain(text.trim());
    });
  });
});
