import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeProvider, type FakeProvider } from '../../simulator/fake-provider.js';
import { runChatLoad } from '../support/chat-load.js';
import { countRows, createTestSink, oneRowEach, publishSteadily, rowsAgainstSent, waitForQueueDrained } from '../support/pipeline-fixtures.js';
import { entryPoints, startBooProcess, startNodeProcess, type RunningProcess } from '../support/processes.js';
import { createMigratedScratchDatabase } from '../support/scratch-database.js';
import { migratedThrowawayPostgres } from '../support/throwaway-postgres.js';
import { startThrowawayRedis, type ThrowawayRedis } from '../support/throwaway-redis.js';
import { waitForValue } from '../support/wait-for.js';

// Issue 20, recovery (docs/operations.md, "Worker locks and recovery"): a SIGKILLed worker's jobs
// are written by another worker within 15 s of the last response, and a Postgres outage's backlog
// lands within 10 s of the server's return. Workers run as real processes with the default lock.

const dir = mkdtempSync(join(tmpdir(), 'boo-issue-20-'));

describe('issue 20: recovery of the dispatch log', () => {
  let redis: ThrowawayRedis;
  let upstream: FakeProvider;
  const cleanups: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    redis = await startThrowawayRedis();
    upstream = await startFakeProvider({ name: 'a' });
    writeFileSync(
      join(dir, 'gateway.yaml'),
      JSON.stringify({
        providers: { a: { baseUrl: upstream.url } },
        virtualModels: { 'auto:chat': { candidates: ['a/m1'] } },
        healthCheck: { intervalMs: 60_000 },
      }),
    );
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  afterAll(async () => {
    await upstream.close();
    await redis.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  async function startWorker(queue: string, databaseUrl: string): Promise<RunningProcess> {
    const worker = await startBooProcess({ kind: 'worker', env: { REDIS_URL: redis.url, DATABASE_URL: databaseUrl, BOO_QUEUE: queue } });
    cleanups.push(() => worker.stop(0, 'SIGKILL'));
    return worker;
  }

  async function startGateway(queue: string): Promise<{ process: RunningProcess; url: string }> {
    const gateway = startNodeProcess(entryPoints.gateway, {
      PORT: '0',
      HOST: '127.0.0.1',
      BOO_CONFIG: join(dir, 'gateway.yaml'),
      BOO_DATA_DIR: join(dir, `data-${queue}`),
      BOO_QUEUE: queue,
      REDIS_URL: redis.url,
      LOG_LEVEL: 'info',
    });
    cleanups.push(() => gateway.stop(10_000));
    const line = await gateway.waitForLine(/boo-gateway listening/, 20_000);
    return { process: gateway, url: (JSON.parse(line) as { url: string }).url };
  }

  it('a worker SIGKILLed mid-burst: another writes its jobs, exactly N rows within 15 s of the last response', async () => {
    const queue = `issue-20-${randomUUID()}`;
    const scratch = await createMigratedScratchDatabase();
    cleanups.push(() => scratch.drop());
    const { url } = await startGateway(queue);
    const first = await startWorker(queue, scratch.url);
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const jobs = new Queue(queue, { connection });
    cleanups.push(async () => {
      await jobs.close();
      connection.disconnect();
    });

    const load = runChatLoad({ url, model: 'auto:chat', total: 3_000, concurrency: 16, perSecond: 400 });
    // Late in the burst, while the worker holds jobs whose events are not all committed.
    await sleep(5_000);
    await waitForValue(
      () => jobs.getActiveCount(),
      (active) => active > 0,
      5_000,
      'the worker to hold jobs',
    );
    await first.stop(0, 'SIGKILL');
    const killedAt = performance.now();
    await startWorker(queue, scratch.url);
    const { ok, failed, lastOkAt } = await load;
    expect(failed).toBe(0);
    await waitForValue(
      () => countRows(scratch.db),
      (count) => count.rows >= ok,
      20_000,
      `${ok} rows`,
    );
    const doneAt = performance.now();
    await waitForQueueDrained(redis.url, queue);
    expect(await countRows(scratch.db)).toEqual({ rows: ok, distinct: ok });
    const fromLastResponse = (doneAt - lastOkAt) / 1000;
    process.stdout.write(
      `issue-20 worker SIGKILL: ${ok} rows; last row ${fromLastResponse.toFixed(2)} s after the last response, ${((doneAt - killedAt) / 1000).toFixed(2)} s after the kill\n`,
    );
    expect(fromLastResponse).toBeLessThan(15);
    expect(await jobs.getFailedCount()).toBe(0);
  }, 90_000);

  it('a gateway SIGKILLed at 400 requests/s loses at most the events of its last two flush intervals (200 ms)', async () => {
    const queue = `issue-20-${randomUUID()}`;
    const scratch = await createMigratedScratchDatabase();
    cleanups.push(() => scratch.drop());
    const gateway = await startGateway(queue);
    await startWorker(queue, scratch.url);
    const stop = new AbortController();
    const load = runChatLoad({ url: gateway.url, model: 'auto:chat', total: 4_000, concurrency: 16, perSecond: 400, signal: stop.signal });
    await sleep(3_000);
    await gateway.process.stop(0, 'SIGKILL');
    stop.abort();
    const { ok, okRequestIds } = await load;
    expect(ok).toBeGreaterThan(600);
    await sleep(1_000);
    await waitForQueueDrained(redis.url, queue);
    const { rows } = await scratch.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM json_array_elements_text($1::text::json) AS answered(request_id)
        WHERE NOT EXISTS (SELECT 1 FROM route_dispatch_log r WHERE r.request_id = answered.request_id)`,
      [JSON.stringify(okRequestIds)],
    );
    const lost = rows[0]!.n;
    process.stdout.write(`issue-20 gateway SIGKILL: ${ok} requests answered 200, ${lost} of them without a row\n`);
    // events.flushMs (100 ms) of events in the buffer plus at most as many in a send cut short:
    // 2 x 0.1 s x 400/s.
    expect(lost).toBeLessThanOrEqual(80);
  }, 60_000);

  describe('with a Postgres of its own', () => {
    const postgres = migratedThrowawayPostgres();

    it('Postgres down while 2,000 events/s arrive: exactly N rows within 10 s of its return', async () => {
      const queue = `issue-20-${randomUUID()}`;
      const { sink, spoolDir } = await createTestSink(redis.url, queue);
      cleanups.push(async () => {
        await sink.close();
        rmSync(spoolDir, { recursive: true, force: true });
      });
      await startWorker(queue, postgres.pg.url);
      const traffic = publishSteadily((event) => sink.publish(event), 10_000, 2_000);
      await sleep(500);
      await postgres.pg.stop();
      const sent = await traffic;
      await postgres.pg.start();
      const returnedAt = performance.now();
      await waitForValue(
        () => countRows(postgres.db),
        (count) => count.rows >= sent.length,
        20_000,
        `${sent.length} rows`,
      );
      const caughtUp = (performance.now() - returnedAt) / 1000;
      await waitForQueueDrained(redis.url, queue);
      expect(await rowsAgainstSent(postgres.db, sent)).toEqual(oneRowEach(sent));
      process.stdout.write(`issue-20 Postgres outage: ${sent.length} rows, the last ${caughtUp.toFixed(2)} s after Postgres returned\n`);
      expect(caughtUp).toBeLessThan(10);
    }, 90_000);
  });
});
