import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../shared/logger.js';
import type { SqlDatabase } from './sql-database.js';
import { errorMessage } from '../shared/error-message.js';

/** Arbitrary but fixed: every process that migrates this database takes the same lock. */
export const migrationLockKey = 4_242_001_337;

const migrationFileName = /^(\d+)_([a-z0-9_]+)\.sql$/;

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/**
 * The `migrations/` folder of the package, found by walking up from this module: the same code
 * runs from `src/` (tsx, vitest) and from `dist/src/` (built).
 */
export function findMigrationsDirectory(from: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'migrations');
    if (existsSync(join(dir, 'package.json')) && existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) throw new Error(`no migrations/ folder found above ${from}`);
  }
}

/** Where `npm run build` leaves the data directory that new embedded stores are copied from. */
export function storeTemplateDirectory(): string {
  return join(dirname(findMigrationsDirectory()), 'dist', 'pglite-template');
}

/** Reads `NNN_name.sql` files, ordered by version. @throws on a duplicate version. */
export function readMigrations(directory: string): Migration[] {
  const migrations: Migration[] = [];
  for (const file of readdirSync(directory)) {
    const match = migrationFileName.exec(file);
    if (!match) continue;
    migrations.push({ version: Number(match[1]), name: match[2]!, sql: readFileSync(join(directory, file), 'utf8') });
  }
  migrations.sort((a, b) => a.version - b.version);
  for (let i = 1; i < migrations.length; i++) {
    if (migrations[i]!.version === migrations[i - 1]!.version) throw new Error(`two migrations with version ${migrations[i]!.version}`);
  }
  return migrations;
}

/**
 * Applies the migrations not yet recorded in `schema_migrations`, each in its own transaction,
 * while holding a session-level advisory lock: workers, gateways and `npm run migrate` may
 * start together and still apply each version exactly once.
 * @returns the versions applied by this call (empty when the schema was current).
 */
export async function migrate(db: SqlDatabase, logger: Logger, directory: string = findMigrationsDirectory()): Promise<number[]> {
  const migrations = readMigrations(directory);
  return db.withSession(async (session) => {
    await session.query('SELECT pg_advisory_lock($1)', [migrationLockKey]);
    // A migration may copy a whole table (010): no statement bound while migrating (the
    // connection's own comes back with RESET).
    await session.exec('SET statement_timeout = 0');
    try {
      await session.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version int PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
      const { rows } = await session.query<{ version: number }>('SELECT version FROM schema_migrations');
      const done = new Set(rows.map((row) => Number(row.version)));
      const applied: number[] = [];
      for (const migration of migrations) {
        if (done.has(migration.version)) continue;
        await session.exec('BEGIN');
        try {
          await session.exec(migration.sql);
          await session.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [migration.version, migration.name]);
          await session.exec('COMMIT');
        } catch (err: unknown) {
          await session.exec('ROLLBACK');
          throw new Error(`migration ${migration.version}_${migration.name} failed: ${errorMessage(err)}`, { cause: err });
        }
        logger.info({ version: migration.version, name: migration.name }, 'migration applied');
        applied.push(migration.version);
      }
      return applied;
    } finally {
      await session.exec('RESET statement_timeout');
      await session.query('SELECT pg_advisory_unlock($1)', [migrationLockKey]);
    }
  });
}
