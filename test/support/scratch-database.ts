import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { migrate } from '../../src/dispatch-log/migrate.js';
import { createPostgresDatabase, type SqlDatabase } from '../../src/dispatch-log/sql-database.js';
import { testLogger } from './pipeline-fixtures.js';

/** The machine's shared Postgres; tests only ever create and drop their own databases on it. */
export const sharedPostgresUrl = 'postgres://root@127.0.0.1:5432/postgres';

/** A fresh, empty database on a Postgres server, dropped by `drop()`. */
export async function createScratchDatabase(serverUrl = sharedPostgresUrl): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `boo_test_${randomUUID().replaceAll('-', '')}`;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => undefined });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const dropper = postgres(serverUrl, { max: 1, onnotice: () => undefined });
      try {
        await dropper.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await dropper.end();
      }
    },
  };
}

/** A scratch database with the dispatch-log migrations applied and a connection to it; `drop()` closes and drops. */
export async function createMigratedScratchDatabase(): Promise<{ url: string; db: SqlDatabase; drop(): Promise<void> }> {
  const scratch = await createScratchDatabase();
  const db = createPostgresDatabase(scratch.url, testLogger);
  await migrate(db, testLogger);
  return {
    url: scratch.url,
    db,
    drop: async () => {
      await db.close();
      await scratch.drop();
    },
  };
}
