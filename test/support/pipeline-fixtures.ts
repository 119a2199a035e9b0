import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import { buildConfig, type Config } from '../../src/config/load.js';
import { BullmqSink } from '../../src/events/bullmq-sink.js';
import { Spool } from '../../src/events/spool.js';
import { createGatewayMetrics, type GatewayMetrics } from '../../src/metrics/registry.js';
import { createLogger } from '../../src/shared/logger.js';
import type { SqlDatabase } from '../../src/dispatch-log/sql-database.js';
import type { DispatchEvent } from '../../src/events/dispatch-event.js';
import { makeDispatchEvents } from './dispatch-events.js';
import { waitForValue } from './wait-for.js';

export const testLogger = createLogger(process.env['TEST_LOG_LEVEL'] ?? 'silent');

export function testConfig(): Config {
  return buildConfig({ providers: { a: { baseUrl: 'http://127.0.0.1:1' } }, virtualModels: { 'auto:chat': { candidates: ['a/m'] } } }, 'test', {});
}

/**
 * A producer sink as the gateway builds it in Redis mode, with its spool in `spoolDir` (a new temp
 * dir by default), packing `eventsPerJob` events to a job (the config default unless given).
 */
export async function createTestSink(
  redisUrl: string,
  queueName: string,
  spoolDir?: string,
  eventsPerJob = testConfig().events.eventsPerJob,
): Promise<{ sink: BullmqSink; metrics: GatewayMetrics; register: Registry; spoolDir: string }> {
  const register = new Registry();
  const metrics = createGatewayMetrics(register, testConfig());
  const directory = spoolDir ?? (await mkdtemp(join(tmpdir(), 'boo-spool-')));
  const spool = await Spool.open({ directory, maxBytes: 64 * 1024 * 1024 });
  const sink = new BullmqSink({
    redisUrl,
    queueName,
    spool,
    metrics,
    logger: testLogger,
    maxBuffered: 100_000,
    chunkSize: 500,
    eventsPerJob,
    commandTimeoutMs: 1_000,
  });
  return { sink, metrics, register, spoolDir: directory };
}

/**
 * Rows in route_dispatch_log, and distinct request ids among them (-1 while the table or the
 * database is unreachable). Not distinct ids: `id` is the primary key, so those always equal the
 * rows; two rows for one request show as a request id counted twice.
 */
export async function countRows(db: SqlDatabase): Promise<{ rows: number; distinct: number }> {
  try {
    const { rows } = await db.query<{ n: number; d: number }>('SELECT count(*)::int AS n, count(DISTINCT request_id)::int AS d FROM route_dispatch_log');
    return { rows: rows[0]!.n, distinct: rows[0]!.d };
  } catch {
    return { rows: -1, distinct: -1 };
  }
}

/** route_dispatch_log held against the request ids that were sent; each list holds its first 10 ids. */
export interface RowsAgainstSent {
  readonly rows: number;
  /** Sent, without a row. */
  readonly missing: string[];
  /** Sent, with more than one row. */
  readonly repeated: string[];
  /** A row whose request id was never sent. */
  readonly unsent: string[];
}

/**
 * Counts the rows per request id against the ids sent. The table's key is the event id, so
 * "each written once" can only be seen in what a row records: two events for one request
 * (or one event re-sent under a new id) are two distinct keys.
 */
export async function rowsAgainstSent(db: SqlDatabase, sent: Iterable<string>): Promise<RowsAgainstSent> {
  const { rows } = await db.query<{ request_id: string | null; n: number }>(
    'SELECT request_id, count(*)::int AS n FROM route_dispatch_log GROUP BY request_id',
  );
  const stored = new Map(rows.map((row) => [String(row.request_id), row.n]));
  const expected = new Set(sent);
  const first10 = (ids: string[]) => ids.slice(0, 10);
  return {
    rows: rows.reduce((sum, row) => sum + row.n, 0),
    missing: first10([...expected].filter((id) => !stored.has(id))),
    repeated: first10([...stored].filter(([id, n]) => expected.has(id) && n > 1).map(([id]) => id)),
    unsent: first10([...stored.keys()].filter((id) => !expected.has(id))),
  };
}

/** What {@link rowsAgainstSent} answers when every sent request has exactly one row and nothing else is there. */
export function oneRowEach(sent: readonly string[]): RowsAgainstSent {
  return { rows: new Set(sent).size, missing: [], repeated: [], unsent: [] };
}

/**
 * Resolves once the queue holds no job waiting, delayed or in progress: every job that was added
 * has been written or has failed. The positive signal that nothing more is on its way to the table.
 */
export async function waitForQueueDrained(redisUrl: string, queueName: string, timeoutMs = 30_000): Promise<void> {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue(queueName, { connection });
  try {
    await waitForValue(
      () => queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized'),
      (counts) => Object.values(counts).every((n) => n === 0),
      timeoutMs,
      `queue ${queueName} to drain`,
    );
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

/** Counter value as a number (summed over labels). */
export async function counterValue(register: Registry, name: string): Promise<number> {
  const metric = await register.getSingleMetric(name)?.get();
  return (metric?.values ?? []).reduce((sum, v) => sum + v.value, 0);
}

/** Publishes `total` events at about `perSecond`, in 10 ms ticks; resolves with their request ids when all are published. */
export async function publishSteadily(publish: (event: DispatchEvent) => void, total: number, perSecond: number): Promise<string[]> {
  const events = makeDispatchEvents(total);
  const perTick = Math.max(1, Math.round(perSecond / 100));
  for (let i = 0; i < events.length; i += perTick) {
    for (const event of events.slice(i, i + perTick)) publish(event);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return events.map((event) => event.request_id);
}
