// Capacity on the common path: what one request costs the gateway in rate limiting (admit, then
// settle with the usage) and in a slot (take, then release), per process and with Redis, for a
// key and a candidate far from their limits; and how many Redis round trips that takes, on the
// request's path and in the background. One request at a time, as at 1 connection; each request
// yields to the event loop once (as a real one does), outside the timed part.
// Needs Redis for the shared part: REDIS_URL (default redis://127.0.0.1:6379); its keys are
// removed at the end.
// Run: npm run bench:capacity   (or npx tsx bench/capacity-bench.ts)
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { CapacityRedis } from '../src/capacity/capacity-redis.js';
import { RateLimiter } from '../src/capacity/rate-limiter.js';
import { RedisRateLimitStore } from '../src/capacity/redis-rate-limit-store.js';
import { RedisSlotStore } from '../src/capacity/redis-slot-store.js';
import { SlotPool, type SlotHandle } from '../src/capacity/slot-pool.js';
import { buildConfig } from '../src/config/load.js';
import { createLogger } from '../src/shared/logger.js';

const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const seconds = Number(process.env['BENCH_SECONDS'] ?? 5);
const logger = createLogger('warn');

const config = buildConfig(
  {
    providers: { gpu: { baseUrl: 'http://127.0.0.1:1', maxInFlight: 128 } },
    virtualModels: { chat: { candidates: [{ target: 'gpu/m', maxInFlight: 64 }], queue: { maxWaitMs: 1_000 } } },
    auth: { apiKeys: [{ sha256: '1'.repeat(64), name: 'app', requestsPerMinute: 100_000_000, tokensPerMinute: 100_000_000_000 }] },
    limits: { sources: { chat: { requestsPerMinute: 100_000_000 } } },
  },
  'bench',
  {},
);
const subject = { keyName: 'app', source: 'chat' };
const target = { candidate: 'gpu/m', provider: 'gpu' };

/** Counts the calls that reach Redis, by operation. */
function counted<T extends object>(store: T, counts: Map<string, number>): T {
  return new Proxy(store, {
    get(target, property) {
      // The target as receiver: its getters read private fields, which a proxy does not have.
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function' || typeof property !== 'string' || ['available', 'instance', 'start', 'close'].includes(property)) {
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      }
      return (...args: unknown[]) => {
        counts.set(property, (counts.get(property) ?? 0) + 1);
        return (value as (...args: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

interface Result {
  readonly mode: string;
  readonly requests: number;
  readonly admitUs: number;
  readonly slotUs: number;
  readonly totalUs: number;
  readonly onPath: number;
  readonly background: Record<string, number>;
}

async function run(mode: 'per process' | 'redis'): Promise<Result> {
  const prefix = `boo-bench:${randomUUID()}:`;
  const redis = mode === 'redis' ? new CapacityRedis({ url: redisUrl, logger, keyPrefix: prefix }) : undefined;
  const counts = new Map<string, number>();
  const slots = new SlotPool({ config: () => config, logger, store: redis ? counted(new RedisSlotStore(redis, logger), counts) : undefined });
  const limiter = new RateLimiter({ config: () => config, logger, store: redis ? counted(new RedisRateLimitStore(redis, logger), counts) : undefined });
  await Promise.all([slots.start(), limiter.start()]);
  const request = async (timed: { admit: bigint; slot: bigint }, awaited: { count: number }) => {
    let started = process.hrtime.bigint();
    let answer = limiter.admit(subject, 700);
    if (answer instanceof Promise) {
      awaited.count += 1;
      answer = await answer;
    }
    if (!answer.allowed) throw new Error('refused');
    timed.admit += process.hrtime.bigint() - started;
    started = process.hrtime.bigint();
    let turn = slots.tryAcquire(target);
    if (turn instanceof Promise) {
      awaited.count += 1;
      turn = await turn;
    }
    const slot: SlotHandle | undefined = turn.value;
    if (!slot) throw new Error('no slot');
    timed.slot += process.hrtime.bigint() - started;
    // The upstream answers meanwhile; the request ends.
    await new Promise((resolve) => setImmediate(resolve));
    started = process.hrtime.bigint();
    answer.ticket.settle(650);
    slot.release();
    timed.admit += process.hrtime.bigint() - started;
  };
  const warm = { admit: 0n, slot: 0n };
  for (let i = 0; i < 5_000; i++) await request(warm, { count: 0 });
  counts.clear();
  const timed = { admit: 0n, slot: 0n };
  const awaited = { count: 0 };
  const started = performance.now();
  let requests = 0;
  while (performance.now() - started < seconds * 1_000) {
    await request(timed, awaited);
    requests += 1;
  }
  const elapsed = (performance.now() - started) / 1_000;
  const calls = new Map(counts);
  await Promise.all([slots.close(), limiter.close()]);
  if (redis) {
    await redis.close();
    const cleaner = new Redis(redisUrl);
    const keys = await cleaner.keys(`${prefix}*`);
    if (keys.length > 0) await cleaner.del(...keys);
    await cleaner.quit();
  }
  const background: Record<string, number> = {};
  for (const [operation, count] of calls) background[operation] = Math.round((count / elapsed) * 10) / 10;
  const admitUs = Number(timed.admit) / 1_000 / requests;
  const slotUs = Number(timed.slot) / 1_000 / requests;
  return { mode, requests, admitUs, slotUs, totalUs: admitUs + slotUs, onPath: awaited.count / requests, background };
}

async function main(): Promise<void> {
  const results = [await run('per process'), await run('redis')];
  process.stdout.write(`capacity on the common path, ${seconds} s of requests one at a time (key, source and candidate limited, far from their limits)\n\n`);
  process.stdout.write(
    '| mode | requests | admit + settle, µs | slot take + release, µs | total, µs | requests that waited for Redis | Redis calls per second, all in the background |\n|---|--:|--:|--:|--:|--:|---|\n',
  );
  for (const result of results) {
    const calls = Object.entries(result.background)
      .map(([operation, perSecond]) => `${operation} ${perSecond}/s`)
      .join(', ');
    process.stdout.write(
      `| ${result.mode} | ${result.requests} | ${result.admitUs.toFixed(2)} | ${result.slotUs.toFixed(2)} | ${result.totalUs.toFixed(2)} | ${(result.onPath * 100).toFixed(3)} % | ${calls || 'none'} |\n`,
    );
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
