import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, beforeEach } from 'vitest';

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

/** Deletes every key matching `pattern` (a KEYS glob) on the shared Redis. */
export async function deleteKeys(pattern: string): Promise<void> {
  const redis = new Redis(testRedisUrl, { lazyConnect: true });
  try {
    await redis.connect();
    const keys = await redis.keys(pattern);
    if (keys.length > 0) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}

/** Deletes every key of a BullMQ queue a test made on the shared Redis (`bull:<queue>:*`). */
export const deleteQueueKeys = (queue: string): Promise<void> => deleteKeys(`bull:${queue}:*`);

/**
 * For each test of the calling `describe`: a fresh key prefix on the shared Redis, and cleanups
 * the test registers, run last first after it; then every key of the prefix is deleted.
 */
export function keyPrefixPerTest(): { readonly prefix: string; readonly cleanups: Array<() => Promise<void> | void> } {
  const scope = { prefix: '', cleanups: [] as Array<() => Promise<void> | void> };
  beforeEach(() => {
    scope.prefix = `boo-test:${randomUUID()}:`;
  });
  afterEach(async () => {
    for (const cleanup of scope.cleanups.splice(0).reverse()) await cleanup();
    await deleteKeys(`${scope.prefix}*`);
  });
  return scope;
}
