/**
 * The `file` audit sink: JSON lines (src/audit/files.ts), appended and fsync'ed per batch, never
 * rewritten. Rotation by size: when the next batch would take the file past `max_size`, the file
 * is renamed to `<path>.1` (older ones shift to `.2` ... up to `keep`, the oldest is deleted)
 * and a new file begins. A file left with a torn last line (a crash while writing) is rotated
 * away before anything else is written to it, so no line is ever glued to a torn one; the batch
 * comes again from Redis. `jitbroker audit verify --file <path> --file <path>.1 ...` checks them.
 */
import { mkdir, open, rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import type { AuditSinkConfig } from "../config/schema";
import { exportLine } from "./files";
import type { SinkTransport } from "./sinks";

type FileSinkConfig = Extract<AuditSinkConfig, { type: "file" }>;

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

async function sizeOf(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch (e) {
    if (errno(e) === "ENOENT") return 0;
    throw e;
  }
}

async function endsWithNewline(file: string, size: number): Promise<boolean> {
  if (size === 0) return true;
  const fh = await open(file, "r");
  try {
    const buf = Buffer.alloc(1);
    await fh.read(buf, 0, 1, size - 1);
    return buf[0] === 0x0a;
  } finally {
    await fh.close();
  }
}

export function createFileSink(cfg: FileSinkConfig): SinkTransport {
  let checked = false;

  async function rotate(): Promise<void> {
    await unlink(`${cfg.path}.${cfg.keep}`).catch((e: unknown) => {
      if (errno(e) !== "ENOENT") throw e;
    });
    for (let i = cfg.keep - 1; i >= 1; i--) {
      await rename(`${cfg.path}.${i}`, `${cfg.path}.${i + 1}`).catch((e: unknown) => {
        if (errno(e) !== "ENOENT") throw e;
      });
    }
    await rename(cfg.path, `${cfg.path}.1`).catch((e: unknown) => {
      if (errno(e) !== "ENOENT") throw e;
    });
  }

  return {
    async deliver(events) {
      const text = events.map(exportLine).join("");
      const bytes = Buffer.byteLength(text);
      await mkdir(path.dirname(cfg.path), { recursive: true, mode: 0o700 });
      let size = await sizeOf(cfg.path);
      if (!checked) {
        if (!(await endsWithNewline(cfg.path, size))) {
          await rotate();
          size = 0;
        }
        checked = true;
      }
      if (size > 0 && size + bytes > cfg.max_size) await rotate();
      const fh = await open(cfg.path, "a", 0o600);
      try {
        await fh.write(text);
        await fh.datasync();
      } catch (e) {
        checked = false; // a partial write: look at the tail again before the retry
        throw e;
      } finally {
        await fh.close();
      }
    },
    async close() {
      /* nothing held open between batches */
    },
  };
}
