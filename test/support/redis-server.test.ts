import { rm } from 'node:fs/promises';
import net from 'node:net';
import { pingRaw, rawCommand, startRedisServer, type RedisServerHandle } from './redis-server';

/** Inline PING over a plain socket; resolves with the first reply line. */
function rawPing(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ host, port }, () => sock.write('PING\r\n'));
    let buf = '';
    sock.setEncoding('utf8');
    sock.setTimeout(2_000, () => sock.destroy(new Error('timeout')));
    sock.on('error', reject);
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const eol = buf.indexOf('\r\n');
      if (eol >= 0) {
        sock.end();
        resolve(buf.slice(0, eol));
      }
    });
  });
}

describe('global test Redis', () => {
  it('answers PING over raw TCP at JITBROKER_TEST_REDIS_URL', async () => {
    const raw = process.env.JITBROKER_TEST_REDIS_URL;
    expect(raw).toMatch(/^redis:\/\/127\.0\.0\.1:\d+/);
    const url = new URL(raw as string);
    await expect(rawPing(url.hostname, Number(url.port))).resolves.toBe('+PONG');
  });
});

describe('startRedisServer', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn();
  });

  it('keeps AOF-written data across stop and restart on the same port and dir', async () => {
    const first = await startRedisServer({ appendonly: true });
    cleanup.push(() => rm(first.dir, { recursive: true, force: true }));
    cleanup.push(() => first.stop());

    expect(first.url).toBe(`redis://127.0.0.1:${first.port}`);
    await expect(rawCommand(first.port, ['SET', 'k', 'v'])).resolves.toBe('OK');

    await first.stop();
    expect(await pingRaw(first.port)).toBe(false); // really down: the outage

    const second: RedisServerHandle = await startRedisServer({
      dir: first.dir,
      port: first.port,
      appendonly: true,
    });
    cleanup.push(() => second.stop());

    expect(second.port).toBe(first.port);
    expect(second.pid).not.toBe(first.pid);
    await expect(rawCommand(second.port, ['GET', 'k'])).resolves.toBe('v');
  });

  it('rejects with redis-server output when it cannot start', async () => {
    const blocker = await startRedisServer({ appendonly: false });
    cleanup.push(() => rm(blocker.dir, { recursive: true, force: true }));
    cleanup.push(() => blocker.stop());

    // Same port is taken: the new process must exit and we must not mistake the
    // blocker's PONG for our own readiness.
    await expect(startRedisServer({ port: blocker.port, dir: blocker.dir, appendonly: false })).rejects.toThrow(
      /exited .* before accepting connections[\s\S]*redis-server output/,
    );
  });
});
