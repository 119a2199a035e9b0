import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDispatchLogRepository } from '../../src/dispatch-log/dispatch-log-repository.js';
import { findMigrationsDirectory, migrate, readMigrations } from '../../src/dispatch-log/migrate.js';
import { maintainPartitions } from '../../src/dispatch-log/partitions.js';
import { createPostgresDatabase, type SqlDatabase } from '../../src/dispatch-log/sql-database.js';
import { makeDispatchEvents } from '../support/dispatch-events.js';
import { testLogger } from '../support/pipeline-fixtures.js';
import { startBooProcess } from '../support/processes.js';
import { createMigratedScratchDatabase, createScratchDatabase } from '../support/scratch-database.js';
import { deleteQueueKeys, testRedisUrl } from '../support/test-services.js';

// Issue 20: route_dispatch_log partitioned by day (migration 010), its upkeep and retention, and
// the migration of an unpartitioned table that holds rows (docs/operations.md, "Partitions and retention").

const day = 86_400_000;
const now = new Date('2026-12-06T12:00:00Z');
const at = (daysFromNow: number) => new Date(now.getTime() + daysFromNow * day).toISOString();

async function partitions(db: SqlDatabase): Promise<string[]> {
  const { rows } = await db.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'route_dispatch_log'::regclass ORDER BY 1`,
  );
  return rows.map((row) => row.name);
}

async function rowsPerPartition(db: SqlDatabase): Promise<Record<string, number>> {
  const { rows } = await db.query<{ name: string; n: number }>(
    'SELECT tableoid::regclass::text AS name, count(*)::int AS n FROM route_dispatch_log GROUP BY 1',
  );
  return Object.fromEntries(rows.map((row) => [row.name, row.n]));
}

/** Every row, as one digest: equal before and after means no row was lost, added or changed. */
async function digest(db: SqlDatabase): Promise<{ n: number; md5: string }> {
  const { rows } = await db.query<{ n: number; md5: string }>(
    "SELECT count(*)::int AS n, md5(string_agg(r::text, '|' ORDER BY id)) AS md5 FROM route_dispatch_log r",
  );
  return rows[0]!;
}

describe('issue 20: route_dispatch_log partitioned by day', () => {
  let scratch: Awaited<ReturnType<typeof createMigratedScratchDatabase>>;
  beforeAll(async () => {
    scratch = await createMigratedScratchDatabase();
  });
  afterAll(async () => {
    await scratch.drop();
  });

  it('creates the partitions ahead, moves rows out of the DEFAULT partition, drops what is past the retention', async () => {
    const { db } = scratch;
    const repository = createDispatchLogRepository(db);
    // Before any upkeep every row lands in the DEFAULT partition.
    for (const offset of [-40, -10, 0, 1]) await repository.insertBatch(makeDispatchEvents(5, { created_at: at(offset) }));
    expect(await partitions(db)).toEqual(['route_dispatch_log_default']);

    const first = await maintainPartitions(db, { retentionDays: 30, now });
    expect(first.deletedRows).toBe(5);
    expect(first.movedRows).toBe(15);
    expect(first.dropped).toEqual([]);
    // Every day from the oldest row kept to three days ahead, the empty ones between included.
    expect(first.created).toHaveLength(14);
    expect([first.created[0], first.created.at(-1)]).toEqual(['route_dispatch_log_p20261126', 'route_dispatch_log_p20261209']);
    expect(await rowsPerPartition(db)).toEqual({ route_dispatch_log_p20261126: 5, route_dispatch_log_p20261206: 5, route_dispatch_log_p20261207: 5 });
    // Idempotent: a second round (another worker) finds nothing to do.
    expect(await maintainPartitions(db, { retentionDays: 30, now })).toEqual({ created: [], dropped: [], movedRows: 0, deletedRows: 0 });

    // A redelivered event meets its row in its day's partition.
    const [event] = makeDispatchEvents(1, { created_at: at(0) });
    expect(await repository.insertBatch([event!, event!])).toBe(1);
    expect(await repository.insertBatch([event!])).toBe(0);

    // 21 days on: the partition of 30 days before is dropped whole, the rest stays.
    const later = await maintainPartitions(db, { retentionDays: 30, now: new Date(now.getTime() + 21 * day) });
    expect(later.dropped).toEqual(['route_dispatch_log_p20261126']);
    expect(later.created).toHaveLength(4);
    expect(await rowsPerPartition(db)).toEqual({ route_dispatch_log_p20261206: 6, route_dispatch_log_p20261207: 5 });
  });

  it('prunes partitions for the queries of the README and the dashboard (EXPLAIN)', async () => {
    const { db } = scratch;
    await maintainPartitions(db, { retentionDays: 30, daysAhead: 5 });
    await db.exec('ANALYZE route_dispatch_log');
    const explain = async (query: string) =>
      (await db.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, COSTS OFF) ${query}`)).rows.map((row) => row['QUERY PLAN']).join('\n');
    const lastHour = await explain("SELECT status, count(*) FROM route_dispatch_log WHERE created_at > now() - interval '1 hour' GROUP BY 1");
    // now() is known when the plan starts: the partitions before today's are removed then.
    expect(lastHour).toMatch(/Subplans Removed: [1-9]/);
    const oneDay = await explain("SELECT count(*) FROM route_dispatch_log WHERE created_at >= '2026-12-07' AND created_at < '2026-12-08'");
    expect(oneDay).toContain('route_dispatch_log_p20261207');
    expect(oneDay).not.toContain('route_dispatch_log_p20261206');
  });

  it('the worker keeps the partitions at start, under BOO_LOG_RETENTION_DAYS', async () => {
    const fresh = await createMigratedScratchDatabase();
    const queue = `issue-20-${randomUUID()}`;
    try {
      const worker = await startBooProcess({
        kind: 'worker',
        env: { REDIS_URL: testRedisUrl, DATABASE_URL: fresh.url, BOO_QUEUE: queue, BOO_LOG_RETENTION_DAYS: '7' },
      });
      await worker.stop();
      expect(worker.output()).toMatch(/"retentionDays":7,"msg":"dispatch log partitions maintained"/);
      const today = new Date().toISOString().slice(0, 10).replaceAll('-', '');
      expect(await partitions(fresh.db)).toContain(`route_dispatch_log_p${today}`);
      expect(await partitions(fresh.db)).toHaveLength(5);
    } finally {
      await fresh.drop();
      await deleteQueueKeys(queue);
    }
  });

  it('migrates an unpartitioned table that holds rows, keeping every row', async () => {
    const scratchDb = await createScratchDatabase();
    const db = createPostgresDatabase(scratchDb.url, testLogger);
    const before010 = mkdtempSync(join(tmpdir(), 'boo-migrations-'));
    try {
      const migrations = findMigrationsDirectory();
      for (const migration of readMigrations(migrations).filter((m) => m.version < 10)) {
        const file = `${String(migration.version).padStart(3, '0')}_${migration.name}.sql`;
        cpSync(join(migrations, file), join(before010, file));
      }
      await migrate(db, testLogger, before010);
      // 20,000 rows over 40 days, as an existing deployment holds them.
      await db.exec(`INSERT INTO route_dispatch_log (virtual_model, status, id, created_at, request_id, attempts, candidates_tried)
        SELECT 'auto:chat', 'dispatched', gen_random_uuid(), timestamptz '2026-12-06 12:00Z' - (n % 40) * interval '1 day' - n * interval '1 ms',
               'req-' || n, '[{"candidate":"a/m1","outcome":"ok","http_status":200,"ms":5}]', '["a/m1"]'
        FROM generate_series(1, 20000) n`);
      const original = await digest(db);
      expect(original.n).toBe(20_000);

      expect(await migrate(db, testLogger)).toEqual([10]);
      expect(await digest(db)).toEqual(original);
      expect(await partitions(db)).toEqual(['route_dispatch_log_default']);

      // The first upkeep gives each day its partition; a retention longer than the history keeps every row.
      const upkeep = await maintainPartitions(db, { retentionDays: 60, now });
      expect(upkeep.movedRows).toBe(20_000);
      expect(upkeep.created).toHaveLength(43);
      expect(await digest(db)).toEqual(original);
      expect(await rowsPerPartition(db)).not.toHaveProperty('route_dispatch_log_default');
      // The inserts of the worker keep working on the new table.
      expect(await createDispatchLogRepository(db).insertBatch(makeDispatchEvents(3))).toBe(3);
    } finally {
      rmSync(before010, { recursive: true, force: true });
      await db.close();
      await scratchDb.drop();
    }
  }, 60_000);
});
