import { Redis } from "ioredis";
import { luaScript, queueScript, registerScripts, runScript } from "./scripts";

const ECHO = luaScript<[string, string]>(
  "jitTestEcho",
  `
-- KEYS: 1 a key.  ARGV: 1 a value.  Output: {KEYS[1], ARGV[1]}
return {KEYS[1], ARGV[1]}
`,
);
const SET = luaScript<number>(
  "jitTestSet",
  `
-- KEYS: 1 key.  ARGV: 1 value
-- Output: 1
redis.call('SET', KEYS[1], ARGV[1])
return 1
`,
);

let redis: Redis;
beforeAll(() => {
  redis = new Redis(process.env.JITBROKER_TEST_REDIS_URL!, { lazyConnect: false });
});
afterAll(() => redis.disconnect());

describe("Lua scripts", () => {
  it("refuses a script without a KEYS/ARGV/Output header, and a name outside the jit namespace", () => {
    expect(() => luaScript("jitNoHeader", "return 1")).toThrow(/KEYS/);
    expect(() => luaScript("jitNoOutput", "-- KEYS: none. ARGV: none\nreturn 1")).toThrow(/Output/);
    expect(() => luaScript("get", "-- KEYS ARGV Output\nreturn 1")).toThrow(/jit<Feature><Verb>/);
  });

  it("runs by SHA once registered, and loads the script again after SCRIPT FLUSH (a restarted Redis)", async () => {
    registerScripts(redis, [ECHO, SET]);
    registerScripts(redis, [ECHO]); // idempotent
    expect(await runScript(redis, ECHO, ["{t}:k"], ["v"])).toEqual(["{t}:k", "v"]);
    await redis.script("FLUSH");
    expect(await runScript(redis, ECHO, ["{t}:k2"], ["w"])).toEqual(["{t}:k2", "w"]);
    const sha = (await redis.script("LOAD", ECHO.lua)) as string;
    expect(await redis.script("EXISTS", sha)).toEqual([1]);
  });

  it("queues inside MULTI", async () => {
    registerScripts(redis, [SET]);
    const m = redis.multi();
    queueScript(redis, m, SET, ["{t}:m"], ["x"]);
    m.get("{t}:m");
    const res = await m.exec();
    expect(res?.map(([e, v]) => [e, v])).toEqual([
      [null, 1],
      [null, "x"],
    ]);
  });

  it("refuses a script that was not registered on the connection (no lazy definition mid-traffic)", async () => {
    const other = new Redis(process.env.JITBROKER_TEST_REDIS_URL!);
    try {
      expect(() => runScript(other, ECHO, ["k"], ["v"])).toThrow(/not registered/);
    } finally {
      other.disconnect();
    }
  });

  it("with auto-pipelining (request connections): scripts, plain commands and a script registered while a pipeline is open all answer in order", async () => {
    const auto = new Redis(process.env.JITBROKER_TEST_REDIS_URL!, { enableAutoPipelining: true });
    try {
      await auto.ping();
      registerScripts(auto, [SET]);
      // One event-loop turn: these share one auto-pipeline, and ECHO is defined after it opened.
      const first = auto.get("{t}:ap");
      const set = runScript(auto, SET, ["{t}:ap"], ["1"]);
      registerScripts(auto, [ECHO]);
      const echo = runScript(auto, ECHO, ["{t}:ap"], ["e"]);
      const after = auto.get("{t}:ap");
      expect(await Promise.all([first, set, echo, after])).toEqual([null, 1, ["{t}:ap", "e"], "1"]);
      await auto.del("{t}:ap");
    } finally {
      auto.disconnect();
    }
  });

  it("refuses a name that is already taken by another script or by a command", () => {
    const clash = luaScript<number>("jitTestEcho", "-- KEYS ARGV Output\nreturn 2");
    expect(() => registerScripts(redis, [clash])).toThrow(/already in use/);
  });
});
