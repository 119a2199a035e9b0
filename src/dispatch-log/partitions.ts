import type { Logger } from '../shared/logger.js';
import { errorMessage } from '../shared/error-message.js';
import { migrationLockKey } from './migrate.js';
import type { SqlDatabase, SqlSession } from './sql-database.js';

export interface PartitionUpkeepOptions {
  /** Days of rows kept before today's (UTC); older partitions are dropped, older rows in the DEFAULT partition deleted. */
  retentionDays: number;
  /** Daily partitions made ahead of today, so that midnight never sends rows to the DEFAULT partition. Default 3. */
  daysAhead?: number;
  /** The clock (tests move it). */
  now?: Date;
}

export interface PartitionUpkeepResult {
  /** Partitions created, by name. */
  created: string[];
  /** Partitions dropped, by name. */
  dropped: string[];
  /** Rows moved from the DEFAULT partition into the daily partitions created. */
  movedRows: number;
  /** Rows older than the retention deleted from the DEFAULT partition. */
  deletedRows: number;
}

const dayMs = 86_400_000;
const partitionName = /^route_dispatch_log_p(\d{4})(\d{2})(\d{2})$/;

/** The UTC day holding `time`, as its first millisecond. */
const startOfDay = (time: number) => Math.floor(time / dayMs) * dayMs;
/** `route_dispatch_log_p20261206` for the day starting at `day`. */
const nameOf = (day: number) => `route_dispatch_log_p${new Date(day).toISOString().slice(0, 10).replaceAll('-', '')}`;
const dayOf = (name: string): number | undefined => {
  const match = partitionName.exec(name);
  return match ? Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) : undefined;
};

/**
 * Upkeep of the daily partitions of `route_dispatch_log` (migration 010, docs/operations.md,
 * "Partitions and retention"), run by the worker at start and every hour:
 * 1. deletes the rows older than the retention from the DEFAULT partition (rows of an
 *    unpartitioned table that was migrated, or of a day whose partition was missing);
 * 2. gives every day still in the DEFAULT partition, and today plus `daysAhead` days, a partition
 *    of its own, moving that day's rows out of the DEFAULT partition in the same transaction;
 * 3. drops the daily partitions older than the retention: a day is dropped whole once it is more
 *    than `retentionDays` days before today.
 *
 * Runs under the migrations' advisory lock, so two workers (or a migration) never do it at once;
 * every step is idempotent. Each partition is created in its own transaction: inserts keep going
 * to the DEFAULT partition meanwhile and lose nothing.
 * @throws the driver's error; what was done before it stays done.
 */
export async function maintainPartitions(db: SqlDatabase, options: PartitionUpkeepOptions): Promise<PartitionUpkeepResult> {
  const today = startOfDay((options.now ?? new Date()).getTime());
  const oldestKept = today - options.retentionDays * dayMs;
  const lastAhead = today + (options.daysAhead ?? 3) * dayMs;
  const result: PartitionUpkeepResult = { created: [], dropped: [], movedRows: 0, deletedRows: 0 };
  return db.withSession(async (session) => {
    await session.query('SELECT pg_advisory_lock($1)', [migrationLockKey]);
    // The first upkeep after migration 010 moves a whole table out of the DEFAULT partition: no
    // statement bound then (the connection's own comes back with RESET).
    await session.exec('SET statement_timeout = 0');
    try {
      const deleted = await session.query('DELETE FROM route_dispatch_log_default WHERE created_at < $1', [new Date(oldestKept).toISOString()]);
      result.deletedRows = deleted.count;

      const existing = new Set(await partitionNames(session));
      const days = new Set<number>();
      const { rows } = await session.query<{ first: Date | string | null; last: Date | string | null }>(
        'SELECT min(created_at) AS first, max(created_at) AS last FROM route_dispatch_log_default',
      );
      const { first, last } = rows[0] ?? { first: null, last: null };
      if (first !== null && last !== null) {
        const to = Math.min(startOfDay(new Date(last).getTime()), lastAhead);
        for (let day = startOfDay(new Date(first).getTime()); day <= to; day += dayMs) days.add(day);
      }
      for (let day = today; day <= lastAhead; day += dayMs) days.add(day);
      for (const day of [...days].sort((a, b) => a - b)) {
        if (existing.has(nameOf(day))) continue;
        result.movedRows += await createPartition(session, day);
        result.created.push(nameOf(day));
      }

      for (const name of existing) {
        const day = dayOf(name);
        if (day === undefined || day >= oldestKept) continue;
        await session.exec(`DROP TABLE ${name}`);
        result.dropped.push(name);
      }
      return result;
    } finally {
      await session.exec('RESET statement_timeout');
      await session.query('SELECT pg_advisory_unlock($1)', [migrationLockKey]);
    }
  });
}

/** How often the coming days' partitions are created and the expired ones dropped. */
export const partitionUpkeepMs = 3_600_000;

/**
 * One round of {@link maintainPartitions}, logged when it changed something. Never throws: a
 * failure is logged and `onError` told (to count it), and rows go to the DEFAULT partition until
 * a round succeeds.
 */
export async function runPartitionUpkeep(db: SqlDatabase, retentionDays: number, logger: Logger, onError: () => void): Promise<void> {
  try {
    const result = await maintainPartitions(db, { retentionDays });
    if (result.created.length + result.dropped.length + result.deletedRows > 0) logger.info({ ...result, retentionDays }, 'dispatch log partitions maintained');
  } catch (err: unknown) {
    onError();
    logger.error({ err: errorMessage(err) }, 'partition upkeep failed; rows go to the DEFAULT partition until the next round');
  }
}

/** Names of the partitions of `route_dispatch_log`, the DEFAULT one included. */
async function partitionNames(session: SqlSession): Promise<string[]> {
  const { rows } = await session.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'route_dispatch_log'::regclass`,
  );
  return rows.map((row) => row.name);
}

/**
 * The partition of the day starting at `day`, made as a plain table, filled with that day's rows
 * taken from the DEFAULT partition, then attached: a partition cannot be created while the
 * DEFAULT one holds rows of its range. @returns the rows moved.
 */
async function createPartition(session: SqlSession, day: number): Promise<number> {
  const name = nameOf(day);
  const from = new Date(day).toISOString();
  const to = new Date(day + dayMs).toISOString();
  await session.exec('BEGIN');
  try {
    // Inserts of that day committed after the move would make the ATTACH fail: they wait instead.
    await session.exec('LOCK TABLE route_dispatch_log_default IN EXCLUSIVE MODE');
    await session.exec(`CREATE TABLE ${name} (LIKE route_dispatch_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`);
    const moved = await session.query(
      `WITH moved AS (DELETE FROM route_dispatch_log_default WHERE created_at >= $1 AND created_at < $2 RETURNING *) INSERT INTO ${name} SELECT * FROM moved`,
      [from, to],
    );
    await session.exec(`ALTER TABLE route_dispatch_log ATTACH PARTITION ${name} FOR VALUES FROM ('${from}') TO ('${to}')`);
    await session.exec('COMMIT');
    return moved.count;
  } catch (err: unknown) {
    await session.exec('ROLLBACK');
    throw err;
  }
}
