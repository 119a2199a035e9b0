import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { buildConfig, type Config } from '../../src/config/load.js';
import { BullmqSink } from '../../src/events/bullmq-sink.js';
import { Spool } from '../../src/events/spool.js';
import { createGatewayMetrics, type GatewayMetrics } from '../../src/metrics/registry.js';
import { createLogger } from '../../src/shared/logger.js';
import type { SqlDatabase } from '../../src/dispatch-log/sql-database.js';

export const testLogger = createLogger(process.env['TEST_LOG_LEVEL'] ?? 'silent');

export function testConfig(): Config {
  return buildConfig({ providers: { a: { baseUrl: 'http://127.0.0.1:1' } }, virtualModels: { 'auto:chat': { candidates: ['a/m'] } } }, 'test', {});
}

/**
 * A producer sink as the gateway builds it in Redis mode, with its spool in `spoolDir` (a new temp
 * dir by default), packing `eventsPerJob` events to a job (the config default unless given).
 */
export async function createTestSink(redisUrl: string, queueName: string, spoolDir?: string, eventsPerJob = testConfig().events.eventsPerJob): Promise<{ sink: BullmqSink; metrics: GatewayMetrics; register: Registry; spoolDir: string }> {
  const register = new Registry();
  const metrics = createGatewayMetrics(register, testConfig());
  const directory = spoolDir ?? (await mkdtemp(join(tmpdir(), 'boo-spool-')));
  const spool = await Spool.open({ directory, maxBytes: 64 * 1024 * 1024 });
  const sink = new BullmqSink({ redisUrl, queueName, spool, metrics, logger: testLogger, maxBuffered: 100_000, chunkSize: 500, eventsPerJob, commandTimeoutMs: 1_000 });
  return { sink, metrics, register, spoolDir: directory };
}

/** Rows and distinct ids in route_dispatch_log (0 while the table or the database is unreachable). */
export async function countRows(db: SqlDatabase): Promise<{ rows: number; distinct: number }> {
  try {
    const { rows } = await db.query<{ n: number; d: number }>('SELECT count(*)::int AS n, count(DISTINCT id)::int AS d FROM route_dispatch_log');
    return { rows: rows[0]!.n, distinct: rows[0]!.d };
  } catch {
    return { rows: -1, distinct: -1 };
  }
}

/** Counter value as a number (summed over labels). */
export async function counterValue(register: Registry, name: string): Promise<number> {
  const metric = await register.getSingleMetric(name)?.get();
  return (metric?.values ?? []).reduce((sum, v) => sum + v.value, 0);
}
