import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { CapacityRedis } from '../../src/capacity/capacity-redis.js';
import { RedisSlotStore } from '../../src/capacity/redis-slot-store.js';
import { SlotPool, type SlotHandle, type SlotTarget } from '../../src/capacity/slot-pool.js';
import { WaitLine } from '../../src/capacity/wait-line.js';
import { buildConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/shared/logger.js';
import { keyPrefixPerTest, testRedisUrl as redisUrl } from '../support/test-services.js';

const logger = createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
const config = buildConfig(
  {
    providers: { a: { baseUrl: 'http://127.0.0.1:1', maxInFlight: 3 }, b: { baseUrl: 'http://127.0.0.1:2' } },
    virtualModels: { v: { candidates: [{ target: 'a/m1', maxInFlight: 2 }, 'a/m2', { target: 'b/m', maxInFlight: 1 }] } },
  },
  'test',
  {},
);
const m1: SlotTarget = { candidate: 'a/m1', provider: 'a' };
const bm: SlotTarget = { candidate: 'b/m', provider: 'b' };

/** The Redis store, counting the lease requests that reached Redis. */
class CountingStore extends RedisSlotStore {
  acquires = 0;
  override acquire(...args: Parameters<RedisSlotStore['acquire']>) {
    this.acquires += 1;
    return super.acquire(...args);
  }
}

interface Replica {
  readonly pool: SlotPool;
  readonly store: CountingStore;
  readonly redis: CapacityRedis;
  readonly line: WaitLine<SlotHandle>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('SlotPool over Redis (several replicas in one process, real Redis)', () => {
  const scope = keyPrefixPerTest();

  /** One replica: its own connections, its pool, and a line that wakes when a slot frees anywhere. */
  async function replica(options: Partial<ConstructorParameters<typeof SlotPool>[0]> = {}): Promise<Replica> {
    const redis = new CapacityRedis({ url: redisUrl, logger, keyPrefix: scope.prefix });
    const store = new CountingStore(redis, logger);
    const pool = new SlotPool({ config: () => config, logger, store, ...options });
    const line = new WaitLine<SlotHandle>('v', () => ({ maxWaitMs: 20_000, maxQueued: 100 }));
    pool.onFreed(() => line.wake());
    await pool.start();
    scope.cleanups.push(async () => {
      line.close(new Error('test over'));
      await pool.close();
      await redis.close();
    });
    return { pool, store, redis, line };
  }

  /** Takes a slot of the target, waiting in the replica's line when none is free. */
  async function take(replica: Replica, target: SlotTarget): Promise<SlotHandle> {
    const { value } = await replica.line.wait({ source: '', attempt: () => replica.pool.tryAcquire(target), dispose: (slot) => slot.release() });
    return value;
  }

  it('never lets more than maxInFlight requests of a candidate run across three replicas, and every client is served', async () => {
    const replicas = await Promise.all([replica(), replica(), replica()]);
    let running = 0;
    let peak = 0;
    let served = 0;
    // Six clients, two per replica, five requests each, every one holding its slot for 15-35 ms.
    await Promise.all(
      Array.from({ length: 6 }, async (_, client) => {
        const at = replicas[client % 3]!;
        for (let request = 0; request < 5; request++) {
          const slot = await take(at, m1);
          running += 1;
          peak = Math.max(peak, running);
          await sleep(15 + ((client * 7 + request * 3) % 20));
          running -= 1;
          served += 1;
          slot.release();
        }
      }),
    );
    expect(served).toBe(30);
    expect(peak).toBe(2);
  }, 30_000);

  it('gives a slot freed on one replica to a waiter on another at once', async () => {
    const [a, b] = await Promise.all([replica(), replica()]);
    const held = await take(a, bm);
    let servedAt = 0;
    const waiting = take(b, bm).then((slot) => {
      servedAt = performance.now();
      return slot;
    });
    await sleep(300);
    expect(servedAt).toBe(0);
    const releasedAt = performance.now();
    held.release();
    (await waiting).release();
    expect(servedAt - releasedAt).toBeLessThan(100);
  });

  it('shares a busy candidate between the lines of two replicas instead of letting one keep it', async () => {
    const [a, b] = await Promise.all([replica(), replica()]);
    const served = new Map<Replica, number>([
      [a, 0],
      [b, 0],
    ]);
    const until = performance.now() + 1_500;
    // Three clients on each replica, each request holding b/m's only slot for 5 ms.
    await Promise.all(
      [a, a, a, b, b, b].map(async (at) => {
        while (performance.now() < until) {
          const slot = await take(at, bm);
          await sleep(5);
          slot.release();
          served.set(at, served.get(at)! + 1);
        }
      }),
    );
    const total = served.get(a)! + served.get(b)!;
    if (process.env.TEST_VERBOSE) console.log({ a: served.get(a), b: served.get(b) });
    expect(total).toBeGreaterThan(50);
    expect(Math.min(served.get(a)!, served.get(b)!) / total).toBeGreaterThan(0.3);
  });

  it('reuses a freed lease for the same replica’s next request without a round trip to Redis', async () => {
    const one = await replica();
    for (let i = 0; i < 50; i++) {
      const slot = await take(one, m1);
      slot.release();
    }
    expect(one.store.acquires).toBe(1);
  });

  it('hands an idle lease over to another replica that wants it, at once', async () => {
    const [a, b] = await Promise.all([replica({ lingerMs: 60_000 }), replica({ lingerMs: 60_000 })]);
    (await take(a, bm)).release();
    // a keeps b/m's only slot idle for itself; b asks for it.
    const started = performance.now();
    const turn = await b.pool.tryAcquire(bm);
    expect(turn.value).toBeDefined();
    expect(performance.now() - started).toBeLessThan(200);
    // And a, now asking again, waits for b.
    const refused = await a.pool.tryAcquire(bm);
    expect(refused.value).toBeUndefined();
    turn.value!.release();
  });

  it('tells a replica at once when the holders of a full scope are busy, instead of waiting out reclaimWaitMs', async () => {
    const [a, b] = await Promise.all([replica(), replica({ reclaimWaitMs: 5_000 })]);
    const held = await take(a, bm);
    const started = performance.now();
    const turn = await b.pool.tryAcquire(bm);
    expect(turn.value).toBeUndefined();
    expect(performance.now() - started).toBeLessThan(1_000);
    held.release();
  });

  it('takes the candidate and the provider slot together or neither, across replicas', async () => {
    const [a, b] = await Promise.all([replica(), replica()]);
    // Provider a allows 3: two of a/m2 on one replica, one of a/m1 on the other.
    const slots = [await take(a, { candidate: 'a/m2', provider: 'a' }), await take(a, { candidate: 'a/m2', provider: 'a' }), await take(b, m1)];
    expect((await b.pool.tryAcquire(m1)).value).toBeUndefined();
    expect((await a.pool.tryAcquire({ candidate: 'a/m2', provider: 'a' })).value).toBeUndefined();
    const redis = new Redis(redisUrl);
    // The refused a/m1 lease was not left in the candidate's scope.
    expect(await redis.zcard(`${scope.prefix}slots:c:a/m1`)).toBe(1);
    await redis.quit();
    for (const slot of slots) slot.release();
  });

  it('keeps a lease held longer than its life while the replica renews it', async () => {
    const [a, b] = await Promise.all([replica({ leaseMs: 600 }), replica({ leaseMs: 600, reclaimWaitMs: 0 })]);
    const held = await take(a, bm);
    for (let i = 0; i < 4; i++) {
      await sleep(400);
      expect((await b.pool.tryAcquire(bm)).value).toBeUndefined();
    }
    held.release();
  });

  it('gives the slots of a replica that stopped renewing (died) to a waiter elsewhere within the lease time', async () => {
    const leaseMs = 1_500;
    const [a, b] = await Promise.all([replica({ leaseMs }), replica({ leaseMs })]);
    await take(a, m1);
    await take(a, m1);
    // a dies: its connections drop without a word; its leases are neither renewed nor released.
    await a.redis.close();
    const diedAt = performance.now();
    const slot = await take(b, m1);
    const waited = performance.now() - diedAt;
    expect(waited).toBeLessThan(leaseMs + 500);
    expect(waited).toBeGreaterThan(leaseMs / 3);
    slot.release();
  });
});
