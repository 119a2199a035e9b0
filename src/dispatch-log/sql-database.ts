import { constants, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import postgres from 'postgres';
import type { Logger } from '../shared/logger.js';
import type { PGlite } from '@electric-sql/pglite';

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
    // porsager's default waits up to 20 s between reconnection attempts (3^n / 100 s), so rows
    // reached the table 18 s after a Postgres outage ended. Capped at 1 s: the catch-up starts
    // within a second of the server's return (docs/operations.md, "When a dependency goes away").
    backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(3 ** retries / 100, 1),
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

/** PGlite's database, with the one thing only it offers here: COPY from memory. */
export interface PgliteDatabase extends SqlDatabase {
  readonly kind: 'pglite';
  /** Runs `COPY … FROM '/dev/blob'` with `data` as its input. @returns the rows copied. */
  copyFrom(statement: string, data: string): Promise<number>;
}

/**
 * What PGlite may take, in the process that opens it: Postgres's own caches at a tenth of
 * PGlite's defaults (160 MB of shared buffers). The store is an append log read by an operator
 * now and then; its working set is the tail of its three indexes, as long as the keys grow with
 * time (the gateway's ids do: docs/embedded-mode.md). Measured on a 40 MB store: 175 MB of RSS for
 * the whole process with these, against 300 MB with PGlite's defaults.
 */
const pgliteSettings = ['shared_buffers=16MB', 'wal_buffers=1MB', 'temp_buffers=1MB', 'work_mem=2MB', 'maintenance_work_mem=16MB'];

/** Thrown when another live process holds an embedded store. */
export class StoreLockedError extends Error {
  readonly code = 'store_locked';
}

/**
 * PGlite (Postgres compiled to WASM) persisted under `directory`: the store of a bare
 * `npm start`. One process at a time may open a directory: PGlite does not check, and two of
 * them corrupt it, so a lock file beside it (`<directory>.lock`, holding the pid) is taken
 * first and removed by `close`. A lock left by a dead process is taken over.
 *
 * A new store is a copy of `template` when given and present (a data directory made by
 * `npm run build`, see store-template-cli.ts): PGlite's own initdb takes about 5 s of CPU and
 * 700 MB of memory, a copy a few milliseconds.
 * @throws StoreLockedError when a live process holds the lock.
 */
export async function openPgliteDatabase(directory: string, template?: string): Promise<PgliteDatabase> {
  const lock = acquireStoreLock(directory);
  let db: PGlite;
  try {
    if (template && !existsSync(join(directory, 'PG_VERSION')) && existsSync(join(template, 'PG_VERSION'))) copyStore(template, directory);
    mkdirSync(directory, { recursive: true });
    // Imported here, not at the top: the gateway's own thread never loads PGlite (see embedded-store.ts).
    const { PGlite } = await import('@electric-sql/pglite');
    db = await PGlite.create(directory, { startParams: [...PGlite.defaultStartParams, ...pgliteSettings.flatMap((setting) => ['-c', setting])] });
  } catch (err: unknown) {
    lock.release();
    throw err;
  }
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
    copyFrom: async (statement, data) => (await db.query(statement, [], { blob: new Blob([data]) })).affectedRows ?? 0,
    close: () =>
      (closed ??= (db.closed ? Promise.resolve() : db.close()).finally(() => {
        lock.release();
      })),
  };
}

/** Copies a closed store to `directory` (replaced): into a sibling first, so a crash leaves no half store. */
function copyStore(from: string, directory: string): void {
  const partial = `${directory}.partial`;
  rmSync(partial, { recursive: true, force: true });
  copyTree(from, partial);
  rmSync(directory, { recursive: true, force: true });
  renameSync(partial, directory);
}

/**
 * A store's ~1,000 files, copied: in 130-180 ms of CPU where `cpSync` takes 170-330 (measured
 * here; it checks and stats each entry again in JavaScript), and as a clone where the file
 * system can.
 */
function copyTree(from: string, to: string): void {
  mkdirSync(to);
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    if (entry.isDirectory()) copyTree(join(from, entry.name), join(to, entry.name));
    else copyFileSync(join(from, entry.name), join(to, entry.name), constants.COPYFILE_FICLONE);
  }
}

/** Takes `<directory>.lock` for this process. @throws StoreLockedError when a live process holds it. */
function acquireStoreLock(directory: string): { release(): void } {
  const path = `${directory}.lock`;
  mkdirSync(dirname(path), { recursive: true });
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(path, String(process.pid), { flag: 'wx' });
      return { release: () => rmSync(path, { force: true }) };
    } catch (err: unknown) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
    }
    const holder = Number.parseInt(readFileSync(path, 'utf8'), 10);
    // This process opens a store once at a time (embedded-store.ts), so its own pid on the lock
    // is that of a store thread that died without closing.
    if (holder !== process.pid && isAlive(holder)) throw new StoreLockedError(`the embedded store ${directory} is open in process ${holder} (${path})`);
    rmSync(path, { force: true });
  }
}

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err: unknown) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Where the embedded store lives inside `BOO_DATA_DIR`. */
export function embeddedStoreDirectory(dataDir: string): string {
  return join(dataDir, 'pglite');
}
