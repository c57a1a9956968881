import { checkTimeZone, decisionContext, timeContext } from "./context";

describe("timeContext", () => {
  it.each([
    // 2026-11-23 is a Monday.
    ["2026-11-23T09:30:00Z", "UTC", { hour: 9, minute: 30, weekday: 1, day: "mon", date: "2026-11-23" }],
    ["2026-11-23T00:15:00Z", "America/New_York", { hour: 19, minute: 15, weekday: 7, day: "sun", date: "2026-11-22" }],
    ["2026-11-29T23:59:00Z", "Europe/Paris", { hour: 0, minute: 59, weekday: 1, day: "mon", date: "2026-11-30" }],
    ["2026-11-28T12:00:00Z", "Asia/Kolkata", { hour: 17, minute: 30, weekday: 6, day: "sat", date: "2026-11-28" }],
    ["2026-11-23T00:00:00Z", "UTC", { hour: 0, minute: 0, weekday: 1, day: "mon", date: "2026-11-23" }],
  ])("%s in %s", (at, tz, expected) => {
    expect(timeContext(Date.parse(at), tz)).toEqual({ ...expected, timezone: tz });
  });

  it("answers each instant with its own local time although recent answers are kept (minute, hour, DST and odd historical offsets)", () => {
    const fresh = (ms: number, tz: string) => {
      const p = Object.fromEntries(
        new Intl.DateTimeFormat("en-US", { timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", weekday: "short" })
          .formatToParts(new Date(ms))
          .map((x) => [x.type, x.value]),
      );
      return { hour: Number(p.hour), minute: Number(p.minute), day: p.weekday!.slice(0, 3).toLowerCase(), date: `${p.year}-${p.month}-${p.day}` };
    };
    const instants = [
      "2026-11-23T06:59:59.999Z", "2026-11-23T07:00:00.000Z", "2026-11-23T07:00:59.999Z", "2026-11-23T07:01:00.000Z", "2026-11-23T07:30:00.000Z",
      "2026-03-29T00:59:59.999Z", "2026-03-29T01:00:00.000Z", // Paris: 01:59 then 03:00
      "1920-06-01T10:00:29.000Z", "1920-06-01T10:00:30.000Z", "1920-06-01T10:00:31.000Z", // Monrovia at -00:44:30
    ].map(Date.parse);
    for (const tz of ["UTC", "Europe/Paris", "Africa/Monrovia", "Asia/Kathmandu"]) {
      for (const round of [0, 1]) {
        for (const ms of round === 0 ? instants : [...instants].reverse()) expect(timeContext(ms, tz)).toMatchObject(fresh(ms, tz));
      }
    }
  });

  it("a caller that edits the answer does not change the next one", () => {
    const at = Date.parse("2026-11-23T09:30:00Z");
    const t = timeContext(at);
    t.hour = 23;
    expect(timeContext(at).hour).toBe(9);
  });

  it("refuses unknown zones", () => {
    expect(() => checkTimeZone("Mars/Olympus")).toThrow(/not a known IANA time zone/);
    expect(() => checkTimeZone("Europe/Berlin")).not.toThrow();
  });
});

describe("decisionContext", () => {
  it("fills absent task fields with empty strings and adds the requester only when given", () => {
    const c = decisionContext({ task: { id: "t1", tool: "psql" }, ttlSeconds: 60, approved: false, atMs: Date.parse("2026-11-23T10:00:00Z") });
    expect(c.task).toEqual({ id: "t1", intent: "", tool: "psql", destination: "", sensitivity: "" });
    expect(c).not.toHaveProperty("requester");
    const d = decisionContext({ task: { id: "t1" }, ttlSeconds: 1, approved: true, atMs: 0, requester: { id: "w", kind: "agent", owner: "o" } });
    expect(d.requester).toEqual({ id: "w", kind: "agent", owner: "o" });
  });
});
