import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { migrate } from '../../src/dispatch-log/migrate.js';
import { createPostgresDatabase, type SqlDatabase } from '../../src/dispatch-log/sql-database.js';
import { testLogger } from './pipeline-fixtures.js';
import { testDatabaseUrl } from './test-services.js';

/** A fresh, empty database on a Postgres server (the shared one by default), dropped by `drop()`. */
export async function createScratchDatabase(serverUrl = testDatabaseUrl): Promise<{ url: string; drop(): Promise<void> }> {
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
