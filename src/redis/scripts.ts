/**
 * Lua scripts, registered once per connection and called by their SHA1
 * (docs/ARCHITECTURE.md, Redis key layout). Each feature declares its scripts with `luaScript` next to the keys they
 * touch; the feature's constructor registers them on its connection with `registerScripts`
 * before any traffic, and calls them with `runScript` (or `queueScript` inside a pipeline/MULTI).
 *
 * Underneath is ioredis `defineCommand`: the first call sends EVALSHA, and after a NOSCRIPT (a
 * restarted, flushed or failed-over Redis) the same call falls back to EVAL, which loads the
 * script again. Registering before traffic matters with ioredis auto-pipelining, where a command
 * defined while a pipeline is open is missing from it.
 *
 * Every script starts with a header naming its KEYS, its ARGV and its Output, so its contract
 * can be read where it is written; `luaScript` refuses a script without one.
 */
import type { ChainableCommander, Redis } from "ioredis";

/** A Lua script whose reply is `R` (as ioredis decodes it: strings, numbers, arrays, null). */
export interface LuaScript<R> {
  /** The command name on the connection (unique across the broker; `jit` + feature + verb). */
  readonly name: string;
  readonly lua: string;
  /** Phantom: the reply type. */
  readonly reply?: R;
}

const NAME = /^jit[A-Z][A-Za-z0-9]{2,40}$/;

/** Declares a script. Throws (at module load) when the name or the header is not as required. */
export function luaScript<R>(name: string, lua: string): LuaScript<R> {
  if (!NAME.test(name)) throw new Error(`Lua script name "${name}" must be jit<Feature><Verb>`);
  const header = lua.trimStart().split("\n").filter((l) => l.trimStart().startsWith("--")).join("\n");
  for (const part of ["KEYS", "ARGV", "Output"]) {
    if (!new RegExp(`\\b${part}\\b`).test(header)) throw new Error(`Lua script ${name}: its header comment names no ${part}`);
  }
  return { name, lua };
}

const registered = new WeakMap<object, Map<string, string>>();

/**
 * Registers scripts on one connection (idempotent). Call it where the connection is handed to the
 * feature, before the first request. A name already used by another script is refused.
 */
export function registerScripts(redis: Redis, scripts: LuaScript<unknown>[]): void {
  let mine = registered.get(redis);
  if (!mine) registered.set(redis, (mine = new Map()));
  for (const s of scripts) {
    const had = mine.get(s.name);
    if (had === s.lua) continue;
    if (had !== undefined || s.name in redis) throw new Error(`Lua script name ${s.name} is already in use on this connection`);
    // No fixed key count: each call passes its own (some scripts take one key per lease).
    redis.defineCommand(s.name, { lua: s.lua });
    mine.set(s.name, s.lua);
  }
}

type ScriptFn = (numKeys: number, ...rest: string[]) => Promise<unknown>;

function fn(target: object, s: LuaScript<unknown>, owner: object): ScriptFn {
  if (registered.get(owner)?.get(s.name) !== s.lua) throw new Error(`Lua script ${s.name} was not registered on this connection before use`);
  return (target as Record<string, ScriptFn>)[s.name]!.bind(target);
}

/** Runs a registered script (EVALSHA, EVAL after NOSCRIPT). */
export function runScript<R>(redis: Redis, s: LuaScript<R>, keys: string[], args: string[]): Promise<R> {
  return fn(redis, s, redis)(keys.length, ...keys, ...args) as Promise<R>;
}

/** Queues a registered script on a pipeline or MULTI of `redis` (ioredis loads it if needed). */
export function queueScript<R>(redis: Redis, pipe: ChainableCommander, s: LuaScript<R>, keys: string[], args: string[]): ChainableCommander {
  void fn(pipe, s, redis)(keys.length, ...keys, ...args);
  return pipe;
}
