import { describe, expect, it } from 'vitest';
import { randomUuid } from './random-uuid.js';

const version4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('randomUuid', () => {
  it('makes version 4 UUIDs, all different, across refills of its random bytes', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 5_000; i++) {
      const id = randomUuid();
      expect(id).toMatch(version4);
      ids.add(id);
    }
    expect(ids.size).toBe(5_000);
  });

  it('uses every hex digit in every free position (the bytes are random, not a pattern)', () => {
    const seen = Array.from({ length: 36 }, () => new Set<string>());
    for (let i = 0; i < 2_000; i++) [...randomUuid()].forEach((char, at) => seen[at]!.add(char));
    const fixed = new Map([
      [8, 1],
      [13, 1],
      [14, 1],
      [18, 1],
      [19, 4],
      [23, 1],
    ]);
    seen.forEach((chars, at) => expect(chars.size, `position ${at}`).toBe(fixed.get(at) ?? 16));
  });
});
