// Dispatch log benchmark: (1) the sustained insert rate of 1, 2 and 3 worker processes
// (`npm run worker`, built) draining a pre-filled queue; (2) the event lag (row committed minus event created at the gateway) at a steady
// 2,000 events/s through the producer sink and one worker. Needs Redis and Postgres:
//   REDIS_URL (default redis://127.0.0.1:6379), BENCH_PG_URL (a server; default the local one),
//   BENCH_WORKERS (default 1,2,3).
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
import { countRows, createTestSink, testConfig, testLogger } from '../test/support/pipeline-fixtures.js';
import { startBooProcess } from '../test/support/processes.js';
import { createScratchDatabase } from '../test/support/scratch-database.js';
import { waitForValue } from '../test/support/wait-for.js';

const redisUrl = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const drainEvents = Number(process.env['BENCH_EVENTS'] ?? 100_000);
const workerCounts = (process.env['BENCH_WORKERS'] ?? '1,2,3').split(',').map(Number);
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
    // 1. Insert rate of 1, 2, 3 worker processes draining one pre-filled queue: the queue is
    // paused while it fills and the workers start, and timed from its resume.
    for (const workers of workerCounts) {
      const drainQueueName = `bench-${randomUUID()}`;
      const queue = new Queue(drainQueueName, { connection });
      await queue.pause();
      // Made chunk by chunk, so no process holds 100,000 events at once.
      for (let i = 0; i < drainEvents; i += 1000) {
        await queue.addBulk(dispatchJobs(makeDispatchEvents(Math.min(1000, drainEvents - i)), eventsPerJob));
      }
      const running = await Promise.all(
        Array.from({ length: workers }, () =>
          startBooProcess({ kind: 'worker', env: { REDIS_URL: redisUrl, DATABASE_URL: scratch.url, BOO_QUEUE: drainQueueName } }),
        ),
      );
      try {
        const ports = running.map((worker) => /"metricsPort":(\d+)/.exec(worker.output())?.[1]);
        // Watched through the workers' own counters: polling count(*) on the growing table would
        // take Postgres CPU away from the inserts being timed. The table is checked once at the end.
        const inserted = () =>
          Promise.all(
            ports.map(async (port) =>
              Number(/^boo_events_inserted_total\{[^}]*\} (\d+)/m.exec(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text())?.[1] ?? 0),
            ),
          );
        await queue.resume();
        const started = performance.now();
        const perWorker = await waitForValue(inserted, (counts) => counts.reduce((a, b) => a + b, 0) >= drainEvents, 600_000, 'the drain');
        const seconds = (performance.now() - started) / 1000;
        const stored = await countRows(db);
        if (stored.rows !== drainEvents || stored.distinct !== drainEvents)
          throw new Error(`drain: expected ${drainEvents} rows, found ${JSON.stringify(stored)}`);
        const rate = drainEvents / seconds;
        console.log(
          `drain: ${drainEvents} events through ${workers} worker process(es) in ${seconds.toFixed(2)} s = ${Math.round(rate)} events/s, ${Math.round(rate / workers)} per worker (each wrote ${perWorker.join(' / ')}; batch ${batchSize}, ${eventsPerJob} events per job)`,
        );
      } finally {
        await Promise.all(running.map((worker) => worker.stop()));
        await queue.obliterate({ force: true });
        await queue.close();
      }
      await db.exec('TRUNCATE route_dispatch_log');
    }

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
