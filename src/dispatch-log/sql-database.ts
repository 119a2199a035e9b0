import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { PGlite } from '@electric-sql/pglite';
import type { Logger } from '../shared/logger.js';

/** One connection's worth of SQL: what the migrator and the repository need, nothing more. */
export interface SqlSession {
  /** Runs one or more statements without parameters (simple protocol). */
  exec(text: string): Promise<void>;
  /** Runs one statement with `$n` parameters; `count` is the number of rows affected or returned. */
  query<Row extends object = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<{ rows: Row[]; count: number }>;
}

/**
 * The database behind `route_dispatch_log`: real Postgres (porsager `postgres`) or PGlite
 * embedded in the process. Declared here, by its consumers, so both stores share one SQL path.
 */
export interface SqlDatabase extends SqlSession {
  readonly kind: 'postgres' | 'pglite';
  /** Runs `fn` on one dedicated connection: session-level advisory locks need that. */
  withSession<T>(fn: (session: SqlSession) => Promise<T>): Promise<T>;
  /** Closes every connection; waits at most `timeoutMs` for running queries. Idempotent. */
  close(timeoutMs?: number): Promise<void>;
}

export interface PostgresDatabaseOptions {
  /** Pool size. */
  maxConnections?: number;
  /** Server-side bound of one statement; keeps an insert well under the queue's job lock. */
  statementTimeoutMs?: number;
  applicationName?: string;
}

/** A pool to a real Postgres. Opens no connection until the first query. */
export function createPostgresDatabase(url: string, logger: Logger, options: PostgresDatabaseOptions = {}): SqlDatabase {
  const sql = postgres(url, {
    max: options.maxConnections ?? 4,
    connect_timeout: 5,
    idle_timeout: 60,
    // Notices ("relation already exists, skipping") are not worth a log line above debug.
    onnotice: (notice) => logger.debug({ notice: notice['message'] }, 'postgres notice'),
    connection: {
      application_name: options.applicationName ?? 'boo-gateway',
      statement_timeout: options.statementTimeoutMs ?? 10_000,
    },
  });
  type Client = postgres.Sql | postgres.ReservedSql;
  const sessionOf = (client: Client): SqlSession => ({
    exec: async (text) => {
      await client.unsafe(text);
    },
    query: async <Row extends object>(text: string, params: readonly unknown[] = []) => {
      const result = await client.unsafe(text, params as postgres.ParameterOrJSON<never>[]);
      return { rows: [...result] as unknown as Row[], count: result.count };
    },
  });
  let closed: Promise<void> | undefined;
  return {
    kind: 'postgres',
    ...sessionOf(sql),
    withSession: async (fn) => {
      const reserved = await sql.reserve();
      try {
        return await fn(sessionOf(reserved));
      } finally {
        reserved.release();
      }
    },
    close: (timeoutMs = 5_000) => (closed ??= sql.end({ timeout: timeoutMs / 1000 })),
  };
}

/**
 * PGlite (Postgres compiled to WASM) persisted under `directory`: the store of a bare
 * `npm start`. One process at a time may open a directory.
 */
export async function openPgliteDatabase(directory: string): Promise<SqlDatabase> {
  mkdirSync(directory, { recursive: true });
  const db = await PGlite.create(directory);
  let closed: Promise<void> | undefined;
  // PGlite is a single connection already, so a "session" is the database itself.
  const session: SqlSession = {
    exec: async (text) => {
      await db.exec(text);
    },
    query: async <Row extends object>(text: string, params: readonly unknown[] = []) => {
      const result = await db.query<Row>(text, [...params]);
      return { rows: result.rows, count: result.affectedRows ?? result.rows.length };
    },
  };
  return {
    kind: 'pglite',
    ...session,
    withSession: (fn) => fn(session),
    close: () => (closed ??= db.closed ? Promise.resolve() : db.close()),
  };
}

/**
 * A database whose opening finishes in the background: each call waits for it. PGlite takes
 * seconds to start (tens on a loaded 2-core machine); the gateway serves meanwhile and its
 * events wait in the writer. A failed opening fails every call, which the writer reports and retries.
 */
export function deferDatabase(kind: SqlDatabase['kind'], opening: Promise<SqlDatabase>): SqlDatabase {
  return {
    kind,
    exec: async (text) => (await opening).exec(text),
    query: async (text, params) => (await opening).query(text, params),
    withSession: async (fn) => (await opening).withSession(fn),
    close: async (timeoutMs) => (await opening).close(timeoutMs),
  };
}

/** Where the embedded store lives inside `BOO_DATA_DIR`. */
export function embeddedStoreDirectory(dataDir: string): string {
  return join(dataDir, 'pglite');
}
