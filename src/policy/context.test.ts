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
