import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDispatchLogRepository } from '../../src/dispatch-log/dispatch-log-repository.js';
import { createPostgresDatabase, type SqlDatabase } from '../../src/dispatch-log/sql-database.js';
import { createDispatchLogMetrics } from '../../src/metrics/registry.js';
import { DispatchLogConsumer } from '../../workers/dispatch-log-consumer.js';
import { makeDispatchEvents } from '../support/dispatch-events.js';
import {
  countRows,
  counterValue,
  createTestSink,
  oneRowEach,
  publishSteadily,
  rowsAgainstSent,
  testLogger,
  waitForQueueDrained,
} from '../support/pipeline-fixtures.js';
import { createMigratedScratchDatabase } from '../support/scratch-database.js';
import { waitForValue } from '../support/wait-for.js';
import { migratedThrowawayPostgres } from '../support/throwaway-postgres.js';
import { startThrowawayRedis, type ThrowawayRedis } from '../support/throwaway-redis.js';
import { startBooProcess, type RunningProcess } from '../support/processes.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('dispatch log under failures: exactly N rows', () => {
  let redis: ThrowawayRedis;
  let scratch: Awaited<ReturnType<typeof createMigratedScratchDatabase>>;
  let db: SqlDatabase;
  let queueName: string;
  const cleanups: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    redis = await startThrowawayRedis();
    scratch = await createMigratedScratchDatabase();
    db = scratch.db;
  });
  afterAll(async () => {
    await scratch.drop();
    await redis.cleanup();
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await redis.start();
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const queue = new Queue(queueName, { connection });
    await queue.obliterate({ force: true });
    await queue.close();
    connection.disconnect();
    await db.exec('TRUNCATE route_dispatch_log');
  });

  function startConsumer(repositoryDb: SqlDatabase = db) {
    const register = new Registry();
    const consumer = new DispatchLogConsumer({
      redisUrl: redis.url,
      queueName,
      repository: createDispatchLogRepository(repositoryDb),
      metrics: createDispatchLogMetrics(register),
      logger: testLogger,
      batchSize: 200,
      batchMaxWaitMs: 50,
      eventsPerJob: 100,
      // A job fetched just as Redis went away is recovered by the stalled check, after about twice this.
      lockDurationMs: 5_000,
    });
    cleanups.push(() => consumer.close());
    return { consumer, register };
  }

  async function startSink(spoolDir?: string) {
    const created = await createTestSink(redis.url, queueName, spoolDir);
    cleanups.push(async () => {
      await created.sink.close();
      await rm(created.spoolDir, { recursive: true, force: true });
    });
    return created;
  }

  async function startWorker(extraEnv: Record<string, string> = {}): Promise<RunningProcess> {
    const worker = await startBooProcess({
      kind: 'worker',
      env: { REDIS_URL: redis.url, DATABASE_URL: scratch.url, BOO_QUEUE: queueName, BOO_WORKER_LOCK_MS: '2000', ...extraEnv },
    });
    cleanups.push(() => worker.stop(0, 'SIGKILL'));
    return worker;
  }

  it('Redis stopped for seconds during traffic: nothing is lost, the spool replays, N rows', async () => {
    queueName = `test-${randomUUID()}`;
    const { sink, register } = await startSink();
    startConsumer();
    const traffic = publishSteadily((e) => sink.publish(e), 4000, 1000);
    await sleep(1000);
    await redis.stop();
    await sleep(3000);
    expect(sink.health().redis).toBe('degraded');
    await redis.start();
    const sent = await traffic;
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 4000,
      60_000,
      '4000 rows',
    );
    await waitForQueueDrained(redis.url, queueName);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
    expect(await counterValue(register, 'boo_events_spooled_total')).toBeGreaterThan(500);
    expect(await counterValue(register, 'boo_events_dropped_total')).toBe(0);
    expect(sink.health().redis).toBe('ok');
  }, 90_000);

  it('a gateway stopped with events in its spool lands them after it starts again', async () => {
    queueName = `test-${randomUUID()}`;
    await redis.stop();
    const first = await startSink();
    const events = makeDispatchEvents(1500);
    for (const event of events) first.sink.publish(event);
    await first.sink.close();
    expect(await counterValue(first.register, 'boo_events_spooled_total')).toBe(1500);

    await redis.start();
    startConsumer();
    const second = await startSink(first.spoolDir);
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 1500,
      30_000,
      '1500 rows',
    );
    await waitForQueueDrained(redis.url, queueName);
    const sent = events.map((event) => event.request_id);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
    expect(await counterValue(second.register, 'boo_events_enqueued_total')).toBe(1500);
  });

  it('a worker SIGKILLed in the middle of a burst and restarted: N rows, no duplicates', async () => {
    queueName = `test-${randomUUID()}`;
    const { sink } = await startSink();
    const worker = await startWorker();
    const events = makeDispatchEvents(10_000);
    for (const event of events) sink.publish(event);
    const mid = await waitForValue(
      () => countRows(db),
      (c) => c.rows > 0,
      30_000,
      'the first rows',
    );
    await worker.stop(0, 'SIGKILL');
    expect(mid.rows).toBeLessThan(10_000);
    const afterKill = await countRows(db);
    await startWorker();
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 10_000,
      60_000,
      '10000 rows',
    );
    // Jobs the killed worker held come back after the stalled check: drained, nothing is left to write twice.
    await waitForQueueDrained(redis.url, queueName);
    const sent = events.map((event) => event.request_id);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
    expect(afterKill.rows).toBeLessThan(10_000);
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const queue = new Queue(queueName, { connection });
    const counts = await queue.getJobCounts('failed');
    await queue.close();
    connection.disconnect();
    expect(counts['failed']).toBe(0);
  }, 120_000);

  it('two workers at once: N rows, each written once', async () => {
    queueName = `test-${randomUUID()}`;
    const { sink } = await startSink();
    const [a, b] = await Promise.all([startWorker(), startWorker()]);
    const events = makeDispatchEvents(10_000);
    for (const event of events) sink.publish(event);
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 10_000,
      60_000,
      '10000 rows',
    );
    await waitForQueueDrained(redis.url, queueName);
    const sent = events.map((event) => event.request_id);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
    // Both took part, as their own /metrics say, and together they wrote each row once.
    const inserted = await Promise.all(
      [a, b].map(async (worker) => {
        const port = /"metricsPort":(\d+)/.exec(worker.output())?.[1];
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        expect(text).toMatch(/boo_queue_jobs\{state="failed"[^}]*\} 0/);
        return Number(/^boo_events_inserted_total\{[^}]*\} (\d+)/m.exec(text)?.[1]);
      }),
    );
    expect(inserted.every((n) => n > 0)).toBe(true);
    expect(inserted[0]! + inserted[1]!).toBe(10_000);
    expect(await a.stop()).toBe(0);
    expect(await b.stop()).toBe(0);
  }, 120_000);

  describe('with a Postgres of its own', () => {
    const postgres = migratedThrowawayPostgres();

    it('Postgres stopped during traffic and restarted: the jobs wait and retry, N rows', async () => {
      queueName = `test-${randomUUID()}`;
      const { sink } = await startSink();
      const workerDb = createPostgresDatabase(postgres.pg.url, testLogger);
      cleanups.push(() => workerDb.close());
      const { register } = startConsumer(workerDb);
      const traffic = publishSteadily((e) => sink.publish(e), 3000, 1000);
      await sleep(800);
      await postgres.pg.stop();
      await sleep(2500);
      await postgres.pg.start();
      const sent = await traffic;
      await waitForValue(
        () => countRows(postgres.db),
        (c) => c.rows >= 3000,
        60_000,
        '3000 rows',
      );
      await waitForQueueDrained(redis.url, queueName);
      expect(await rowsAgainstSent(postgres.db, sent)).toEqual(oneRowEach(sent));
      expect(await counterValue(register, 'boo_dispatch_log_errors_total')).toBeGreaterThan(0);
    }, 90_000);
  });
});
