import { Redis } from 'ioredis';

/**
 * Where the tests find the machine's shared Redis and Postgres: the one place that reads their
 * addresses. Tests only ever use keys, queues and databases of their own on them (a random prefix
 * or name), so a developer's or CI's long-running servers serve. Tests that stop or kill a server
 * start a throw-away one instead (throwaway-redis.ts, throwaway-postgres.ts).
 *
 * - `BOO_TEST_REDIS_URL`: default `redis://127.0.0.1:6379`.
 * - `BOO_TEST_DATABASE_URL`: a Postgres server URL whose user may CREATE DATABASE (each test
 *   makes and drops its own); default `postgres://root@127.0.0.1:5432/postgres`.
 */
export const testRedisUrl = process.env['BOO_TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

export const testDatabaseUrl = process.env['BOO_TEST_DATABASE_URL'] ?? 'postgres://root@127.0.0.1:5432/postgres';

/** Deletes every key of a BullMQ queue a test made on the shared Redis (`bull:<queue>:*`). */
export async function deleteQueueKeys(queue: string): Promise<void> {
  const redis = new Redis(testRedisUrl, { lazyConnect: true });
  try {
    await redis.connect();
    const keys = await redis.keys(`bull:${queue}:*`);
    if (keys.length > 0) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}
