import { chmod, mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { AuditKeyFileError, loadOrCreateAuditKey, readAuditKey } from "./key";

const tmp = () => mkdtemp(path.join(os.tmpdir(), "jitbroker-audit-key-"));

describe("audit key file", () => {
  it("is created on first start as 64 hex characters, 0600, in a 0700 directory, and read back the same", async () => {
    const dir = await tmp();
    const file = path.join(dir, "sub", "audit.key");
    const a = await loadOrCreateAuditKey(file);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await stat(path.dirname(file))).mode & 0o777).toBe(0o700);
    expect(await readFile(file, "utf8")).toMatch(/^[0-9a-f]{64}\n$/);
    const b = await loadOrCreateAuditKey(file);
    expect(b.key.equals(a.key)).toBe(true);
    expect(b.kid).toBe(a.kid);
    expect(a.kid).toMatch(/^[0-9a-f]{16}$/);
    expect(await readFile(file, "utf8")).not.toContain(a.kid);
  });

  it("processes starting at once all end up with one key", async () => {
    const file = path.join(await tmp(), "audit.key");
    const keys = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateAuditKey(file)));
    expect(new Set(keys.map((k) => k.kid)).size).toBe(1);
  });

  it("refuses a key readable by group or others, a malformed key, and a missing file (read only), naming no key material", async () => {
    const dir = await tmp();
    const file = path.join(dir, "audit.key");
    const hex = "ab".repeat(32);
    await writeFile(file, `${hex}\n`, { mode: 0o644 });
    await chmod(file, 0o644);
    await expect(loadOrCreateAuditKey(file)).rejects.toThrow(/group or others.*chmod 600/);
    await chmod(file, 0o600);
    await writeFile(file, "not a key\n");
    const err = await loadOrCreateAuditKey(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuditKeyFileError);
    expect((err as Error).message).toMatch(/64 lowercase hex/);
    await writeFile(file, `${hex}00\n`);
    await expect(readAuditKey(file)).rejects.toThrow(AuditKeyFileError);
    await expect(readAuditKey(path.join(dir, "absent.key"))).rejects.toThrow(/no audit key/);
    await writeFile(file, `${hex}\n`);
    expect((await readAuditKey(file)).key.toString("hex")).toBe(hex);
  });
});
