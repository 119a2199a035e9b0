import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { BreakerRegistry } from '../../src/breakers/breaker-registry.js';
import type { WindowCounts } from '../../src/breakers/breaker-state-store.js';
import { RedisBreakerStateStore } from '../../src/breakers/redis-breaker-state-store.js';
import { SharedBreakers } from '../../src/breakers/shared-breakers.js';
import { buildConfig } from '../../src/config/load.js';
import { FleetState } from '../../src/fleet/fleet-state.js';
import { createLogger } from '../../src/shared/logger.js';
import { describeBreakerStateStoreContract } from '../support/breaker-state-store-contract.js';
import { waitFor } from '../support/wait-for.js';
import { keyPrefixPerTest, testRedisUrl as redisUrl } from '../support/test-services.js';

const logger = createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
const breakerSettings = { errorThresholdPercentage: 50, volumeThreshold: 4, rollingCountTimeoutMs: 10_000, resetTimeoutMs: 60_000 };
const config = buildConfig(
  { providers: { p: { baseUrl: 'http://127.0.0.1:1' } }, virtualModels: { v: { candidates: ['p/m'] } }, breaker: breakerSettings },
  'test config',
  {},
);

/**
 * The Redis store, keeping what every flush of attempt counts was answered. SharedBreakers judges
 * the totals as soon as the answer arrives (in the same microtask run), so a test that sees them
 * here knows the judgement is made.
 */
class CountedStore extends RedisBreakerStateStore {
  readonly totals: WindowCounts[] = [];

  override async addCounts(...args: Parameters<RedisBreakerStateStore['addCounts']>): Promise<WindowCounts> {
    const totals = await super.addCounts(...args);
    this.totals.push(totals);
    return totals;
  }
}

describe('RedisBreakerStateStore and SharedBreakers (in process, real Redis)', () => {
  const scope = keyPrefixPerTest();

  function store(): CountedStore {
    const created = new CountedStore({ url: redisUrl, logger, keyPrefix: scope.prefix });
    scope.cleanups.push(() => created.close());
    return created;
  }

  async function replica(name: string) {
    const breakers = new BreakerRegistry(breakerSettings);
    const fleet = new FleetState();
    const counted = store();
    const shared = new SharedBreakers({ breakers, store: counted, fleet, config: () => config, logger, replica: name, countFlushMs: 20 });
    scope.cleanups.push(async () => {
      await shared.close();
      breakers.shutdown();
    });
    await shared.start();
    return { breakers, fleet, shared, totals: counted.totals };
  }

  it('opens the breaker of the other replica on a trip, and closes it on a verdict, without echoing its own announcements', async () => {
    const one = await replica('one');
    const two = await replica('two');
    const seenByOne: string[] = [];
    one.breakers.on('transition', ({ to, origin }) => seenByOne.push(`${to}/${origin}`));
    one.breakers.trip('p/m');
    await waitFor(() => two.breakers.position('p/m') === 'open', 2_000, 'two to open');
    expect(two.breakers.origin('p/m')).toBe('remote');
    // Pub/sub delivers in publish order: once a later announcement of two's reaches one, its own
    // (which, echoed back, would have made the origin remote) would have reached it before.
    two.fleet.coolDown('p/marker', Date.now() + 60_000);
    await waitFor(() => one.fleet.isCoolingDown('p/marker'), 2_000, 'one to hear from two');
    expect(one.breakers.origin('p/m')).toBe('local');
    // A probe's success is a verdict: it closes the breaker everywhere (a panic attempt's is not).
    await one.breakers.run('p/m', () => Promise.resolve('ok'), true);
    expect(two.breakers.position('p/m')).toBe('open');
    one.breakers.permitProbe('p/m');
    await one.breakers.run('p/m', () => Promise.resolve('ok'));
    await waitFor(() => two.breakers.position('p/m') === 'closed', 2_000, 'two to close');
    expect(seenByOne).toEqual(['open/local', 'halfOpen/local', 'closed/local']);
  });

  it('trips on the cluster-wide failure rate when no replica alone reaches the volume threshold', async () => {
    const one = await replica('one');
    const two = await replica('two');
    const failure = Object.assign(new Error('upstream 500'), { countsAsBreakerFailure: true });
    // Two attempts each, one failing in two: 50% on 2 fires is below volume 4 on either replica.
    for (const { breakers } of [one, two]) {
      await breakers.run('p/m', () => Promise.resolve('ok'));
      await breakers.run('p/m', () => Promise.reject(failure)).catch(() => undefined);
    }
    // Both replicas have been told the cluster-wide totals (4 fires, 2 failures) and judged them.
    await waitFor(
      () => one.totals.length > 0 && two.totals.length > 0 && [...one.totals, ...two.totals].some((totals) => totals.fires === 4),
      2_000,
      'both flushes',
    );
    expect([...one.totals, ...two.totals].find((totals) => totals.fires === 4)).toEqual({ fires: 4, failures: 2 });
    expect([one.breakers.position('p/m'), two.breakers.position('p/m')]).toEqual(['closed', 'closed']);
    // One more failure: 3 of 5 in the cluster is over 50% with volume reached.
    await one.breakers.run('p/m', () => Promise.reject(failure)).catch(() => undefined);
    await waitFor(() => one.breakers.position('p/m') === 'open' && two.breakers.position('p/m') === 'open', 2_000, 'the cluster-wide trip');
  });

  it('shares 429 cooldowns, with replicas that start later too', async () => {
    const one = await replica('one');
    const two = await replica('two');
    const until = Date.now() + 5_000;
    one.fleet.coolDown('p/m', until);
    await waitFor(() => two.fleet.isCoolingDown('p/m'), 2_000, 'two to cool down');
    expect(two.fleet.candidate('p/m').coolingDownUntil).toBe(until);
    const three = await replica('three');
    expect(three.fleet.candidate('p/m').coolingDownUntil).toBe(until);
  });
});

let contractPrefix = '';
describeBreakerStateStoreContract(
  'RedisBreakerStateStore',
  () => {
    contractPrefix = `boo-test:${randomUUID()}:`;
    return [0, 1, 2].map(() => new RedisBreakerStateStore({ url: redisUrl, logger, keyPrefix: contractPrefix })) as [
      RedisBreakerStateStore,
      RedisBreakerStateStore,
      RedisBreakerStateStore,
    ];
  },
  async () => {
    const redis = new Redis(redisUrl);
    const keys = await redis.keys(`${contractPrefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  },
);
