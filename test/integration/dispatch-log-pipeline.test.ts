import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDispatchLogRepository } from '../../src/dispatch-log/dispatch-log-repository.js';
import { migrate } from '../../src/dispatch-log/migrate.js';
import { createPostgresDatabase, type SqlDatabase } from '../../src/dispatch-log/sql-database.js';
import { dispatchJobName, dispatchJobOptions } from '../../src/events/dispatch-queue.js';
import { createDispatchLogMetrics } from '../../src/metrics/registry.js';
import { DispatchLogConsumer } from '../../workers/dispatch-log-consumer.js';
import { makeDispatchEvent, makeDispatchEvents } from '../support/dispatch-events.js';
import { countRows, counterValue, createTestSink, testLogger } from '../support/pipeline-fixtures.js';
import { createScratchDatabase, waitFor } from '../support/scratch-database.js';

const redisUrl = 'redis://127.0.0.1:6379';

describe('dispatch log pipeline: BullMQ sink -> worker -> route_dispatch_log', () => {
  let scratch: Awaited<ReturnType<typeof createScratchDatabase>>;
  let db: SqlDatabase;
  let queueName: string;
  const cleanups: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    scratch = await createScratchDatabase();
    db = createPostgresDatabase(scratch.url, testLogger);
    await migrate(db, testLogger);
  });
  afterAll(async () => {
    await db.close();
    await scratch.drop();
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
    const queue = new Queue(queueName, { connection });
    await queue.obliterate({ force: true });
    await queue.close();
    connection.disconnect();
    await db.exec('TRUNCATE route_dispatch_log');
  });

  function startConsumer(batchSize = 200) {
    const register = new Registry();
    const metrics = createDispatchLogMetrics(register);
    const consumer = new DispatchLogConsumer({
      redisUrl,
      queueName,
      repository: createDispatchLogRepository(db),
      metrics,
      logger: testLogger,
      batchSize,
      batchMaxWaitMs: 50,
      lockDurationMs: 30_000,
    });
    cleanups.push(() => consumer.close());
    return { consumer, register };
  }

  async function startSink() {
    const created = await createTestSink(redisUrl, queueName);
    cleanups.push(async () => {
      await created.sink.close();
      await rm(created.spoolDir, { recursive: true, force: true });
    });
    return created;
  }

  it('turns N published events into exactly N rows, in batches, and completes every job', async () => {
    queueName = `test-${randomUUID()}`;
    const { sink, register: sinkRegister } = await startSink();
    const { register } = startConsumer();
    const events = makeDispatchEvents(3000);
    for (const event of events) sink.publish(event);
    await waitFor(() => countRows(db), (c) => c.rows >= 3000, 30_000, '3000 rows');
    expect(await countRows(db)).toEqual({ rows: 3000, distinct: 3000 });
    expect(await counterValue(sinkRegister, 'boo_events_enqueued_total')).toBe(3000);
    expect(await counterValue(sinkRegister, 'boo_events_spooled_total')).toBe(0);
    expect(await counterValue(register, 'boo_events_inserted_total')).toBe(3000);
    // Batches, not one statement per event.
    expect(await counterValue(register, 'boo_dispatch_log_batches_total')).toBeLessThan(300);
    const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
    const queue = new Queue(queueName, { connection });
    const counts = await waitFor(() => queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed'), (c) => c['active'] === 0);
    await queue.close();
    connection.disconnect();
    expect(counts).toEqual({ waiting: 0, active: 0, delayed: 0, failed: 0, completed: 0 });
  });

  it('lands a redelivered event on its existing row', async () => {
    queueName = `test-${randomUUID()}`;
    const { sink } = await startSink();
    startConsumer();
    const events = makeDispatchEvents(50);
    for (const event of events) sink.publish(event);
    await waitFor(() => countRows(db), (c) => c.rows >= 50, 20_000, '50 rows');
    // The same ids again (a spool replay after a partial addBulk, a retried job): no new rows.
    for (const event of events) sink.publish(event);
    const marker = makeDispatchEvent();
    sink.publish(marker);
    await waitFor(() => countRows(db), (c) => c.rows >= 51, 20_000, 'the marker row');
    expect(await countRows(db)).toEqual({ rows: 51, distinct: 51 });
  });

  it('rejects an invalid payload without retry and keeps it in the failed set; a row Postgres refuses fails alone', async () => {
    queueName = `test-${randomUUID()}`;
    const { register } = startConsumer(50);
    const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
    const queue = new Queue(queueName, { connection });
    cleanups.push(async () => {
      await queue.close();
      connection.disconnect();
    });
    const good = makeDispatchEvents(30);
    const refused = makeDispatchEvent({ request_id: 'nul\u0000byte' });
    const jobs = [...good.slice(0, 15), refused, ...good.slice(15)].map((event) => ({ name: dispatchJobName, data: event, opts: { ...dispatchJobOptions, jobId: event.id } }));
    jobs.push({ name: dispatchJobName, data: { ...makeDispatchEvent(), status: 'exploded' } as never, opts: { ...dispatchJobOptions, jobId: randomUUID() } });
    await queue.addBulk(jobs);

    await waitFor(() => countRows(db), (c) => c.rows >= 30, 20_000, '30 good rows');
    const failed = await waitFor(() => queue.getFailed(), (list) => list.length >= 2, 10_000, 'two failed jobs');
    expect(failed.map((job) => job.attemptsMade)).toEqual([1, 1]);
    expect(failed.map((job) => job.failedReason).sort()).toEqual([
      expect.stringMatching(/^invalid dispatch event/),
      expect.stringMatching(/^refused by the database/),
    ]);
    expect(await countRows(db)).toEqual({ rows: 30, distinct: 30 });
    expect(await counterValue(register, 'boo_events_invalid_total')).toBe(2);
    expect(await counterValue(register, 'boo_events_inserted_total')).toBe(30);
  });
});
