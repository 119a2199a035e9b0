// Dispatch log benchmark: (1) the sustained insert rate of one worker draining a pre-filled
// queue; (2) the event lag (row committed minus event created at the gateway) at a steady
// 2,000 events/s through the producer sink and one worker. Needs Redis and Postgres:
//   REDIS_URL (default redis://127.0.0.1:6379), BENCH_PG_URL (a server; default the local one).
// Run: npm run bench:dispatch-log   (or npx tsx bench/dispatch-log-bench.ts)
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { createDispatchLogRepository } from '../src/dispatch-log/dispatch-log-repository.js';
import { migrate } from '../src/dispatch-log/migrate.js';
import { createPostgresDatabase } from '../src/dispatch-log/sql-database.js';
import { dispatchJobs } from '../src/events/dispatch-queue.js';
import { createDispatchLogMetrics } from '../src/metrics/registry.js';
import { DispatchLogConsumer } from '../workers/dispatch-log-consumer.js';
import { makeDispatchEvents } from '../test/support/dispatch-events.js';
import { countRows, counterValue, createTestSink, testConfig, testLogger } from '../test/support/pipeline-fixtures.js';
import { createScratchDatabase } from '../test/support/scratch-database.js';
import { waitForValue } from '../test/support/wait-for.js';

const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const drainEvents = Number(process.env['BENCH_EVENTS'] ?? 100_000);
const steadyRate = Number(process.env['BENCH_RATE'] ?? 2_000);
const steadySeconds = Number(process.env['BENCH_SECONDS'] ?? 20);
// The shipped defaults (events.batchSize, events.eventsPerJob) unless overridden.
const batchSize = Number(process.env['BENCH_BATCH'] ?? testConfig().events.batchSize);
const eventsPerJob = Number(process.env['BENCH_EVENTS_PER_JOB'] ?? testConfig().events.eventsPerJob);

async function main(): Promise<void> {
  const scratch = await createScratchDatabase(process.env['BENCH_PG_URL']);
  const db = createPostgresDatabase(scratch.url, testLogger, { maxConnections: 4 });
  await migrate(db, testLogger);
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const startConsumer = (queueName: string, register = new Registry()) =>
    new DispatchLogConsumer({
      redisUrl,
      queueName,
      repository: createDispatchLogRepository(db),
      metrics: createDispatchLogMetrics(register),
      logger: testLogger,
      batchSize,
      batchMaxWaitMs: 200,
      eventsPerJob,
      lockDurationMs: 30_000,
    });

  try {
    // 1. Insert rate: fill the queue first, then time one worker draining it into Postgres.
    const drainQueueName = `bench-${randomUUID()}`;
    const queue = new Queue(drainQueueName, { connection });
    // Made chunk by chunk, so the worker below does not share its heap with 100,000 retained events.
    for (let i = 0; i < drainEvents; i += 1000) {
      await queue.addBulk(dispatchJobs(makeDispatchEvents(Math.min(1000, drainEvents - i)), eventsPerJob));
    }
    const started = performance.now();
    const register = new Registry();
    const consumer = startConsumer(drainQueueName, register);
    // Watched through the worker's own counter: polling count(*) on the growing table would take
    // Postgres CPU away from the inserts being timed. The table is checked once at the end.
    await waitForValue(
      () => counterValue(register, 'boo_events_inserted_total'),
      (n) => n >= drainEvents,
      600_000,
      'the drain',
    );
    const seconds = (performance.now() - started) / 1000;
    await consumer.close();
    const stored = await countRows(db);
    if (stored.rows !== drainEvents || stored.distinct !== drainEvents) throw new Error(`drain: expected ${drainEvents} rows, found ${JSON.stringify(stored)}`);
    await queue.obliterate({ force: true });
    await queue.close();
    console.log(
      `drain: ${drainEvents} events through one worker in ${seconds.toFixed(2)} s = ${Math.round(drainEvents / seconds)} events/s (batch ${batchSize}, ${eventsPerJob} events per job)`,
    );
    await db.exec('TRUNCATE route_dispatch_log');

    // 2. Lag at a steady rate: producer sink -> Redis -> one worker -> Postgres.
    const steadyQueueName = `bench-${randomUUID()}`;
    const steadyConsumer = startConsumer(steadyQueueName);
    const { sink, spoolDir } = await createTestSink(redisUrl, steadyQueueName, undefined, eventsPerJob);
    const total = steadyRate * steadySeconds;
    const perTick = steadyRate / 100;
    const begin = performance.now();
    for (let tick = 0, sent = 0; sent < total; tick++) {
      for (const event of makeDispatchEvents(Math.min(perTick, total - sent))) sink.publish(event);
      sent += perTick;
      // Scheduled against the start, so a slow tick does not lower the rate.
      const wait = begin + (tick + 1) * 10 - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    }
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= total,
      120_000,
      'the steady run',
    );
    const { rows } = await db.query<{ p50: number; p99: number; max: number }>(
      `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) AS p50, percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) AS p99, max(lag) AS max
       FROM (SELECT extract(epoch FROM inserted_at - created_at) AS lag FROM route_dispatch_log) l`,
    );
    const lag = rows[0]!;
    console.log(
      `lag at ${steadyRate} events/s for ${steadySeconds} s (${total} events): p50 ${(lag.p50 * 1000).toFixed(0)} ms, p99 ${(lag.p99 * 1000).toFixed(0)} ms, max ${(lag.max * 1000).toFixed(0)} ms`,
    );
    await sink.close();
    await steadyConsumer.close();
    await rm(spoolDir, { recursive: true, force: true });
    const cleanup = new Queue(steadyQueueName, { connection });
    await cleanup.obliterate({ force: true });
    await cleanup.close();
  } finally {
    connection.disconnect();
    await db.close();
    await scratch.drop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
