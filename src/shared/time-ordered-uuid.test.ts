import { describe, expect, it } from 'vitest';
import { timeOrderedUuid } from './time-ordered-uuid.js';

const version7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('timeOrderedUuid', () => {
  it('makes version 7 UUIDs, all different, across refills of its random bytes', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 5_000; i++) {
      const id = timeOrderedUuid();
      expect(id).toMatch(version7);
      ids.add(id);
    }
    expect(ids.size).toBe(5_000);
  });

  it('starts with the time in milliseconds, so ids of later milliseconds sort after earlier ones', () => {
    const now = Date.UTC(2026, 11, 6, 4, 45, 0, 123);
    expect(timeOrderedUuid(now).replace('-', '').slice(0, 12)).toBe(now.toString(16).padStart(12, '0'));
    const times = [now, now + 1, now + 255, now + 256, now + 2 ** 32, now + 2 ** 40];
    const ids = times.map((time) => timeOrderedUuid(time));
    expect([...ids].sort()).toEqual(ids);
  });

  it('uses every hex digit in every random position (the bytes are random, not a pattern)', () => {
    const seen = Array.from({ length: 36 }, () => new Set<string>());
    for (let i = 0; i < 2_000; i++) [...timeOrderedUuid(0)].forEach((char, at) => seen[at]!.add(char));
    // The time (0 here) fills the first 12 digits; then the dashes, the version and the variant.
    const fixed = new Map([...Array.from({ length: 13 }, (_, at) => [at, 1] as const), [13, 1], [14, 1], [18, 1], [19, 4], [23, 1]]);
    seen.forEach((chars, at) => expect(chars.size, `position ${at}`).toBe(fixed.get(at) ?? 16));
  });
});
