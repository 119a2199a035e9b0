import { afterEach, describe, expect, it, vi } from 'vitest';
import { buildConfig, type Config } from '../config/load.js';
import { createLogger } from '../shared/logger.js';
import { SlotPool, type FreedSlot, type SlotHandle } from './slot-pool.js';

const silent = createLogger('silent');

function configWith(limits: { candidate?: number; provider?: number } = {}): Config {
  return buildConfig(
    {
      providers: { a: { baseUrl: 'http://127.0.0.1:1', ...(limits.provider ? { maxInFlight: limits.provider } : {}) }, b: { baseUrl: 'http://127.0.0.1:2' } },
      virtualModels: {
        v: { candidates: [limits.candidate ? { target: 'a/m1', maxInFlight: limits.candidate } : 'a/m1', 'a/m2', 'b/m'] },
      },
    },
    'test',
    {},
  );
}

const m1 = { candidate: 'a/m1', provider: 'a' };
const m2 = { candidate: 'a/m2', provider: 'a' };

/** The slot of a try that must be synchronous and successful. */
function taken(pool: SlotPool, target = m1): SlotHandle {
  const turn = pool.tryAcquire(target);
  if (turn instanceof Promise) throw new Error('expected a synchronous answer');
  if (!turn.value) throw new Error('expected a slot');
  return turn.value;
}

function refused(pool: SlotPool, target = m1): boolean {
  const turn = pool.tryAcquire(target);
  if (turn instanceof Promise) throw new Error('expected a synchronous answer');
  return turn.value === undefined;
}

describe('SlotPool without a store (per process)', () => {
  const pools: SlotPool[] = [];
  afterEach(async () => {
    vi.useRealTimers();
    for (const pool of pools.splice(0)) await pool.close();
  });

  function poolOf(config: Config | (() => Config), options: Partial<ConstructorParameters<typeof SlotPool>[0]> = {}) {
    const counts: Array<[string, number]> = [];
    const pool = new SlotPool({
      config: typeof config === 'function' ? config : () => config,
      logger: silent,
      observer: { inUse: (candidate, count) => counts.push([candidate, count]) },
      ...options,
    });
    pools.push(pool);
    return { pool, counts };
  }

  it('holds a candidate to its maxInFlight and gives a freed slot to the next request', () => {
    const { pool, counts } = poolOf(configWith({ candidate: 2 }));
    const freed: FreedSlot[] = [];
    pool.onFreed((slot) => freed.push(slot));
    const first = taken(pool);
    taken(pool);
    expect(refused(pool)).toBe(true);
    expect(pool.inUse('a/m1')).toBe(2);
    first.release();
    expect(freed).toEqual([{ candidate: 'a/m1', provider: 'a' }]);
    taken(pool);
    expect(refused(pool)).toBe(true);
    expect(counts).toEqual([
      ['a/m1', 1],
      ['a/m1', 2],
      ['a/m1', 1],
      ['a/m1', 2],
    ]);
  });

  it("holds a provider's maxInFlight across its candidates", () => {
    const { pool } = poolOf(configWith({ provider: 2 }));
    const slot = taken(pool, m1);
    taken(pool, m2);
    expect(refused(pool, m1)).toBe(true);
    expect(refused(pool, m2)).toBe(true);
    expect(pool.isLimited({ candidate: 'b/m', provider: 'b' })).toBe(false);
    slot.release();
    taken(pool, m2);
  });

  it('takes the candidate and the provider slot together or neither', () => {
    const { pool } = poolOf(configWith({ candidate: 2, provider: 1 }));
    const slot = taken(pool, m2);
    // m1's own scope has room, its provider has none: nothing is taken.
    expect(refused(pool, m1)).toBe(true);
    expect(pool.inUse('a/m1')).toBe(0);
    slot.release();
    taken(pool, m1);
    expect(refused(pool, m1)).toBe(true);
  });

  it('gives every request to an unlimited candidate a slot whose release does nothing', () => {
    const { pool, counts } = poolOf(configWith({ candidate: 1 }));
    const target = { candidate: 'b/m', provider: 'b' };
    const slots = [taken(pool, target), taken(pool, target), taken(pool, target)];
    for (const slot of slots) slot.release();
    expect(counts).toEqual([]);
  });

  it('releases a slot once however often release is called', () => {
    const { pool } = poolOf(configWith({ candidate: 2 }));
    const slot = taken(pool);
    taken(pool);
    slot.release();
    slot.release();
    expect(slot.released).toBe(true);
    expect(pool.inUse('a/m1')).toBe(1);
    taken(pool);
    expect(refused(pool)).toBe(true);
  });

  it('takes back, and logs, a slot held past maxHoldMs', async () => {
    vi.useFakeTimers();
    const lines: string[] = [];
    const logger = createLogger('error', { write: (line: string) => lines.push(line) });
    const { pool } = poolOf(configWith({ candidate: 1 }), { logger, maxHoldMs: 10_000 });
    await pool.start();
    const slot = taken(pool);
    await vi.advanceTimersByTimeAsync(9_000);
    expect(slot.released).toBe(false);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(slot.released).toBe(true);
    expect(lines.map((line) => JSON.parse(line) as { msg: string })).toMatchObject([{ msg: expect.stringMatching(/held past maxHoldMs/) }]);
    taken(pool);
  });

  it('applies the limits of a reloaded config to the next request', () => {
    let config = configWith({ candidate: 1 });
    const { pool } = poolOf(() => config);
    taken(pool);
    expect(refused(pool)).toBe(true);
    config = configWith({ candidate: 3 });
    taken(pool);
    taken(pool);
    expect(refused(pool)).toBe(true);
  });
});
