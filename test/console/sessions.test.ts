/**
 * Console sessions against a real redis-server: idle and absolute timeouts, sign-out that ends
 * every session of the operator, single-use sign-in transactions bound to the browser.
 */
import { createHash } from "node:crypto";
import { Redis } from "ioredis";
import { createConsoleSessions, randomToken, sameToken, sessionWindow } from "../../src/console/sessions";
import { createKeyspace } from "../../src/redis/keys";
import { testRedisUrl, uniquePrefix } from "../support/broker";

const MIN = 60_000;
let redis: Redis;
let clock = Date.UTC(2026, 0, 1);
const now = () => clock;
const make = () => createConsoleSessions(redis, createKeyspace(uniquePrefix()), { idleMs: 30 * MIN, maxMs: 8 * 60 * MIN, now });
const alice = { workload: "alice", issuer: "corp", subject: "alice@example.com", claims: { email_verified: true } };

beforeAll(() => {
  redis = new Redis(testRedisUrl());
});
afterAll(() => redis.disconnect());

describe("sessionWindow (pure)", () => {
  test("alive until idle or max, whichever comes first; the TTL never outlives the max", () => {
    const t0 = 1_000_000;
    expect(sessionWindow(t0, t0, t0 + 29 * MIN, 30 * MIN, 480 * MIN)).toEqual({ alive: true, ttlMs: 30 * MIN });
    expect(sessionWindow(t0, t0, t0 + 30 * MIN, 30 * MIN, 480 * MIN).alive).toBe(false);
    expect(sessionWindow(t0, t0 + 470 * MIN, t0 + 475 * MIN, 30 * MIN, 480 * MIN)).toEqual({ alive: true, ttlMs: 5 * MIN });
    expect(sessionWindow(t0, t0 + 479 * MIN, t0 + 480 * MIN, 30 * MIN, 480 * MIN).alive).toBe(false);
  });
  test("a session record claiming to be created in the future is dead (tampered or clock-jumped)", () => {
    expect(sessionWindow(10 * MIN, 10 * MIN, 0, 30 * MIN, 480 * MIN).alive).toBe(false);
  });
});

describe("sameToken", () => {
  test("compares CSRF tokens in constant time and refuses anything not shaped like one", () => {
    const t = randomToken();
    expect(sameToken(t, t)).toBe(true);
    expect(sameToken(randomToken(), t)).toBe(false);
    expect(sameToken(undefined, t)).toBe(false);
    expect(sameToken("", t)).toBe(false);
    expect(sameToken(`${t}x`, t)).toBe(false);
    expect(sameToken(["a"], t)).toBe(false);
  });
});

describe("console sessions in Redis", () => {
  test("the cookie value is never stored: Redis holds its SHA-256 and no token of the identity provider", async () => {
    const s = make();
    const { sid } = await s.create(alice);
    const key = s.keys.session(createHash("sha256").update(sid).digest("base64url"));
    const h = await redis.hgetall(key);
    expect(h.w).toBe("alice");
    expect(JSON.stringify(h)).not.toContain(sid);
    expect(await redis.pttl(key)).toBeGreaterThan(29 * MIN);
  });

  test("a session idle for longer than session_idle has ended; use keeps it alive, background refreshes do not", async () => {
    const s = make();
    const { sid } = await s.create(alice);
    clock += 20 * MIN;
    expect(await s.get(sid, false)).not.toBeNull(); // a background refresh
    clock += 15 * MIN; // 35 min since the last use
    expect(await s.get(sid, true)).toBeNull();

    const { sid: sid2 } = await s.create(alice);
    for (let i = 0; i < 4; i++) {
      clock += 20 * MIN;
      expect(await s.get(sid2, true)).not.toBeNull();
    }
  });

  test("a session in use ends at session_max all the same", async () => {
    const s = make();
    const { sid } = await s.create(alice);
    for (let i = 0; i < 23; i++) {
      clock += 20 * MIN;
      expect(await s.get(sid, true)).not.toBeNull();
    }
    clock += 20 * MIN; // 8 h in total
    expect(await s.get(sid, true)).toBeNull();
  });

  test("sign-out ends every session of the operator (a copied cookie is dead too), and no one else's", async () => {
    const s = make();
    const a1 = await s.create(alice);
    const a2 = await s.create(alice);
    const b = await s.create({ ...alice, workload: "bob", subject: "bob@example.com" });
    expect(await s.endAll("alice")).toBe(2);
    expect(await s.get(a1.sid, true)).toBeNull();
    expect(await s.get(a2.sid, true)).toBeNull();
    expect(await s.get(b.sid, true)).not.toBeNull();
  });

  test("forged or malformed cookie values find nothing", async () => {
    const s = make();
    await s.create(alice);
    for (const v of [undefined, "", "x", randomToken(), "../../etc", "a".repeat(43)]) expect(await s.get(v, true)).toBeNull();
  });

  test("a sign-in transaction is single use and bound to the browser that started it (login CSRF)", async () => {
    const s = make();
    const binding = randomToken();
    await s.beginLogin("state-1", binding, { verifier: "v".repeat(43), nonce: "n" });
    expect(await s.finishLogin("state-1", randomToken())).toBeNull(); // another browser's binding
    await s.beginLogin("state-2", binding, { verifier: "v".repeat(43), nonce: "n" });
    expect(await s.finishLogin("state-2", binding)).toEqual({ verifier: "v".repeat(43), nonce: "n" });
    expect(await s.finishLogin("state-2", binding)).toBeNull(); // replayed callback
    expect(await s.finishLogin("unknown", binding)).toBeNull();
  });
});

test("starting sign-ins is bounded per minute (each one holds a Redis key for 10 minutes)", async () => {
  const s = make();
  const results: boolean[] = [];
  for (let i = 0; i < 5; i++) results.push(await s.loginBudget(3));
  expect(results).toEqual([true, true, true, false, false]);
  clock += 60_000;
  expect(await s.loginBudget(3)).toBe(true);
});
