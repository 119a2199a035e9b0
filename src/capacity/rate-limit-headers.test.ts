import { describe, expect, it } from 'vitest';
import { formatResetDuration, rateLimitHeaders } from './rate-limit-headers.js';
import { LocalBucket, msUntil, msUntilFull, refilled } from './token-bucket.js';

describe('formatResetDuration', () => {
  it('writes durations as OpenAI does', () => {
    expect([0, 20, 999, 1_000, 1_500, 59_999, 60_000, 360_000, 3_600_000, 3_723_400].map(formatResetDuration)).toEqual([
      '0ms',
      '20ms',
      '999ms',
      '1s',
      '1.5s',
      '59.999s',
      '1m0s',
      '6m0s',
      '1h0m0s',
      '1h2m3.4s',
    ]);
  });
});

describe('rateLimitHeaders', () => {
  it('gives the limit, what remains and when the bucket is full again, for each limited dimension', () => {
    expect(rateLimitHeaders({ limit: 60, remaining: 59 }, { limit: 1_000, remaining: 250.7 })).toEqual({
      'x-ratelimit-limit-requests': '60',
      'x-ratelimit-remaining-requests': '59',
      'x-ratelimit-reset-requests': '1s',
      'x-ratelimit-limit-tokens': '1000',
      'x-ratelimit-remaining-tokens': '250',
      'x-ratelimit-reset-tokens': '44.958s',
    });
    expect(rateLimitHeaders({ limit: 4, remaining: -2 }, undefined)).toEqual({
      'x-ratelimit-limit-requests': '4',
      'x-ratelimit-remaining-requests': '0',
      'x-ratelimit-reset-requests': '1m30s',
    });
  });
});

describe('token bucket', () => {
  it('refills a per-minute limit continuously, up to the limit', () => {
    expect(refilled(0, 15_000, 4)).toBe(1);
    expect(refilled(3, 60_000, 4)).toBe(4);
    expect(refilled(-4, 30_000, 4)).toBe(-2);
    expect(msUntil(0, 1, 4)).toBe(15_000);
    expect(msUntil(2, 1, 4)).toBe(0);
    expect(msUntil(4, 5, 4)).toBe(Infinity);
    expect(msUntilFull(1, 4)).toBe(45_000);
  });

  it('counts in-process buckets with a bounded debt', () => {
    const bucket = new LocalBucket(60, 0);
    bucket.add(-60, 0);
    expect(bucket.level(0)).toBe(0);
    expect(bucket.level(1_000)).toBe(1);
    bucket.add(-500, 1_000);
    expect(bucket.level(1_000)).toBe(-60);
    bucket.add(1_000, 1_000);
    expect(bucket.level(1_000)).toBe(60);
  });
});
