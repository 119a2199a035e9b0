import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig, type Config } from '../config/load.js';
import { createLogger } from '../shared/logger.js';
import type { LimitedBy } from './capacity-errors.js';
import { RateLimiter, type Admission } from './rate-limiter.js';

const silent = createLogger('silent');
const sha = (n: number) => String(n).repeat(64);

function configWith(auth: unknown[], sources: Record<string, unknown> = {}): Config {
  return buildConfig({ providers: {}, auth: { apiKeys: auth }, limits: { sources } }, 'test', {});
}

/** The answer of an admission that must be synchronous (no store). */
function sync(answer: Admission | Promise<Admission>): Admission {
  if (answer instanceof Promise) throw new Error('expected a synchronous answer');
  return answer;
}

describe('RateLimiter without a store (per process)', () => {
  const limiters: RateLimiter[] = [];
  afterEach(async () => {
    for (const limiter of limiters.splice(0)) await limiter.close();
  });

  function limiterOf(config: Config | (() => Config)) {
    let now = 1_000_000;
    const rejected: LimitedBy[] = [];
    const limiter = new RateLimiter({
      config: typeof config === 'function' ? config : () => config,
      logger: silent,
      observer: { rejected: (by) => rejected.push(by) },
      now: () => now,
    });
    limiters.push(limiter);
    return { limiter, rejected, advance: (ms: number) => (now += ms) };
  }

  const app = { keyName: 'app', source: null };

  it('lets a request through untouched when neither its key nor its source is limited', () => {
    const { limiter } = limiterOf(configWith([sha(1), { sha256: sha(2), name: 'app' }], { chat: { requestsPerMinute: 1 } }));
    for (const subject of [
      { keyName: undefined, source: null },
      { keyName: 'app', source: 'other' },
      { keyName: 'unknown', source: 'constructor' },
    ]) {
      expect(sync(limiter.admit(subject, 10))).toMatchObject({ allowed: true, headers: undefined });
    }
  });

  it('admits a key up to its requests per minute, counting the headers down, then refuses with Retry-After', () => {
    const { limiter, rejected } = limiterOf(configWith([{ sha256: sha(1), name: 'app', requestsPerMinute: 4 }]));
    const headers = [1, 2, 3, 4].map(() => {
      const answer = sync(limiter.admit(app, 10));
      if (!answer.allowed) throw new Error('refused');
      return answer.headers;
    });
    expect(headers.map((each) => each?.['x-ratelimit-remaining-requests'])).toEqual(['3', '2', '1', '0']);
    expect(headers[0]).toEqual({ 'x-ratelimit-limit-requests': '4', 'x-ratelimit-remaining-requests': '3', 'x-ratelimit-reset-requests': '15s' });
    const refused = sync(limiter.admit(app, 10));
    expect(refused.allowed).toBe(false);
    if (refused.allowed) return;
    expect(refused.error).toMatchObject({
      status: 429,
      code: 'rate_limit_exceeded',
      limitedBy: { scope: 'key', name: 'app', dimension: 'requests' },
      retryAfterSeconds: 15,
      headers: { 'retry-after': '15', 'x-ratelimit-remaining-requests': '0', 'x-ratelimit-reset-requests': '1m0s' },
    });
    expect(rejected).toEqual([{ scope: 'key', name: 'app', dimension: 'requests' }]);
  });

  it('admits again as the bucket refills', () => {
    const { limiter, advance } = limiterOf(configWith([{ sha256: sha(1), name: 'app', requestsPerMinute: 4 }]));
    for (let i = 0; i < 4; i++) sync(limiter.admit(app, 0));
    expect(sync(limiter.admit(app, 0)).allowed).toBe(false);
    advance(14_999);
    expect(sync(limiter.admit(app, 0)).allowed).toBe(false);
    advance(1);
    expect(sync(limiter.admit(app, 0)).allowed).toBe(true);
  });

  it('charges the key and the source together or neither, and shows the tighter limit', () => {
    const { limiter } = limiterOf(configWith([{ sha256: sha(1), name: 'app', requestsPerMinute: 10 }], { batch: { requestsPerMinute: 2 } }));
    const subject = { keyName: 'app', source: 'batch' };
    expect(sync(limiter.admit(subject, 0))).toMatchObject({ allowed: true, headers: { 'x-ratelimit-remaining-requests': '1' } });
    sync(limiter.admit(subject, 0));
    expect(sync(limiter.admit(subject, 0))).toMatchObject({ allowed: false, error: { limitedBy: { scope: 'source', name: 'batch' } } });
    // The refused request took nothing from the key: 8 of its 10 are left.
    expect(sync(limiter.admit(app, 0))).toMatchObject({ allowed: true, headers: { 'x-ratelimit-remaining-requests': '7' } });
  });

  it('charges estimated tokens and corrects them by the usage reported, once', () => {
    const { limiter } = limiterOf(configWith([{ sha256: sha(1), name: 'app', tokensPerMinute: 1_000 }]));
    const first = sync(limiter.admit(app, 400));
    expect(first).toMatchObject({ allowed: true, headers: { 'x-ratelimit-limit-tokens': '1000', 'x-ratelimit-remaining-tokens': '600' } });
    sync(limiter.admit(app, 400));
    expect(sync(limiter.admit(app, 400))).toMatchObject({ allowed: false, error: { limitedBy: { dimension: 'tokens' }, retryAfterSeconds: 12 } });
    if (!first.allowed) return;
    first.ticket.settle(100);
    first.ticket.settle(0);
    expect(sync(limiter.admit(app, 400))).toMatchObject({ allowed: true, headers: { 'x-ratelimit-remaining-tokens': '100' } });
    // Usage above the estimate is a debt.
    const last = sync(limiter.admit(app, 50));
    if (last.allowed) last.ticket.settle(550);
    expect(sync(limiter.admit(app, 1))).toMatchObject({ allowed: false });
  });

  it('refuses a request estimated above the whole limit, with a minute to wait', () => {
    const { limiter } = limiterOf(configWith([{ sha256: sha(1), name: 'app', tokensPerMinute: 1_000 }]));
    expect(sync(limiter.admit(app, 1_001))).toMatchObject({ allowed: false, error: { retryAfterSeconds: 60 } });
  });

  it('applies a reloaded limit to the next request', () => {
    let config = configWith([{ sha256: sha(1), name: 'app', requestsPerMinute: 1 }]);
    const { limiter } = limiterOf(() => config);
    sync(limiter.admit(app, 0));
    expect(sync(limiter.admit(app, 0)).allowed).toBe(false);
    config = configWith([{ sha256: sha(1), name: 'app', requestsPerMinute: 100 }]);
    expect(sync(limiter.admit(app, 0))).toMatchObject({ allowed: true, headers: { 'x-ratelimit-limit-requests': '100' } });
  });
});
