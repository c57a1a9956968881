/**
 * Runs a `redis-server` child (from PATH) on 127.0.0.1: the embedded Redis of `redis.url:
 * embedded`, and the throw-away servers of the test suite.
 *
 * Plain node:net / node:child_process only — deliberately no ioredis here, so the
 * readiness check cannot be affected by the client library under test.
 *
 * Restarting on the same `port` and `dir` is supported (and used by tests to
 * simulate a Redis outage): with `appendonly: true` (the default) every write is
 * in the AOF under `dir`, and Redis fsyncs it on SIGTERM, so data survives.
 *
 * The caller owns `dir`: `stop()` never deletes it (a restart needs it). Remove it
 * with `fs.rm(dir, { recursive: true, force: true })` when done.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface RedisServerOptions {
  /** Data directory (AOF lives here). Default: a fresh mkdtemp under os.tmpdir(). */
  dir?: string;
  /** TCP port on 127.0.0.1. Default: a free port chosen by the OS. */
  port?: number;
  /** `--appendonly yes|no`. Default: true. */
  appendonly?: boolean;
  /**
   * Listen on this unix socket only (mode 0700, no TCP at all): the embedded Redis, which no
   * other local user may reach. `port` is then ignored and `url` is the socket path.
   */
  unixSocket?: string;
  /** `--maxmemory` (e.g. "32mb"); with `maxmemory-policy noeviction`, as the broker wants it. */
  maxmemory?: string;
}

/** Where a raw connection goes: a TCP port on `host`, or a unix socket path. */
type Target = number | string;
const connectTo = (target: Target, host: string) => (typeof target === 'string' ? net.createConnection({ path: target }) : net.createConnection({ host, port: target }));

export interface RedisServerHandle {
  /** `redis://127.0.0.1:PORT`, or the socket path with `unixSocket` */
  url: string;
  /** The TCP port (0 with `unixSocket`). */
  port: number;
  dir: string;
  pid: number;
  /** SIGTERM, wait for exit (SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void>;
}


const READY_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 50;
const STOP_GRACE_MS = 5_000;
const MAX_OUTPUT_CHARS = 64 * 1024;

/** Ask the OS for a free TCP port on 127.0.0.1. */
export function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('could not determine a free port'));
        return;
      }
      const { port } = addr;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/**
 * Send one command over a fresh raw TCP connection, encoded as a RESP array, and
 * resolve with the decoded reply: simple string / integer as text, bulk string as
 * its body (null for a nil bulk). An error reply (`-ERR ...`) rejects. Arrays are
 * not supported. Exported so tests can talk to Redis without a client library.
 */
export function rawCommand(
  port: Target,
  args: readonly string[],
  { timeoutMs = 1_000, host = '127.0.0.1' }: { timeoutMs?: number; host?: string } = {},
): Promise<string | null> {
  const payload =
    `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let settled = false;
    const sock = connectTo(port, host);
    const finish = (err: Error | null, value?: string | null): void => {
      if (settled) return;
      settled = true;
      sock.destroy();
      if (err) reject(err);
      else resolve(value ?? null);
    };
    sock.setTimeout(timeoutMs, () => finish(new Error(`timeout after ${timeoutMs} ms talking to ${host}:${port}`)));
    sock.once('error', (err) => finish(err));
    sock.once('close', () => finish(new Error(`connection to ${host}:${port} closed before a reply`)));
    sock.once('connect', () => sock.write(payload));
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const eol = buf.indexOf('\r\n');
      if (eol < 0) return;
      const line = buf.subarray(0, eol).toString('utf8');
      const kind = line[0];
      const rest = line.slice(1);
      if (kind === '+' || kind === ':') return finish(null, rest);
      if (kind === '-') return finish(new Error(`redis error reply: ${rest}`));
      if (kind === '$') {
        const len = Number(rest);
        if (len < 0) return finish(null, null);
        if (buf.length < eol + 2 + len + 2) return; // wait for the whole body
        return finish(null, buf.subarray(eol + 2, eol + 2 + len).toString('utf8'));
      }
      finish(new Error(`unsupported RESP reply: ${JSON.stringify(line)}`));
    });
  });
}

/**
 * Resolve true iff the server at `port` answers an inline `PING\r\n` with `+PONG`
 * (a `-LOADING` reply while the AOF is replayed counts as not ready). Never rejects.
 */
export function pingRaw(port: Target, { timeoutMs = 1_000, host = '127.0.0.1' } = {}): Promise<boolean> {
  return new Promise((resolve) => {
    let buf = '';
    let settled = false;
    const sock = connectTo(port, host);
    const finish = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => finish(false));
    sock.setEncoding('utf8');
    sock.once('error', () => finish(false));
    sock.once('close', () => finish(false));
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.includes('\r\n')) finish(buf.startsWith('+PONG'));
    });
  });
}

/** The pid of the redis-server answering on `port` (from INFO server), or undefined. */
async function serverPid(port: Target): Promise<number | undefined> {
  try {
    const info = await rawCommand(port, ['INFO', 'server']);
    const m = /^process_id:(\d+)/m.exec(info ?? '');
    return m?.[1] !== undefined ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function redisArgs(port: number, dir: string, appendonly: boolean, extra: Pick<RedisServerOptions, 'unixSocket' | 'maxmemory'>): string[] {
  return [
    ...(extra.unixSocket === undefined
      ? ['--port', String(port), '--bind', '127.0.0.1']
      : ['--port', '0', '--unixsocket', extra.unixSocket, '--unixsocketperm', '700']),
    ...(extra.maxmemory === undefined ? [] : ['--maxmemory', extra.maxmemory]),
    '--dir', dir,
    '--appendonly', appendonly ? 'yes' : 'no',
    '--save', '',
    '--maxmemory-policy', 'noeviction',
    '--daemonize', 'no',
    '--protected-mode', 'yes',
    '--logfile', '',
  ];
}

class RedisStartError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(message);
    this.name = 'RedisStartError';
  }
}

async function startOnce(port: number, dir: string, appendonly: boolean, extra: Pick<RedisServerOptions, 'unixSocket' | 'maxmemory'> = {}): Promise<RedisServerHandle> {
  const target: Target = extra.unixSocket ?? port;
  let output = '';
  const capture = (chunk: Buffer): void => {
    output += chunk.toString('utf8');
    if (output.length > MAX_OUTPUT_CHARS) output = output.slice(-MAX_OUTPUT_CHARS);
  };

  const child: ChildProcess = spawn('redis-server', redisArgs(port, dir, appendonly, extra), {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', capture);
  child.stderr?.on('data', capture);

  let exited = false;
  let exitInfo = '';
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = true;
      exitInfo = signal ? `signal ${signal}` : `code ${String(code)}`;
      resolve();
    });
  });
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));

  // Never leave an orphaned redis-server behind if the process exits without stop().
  const killOnExit = (): void => {
    if (!exited) child.kill('SIGKILL');
  };
  process.on('exit', killOnExit);

  // Don't let a forgotten stop() keep Jest (or any host process) alive.
  child.unref();
  for (const s of [child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();

  const fail = (why: string): never => {
    process.removeListener('exit', killOnExit);
    if (!exited) child.kill('SIGKILL');
    throw new RedisStartError(
      `redis-server (${extra.unixSocket === undefined ? `port ${port}` : `socket ${extra.unixSocket}`}, dir ${dir}) ${why}\n--- redis-server output ---\n${output.trim() || '(none)'}`,
      output,
    );
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const early = await Promise.race([
      spawnError.then((e) => `failed to start: ${e.message}`),
      exitPromise.then(() => `exited (${exitInfo}) before accepting connections`),
      sleep(0).then(() => null),
    ]);
    if (early !== null) fail(early);
    // Ready once it answers PING -- and it is *our* process answering, not some
    // other server still holding the port (ours would then exit: address in use).
    if ((await pingRaw(target)) && (await serverPid(target)) === child.pid) break;
    if (exited) fail(`exited (${exitInfo}) before accepting connections`);
    if (Date.now() >= deadline) fail(`did not answer PING within ${READY_TIMEOUT_MS} ms`);
    await sleep(POLL_INTERVAL_MS);
  }

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      try {
        if (exited) return;
        child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          exitPromise.then(() => false),
          new Promise<boolean>((r) => {
            timer = setTimeout(() => r(true), STOP_GRACE_MS);
          }),
        ]);
        if (timer) clearTimeout(timer);
        if (timedOut && !exited) {
          child.kill('SIGKILL');
          await exitPromise;
        }
      } finally {
        process.removeListener('exit', killOnExit);
      }
    })();
    return stopping;
  };

  if (child.pid === undefined) fail('has no pid');
  return { url: extra.unixSocket ?? `redis://127.0.0.1:${port}`, port: extra.unixSocket === undefined ? port : 0, dir, pid: child.pid as number, stop };
}

/**
 * Start a redis-server on 127.0.0.1 and resolve once it answers PING.
 * Rejects (with redis-server's output) if it exits first or isn't ready in 10 s.
 */
export async function startRedisServer(opts: RedisServerOptions = {}): Promise<RedisServerHandle> {
  const dir = opts.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'jitbroker-redis-')));
  const appendonly = opts.appendonly ?? true;
  const extra = { ...(opts.unixSocket === undefined ? {} : { unixSocket: opts.unixSocket }), ...(opts.maxmemory === undefined ? {} : { maxmemory: opts.maxmemory }) };

  if (opts.unixSocket !== undefined) return startOnce(0, dir, appendonly, extra);
  if (opts.port !== undefined) return startOnce(opts.port, dir, appendonly, extra);

  // We picked the port ourselves, so another process may grab it between our probe
  // and redis-server's bind(). Retry with a new port in that (rare) case.
  for (let attempt = 1; ; attempt++) {
    const port = await findFreePort();
    try {
      return await startOnce(port, dir, appendonly, extra);
    } catch (err) {
      const inUse = err instanceof RedisStartError && /address already in use/i.test(err.output);
      if (!inUse || attempt >= 3) throw err;
    }
  }
}
