import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig } from '../config/load.js';
import { createGatewayMetrics, createMetricsRegistry } from '../metrics/registry.js';
import { createLogger } from '../shared/logger.js';
import { Capacity, type CapacityMetrics } from './capacity.js';
import type { SlotHandle } from './slot-pool.js';

const config = buildConfig(
  {
    providers: { a: { baseUrl: 'http://127.0.0.1:1' }, b: { baseUrl: 'http://127.0.0.1:2' } },
    virtualModels: {
      chat: { candidates: [{ target: 'a/m', maxInFlight: 1 }], queue: { maxWaitMs: 5_000, maxQueued: 1 } },
      other: { candidates: [{ target: 'b/m', maxInFlight: 1 }], queue: { maxWaitMs: 5_000, maxQueued: 1 } },
      plain: { candidates: ['a/m'] },
    },
    auth: { apiKeys: [{ sha256: '1'.repeat(64), name: 'app', requestsPerMinute: 1 }] },
  },
  'test',
  {},
);

/** Scrapes boo_slots_in_use of every Capacity built with recordingMetrics. */
const scrapes: Array<() => void> = [];
const scrape = () => scrapes.forEach((read) => read());

/** Records every metric call as a line of text. */
function recordingMetrics(calls: string[]): CapacityMetrics {
  return {
    queueDepth: { labels: (vm) => ({ set: (n) => calls.push(`depth ${vm} ${n}`) }) },
    queueWaitOf: (vm) => ({ observe: () => calls.push(`wait ${vm}`) }),
    capacityRejectionsOf: (vm, reason) => ({ inc: () => calls.push(`rejected ${vm} ${reason}`) }),
    // What a scrape would read, recorded when the test scrapes.
    readSlotsInUseFrom: (read) => void scrapes.push(() => calls.push(...[...read()].map(([candidate, n]) => `slots ${candidate} ${n}`))),
    rateLimitRejectionsOf: (scope, name, dimension) => ({ inc: () => calls.push(`rate ${scope} ${name} ${dimension}`) }),
  };
}

const am = { candidate: 'a/m', provider: 'a' };

describe('Capacity (per process)', () => {
  const created: Capacity[] = [];
  afterEach(async () => {
    scrapes.length = 0;
    for (const capacity of created.splice(0)) await capacity.close();
  });

  function capacityOf(calls: string[] = []): Capacity {
    const capacity = new Capacity({ config: () => config, logger: createLogger('silent'), metrics: recordingMetrics(calls) });
    created.push(capacity);
    return capacity;
  }

  it('has a line only for virtual models with a queue', () => {
    const capacity = capacityOf();
    expect(capacity.line('plain')).toBeUndefined();
    expect(capacity.line('missing')).toBeUndefined();
    expect(capacity.line('chat')).toBe(capacity.line('chat'));
  });

  it('gives a freed slot to the head of the line of a virtual model that has its candidate, at once', async () => {
    const calls: string[] = [];
    const capacity = capacityOf(calls);
    const held = await capacity.slots.tryAcquire(am);
    scrape();
    const line = capacity.line('chat')!;
    const other = capacity.line('other')!;
    const otherTries: number[] = [];
    void other.wait({ source: '', attempt: () => (otherTries.push(1), {}), dispose: () => undefined }).catch(() => undefined);
    const waited = line.wait({ source: 'app', attempt: () => capacity.slots.tryAcquire(am), dispose: (slot: SlotHandle) => slot.release() });
    expect(line.size).toBe(1);
    held.value!.release();
    // Served in the same turn as the release: no timer, no poll.
    expect(line.size).toBe(0);
    const { value } = await waited;
    expect(value.candidate).toBe('a/m');
    expect(otherTries).toHaveLength(1);
    scrape();
    value.release();
    scrape();
    expect(calls).toEqual(['slots a/m 1', 'depth other 1', 'depth chat 1', 'depth chat 0', 'wait chat', 'slots a/m 1', 'slots a/m 0']);
  });

  it('counts refusals of a full line, and rate-limit refusals by key name', async () => {
    const calls: string[] = [];
    const capacity = capacityOf(calls);
    const line = capacity.line('chat')!;
    void line.wait({ source: '', attempt: () => ({}), dispose: () => undefined }).catch(() => undefined);
    await expect(line.wait({ source: '', attempt: () => ({}), dispose: () => undefined })).rejects.toMatchObject({ refusal: 'rejected' });
    await capacity.limiter.admit({ keyName: 'app', source: null }, 0);
    expect(await capacity.limiter.admit({ keyName: 'app', source: null }, 0)).toMatchObject({ allowed: false });
    expect(calls).toEqual(['depth chat 1', 'rejected chat rejected', 'rate key app requests']);
  });

  it('refuses whoever waits when it closes, 503 shutting_down', async () => {
    const capacity = capacityOf();
    const waited = capacity.line('chat')!.wait({ source: '', attempt: () => ({}), dispose: () => undefined });
    await capacity.close();
    await expect(waited).rejects.toMatchObject({ status: 503, code: 'shutting_down' });
  });

  it('takes the gateway metrics as they are', () => {
    const metrics: CapacityMetrics = createGatewayMetrics(createMetricsRegistry('r1'), config);
    expect(metrics).toBeDefined();
  });
});
