import { afterEach, describe, expect, it, vi } from 'vitest';
import { isoNow } from './iso-now.js';

describe('isoNow', () => {
  afterEach(() => vi.useRealTimers());

  it('is the ISO form of the current millisecond, and moves with the clock', () => {
    vi.useFakeTimers({ now: Date.parse('2026-11-26T23:59:59.998Z') });
    expect(isoNow()).toBe('2026-11-26T23:59:59.998Z');
    expect(isoNow()).toBe('2026-11-26T23:59:59.998Z');
    vi.advanceTimersByTime(1);
    expect(isoNow()).toBe('2026-11-26T23:59:59.999Z');
    vi.advanceTimersByTime(1);
    expect(isoNow()).toBe('2026-11-27T00:00:00.000Z');
  });

  it('follows a clock that is set back', () => {
    vi.useFakeTimers({ now: Date.parse('2026-11-27T00:00:00.000Z') });
    expect(isoNow()).toBe('2026-11-27T00:00:00.000Z');
    vi.setSystemTime(Date.parse('2026-11-26T12:00:00.000Z'));
    expect(isoNow()).toBe('2026-11-26T12:00:00.000Z');
  });
});
