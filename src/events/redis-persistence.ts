import type { Logger } from '../shared/logger.js';
import { errorMessage } from '../shared/error-message.js';

/**
 * How Redis keeps what it holds across its own restart: `aof` (append-only file), `rdb`
 * (snapshots only: a crash loses what came after the last one), `none` (a crash loses
 * everything), `unknown` (`CONFIG` refused, as managed services often do).
 */
export type RedisPersistence = 'aof' | 'rdb' | 'none' | 'unknown';

/** What this module needs of a Redis client (ioredis' `Redis` or `Cluster`). */
export interface RedisConfigReader {
  config(subcommand: 'GET', parameter: string): Promise<unknown>;
}

/** The value of a `CONFIG GET` reply (`[name, value]`), '' when absent. */
async function configValue(redis: RedisConfigReader, parameter: string): Promise<string> {
  const reply = await redis.config('GET', parameter);
  return Array.isArray(reply) && typeof reply[1] === 'string' ? reply[1] : '';
}

/**
 * Reads the persistence of the Redis behind `redis` (`CONFIG GET appendonly` and `save`) and says
 * it in the log: loudly (error) when a crash of Redis would lose queued dispatch events. A
 * queued event lives only in Redis until a worker commits it (docs/operations.md, "Redis
 * durability"). Never throws: a refused `CONFIG` is logged and reported as `unknown`.
 */
export async function checkRedisPersistence(redis: RedisConfigReader, logger: Logger): Promise<RedisPersistence> {
  let persistence: RedisPersistence;
  try {
    if ((await configValue(redis, 'appendonly')) === 'yes') persistence = 'aof';
    else persistence = (await configValue(redis, 'save')).trim() === '' ? 'none' : 'rdb';
  } catch (err: unknown) {
    logger.warn(
      { redisPersistence: 'unknown', err: errorMessage(err) },
      'cannot read the persistence of Redis (CONFIG GET refused): make sure it has appendonly yes, or queued dispatch events are lost when Redis crashes (docs/operations.md, "Redis durability")',
    );
    return 'unknown';
  }
  if (persistence === 'none') {
    logger.error(
      { redisPersistence: persistence },
      'REDIS HAS NO PERSISTENCE: queued dispatch events live only in its memory until a worker commits them, and a Redis crash loses them. Set appendonly yes (docs/operations.md, "Redis durability")',
    );
  } else if (persistence === 'rdb') {
    logger.warn(
      { redisPersistence: persistence },
      'Redis persists by snapshots only: a Redis crash loses the dispatch events queued since the last one. Set appendonly yes (docs/operations.md, "Redis durability")',
    );
  } else {
    logger.info({ redisPersistence: persistence }, 'Redis persists with an append-only file');
  }
  return persistence;
}
