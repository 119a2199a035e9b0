import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { makeDispatchEvents } from '../../test/support/dispatch-events.js';
import type { DispatchEvent } from '../events/dispatch-event.js';
import { createDispatchLogMetrics } from '../metrics/registry.js';
import { createLogger } from '../shared/logger.js';
import { DispatchLogWriter } from './dispatch-log-writer.js';

/** A writer of batches of one event whose writes finish when the test says, and whose upkeep is recorded. */
function writerWithUpkeep(everyMs: number) {
  const steps: string[] = [];
  const pending: (() => void)[] = [];
  const writer = new DispatchLogWriter({
    metrics: createDispatchLogMetrics(new Registry()),
    logger: createLogger('silent'),
    batchSize: 1,
    batchMaxWaitMs: 1_000,
    maxBuffered: 100,
    write: (events: readonly DispatchEvent[]) =>
      new Promise((resolve) => {
        pending.push(() => {
          steps.push(`write ${events[0]!.request_id}`);
          resolve({ inserted: events.length, rejected: [] });
        });
      }),
    upkeep: {
      run: () => {
        steps.push('upkeep');
        return Promise.resolve();
      },
      everyMs,
    },
  });
  /** Finishes the write in progress, then lets the writer go on to what follows it. */
  const finishWrite = async () => {
    while (pending.length === 0) await new Promise((resolve) => setImmediate(resolve));
    pending.shift()!();
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  };
  return { writer, steps, finishWrite };
}

describe('DispatchLogWriter upkeep', () => {
  it('runs the first upkeep once the batches of a burst are written, not between them', async () => {
    const { writer, steps, finishWrite } = writerWithUpkeep(60_000);
    const events = makeDispatchEvents(3);
    for (const event of events) writer.push(event);
    for (let i = 0; i < 3; i++) await finishWrite();
    expect(steps).toEqual([...events.map((event) => `write ${event.request_id}`), 'upkeep']);
    await writer.close(100);
  });

  it('runs it at most once an interval', async () => {
    const { writer, steps, finishWrite } = writerWithUpkeep(60_000);
    for (const event of makeDispatchEvents(3)) {
      writer.push(event);
      await finishWrite();
    }
    expect(steps.filter((step) => step === 'upkeep')).toHaveLength(1);
    await writer.close(100);
  });

  it('runs it between batches anyway once it is an interval late', async () => {
    const { writer, steps, finishWrite } = writerWithUpkeep(20);
    const events = makeDispatchEvents(3);
    writer.push(events[0]!);
    await finishWrite();
    expect(steps).toEqual([`write ${events[0]!.request_id}`, 'upkeep']);
    // Events keep waiting from now on, so no batch leaves the writer idle.
    writer.push(events[1]!);
    writer.push(events[2]!);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await finishWrite();
    expect(steps.slice(2)).toEqual([`write ${events[1]!.request_id}`, 'upkeep']);
    await finishWrite();
    await writer.close(100);
  });
});
