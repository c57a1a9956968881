import { compilePolicies } from "./engine";
import { contextReads, projected, readPaths } from "./context-reads";

const readsOf = (...conditions: string[]) =>
  readPaths(contextReads(compilePolicies([{ path: "/p/p.cedar", text: conditions.map((c, i) => `@id("p${i}") permit (principal, action, resource) when { ${c} };\n`).join("") }])));

describe("contextReads: what the policies can read of the context", () => {
  it.each<[string, string[], string[]]>([
    ["no policy reads the context", ['principal.kind == "agent"'], []],
    ["an attribute chain reads exactly that path", ['context.task.intent == "export"'], ["task.intent"]],
    ["the index form reads the same path", ['context["task"]["intent"] == "export"'], ["task.intent"]],
    ["`has` reads the path it tests (presence counts as a read)", ["context has task.id", "context.delegation has depth"], ["delegation.depth", "task.id"]],
    ["a working-hours policy reads only the hour and weekday", ["context.time.hour >= 7 && context.time.weekday <= 5"], ["time.hour", "time.weekday"]],
    ["a record used as a value is read whole", ['context.task == {id: "x", intent: "", tool: "", destination: "", sensitivity: ""}'], ["task"]],
    ["a record put into a literal is read whole", ['{a: context.task}.a.id == "x"'], ["task"]],
    ["a whole read covers the narrower ones", ['context.task.id == "x"', 'context.task like "*"'], ["task"]],
    ["the bare context is read whole", ["context == {}"], [""]],
    ["the context inside a set is read whole", ["[context].contains(context)"], [""]],
    ["an extension call on a field reads that field", ['ip(context.task.destination).isLoopback()'], ["task.destination"]],
  ])("%s", (_name, conditions, paths) => {
    expect(readsOf(...conditions)).toEqual(paths);
  });

  it("an empty policy set reads nothing", () => {
    expect(readPaths(contextReads(compilePolicies([])))).toEqual([]);
  });
});

describe("projected: the part of a context the policies read", () => {
  const set = compilePolicies([{ path: "/p/p.cedar", text: '@id("p") permit (principal, action, resource) when { context.task.intent == "x" && context.time.hour > 7 && !(context has on_behalf_of) };' }]);
  const reads = contextReads(set);
  const ctx = (over: Record<string, unknown> = {}, task: Record<string, unknown> = {}) => ({
    task: { id: "t-1", intent: "read", tool: "", destination: "", sensitivity: "", ...task },
    ttl_seconds: 300,
    approved: false,
    time: { hour: 10, minute: 3, weekday: 1, day: "mon", date: "2026-11-23", timezone: "UTC" },
    ...over,
  });

  it("is the same for contexts that differ only in what no policy reads (task id, minute, TTL)", () => {
    expect(projected(ctx({ ttl_seconds: 60, time: { hour: 10, minute: 59, weekday: 3, day: "wed", date: "2026-11-25", timezone: "UTC" } }, { id: "t-2" }), reads)).toBe(projected(ctx(), reads));
  });

  it.each<[string, Record<string, unknown>, Record<string, unknown>]>([
    ["another intent", {}, { intent: "export" }],
    ["another hour", { time: { hour: 11, minute: 3, weekday: 1, day: "mon", date: "2026-11-23", timezone: "UTC" } }, {}],
    ["on behalf of a person (an attribute that is present against absent)", { on_behalf_of: { subject: "alice" } }, {}],
    ["a read record replaced by a value of another type", { time: "10:03" }, {}],
    ["a read field of another type", {}, { intent: 1 }],
  ])("differs with %s", (_name, over, task) => {
    expect(projected(ctx(over, task), reads)).not.toBe(projected(ctx(), reads));
  });

  it("keeps the whole value where a policy reads it whole, with strings that look like the encoding", () => {
    const whole = contextReads(compilePolicies([{ path: "/p/p.cedar", text: '@id("p") permit (principal, action, resource) when { context.task == {} };' }]));
    expect(projected(ctx({}, { id: 'a","b' }), whole)).not.toBe(projected(ctx({}, { id: "a", b: "" }), whole));
    expect(projected(ctx({}, { id: "-" }), whole)).not.toBe(projected(ctx(), whole));
  });
});
