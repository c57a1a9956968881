/**
 * Secret files written atomically: one implementation for the signing key file and the audit
 * key file, kept private on disk: 0600 files in 0700 directories (docs/ARCHITECTURE.md, I6 Secrets stay secret).
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, open, rename, unlink } from "node:fs/promises";
import path from "node:path";

export const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | undefined)?.code;

/**
 * Writes `text` to `file` through a 0600 temp file in the same directory (created 0700 if
 * absent). `exclusive`: fails with EEXIST instead of replacing an existing file.
 */
export async function writeFileAtomic(file: string, text: string, exclusive: boolean): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
  const fh = await open(tmp, "wx", 0o600);
  try {
    await fh.chmod(0o600);
    await fh.writeFile(text, "utf8");
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    if (exclusive) {
      try {
        await link(tmp, file); // atomic create-if-absent
      } catch (e) {
        const code = errno(e);
        if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw e;
        await rename(tmp, file); // file system without hard links: atomic, but not exclusive
      }
    } else {
      await rename(tmp, file);
    }
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  // Make the new directory entry durable; not every platform can fsync a directory.
  try {
    const d = await open(dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    /* best effort */
  }
}
