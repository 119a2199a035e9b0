import { describe, expect, it } from 'vitest';
import { CapacityRedis } from '../../src/capacity/capacity-redis.js';
import { RateLimiter, type Admission } from '../../src/capacity/rate-limiter.js';
import { RedisRateLimitStore } from '../../src/capacity/redis-rate-limit-store.js';
import { buildConfig, type Config } from '../../src/config/load.js';
import { createLogger } from '../../src/shared/logger.js';
import { keyPrefixPerTest, testRedisUrl as redisUrl } from '../support/test-services.js';
import { waitFor } from '../support/wait-for.js';

const logger = createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
const sha = (n: number) => String(n).repeat(64);

function configWith(auth: unknown[], sources: Record<string, unknown> = {}): Config {
  return buildConfig({ providers: {}, auth: { apiKeys: auth }, limits: { sources } }, 'test', {});
}

/** The Redis store, counting the checks that reached Redis. */
class CountingStore extends RedisRateLimitStore {
  takes = 0;
  override take(...args: Parameters<RedisRateLimitStore['take']>) {
    this.takes += 1;
    return super.take(...args);
  }
}

interface Replica {
  readonly limiter: RateLimiter;
  readonly store: CountingStore;
  readonly redis: CapacityRedis;
}

const app = { keyName: 'app', source: null };

describe('RateLimiter over Redis (several replicas in one process, real Redis)', () => {
  const scope = keyPrefixPerTest();

  async function replica(config: Config, options: Partial<ConstructorParameters<typeof RateLimiter>[0]> = {}): Promise<Replica> {
    const redis = new CapacityRedis({ url: redisUrl, logger, keyPrefix: scope.prefix });
    const store = new CountingStore(redis, logger);
    const limiter = new RateLimiter({ config: () => config, logger, store, ...options });
    await limiter.start();
    scope.cleanups.push(async () => {
      await limiter.close();
      await redis.close();
    });
    return { limiter, store, redis };
  }

  it('admits exactly the limit across three replicas (4 allowed of 6 at once), each refusal with Retry-After', async () => {
    const config = configWith([{ sha256: sha(1), name: 'app', requestsPerMinute: 4 }], { chat: { requestsPerMinute: 30 } });
    const replicas = await Promise.all([replica(config), replica(config), replica(config)]);
    const answers = await Promise.all(Array.from({ length: 6 }, async (_, i) => replicas[i % 3]!.limiter.admit({ keyName: 'app', source: 'chat' }, 0)));
    const allowed = answers.filter((answer): answer is Extract<Admission, { allowed: true }> => answer.allowed);
    expect(allowed).toHaveLength(4);
    expect(allowed.map((answer) => answer.headers?.['x-ratelimit-remaining-requests']).sort()).toEqual(['0', '1', '2', '3']);
    for (const answer of answers) {
      if (answer.allowed) continue;
      expect(answer.error).toMatchObject({
        code: 'rate_limit_exceeded',
        limitedBy: { scope: 'key', name: 'app' },
        headers: { 'x-ratelimit-remaining-requests': '0' },
      });
      expect(answer.error.retryAfterSeconds).toBeGreaterThanOrEqual(1);
      expect(answer.error.retryAfterSeconds).toBeLessThanOrEqual(15);
    }
    // The two refused by the key took nothing from the source: 30 - 4 - this one.
    expect(await replicas[0]!.limiter.admit({ keyName: undefined, source: 'chat' }, 0)).toMatchObject({
      allowed: true,
      headers: { 'x-ratelimit-remaining-requests': '25' },
    });
  });

  it('counts the headers down request after request, whichever replica answers', async () => {
    // 5 requests a minute is too small to lease in budgets: exact. 10,000 tokens is leased in budgets of 500.
    const config = configWith([], { batch: { requestsPerMinute: 5, tokensPerMinute: 10_000 } });
    const [a, b] = await Promise.all([replica(config), replica(config)]);
    const requests: Array<string | undefined> = [];
    const tokens: number[] = [];
    for (let i = 0; i < 5; i++) {
      const answer = await [a, b][i % 2]!.limiter.admit({ keyName: undefined, source: 'batch' }, 1_000);
      if (!answer.allowed) throw new Error(`refused at ${i}`);
      requests.push(answer.headers?.['x-ratelimit-remaining-requests']);
      tokens.push(Number(answer.headers?.['x-ratelimit-remaining-tokens']));
    }
    expect(requests).toEqual(['4', '3', '2', '1', '0']);
    // A replica sees Redis' level and its own budget, not the other replica's unspent budget, nor
    // its own while it is on its way back to Redis: at most a budget of 500 each, here.
    tokens.forEach((remaining, i) => {
      const exact = 10_000 - 1_000 * (i + 1);
      expect(remaining).toBeLessThanOrEqual(exact);
      expect(remaining).toBeGreaterThanOrEqual(exact - 2 * 500);
      if (i > 0) expect(remaining).toBeLessThan(tokens[i - 1]!);
    });
    expect((await b.limiter.admit({ keyName: undefined, source: 'batch' }, 1)).allowed).toBe(false);
  });

  it('serves a key far from its limit from local budgets, without a round trip per request', async () => {
    const config = configWith([{ sha256: sha(1), name: 'app', requestsPerMinute: 60_000 }]);
    const one = await replica(config);
    for (let i = 0; i < 500; i++) {
      const answer = await one.limiter.admit(app, 0);
      expect(answer.allowed).toBe(true);
    }
    // The first request asks Redis; then budgets of 3,000 (5 % of the limit) cover the rest.
    expect(one.store.takes).toBeLessThanOrEqual(2);
  });

  it('never admits more than the limit when replicas with budgets race past it', async () => {
    const limit = 200;
    const config = configWith([{ sha256: sha(1), name: 'app', requestsPerMinute: limit }]);
    const replicas = await Promise.all([replica(config), replica(config), replica(config)]);
    const started = performance.now();
    let allowed = 0;
    // Three clients per replica, each sending until it has been refused five times.
    await Promise.all(
      replicas.flatMap((at) =>
        [1, 2, 3].map(async () => {
          let refusals = 0;
          while (refusals < 5) {
            const answer = await at.limiter.admit(app, 0);
            if (answer.allowed) allowed += 1;
            else refusals += 1;
          }
        }),
      ),
    );
    const refilled = ((performance.now() - started) / 60_000) * limit;
    if (process.env.TEST_VERBOSE) console.log({ allowed, refilled, takes: replicas.map((at) => at.store.takes) });
    expect(allowed).toBeLessThanOrEqual(Math.floor(limit + refilled));
    // Budgets given back when the key crossed its reserve were spent by the others.
    expect(allowed).toBeGreaterThanOrEqual(limit - 1);
    expect(replicas.reduce((sum, at) => sum + at.store.takes, 0)).toBeGreaterThan(limit / 2);
  });

  it('takes back the unspent budget of a quiet replica when the key nears its limit, so another replica is not refused early', async () => {
    const limit = 200;
    const config = configWith([{ sha256: sha(1), name: 'app', requestsPerMinute: limit }]);
    const [quiet, busy] = await Promise.all([replica(config), replica(config)]);
    // One request leases the quiet replica a budget of 10 (5 %), of which it spends one.
    expect((await quiet.limiter.admit(app, 0)).allowed).toBe(true);
    const started = performance.now();
    let allowed = 0;
    let refusals = 0;
    while (refusals < 5) {
      if ((await busy.limiter.admit(app, 0)).allowed) allowed += 1;
      else refusals += 1;
    }
    const refilled = ((performance.now() - started) / 60_000) * limit;
    expect(allowed).toBeGreaterThanOrEqual(limit - 1);
    expect(allowed).toBeLessThanOrEqual(Math.floor(limit - 1 + refilled + 1));
  });

  it('gives back the tokens estimated above the usage reported, for the next request on any replica', async () => {
    const config = configWith([{ sha256: sha(1), name: 'app', tokensPerMinute: 1_000 }]);
    const [a, b] = await Promise.all([replica(config), replica(config)]);
    const first = await a.limiter.admit(app, 900);
    if (!first.allowed) throw new Error('refused');
    expect((await b.limiter.admit(app, 500)).allowed).toBe(false);
    first.ticket.settle(200);
    await waitFor(async () => (await b.limiter.admit(app, 500)).allowed, 2_000, 'the correction to reach redis');
  });

  it('counts per process while Redis is away, and the whole limit again on each replica', async () => {
    const config = configWith([{ sha256: sha(1), name: 'app', requestsPerMinute: 2 }]);
    const a = await replica(config);
    await a.redis.close();
    const answers = [await a.limiter.admit(app, 0), await a.limiter.admit(app, 0), await a.limiter.admit(app, 0)];
    expect(answers.map((answer) => answer.allowed)).toEqual([true, true, false]);
  });
});
