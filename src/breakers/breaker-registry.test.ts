import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BreakerRegistry, type BreakerEvents, type BreakerTransition } from './breaker-registry.js';

const settings = { errorThresholdPercentage: 50, volumeThreshold: 1, rollingCountTimeoutMs: 10_000, resetTimeoutMs: 30 };
const failure = Object.assign(new Error('upstream 500'), { countsAsBreakerFailure: true });
const excused = Object.assign(new Error('upstream 429'), { countsAsBreakerFailure: false });

function record<K extends keyof BreakerEvents>(registry: BreakerRegistry, event: K): BreakerEvents[K][0][] {
  const seen: BreakerEvents[K][0][] = [];
  // The registry's typed emitter takes the listener of each event; the cast keeps one helper for all.
  registry.on(event, ((payload: BreakerEvents[K][0]) => seen.push(payload)) as never);
  return seen;
}

async function outcome(promise: Promise<unknown>): Promise<'ok' | 'rejected' | 'failed'> {
  try {
    await promise;
    return 'ok';
  } catch (err: unknown) {
    return BreakerRegistry.isRejection(err) ? 'rejected' : 'failed';
  }
}

describe('BreakerRegistry', () => {
  const registries: BreakerRegistry[] = [];
  const create = () => {
    const registry = new BreakerRegistry(settings);
    registries.push(registry);
    return registry;
  };
  // opossum's reset timer is a setTimeout: faked, the reset time passes exactly when the test says.
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    for (const registry of registries.splice(0)) registry.shutdown();
    vi.useRealTimers();
  });

  it('alone, lets opossum half-open the breaker after resetTimeout and probe with the next call', async () => {
    const registry = create();
    const trips = record(registry, 'trip');
    expect(await outcome(registry.run('p/m', () => Promise.reject(failure)))).toBe('failed');
    expect(registry.position('p/m')).toBe('open');
    expect(trips).toEqual([{ candidate: 'p/m' }]);
    vi.advanceTimersByTime(settings.resetTimeoutMs - 1);
    expect(registry.position('p/m')).toBe('open');
    vi.advanceTimersByTime(1);
    expect(registry.position('p/m')).toBe('halfOpen');
    expect(await outcome(registry.run('p/m', () => Promise.resolve('ok')))).toBe('ok');
    expect(registry.position('p/m')).toBe('closed');
  });

  describe('with coordinated probes', () => {
    it('stays open past resetTimeout until a probe is permitted, then lets exactly one attempt through', async () => {
      const registry = create();
      registry.coordinateProbes();
      const transitions = record(registry, 'transition');
      const verdicts = record(registry, 'verdict');
      await outcome(registry.run('p/m', () => Promise.reject(failure)));
      // The same reset time half-opens an uncoordinated breaker (the test above).
      vi.advanceTimersByTime(settings.resetTimeoutMs * 10);
      expect(registry.position('p/m')).toBe('open');
      expect(await outcome(registry.run('p/m', () => Promise.resolve('sent')))).toBe('rejected');

      registry.permitProbe('p/m');
      expect(registry.position('p/m')).toBe('halfOpen');
      let finish: (value: string) => void = () => {};
      const probe = registry.run('p/m', () => new Promise<string>((resolve) => (finish = resolve)));
      expect(registry.isProbing('p/m')).toBe(true);
      expect(await outcome(registry.run('p/m', () => Promise.resolve('second')))).toBe('rejected');
      finish('ok');
      expect(await probe).toBe('ok');
      expect(registry.position('p/m')).toBe('closed');
      expect(verdicts).toEqual([{ candidate: 'p/m', healthy: true }]);
      expect(transitions.map((transition: BreakerTransition) => transition.to)).toEqual(['open', 'halfOpen', 'closed']);
    });

    it('re-opens on a failed probe without a trip event, and keeps the permit after an excused one', async () => {
      const registry = create();
      registry.coordinateProbes();
      const trips = record(registry, 'trip');
      const verdicts = record(registry, 'verdict');
      await outcome(registry.run('p/m', () => Promise.reject(failure)));
      registry.permitProbe('p/m');
      expect(await outcome(registry.run('p/m', () => Promise.reject(excused)))).toBe('failed');
      expect(registry.position('p/m')).toBe('halfOpen');
      expect(verdicts).toEqual([]);
      expect(await outcome(registry.run('p/m', () => Promise.reject(failure)))).toBe('failed');
      expect(registry.position('p/m')).toBe('open');
      expect(verdicts).toEqual([{ candidate: 'p/m', healthy: false }]);
      expect(trips).toHaveLength(1);
    });

    it('reports who set the state, and withdraws an unused permit', () => {
      const registry = create();
      registry.coordinateProbes();
      const transitions = record(registry, 'transition');
      registry.open('p/m');
      expect(registry.origin('p/m')).toBe('remote');
      expect(transitions).toEqual([{ candidate: 'p/m', to: 'open', origin: 'remote' }]);
      registry.permitProbe('p/m');
      expect(registry.revokeProbe('p/m')).toBe(true);
      expect(registry.position('p/m')).toBe('open');
      registry.close('p/m');
      expect(registry.origin('p/m')).toBeUndefined();
      expect(transitions.at(-1)).toEqual({ candidate: 'p/m', to: 'closed', origin: 'remote' });
      registry.trip('p/m');
      expect(registry.origin('p/m')).toBe('local');
    });

    it('runs a forced (panic) attempt on an open breaker without changing it: only the probe decides', async () => {
      const registry = create();
      registry.coordinateProbes();
      const verdicts = record(registry, 'verdict');
      const outcomes = record(registry, 'outcome');
      registry.open('p/m');
      expect(await registry.run('p/m', () => Promise.resolve('served'), true)).toBe('served');
      expect(await outcome(registry.run('p/m', () => Promise.reject(failure), true))).toBe('failed');
      expect(registry.position('p/m')).toBe('open');
      expect(verdicts).toEqual([]);
      expect(outcomes).toEqual([]);
    });

    it("lets a panic attempt that meets this replica's probe permit be the probe", async () => {
      const registry = create();
      registry.coordinateProbes();
      const verdicts = record(registry, 'verdict');
      registry.open('p/m');
      registry.permitProbe('p/m');
      expect(await registry.run('p/m', () => Promise.resolve('served'), true)).toBe('served');
      expect(registry.position('p/m')).toBe('closed');
      expect(verdicts).toEqual([{ candidate: 'p/m', healthy: true }]);
    });

    it('counts outcomes of attempts through a closed breaker only', async () => {
      const registry = create();
      registry.coordinateProbes();
      const outcomes = record(registry, 'outcome');
      await outcome(registry.run('p/m', () => Promise.resolve('ok')));
      await outcome(registry.run('p/m', () => Promise.reject(excused)));
      // 3 failures in 5 fires is over 50%: the third trips the breaker, which then refuses.
      for (let i = 0; i < 3; i += 1) await outcome(registry.run('p/m', () => Promise.reject(failure)));
      expect(registry.position('p/m')).toBe('open');
      expect(await outcome(registry.run('p/m', () => Promise.resolve('refused')))).toBe('rejected');
      expect(outcomes.map((entry) => entry.failure)).toEqual([false, false, true, true, true]);
    });
  });
});
