import { describe, expect, it } from 'vitest';
import { buildConfig } from '../config/load.js';
import { createDispatchLogMetrics, createGatewayMetrics, createMetricsRegistry, initConfigSeries } from './registry.js';

const config = buildConfig(
  {
    providers: { a: { baseUrl: 'http://127.0.0.1:1' }, b: { baseUrl: 'http://127.0.0.1:2' } },
    virtualModels: { 'auto:chat': { candidates: ['a/m1', 'b/m2'] }, 'auto:embed': { candidates: ['a/e'] } },
  },
  'test',
  {},
);

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: string;
}

/** Samples of the text exposition; label order is prom-client's business, so compare as maps. */
async function samples(): Promise<Sample[]> {
  const register = createMetricsRegistry('r1');
  createGatewayMetrics(register, config);
  createDispatchLogMetrics(register);
  const out: Sample[] = [];
  for (const line of (await register.metrics()).split('\n')) {
    const match = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((pair) => [pair[1], pair[2]]));
    out.push({ name: match[1]!, labels, value: match[3]! });
  }
  return out;
}

function find(all: Sample[], name: string, labels: Record<string, string>): Sample[] {
  return all.filter((sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value));
}

describe('createGatewayMetrics', () => {
  it('exposes a zero series of every histogram for every configured label value before any traffic', async () => {
    const all = await samples();
    for (const candidate of ['a/m1', 'b/m2', 'a/e']) {
      expect(find(all, 'boo_upstream_ttfb_seconds_count', { candidate, replica: 'r1' })).toMatchObject([{ value: '0' }]);
    }
    for (const virtualModel of ['auto:chat', 'auto:embed', 'direct']) {
      for (const stream of ['true', 'false']) {
        expect(find(all, 'boo_dispatch_duration_seconds_count', { virtual_model: virtualModel, stream })).toMatchObject([{ value: '0' }]);
      }
    }
    for (const phase of ['pre_upstream', 'relay']) {
      expect(find(all, 'boo_gateway_overhead_seconds_bucket', { phase, le: '+Inf' })).toMatchObject([{ value: '0' }]);
    }
    expect(find(all, 'boo_dispatch_log_batch_size_count', {})).toMatchObject([{ value: '0' }]);
  });

  it('maps every virtual model to its candidates for PromQL joins', async () => {
    const info = find(await samples(), 'boo_virtual_model_candidate_info', {});
    expect(info.map((sample) => `${sample.labels['virtual_model']} ${sample.labels['candidate']} ${sample.value}`).sort()).toEqual([
      'auto:chat a/m1 1',
      'auto:chat b/m2 1',
      'auto:embed a/e 1',
    ]);
  });
});

describe('capacity metrics', () => {
  it('exist at 0 from the start for every virtual model, candidate and limited key or source, and only for those', async () => {
    const limited = buildConfig(
      {
        providers: { a: { baseUrl: 'http://127.0.0.1:1', maxInFlight: 4 } },
        virtualModels: { 'auto:chat': { candidates: [{ target: 'a/m1', maxInFlight: 2 }], queue: { maxWaitMs: 1000 } }, 'auto:embed': { candidates: ['a/e'] } },
        auth: { apiKeys: ['0'.repeat(64), { sha256: '1'.repeat(64), name: 'boochat', requestsPerMinute: 60 }, { sha256: '2'.repeat(64), name: 'unlimited' }] },
        limits: { sources: { batch: { tokensPerMinute: 1000 } } },
      },
      'test',
      {},
    );
    const register = createMetricsRegistry('r1');
    createGatewayMetrics(register, limited);
    const all: Sample[] = [];
    for (const line of (await register.metrics()).split('\n')) {
      const match = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!match) continue;
      const labels = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((pair) => [pair[1], pair[2]]));
      delete labels['replica'];
      all.push({ name: match[1]!, labels, value: match[3]! });
    }
    const series = (name: string) => find(all, name, {}).map((sample) => `${Object.values(sample.labels).join(' ')} = ${sample.value}`);
    expect(series('boo_queue_depth')).toEqual(['auto:chat = 0', 'auto:embed = 0']);
    expect(series('boo_queue_wait_seconds_count')).toEqual(['auto:chat = 0', 'auto:embed = 0']);
    expect(series('boo_capacity_rejections_total').sort()).toEqual([
      'auto:chat queue_timeout = 0',
      'auto:chat rejected = 0',
      'auto:embed queue_timeout = 0',
      'auto:embed rejected = 0',
    ]);
    expect(series('boo_slots_in_use').sort()).toEqual(['a/e = 0', 'a/m1 = 0']);
    expect(series('boo_rate_limit_rejections_total').sort()).toEqual(['key boochat requests = 0', 'source batch tokens = 0']);
  });
});

describe('initConfigSeries on a reload', () => {
  it('adds series for new label values without resetting what existing ones hold, and drops removed candidates from the map', async () => {
    const register = createMetricsRegistry('r1');
    const metrics = createGatewayMetrics(register, config);
    metrics.dispatches.labels('auto:chat', 'dispatched').inc(5);
    metrics.ttfb.labels('a/m1').observe(0.2);
    metrics.breakerState.labels('a/m1').set(2);
    const next = buildConfig(
      {
        providers: { a: { baseUrl: 'http://127.0.0.1:1' }, c: { baseUrl: 'http://127.0.0.1:3' } },
        virtualModels: { 'auto:chat': { candidates: ['a/m1', 'c/m3'] } },
      },
      'next',
      {},
    );
    initConfigSeries(metrics, next, config);
    const text = await register.metrics();
    /** The value of the sample with this name and these labels (in any order), or undefined. */
    const value = (name: string, labels: Record<string, string>) =>
      text
        .split('\n')
        .find((line) => line.startsWith(`${name}{`) && Object.entries(labels).every(([key, v]) => line.includes(`${key}="${v}"`)))
        ?.split(' ')
        .at(-1);
    expect(value('boo_dispatches_total', { virtual_model: 'auto:chat', status: 'dispatched' })).toBe('5');
    expect(value('boo_upstream_ttfb_seconds_count', { candidate: 'a/m1' })).toBe('1');
    expect(value('boo_breaker_state', { candidate: 'a/m1' })).toBe('2');
    expect(value('boo_upstream_attempts_total', { candidate: 'c/m3', provider: 'c', outcome: 'ok' })).toBe('0');
    expect(value('boo_upstream_ttfb_seconds_count', { candidate: 'c/m3' })).toBe('0');
    expect(value('boo_provider_up', { provider: 'c' })).toBe('1');
    expect(value('boo_virtual_model_candidate_info', { virtual_model: 'auto:chat', candidate: 'c/m3' })).toBe('1');
    expect(value('boo_virtual_model_candidate_info', { virtual_model: 'auto:chat', candidate: 'b/m2' })).toBeUndefined();
    expect(value('boo_virtual_model_candidate_info', { virtual_model: 'auto:embed' })).toBeUndefined();
  });
});
