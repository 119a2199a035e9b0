import { describe, expect, it } from 'vitest';
import { selectTargets, type CandidateView, type SelectionPolicy } from './select-targets.js';

function candidate(id: string, overrides: Partial<CandidateView> = {}): CandidateView {
  const [provider = '', model = ''] = id.split('/');
  return {
    id,
    provider,
    model,
    weight: 1,
    breaker: 'closed',
    healthy: true,
    coolingDown: false,
    loaded: undefined,
    latencyMs: undefined,
    contextSize: undefined,
    ...overrides,
  };
}

const policy = (overrides: Partial<SelectionPolicy> = {}): SelectionPolicy => ({
  strategy: 'priority',
  preferLoaded: false,
  sequence: 0,
  random: () => 0.5,
  ...overrides,
});

const ids = (selection: { targets: readonly CandidateView[] }) => selection.targets.map((target) => target.id);

describe('selectTargets', () => {
  it('keeps config order under priority', () => {
    expect(ids(selectTargets([candidate('a/m'), candidate('b/m'), candidate('c/m')], policy()))).toEqual(['a/m', 'b/m', 'c/m']);
  });

  it('drops unhealthy providers, open breakers and cooling-down candidates', () => {
    const selection = selectTargets(
      [candidate('a/m', { healthy: false }), candidate('b/m', { breaker: 'open' }), candidate('c/m', { coolingDown: true }), candidate('d/m')],
      policy(),
    );
    expect(ids(selection)).toEqual(['d/m']);
    expect(selection.panic).toBe(false);
  });

  it('still tries candidates whose breakers are all open (panic), but never unhealthy ones', () => {
    const selection = selectTargets(
      [candidate('a/m', { breaker: 'open' }), candidate('b/m', { coolingDown: true }), candidate('c/m', { healthy: false })],
      policy(),
    );
    expect(ids(selection)).toEqual(['a/m', 'b/m']);
    expect(selection.panic).toBe(true);
  });

  it('returns nothing when every provider is unhealthy', () => {
    expect(selectTargets([candidate('a/m', { healthy: false })], policy()).targets).toEqual([]);
  });

  it('returns nothing, without failing, when every provider is unhealthy and context sizes are known', () => {
    const selection = selectTargets([candidate('a/m', { healthy: false, contextSize: 4096 })], policy({ requiredContext: 100 }));
    expect(selection).toEqual({ targets: [], panic: false });
  });

  it('keeps half-open candidates in rotation so one probe can go through', () => {
    expect(ids(selectTargets([candidate('a/m', { breaker: 'halfOpen' }), candidate('b/m')], policy()))).toEqual(['a/m', 'b/m']);
  });

  it('rotates under round-robin', () => {
    const all = [candidate('a/m'), candidate('b/m'), candidate('c/m')];
    const firsts = [0, 1, 2, 3].map((sequence) => ids(selectTargets(all, policy({ strategy: 'round-robin', sequence })))[0]);
    expect(firsts).toEqual(['a/m', 'b/m', 'c/m', 'a/m']);
  });

  it('follows the weights under weighted, first pick and failover order alike', () => {
    const all = [candidate('a/m', { weight: 1 }), candidate('b/m', { weight: 3 })];
    expect(ids(selectTargets(all, policy({ strategy: 'weighted', random: () => 0.2 })))).toEqual(['a/m', 'b/m']);
    expect(ids(selectTargets(all, policy({ strategy: 'weighted', random: () => 0.3 })))).toEqual(['b/m', 'a/m']);
  });

  it('puts the fastest first under least-latency, unmeasured ones before it, and explores sometimes', () => {
    const all = [candidate('slow/m', { latencyMs: 900 }), candidate('fast/m', { latencyMs: 50 }), candidate('new/m')];
    expect(ids(selectTargets(all, policy({ strategy: 'least-latency', random: () => 0.99 })))).toEqual(['new/m', 'fast/m', 'slow/m']);
    const measured = [candidate('slow/m', { latencyMs: 900 }), candidate('fast/m', { latencyMs: 50 })];
    expect(ids(selectTargets(measured, policy({ strategy: 'least-latency', random: () => 0.01 })))).toEqual(['slow/m', 'fast/m']);
  });

  it('puts loaded models first under preferLoaded, keeping the strategy order inside each group', () => {
    const all = [candidate('a/m', { loaded: false }), candidate('b/m', { loaded: true }), candidate('c/m'), candidate('d/m', { loaded: true })];
    expect(ids(selectTargets(all, policy({ preferLoaded: true })))).toEqual(['b/m', 'd/m', 'a/m', 'c/m']);
  });

  it('skips candidates whose context is too small, and falls back to the largest when none fits', () => {
    const all = [candidate('small/m', { contextSize: 4096 }), candidate('big/m', { contextSize: 32768 }), candidate('unknown/m')];
    expect(ids(selectTargets(all, policy({ requiredContext: 1000 })))).toEqual(['small/m', 'big/m', 'unknown/m']);
    expect(ids(selectTargets(all, policy({ requiredContext: 8000 })))).toEqual(['big/m', 'unknown/m']);
    const known = [candidate('small/m', { contextSize: 4096 }), candidate('big/m', { contextSize: 32768 })];
    expect(ids(selectTargets(known, policy({ requiredContext: 100_000 })))).toEqual(['big/m']);
  });
});
