import { randomBytes } from 'node:crypto';
import postgres from 'postgres';

export interface TempDatabase {
  readonly url: string;
  /** Drops the database, closing other sessions on it. */
  drop(): Promise<void>;
}

/** A fresh database on the machine's Postgres (127.0.0.1:5432, trust auth), for one test file. */
export async function createTempDatabase(prefix: string): Promise<TempDatabase> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  const admin = postgres('postgres://postgres@127.0.0.1:5432/postgres', { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return {
    url: `postgres://postgres@127.0.0.1:5432/${name}`,
    async drop() {
      const sql = postgres('postgres://postgres@127.0.0.1:5432/postgres', { max: 1, onnotice: () => {} });
      try {
        await sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await sql.end();
      }
    },
  };
}
