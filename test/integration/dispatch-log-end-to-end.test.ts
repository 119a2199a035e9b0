import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load.js';
import { envSchema } from '../../src/config/schema.js';
import { createDispatchLogRepository } from '../../src/dispatch-log/dispatch-log-repository.js';
import type { SqlDatabase } from '../../src/dispatch-log/sql-database.js';
import { createEventSink } from '../../src/create-event-sink.js';
import { startGateway, type Gateway } from '../../src/gateway.js';
import { createDispatchLogMetrics } from '../../src/metrics/registry.js';
import { DispatchLogConsumer } from '../../workers/dispatch-log-consumer.js';
import { startFakeFleet } from '../../simulator/fake-provider.js';
import { fleetConfigDocument } from '../support/gateway-harness.js';
import { countRows, oneRowEach, rowsAgainstSent, testLogger, waitForQueueDrained } from '../support/pipeline-fixtures.js';
import { createMigratedScratchDatabase } from '../support/scratch-database.js';
import { waitForValue } from '../support/wait-for.js';
import { startThrowawayRedis, type ThrowawayRedis } from '../support/throwaway-redis.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('gateway -> BullMQ -> worker -> route_dispatch_log (end to end)', () => {
  let fleet: Awaited<ReturnType<typeof startFakeFleet<'a' | 'b' | 'c'>>>;
  let redis: ThrowawayRedis;
  let scratch: Awaited<ReturnType<typeof createMigratedScratchDatabase>>;
  let db: SqlDatabase;
  let consumer: DispatchLogConsumer;
  let queueName: string;
  let dataDir: string;
  const gateways: Gateway[] = [];

  const document = () =>
    fleetConfigDocument(
      { a: fleet.a, b: fleet.b, c: fleet.c },
      {},
      {
        virtualModels: { 'auto:chat': { candidates: ['a/m1', 'b/m1'] }, 'auto:down': { candidates: ['c/m1'] } },
        timeouts: { firstByteMs: 2_000 },
        breaker: { volumeThreshold: 10_000 },
      },
    );

  async function startTestGateway(): Promise<Gateway> {
    const config = buildConfig(document(), 'test config', {});
    const env = envSchema.parse({ REDIS_URL: redis.url, DATABASE_URL: scratch.url, BOO_QUEUE: queueName, BOO_DATA_DIR: dataDir });
    const gateway = await startGateway({
      config,
      logger: testLogger,
      replica: 'e2e',
      port: 0,
      host: '127.0.0.1',
      createSink: (metrics, register) => createEventSink({ env, config, logger: testLogger, metrics, register }),
      drainTimeoutMs: 2_000,
      healthChecks: false,
    });
    gateway.fleet.provider('c').healthy = false;
    gateways.push(gateway);
    return gateway;
  }

  const chat = (gateway: Gateway, body: Record<string, unknown>, headers: Record<string, string> = {}, signal?: AbortSignal) =>
    fetch(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], ...body }),
      ...(signal ? { signal } : {}),
    });

  beforeAll(async () => {
    fleet = await startFakeFleet({ a: { name: 'a' }, b: { name: 'b' }, c: { name: 'c' } });
    redis = await startThrowawayRedis();
    scratch = await createMigratedScratchDatabase();
    db = scratch.db;
  });
  afterAll(async () => {
    await scratch.drop();
    await redis.cleanup();
    await fleet.closeAll();
  });
  afterEach(async () => {
    for (const gateway of gateways.splice(0)) await gateway.close();
    await consumer.close();
    await redis.start();
    const connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    const queue = new Queue(queueName, { connection });
    await queue.obliterate({ force: true });
    await queue.close();
    connection.disconnect();
    await db.exec('TRUNCATE route_dispatch_log');
    await rm(dataDir, { recursive: true, force: true });
    for (const fake of [fleet.a, fleet.b]) fake.defaultReply = { kind: 'ok' };
  });

  function startConsumer(): void {
    consumer = new DispatchLogConsumer({
      redisUrl: redis.url,
      queueName,
      repository: createDispatchLogRepository(db),
      metrics: createDispatchLogMetrics(new Registry()),
      logger: testLogger,
      batchSize: 100,
      batchMaxWaitMs: 50,
      eventsPerJob: 100,
      // A job fetched just as Redis went away is recovered by the stalled check, after about twice this.
      lockDurationMs: 5_000,
    });
  }

  async function setUp(): Promise<Gateway> {
    queueName = `e2e-${randomUUID()}`;
    dataDir = await mkdtemp(join(tmpdir(), 'boo-e2e-'));
    startConsumer();
    return startTestGateway();
  }

  it('N mixed requests give exactly N rows with what happened to each', async () => {
    const gateway = await setUp();
    const expectations: Array<{ requestId: string; row: Record<string, unknown> }> = [];
    const send = async (requestId: string, row: Record<string, unknown>, run: () => Promise<unknown>) => {
      await run();
      expectations.push({ requestId, row });
    };
    const headers = (id: string) => ({ 'x-request-id': id, 'x-boo-source': 'e2e-suite' });

    await send(
      'ok',
      { status: 'dispatched', chosen_provider_id: 'a', chosen_model: 'm1', candidates_tried: ['a/m1'], stream: false, prompt_tokens: 7 },
      async () => {
        expect((await chat(gateway, { model: 'auto:chat' }, headers('ok'))).status).toBe(200);
      },
    );
    await send('failover', { status: 'dispatched', chosen_provider_id: 'b', candidates_tried: ['a/m1', 'b/m1'] }, async () => {
      fleet.a.script({ kind: 'status', status: 503 });
      expect((await chat(gateway, { model: 'auto:chat' }, headers('failover'))).status).toBe(200);
    });
    await send('client-400', { status: 'client_error', chosen_provider_id: 'a', candidates_tried: ['a/m1'] }, async () => {
      fleet.a.script({ kind: 'status', status: 400 });
      expect((await chat(gateway, { model: 'auto:chat' }, headers('client-400'))).status).toBe(400);
    });
    await send('all-failed', { status: 'failed', chosen_provider_id: null, chosen_model: null, candidates_tried: ['a/m1', 'b/m1'] }, async () => {
      fleet.a.script({ kind: 'status', status: 500 });
      fleet.b.script({ kind: 'status', status: 500 });
      expect((await chat(gateway, { model: 'auto:chat' }, headers('all-failed'))).status).toBe(502);
    });
    await send('no-candidate', { status: 'no_candidates', chosen_provider_id: null, candidates_tried: [] }, async () => {
      expect((await chat(gateway, { model: 'auto:down' }, headers('no-candidate'))).status).toBe(503);
    });
    await send(
      'stream',
      { status: 'dispatched', stream: true, chosen_provider_id: 'a', candidates_tried: ['a/m1'], prompt_tokens: 7, completion_tokens: 5 },
      async () => {
        fleet.a.script({ kind: 'stream', chunks: 5 });
        const response = await chat(gateway, { model: 'auto:chat', stream: true, stream_options: { include_usage: true } }, headers('stream'));
        expect(response.status).toBe(200);
        await response.text();
      },
    );
    await send('abort', { status: 'client_closed', stream: true, candidates_tried: ['a/m1'] }, async () => {
      fleet.a.script({ kind: 'stream', chunks: 100, chunkDelayMs: 100 });
      const controller = new AbortController();
      const response = await chat(gateway, { model: 'auto:chat', stream: true }, headers('abort'), controller.signal);
      const reader = response.body!.getReader();
      await reader.read();
      controller.abort();
      await reader.read().catch(() => undefined);
    });

    const total = expectations.length;
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= total,
      20_000,
      `${total} rows`,
    );
    // Closed, the gateway publishes nothing more; drained, the queue holds nothing more to write.
    await gateway.close();
    await waitForQueueDrained(redis.url, queueName);
    const sent = expectations.map(({ requestId }) => requestId);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
    const { rows } = await db.query<Record<string, unknown>>('SELECT * FROM route_dispatch_log');
    for (const { requestId, row } of expectations) {
      const stored = rows.find((r) => r['request_id'] === requestId);
      expect(stored, requestId).toMatchObject({ ...row, source: 'e2e-suite', requested_model: expect.any(String), replica: 'e2e' });
      expect((stored!['attempts'] as unknown[]).length, requestId).toBe((row['candidates_tried'] as unknown[]).length);
      if (row['status'] === 'dispatched') expect(stored!['ttfb_ms'], requestId).toEqual(expect.any(Number));
    }
  });

  it('Redis stopped for seconds during traffic: 0 failed requests, then exactly N rows', async () => {
    const gateway = await setUp();
    const ok: string[] = [];
    let failed = 0;
    const traffic = (async () => {
      for (let i = 0; i < 150; i++) {
        const ids = Array.from({ length: 4 }, (_, j) => `outage-${i}-${j}`);
        const batch = await Promise.all(ids.map((id) => chat(gateway, { model: 'auto:chat' }, { 'x-request-id': id }).then((r) => r.status)));
        batch.forEach((status, j) => (status === 200 ? ok.push(ids[j]!) : failed++));
        await sleep(20);
      }
    })();
    await sleep(800);
    await redis.stop();
    await sleep(3_000);
    await redis.start();
    await traffic;
    expect(failed).toBe(0);
    expect(ok).toHaveLength(600);
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= ok.length,
      60_000,
      `${ok.length} rows`,
    );
    await gateway.close();
    await waitForQueueDrained(redis.url, queueName);
    expect(await rowsAgainstSent(db, ok)).toEqual(oneRowEach(ok));
    // The outage really hit the event path: part of the traffic went through the spool.
    const spooled = (await gateway.register.getSingleMetric('boo_events_spooled_total')!.get()).values[0]!.value;
    expect(spooled).toBeGreaterThan(0);
  }, 90_000);

  it('a gateway stopped with events in its spool and started again: they land', async () => {
    const first = await setUp();
    await redis.stop();
    const sent = Array.from({ length: 40 }, (_, i) => `spooled-${i}`);
    for (const id of sent) expect((await chat(first, { model: 'auto:chat' }, { 'x-request-id': id })).status).toBe(200);
    await first.close();
    expect((await countRows(db)).rows).toBe(0);
    await redis.start();
    const second = await startTestGateway();
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 40,
      30_000,
      '40 rows',
    );
    await second.close();
    await waitForQueueDrained(redis.url, queueName);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
  }, 60_000);
});
