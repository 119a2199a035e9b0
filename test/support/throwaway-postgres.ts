import { execFile } from 'node:child_process';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { userInfo, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll } from 'vitest';
import { migrate } from '../../src/dispatch-log/migrate.js';
import { createPostgresDatabase, type SqlDatabase } from '../../src/dispatch-log/sql-database.js';
import { testLogger } from './pipeline-fixtures.js';
import { freePort } from './free-port.js';

const run = promisify(execFile);
const binDir = '/usr/lib/postgresql/15/bin';

/** A Postgres cluster of a test's own (initdb in a temp dir, a free port) that it may stop and start. */
export interface ThrowawayPostgres {
  readonly port: number;
  /** `postgres://postgres@127.0.0.1:<port>/postgres` (trust auth). */
  readonly url: string;
  /** Fast shutdown (`pg_ctl stop -m fast`): connections are cut. No-op when stopped. */
  stop(): Promise<void>;
  /** Starts it again on the same port with the same data; resolves when it accepts connections. */
  start(): Promise<void>;
  /** Stops it and deletes its directory. Idempotent; call it in `afterAll`. */
  cleanup(): Promise<void>;
}

/**
 * initdb + pg_ctl in a temp dir. initdb refuses to run as root, so when the tests run as root the
 * cluster belongs to the `postgres` OS user (via `runuser`). fsync is off: a test cluster.
 */
export async function startThrowawayPostgres(): Promise<ThrowawayPostgres> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'boo-pg-'));
  const asRoot = userInfo().uid === 0;
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const pg = (tool: string, args: string[]) => (asRoot ? run('runuser', ['-u', 'postgres', '--', join(binDir, tool), ...args]) : run(join(binDir, tool), args));
  const dataDir = join(dir, 'data');
  await pg('initdb', ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  let running = false;
  const start = async () => {
    if (running) return;
    const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`;
    await pg('pg_ctl', ['-D', dataDir, '-o', options, '-l', join(dir, 'log'), '-w', '-t', '30', 'start']);
    running = true;
  };
  const stop = async () => {
    if (!running) return;
    await pg('pg_ctl', ['-D', dataDir, '-m', 'fast', '-w', '-t', '30', 'stop']);
    running = false;
  };
  await start();
  let cleaned: Promise<void> | undefined;
  return {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stop,
    start,
    cleanup: () =>
      (cleaned ??= (async () => {
        await stop().catch(() => pg('pg_ctl', ['-D', dataDir, '-m', 'immediate', 'stop']).catch(() => undefined));
        await rm(dir, { recursive: true, force: true });
      })()),
  };
}

/**
 * A throw-away Postgres with the migrations applied, for the tests of the calling `describe`:
 * started in its `beforeAll`, removed in its `afterAll`. `pg` and `db` are set once it started.
 */
export function migratedThrowawayPostgres(): { readonly pg: ThrowawayPostgres; readonly db: SqlDatabase } {
  const handle: { pg?: ThrowawayPostgres; db?: SqlDatabase } = {};
  beforeAll(async () => {
    handle.pg = await startThrowawayPostgres();
    handle.db = createPostgresDatabase(handle.pg.url, testLogger);
    await migrate(handle.db, testLogger);
  });
  afterAll(async () => {
    await handle.db?.close();
    await handle.pg?.cleanup();
  });
  return {
    get pg() {
      return handle.pg!;
    },
    get db() {
      return handle.db!;
    },
  };
}
