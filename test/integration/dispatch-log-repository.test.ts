import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyDispatchLog, createDispatchLogRepository, toCopyText, writeCopyText } from '../../src/dispatch-log/dispatch-log-repository.js';
import { findMigrationsDirectory, migrate, readMigrations, storeTemplateDirectory } from '../../src/dispatch-log/migrate.js';
import { createPostgresDatabase, openPgliteDatabase, StoreLockedError, type PgliteDatabase, type SqlDatabase } from '../../src/dispatch-log/sql-database.js';
import { writeBatch } from '../../src/dispatch-log/write-batch.js';
import { createLogger } from '../../src/shared/logger.js';
import { makeDispatchEvent, makeDispatchEvents } from '../support/dispatch-events.js';
import { createScratchDatabase } from '../support/scratch-database.js';

const logger = createLogger('silent');
const columnsInOrder = [
  'virtual_model',
  'chosen_provider_id',
  'chosen_model',
  'candidates_tried',
  'status',
  'source',
  'error',
  'duration_ms',
  'id',
  'created_at',
  'inserted_at',
  'request_id',
  'requested_model',
  'attempts',
  'ttfb_ms',
  'stream',
  'prompt_tokens',
  'completion_tokens',
  'replica',
  'endpoint',
  'resumes',
  'queued_ms',
  'key_name',
];

/** Every migration version shipped, in order. */
const allVersions = readMigrations(findMigrationsDirectory()).map((migration) => migration.version);

async function rowCount(db: SqlDatabase): Promise<number> {
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM route_dispatch_log');
  return rows[0]!.n;
}

describe.each([
  [
    'postgres',
    async () => {
      const scratch = await createScratchDatabase();
      const db = createPostgresDatabase(scratch.url, logger);
      return {
        db,
        cleanup: async () => {
          await db.close();
          await scratch.drop();
        },
      };
    },
  ],
  [
    'pglite',
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'boo-pglite-'));
      const db = await openPgliteDatabase(dir);
      return {
        db,
        cleanup: async () => {
          await db.close();
          await rm(dir, { recursive: true, force: true });
        },
      };
    },
  ],
] as const)('route_dispatch_log on %s', (_kind, setup) => {
  let db: SqlDatabase;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ db, cleanup } = await setup());
  });
  afterAll(async () => {
    await cleanup();
  });

  it('applies the migrations once, with the SPEC columns in order and the operator indexes', async () => {
    expect(await migrate(db, logger)).toEqual(allVersions);
    expect(await migrate(db, logger)).toEqual([]);
    const { rows } = await db.query<{ column_name: string }>(
      "SELECT column_name FROM information_schema.columns WHERE table_name = 'route_dispatch_log' ORDER BY ordinal_position",
    );
    expect(rows.map((r) => r.column_name)).toEqual(columnsInOrder);
    const { rows: indexes } = await db.query<{ indexdef: string }>("SELECT indexdef FROM pg_indexes WHERE tablename = 'route_dispatch_log'");
    const defs = indexes.map((i) => i.indexdef).join('\n');
    for (const key of ['(created_at)', '(request_id)', '(id, created_at)']) expect(defs).toContain(key);
    // Dropped by migration 002: every insert paid for them, no query used them.
    for (const key of ['(virtual_model, created_at)', '(status, created_at)']) expect(defs).not.toContain(key);
  });

  it('inserts a batch in one statement, skipping redelivered ids', async () => {
    const repository = createDispatchLogRepository(db);
    const first = makeDispatchEvents(10);
    const before = await rowCount(db);
    expect(await repository.insertBatch(first)).toBe(10);
    const again = [...first, ...makeDispatchEvents(5), first[0]!];
    expect(await repository.insertBatch(again)).toBe(5);
    expect(await rowCount(db)).toBe(before + 15);
  });

  it('stores every field as the matching column', async () => {
    const event = makeDispatchEvent({
      status: 'failed',
      chosen_provider_id: null,
      chosen_model: null,
      candidates_tried: ['a/m1', 'b/org/m2:q4'],
      attempts: [
        { candidate: 'a/m1', outcome: 'http_5xx', http_status: 503, ms: 5 },
        { candidate: 'b/org/m2:q4', outcome: 'timeout', http_status: null, ms: 3000 },
      ],
      error: 'all candidates failed',
      ttfb_ms: null,
      stream: true,
      prompt_tokens: null,
      completion_tokens: null,
      source: null,
    });
    await createDispatchLogRepository(db).insertBatch([event]);
    const { rows } = await db.query<Record<string, unknown>>('SELECT * FROM route_dispatch_log WHERE id = $1', [event.id]);
    const row = rows[0]!;
    expect(new Date(row['created_at'] as string).toISOString()).toBe(event.created_at);
    expect(row['inserted_at']).toBeTruthy();
    for (const key of Object.keys(event) as (keyof typeof event)[]) {
      if (key === 'created_at') continue;
      expect([key, row[key]]).toEqual([key, event[key]]);
    }
  });

  it('isolates rows the database refuses and writes the rest of the batch', async () => {
    const events = makeDispatchEvents(40);
    // Valid for the schema, impossible for Postgres text: a NUL character.
    events[3] = makeDispatchEvent({ request_id: 'bad\u0000id' });
    events[31] = makeDispatchEvent({ error: 'also\u0000bad' });
    const before = await rowCount(db);
    const result = await writeBatch(createDispatchLogRepository(db), events);
    expect(result.inserted).toBe(38);
    expect(result.rejected.map((r) => r.index).sort((a, b) => a - b)).toEqual([3, 31]);
    expect(await rowCount(db)).toBe(before + 38);
  });
});

describe('route_dispatch_log by COPY on PGlite (the embedded store)', () => {
  let dir: string;
  let db: PgliteDatabase;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'boo-pglite-'));
    db = await openPgliteDatabase(join(dir, 'pglite'), storeTemplateDirectory());
  });
  afterAll(async () => {
    await db.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('starts from the template the build made, every migration already applied', async () => {
    expect(await migrate(db, logger)).toEqual([]);
    const { rows } = await db.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version');
    expect(rows.map((row) => row.version)).toEqual(readMigrations(findMigrationsDirectory()).map((migration) => migration.version));
  });

  it('stores every field as the matching column, text with tabs, newlines and backslashes included', async () => {
    const event = makeDispatchEvent({
      source: 'tab\there\\ and a\nline',
      error: 'upstream said:\t"bad"\r\n\\N \\ é 🦉',
      candidates_tried: ['a/m\\1', 'b/"q"'],
      attempts: [{ candidate: 'a/m\\1', outcome: 'http_5xx', http_status: 503, ms: 5 }],
      ttfb_ms: null,
      chosen_model: null,
    });
    expect(await copyDispatchLog(db, toCopyText([event]))).toBe(1);
    const { rows } = await db.query<Record<string, unknown>>('SELECT * FROM route_dispatch_log WHERE id = $1', [event.id]);
    const row = rows[0]!;
    expect(new Date(row['created_at'] as string).toISOString()).toBe(event.created_at);
    for (const key of Object.keys(event) as (keyof typeof event)[]) {
      if (key !== 'created_at') expect([key, row[key]]).toEqual([key, event[key]]);
    }
  });

  it('skips redelivered ids, as the insert statement does', async () => {
    const first = makeDispatchEvents(10);
    const before = await rowCount(db);
    expect(await copyDispatchLog(db, toCopyText(first))).toBe(10);
    expect(await copyDispatchLog(db, toCopyText([...first.slice(3), ...makeDispatchEvents(4)]))).toBe(4);
    expect(await rowCount(db)).toBe(before + 14);
  });

  it('isolates rows the database refuses and writes the rest of the batch', async () => {
    const events = makeDispatchEvents(20);
    events[7] = makeDispatchEvent({ request_id: 'bad\u0000id' });
    const result = await writeCopyText(db, toCopyText(events));
    expect(result.inserted).toBe(19);
    expect(result.rejected.map((r) => r.index)).toEqual([7]);
  });

  it('refuses a store that another live process holds, and takes over the lock of a dead one', async () => {
    const other = join(dir, 'other');
    writeFileSync(`${other}.lock`, String(process.ppid));
    await expect(openPgliteDatabase(other)).rejects.toBeInstanceOf(StoreLockedError);
    writeFileSync(`${other}.lock`, '4194304999');
    const taken = await openPgliteDatabase(other);
    expect(readFileSync(`${other}.lock`, 'utf8')).toBe(String(process.pid));
    await taken.close();
    expect(existsSync(`${other}.lock`)).toBe(false);
  });
});

describe('migrate', () => {
  it('applies each migration once when several processes migrate a fresh database at the same moment', async () => {
    const scratch = await createScratchDatabase();
    const dbs = [1, 2, 3, 4].map(() => createPostgresDatabase(scratch.url, logger, { maxConnections: 1 }));
    try {
      const results = await Promise.all(dbs.map((db) => migrate(db, logger)));
      expect(results.flat().sort((a, b) => a - b)).toEqual(allVersions);
      const { rows } = await dbs[0]!.query<{ n: number }>('SELECT count(*)::int AS n FROM schema_migrations');
      expect(rows[0]!.n).toBe(allVersions.length);
    } finally {
      await Promise.all(dbs.map((db) => db.close()));
      await scratch.drop();
    }
  });
});
