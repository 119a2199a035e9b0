import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { envSchema } from '../../src/config/schema.js';
import { copyDispatchLog, toCopyText } from '../../src/dispatch-log/dispatch-log-repository.js';
import { storeTemplateDirectory } from '../../src/dispatch-log/migrate.js';
import { createPostgresDatabase, embeddedStoreDirectory, openPgliteDatabase } from '../../src/dispatch-log/sql-database.js';
import { createEventSink } from '../../src/create-event-sink.js';
import { Spool } from '../../src/events/spool.js';
import type { DispatchEvent } from '../../src/events/dispatch-event.js';
import { createGatewayMetrics } from '../../src/metrics/registry.js';
import { makeDispatchEvent, makeDispatchEvents } from '../support/dispatch-events.js';
import { countRows, counterValue, oneRowEach, rowsAgainstSent, testConfig, testLogger } from '../support/pipeline-fixtures.js';
import { createScratchDatabase } from '../support/scratch-database.js';
import { waitForValue } from '../support/wait-for.js';

describe('createEventSink without REDIS_URL (embedded mode)', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function sinkFor(env: Record<string, string>) {
    const register = new Registry();
    const config = testConfig();
    const metrics = createGatewayMetrics(register, config);
    const sink = await createEventSink({ env: envSchema.parse(env), config, logger: testLogger, metrics, register });
    return { sink, register };
  }

  const waitForInserted = (register: Registry, count: number) =>
    waitForValue(
      () => counterValue(register, 'boo_events_inserted_total'),
      (inserted) => inserted >= count,
      20_000,
      `${count} rows inserted`,
    );

  it('writes into PGlite under BOO_DATA_DIR, migrated on open, queryable after shutdown', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'boo-data-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const { sink, register } = await sinkFor({ BOO_DATA_DIR: dataDir });
    expect(sink.health()).toEqual({ redis: 'embedded', database: 'embedded' });
    const events = makeDispatchEvents(1200);
    for (const event of events) sink.publish(event);
    await sink.close();
    expect(await counterValue(register, 'boo_events_inserted_total')).toBe(1200);

    const db = await openPgliteDatabase(embeddedStoreDirectory(dataDir));
    cleanups.push(() => db.close());
    const sent = events.map((event) => event.request_id);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
  });

  it('writes into DATABASE_URL when set, through the same batch writer', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'boo-data-'));
    const scratch = await createScratchDatabase();
    cleanups.push(
      () => rm(dataDir, { recursive: true, force: true }),
      () => scratch.drop(),
    );
    const { sink, register } = await sinkFor({ BOO_DATA_DIR: dataDir, DATABASE_URL: scratch.url });
    const events = makeDispatchEvents(800);
    for (const event of events) sink.publish(event);
    const db = createPostgresDatabase(scratch.url, testLogger);
    cleanups.push(() => db.close());
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 800,
      20_000,
      '800 rows',
    );
    expect(sink.health()).toEqual({ redis: 'embedded', database: 'ok' });
    await sink.close();
    const sent = events.map((event) => event.request_id);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
    expect(await counterValue(register, 'boo_events_enqueued_total')).toBe(800);
  });

  it('keeps what the store could not take at shutdown in the spool, and writes it after the next start', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'boo-data-'));
    const scratch = await createScratchDatabase();
    cleanups.push(
      () => rm(dataDir, { recursive: true, force: true }),
      () => scratch.drop(),
    );
    // A database that does not answer: nothing can be written before shutdown.
    const { sink, register } = await sinkFor({ BOO_DATA_DIR: dataDir, DATABASE_URL: 'postgres://root@127.0.0.1:1/none' });
    const events = makeDispatchEvents(300);
    for (const event of events) sink.publish(event);
    await waitForValue(
      async () => sink.health().database,
      (h) => h === 'degraded',
      10_000,
      'degraded health',
    );
    await sink.close();
    expect(await counterValue(register, 'boo_events_spooled_total')).toBe(300);

    const restarted = await sinkFor({ BOO_DATA_DIR: dataDir, DATABASE_URL: scratch.url });
    const db = createPostgresDatabase(scratch.url, testLogger);
    cleanups.push(() => db.close());
    await waitForValue(
      () => countRows(db),
      (c) => c.rows >= 300,
      20_000,
      '300 rows',
    );
    await restarted.sink.close();
    const sent = events.map((event) => event.request_id);
    expect(await rowsAgainstSent(db, sent)).toEqual(oneRowEach(sent));
  });

  it('checks the events it reads back from the spool: those of an older gateway get their defaults, a damaged one is counted, not written', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'boo-data-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const [older, damaged, current] = makeDispatchEvents(3) as [DispatchEvent, DispatchEvent, DispatchEvent];
    const { endpoint: _endpoint, resumes: _resumes, queued_ms: _queuedMs, key_name: _keyName, ...fromOlderGateway } = older;
    const spool = await Spool.open({ directory: join(dataDir, 'spool'), maxBytes: 1_000_000 });
    await spool.append([fromOlderGateway as DispatchEvent, { ...damaged, duration_ms: -5 }, current]);
    await spool.close();

    const { sink, register } = await sinkFor({ BOO_DATA_DIR: dataDir });
    await waitForInserted(register, 2);
    await sink.close();
    expect(await counterValue(register, 'boo_events_invalid_total')).toBe(1);
    const db = await openPgliteDatabase(embeddedStoreDirectory(dataDir));
    cleanups.push(() => db.close());
    const { rows } = await db.query<{ request_id: string; endpoint: string | null; resumes: number; queued_ms: number }>(
      'SELECT request_id, endpoint, resumes, queued_ms FROM route_dispatch_log ORDER BY request_id',
    );
    expect(rows).toEqual(
      [
        { request_id: older.request_id, endpoint: null, resumes: 0, queued_ms: 0 },
        { request_id: current.request_id, endpoint: current.endpoint, resumes: current.resumes, queued_ms: current.queued_ms },
      ].sort((a, b) => a.request_id.localeCompare(b.request_id)),
    );
  });

  it('keeps the daily partitions and the retention itself, with no worker: rows past BOO_LOG_RETENTION_DAYS go, new ones land in their day', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'boo-data-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const day = 86_400_000;
    const expired = Array.from({ length: 5 }, () => makeDispatchEvent({ created_at: new Date(Date.now() - 40 * day).toISOString() }));
    const kept = makeDispatchEvent({ created_at: new Date(Date.now() - 2 * day).toISOString() });
    const seeded = await openPgliteDatabase(embeddedStoreDirectory(dataDir), storeTemplateDirectory());
    await copyDispatchLog(seeded, toCopyText([...expired, kept]));
    await seeded.close();

    const { sink, register } = await sinkFor({ BOO_DATA_DIR: dataDir, BOO_LOG_RETENTION_DAYS: '30' });
    const fresh = makeDispatchEvents(10);
    for (const event of fresh) sink.publish(event);
    await waitForInserted(register, 10);
    await sink.close();
    expect(await counterValue(register, 'boo_dispatch_log_errors_total')).toBe(0);

    const db = await openPgliteDatabase(embeddedStoreDirectory(dataDir));
    cleanups.push(() => db.close());
    const sent = [...expired, kept, ...fresh].map((event) => event.request_id);
    expect(await rowsAgainstSent(db, sent)).toEqual({ rows: 11, missing: expired.map((event) => event.request_id), repeated: [], unsent: [] });
    const today = `route_dispatch_log_p${new Date().toISOString().slice(0, 10).replaceAll('-', '')}`;
    const { rows } = await db.query<{ count: number }>(`SELECT count(*)::int AS count FROM ${today}`);
    expect(rows[0]!.count).toBe(10);
  });
});
