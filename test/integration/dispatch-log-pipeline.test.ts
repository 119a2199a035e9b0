import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDispatchLogRepository } from '../../src/dispatch-log/dispatch-log-repository.js';
import { createPostgresDatabase, type SqlDatabase } from '../../src/dispatch-log/sql-database.js';
import type { DispatchEvent } from '../../src/events/dispatch-event.js';
import { dispatchJobDataSchema, dispatchJobName, dispatchJobOptions, dispatchJobs, eventsOfJobData } from '../../src/events/dispatch-queue.js';
import { createDispatchLogMetrics } from '../../src/metrics/registry.js';
import { DispatchLogConsumer } from '../../workers/dispatch-log-consumer.js';
import { makeDispatchEvent, makeDispatchEvents } from '../support/dispatch-events.js';
import { countRows, counterValue, createTestSink, oneRowEach, rowsAgainstSent, testLogger } from '../support/pipeline-fixtures.js';
import { createMigratedScratchDatabase, createScratchDatabase } from '../support/scratch-database.js';
import { waitForValue } from '../support/wait-for.js';
import { testRedisUrl as redisUrl } from '../support/test-services.js';

describe('dispatch log pipeline: BullMQ sink -> worker -> route_dispatch_log', () => {
  let scratch: Awaited<ReturnType<typeof createMigratedScratchDatabase>>;
  let db: SqlDatabase;
  let queueName: string;
  const cleanups: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    scratch = await createMigratedScratchDatabase();
    db = scratch.db;
  });
  afterAll(async () => {
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
      eventsPerJob: 100,
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
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 3000,
      30_000,
      '3000 rows',
    );
    const sent = events.map((event) => event.request_id);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
    expect(await counterValue(sinkRegister, 'boo_events_enqueued_total')).toBe(3000);
    expect(await counterValue(sinkRegister, 'boo_events_spooled_total')).toBe(0);
    expect(await counterValue(register, 'boo_events_inserted_total')).toBe(3000);
    // Batches, not one statement per event.
    expect(await counterValue(register, 'boo_dispatch_log_batches_total')).toBeLessThan(300);
    const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
    const queue = new Queue(queueName, { connection });
    const counts = await waitForValue(
      () => queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed'),
      (c) => c['active'] === 0,
    );
    await queue.close();
    connection.disconnect();
    expect(counts).toEqual({ waiting: 0, active: 0, delayed: 0, failed: 0, completed: 0 });
  });

  function openQueue(): Queue {
    const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
    const queue = new Queue(queueName, { connection });
    cleanups.push(async () => {
      await queue.close();
      connection.disconnect();
    });
    return queue;
  }

  it('lands a redelivered event on its existing row, whatever job carries it', async () => {
    queueName = `test-${randomUUID()}`;
    const { sink } = await startSink();
    startConsumer();
    const events = makeDispatchEvents(50);
    for (const event of events) sink.publish(event);
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 50,
      20_000,
      '50 rows',
    );
    // The same ids again (a spool replay after a partial addBulk, a retried job): no new rows.
    for (const event of events) sink.publish(event);
    // ...and the same events cut into other chunks, so other job ids, as a replay may cut them.
    await openQueue().addBulk(dispatchJobs(events.slice(5), 7));
    const marker = makeDispatchEvent();
    sink.publish(marker);
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 51,
      20_000,
      'the marker row',
    );
    const queue = openQueue();
    await waitForValue(
      () => queue.getJobCounts('waiting', 'active'),
      (c) => c['waiting'] === 0 && c['active'] === 0,
      20_000,
      'the queue drained',
    );
    const sent = [...events, marker].map((event) => event.request_id);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
  });

  it('adds a chunk re-sent while its job still exists only once (job id derived from the event ids)', async () => {
    queueName = `test-${randomUUID()}`;
    const queue = openQueue();
    const events = makeDispatchEvents(250);
    await queue.addBulk(dispatchJobs(events, 100));
    await queue.addBulk(dispatchJobs(events, 100));
    expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 3 });
    const { register } = startConsumer();
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 250,
      20_000,
      '250 rows',
    );
    await waitForValue(
      () => queue.getJobCounts('waiting', 'active'),
      (c) => c['waiting'] === 0 && c['active'] === 0,
      20_000,
      'the queue drained',
    );
    const sent = events.map((event) => event.request_id);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
    expect(await counterValue(register, 'boo_events_inserted_total')).toBe(250);
  });

  it('validates each event of a job on its own: bad events are counted and dropped, the job completes with the rest', async () => {
    queueName = `test-${randomUUID()}`;
    // Batches of 10 events: the chunk of 32 spans four of them and completes only after the last commits.
    const { register } = startConsumer(10);
    const queue = openQueue();
    const good = makeDispatchEvents(30);
    const refused = makeDispatchEvent({ request_id: 'nul\u0000byte' });
    const invalid = { ...makeDispatchEvent(), status: 'exploded' } as unknown as DispatchEvent;
    const chunk = dispatchJobs([...good.slice(0, 15), refused, ...good.slice(15), invalid], 100);
    expect(chunk).toHaveLength(1);
    // Not a chunk at all (the one-event jobs of earlier versions, another producer): the whole job is refused.
    const notAChunk = { name: dispatchJobName, data: makeDispatchEvent() as never, opts: { ...dispatchJobOptions, jobId: 'not-a-chunk' } };
    await queue.addBulk([...chunk, notAChunk]);

    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 30,
      20_000,
      '30 good rows',
    );
    const counts = await waitForValue(
      () => queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed'),
      (c) => c['waiting'] === 0 && c['active'] === 0 && c['failed'] === 1,
      10_000,
      'the chunk completed and the other job failed',
    );
    expect(counts).toEqual({ waiting: 0, active: 0, delayed: 0, failed: 1, completed: 0 });
    const [failed] = await queue.getFailed();
    expect(failed!.id).toBe('not-a-chunk');
    expect(failed!.attemptsMade).toBe(1);
    expect(failed!.failedReason).toMatch(/^invalid dispatch job/);
    const { rows } = await db.query<{ id: string }>('SELECT id FROM route_dispatch_log ORDER BY id');
    expect(rows.map((row) => row.id)).toEqual(good.map((event) => event.id).sort());
    // The refused row, the invalid event and the job that is not a chunk.
    expect(await counterValue(register, 'boo_events_invalid_total')).toBe(3);
    expect(await counterValue(register, 'boo_events_inserted_total')).toBe(30);
  });

  it('a statement that fails (not for a row, not for the connection): the job is retried with backoff, then kept in the failed set with all its events', async () => {
    queueName = `test-${randomUUID()}`;
    // A database without the table: every insert fails with 42P01.
    const bare = await createScratchDatabase();
    const bareDb = createPostgresDatabase(bare.url, testLogger, { maxConnections: 1 });
    cleanups.push(async () => {
      await bareDb.close();
      await bare.drop();
    });
    const register = new Registry();
    const consumer = new DispatchLogConsumer({
      redisUrl,
      queueName,
      repository: createDispatchLogRepository(bareDb),
      metrics: createDispatchLogMetrics(register),
      logger: testLogger,
      batchSize: 200,
      batchMaxWaitMs: 50,
      eventsPerJob: 100,
      lockDurationMs: 30_000,
    });
    cleanups.push(() => consumer.close());
    const queue = openQueue();
    const events = makeDispatchEvents(150);
    // Three attempts instead of forty, so the test does not wait half an hour.
    await queue.addBulk(dispatchJobs(events, 100).map((job) => ({ ...job, opts: { ...job.opts, attempts: 3 } })));

    const failed = await waitForValue(
      () => queue.getFailed(),
      (list) => list.length >= 2,
      20_000,
      'both jobs in the failed set',
    );
    expect(failed.map((job) => job.attemptsMade)).toEqual([3, 3]);
    for (const job of failed) {
      expect(job.failedReason).toMatch(/route_dispatch_log" does not exist/);
      // Two backoffs (500 ms and 1 s, minus 20 % jitter) between the three attempts.
      expect(job.finishedOn! - job.timestamp).toBeGreaterThanOrEqual(1_200);
    }
    expect(
      failed
        .flatMap((job) => eventsOfJobData(dispatchJobDataSchema.parse(job.data)) as DispatchEvent[])
        .map((event) => event.id)
        .sort(),
    ).toEqual(events.map((event) => event.id).sort());
    expect(await queue.getJobCounts('waiting', 'active', 'delayed')).toEqual({ waiting: 0, active: 0, delayed: 0 });
    expect(await counterValue(register, 'boo_dispatch_log_errors_total')).toBeGreaterThanOrEqual(3);
    expect(await counterValue(register, 'boo_events_inserted_total')).toBe(0);
  });

  it('the database unreachable: the batches stay in hand and are retried every 500 ms, no attempt spent, rows as soon as it is back', async () => {
    queueName = `test-${randomUUID()}`;
    let reachable = false;
    const real = createDispatchLogRepository(db);
    const register = new Registry();
    const consumer = new DispatchLogConsumer({
      redisUrl,
      queueName,
      repository: {
        insertBatch: (batch) =>
          reachable ? real.insertBatch(batch) : Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })),
      },
      metrics: createDispatchLogMetrics(register),
      logger: testLogger,
      batchSize: 200,
      batchMaxWaitMs: 50,
      eventsPerJob: 100,
      lockDurationMs: 2_000,
    });
    cleanups.push(() => consumer.close());
    const queue = openQueue();
    const events = makeDispatchEvents(150);
    await queue.addBulk(dispatchJobs(events, 100));
    // Longer than the lock: renewed while the batch waits, the jobs are never stalled.
    await waitForValue(
      () => counterValue(register, 'boo_dispatch_log_errors_total'),
      (errors) => errors >= 8,
      10_000,
      'eight failed attempts',
    );
    expect(await queue.getJobCounts('active', 'delayed', 'failed', 'waiting')).toEqual({ active: 2, delayed: 0, failed: 0, waiting: 0 });
    reachable = true;
    const backAt = performance.now();
    await waitForValue(
      () => countRows(db),
      (count) => count.rows === 150,
      5_000,
      '150 rows',
    );
    expect(performance.now() - backAt).toBeLessThan(2_000);
    const completedJobs = await waitForValue(
      () => queue.getJobCounts('active', 'failed', 'delayed'),
      (counts) => counts['active'] === 0,
      5_000,
      'the jobs completed',
    );
    expect(completedJobs).toEqual({ active: 0, failed: 0, delayed: 0 });
  });
});
