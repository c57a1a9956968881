import { randomBase64url } from "./random";

describe("randomBase64url", () => {
  it("gives ids of the asked length that never repeat across pool refills (a predictable or reused id would let one guess another workload's lease id)", () => {
    const seen = new Set<string>();
    // 12 bytes an id, 4096 bytes a pool: this crosses the refill about 30 times.
    for (let i = 0; i < 10_000; i++) {
      const id = randomBase64url(12);
      expect(id).toMatch(/^[A-Za-z0-9_-]{16}$/);
      seen.add(id);
    }
    expect(seen.size).toBe(10_000);
  });

  it("draws sizes that do not divide the pool evenly without overlapping", () => {
    const ids = Array.from({ length: 2000 }, () => randomBase64url(7));
    expect(new Set(ids).size).toBe(2000);
    for (const id of ids) expect(Buffer.from(id, "base64url")).toHaveLength(7);
  });

  it("uses the whole byte range (not a constant or zeroed pool)", () => {
    const bytes = Buffer.concat(Array.from({ length: 4000 }, () => Buffer.from(randomBase64url(16), "base64url")));
    const counts = new Array(256).fill(0);
    for (const b of bytes) counts[b]++;
    // 64,000 bytes: each value expected 250 times; a broken source leaves values out entirely.
    expect(counts.every((c) => c > 150)).toBe(true);
  });

  it("refuses sizes outside 1..4096", () => {
    expect(() => randomBase64url(0)).toThrow(RangeError);
    expect(() => randomBase64url(4097)).toThrow(RangeError);
    expect(() => randomBase64url(1.5)).toThrow(RangeError);
  });
});
