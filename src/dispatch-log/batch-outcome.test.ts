import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { makeDispatchEvents } from '../../test/support/dispatch-events.js';
import { createDispatchLogMetrics } from '../metrics/registry.js';
import { createLogger } from '../shared/logger.js';
import { writeErrorKind } from './batch-outcome.js';
import { DispatchLogWriter } from './dispatch-log-writer.js';

const withCode = (code: string) => Object.assign(new Error(code), { code });

async function errorsByKind(register: Registry): Promise<Record<string, number>> {
  const metric = await register.getSingleMetric('boo_dispatch_log_errors_total')!.get();
  return Object.fromEntries(metric.values.map((sample) => [String(sample.labels.kind), sample.value]));
}

describe('writeErrorKind', () => {
  it.each([
    ['ECONNREFUSED', 'connection'],
    ['CONNECTION_CLOSED', 'connection'],
    ['08006', 'connection'],
    ['57P01', 'connection'],
    ['42P01', 'insert'],
    ['22P02', 'insert'],
  ])('labels a write that failed with %s as %s', (code, kind) => {
    expect(writeErrorKind(withCode(code), true)).toBe(kind);
  });

  it('labels any failure before the store is ready as connection', () => {
    expect(writeErrorKind(withCode('42P01'), false)).toBe('connection');
  });
});

describe('DispatchLogWriter counts its failures by the same rule as the worker', () => {
  it('labels a lost connection during a write connection, and a refused statement insert', async () => {
    const register = new Registry();
    const failures = [withCode('ECONNRESET'), withCode('42P01')];
    const writer = new DispatchLogWriter({
      write: async (events) => {
        const failure = failures.shift();
        if (failure) throw failure;
        return { inserted: events.length, rejected: [] };
      },
      metrics: createDispatchLogMetrics(register),
      logger: createLogger('silent'),
      batchSize: 10,
      batchMaxWaitMs: 1,
      maxBuffered: 100,
      minRetryMs: 1,
      maxRetryMs: 2,
    });
    for (const event of makeDispatchEvents(3)) writer.push(event);
    await expect.poll(async () => (await errorsByKind(register)).insert ?? 0, { timeout: 2_000 }).toBe(1);
    expect(await errorsByKind(register)).toMatchObject({ connection: 1, insert: 1 });
    expect(await writer.close(1_000)).toEqual([]);
  });
});
