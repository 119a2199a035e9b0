import { Cluster, Redis, type RedisOptions } from 'ioredis';

/** A Redis Cluster node to start from (`BOO_REDIS_CLUSTER`: `host:port,host:port`). */
export interface ClusterSeed {
  readonly host: string;
  readonly port: number;
}

/** The Redis of the dispatch event queue: one server by URL, or a Redis Cluster by its seeds. */
export type QueueRedis = { readonly redisUrl: string } | { readonly redisCluster: readonly ClusterSeed[] };

/**
 * BullMQ's key prefix on a cluster. Its scripts touch several keys of a queue at once, which a
 * cluster allows only within one hash slot: the hash tag `{bull}` puts every key of every queue
 * in the slot of "bull" (on one shard; the queue then scales with that shard, not the cluster).
 */
export const clusterQueuePrefix = '{bull}';

/** BullMQ's `prefix` option for `redis`: undefined (BullMQ's own `bull`) on a single server. */
export function queuePrefix(redis: QueueRedis): string | undefined {
  return 'redisCluster' in redis ? clusterQueuePrefix : undefined;
}

/**
 * Parses `BOO_REDIS_CLUSTER`. @throws RangeError naming the entry that is not `host:port`.
 * @example parseClusterSeeds('10.0.0.1:7000,10.0.0.2:7000')
 */
export function parseClusterSeeds(text: string): ClusterSeed[] {
  return text
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
    .map((entry) => {
      const match = /^(.+):(\d{1,5})$/.exec(entry);
      const port = Number(match?.[2]);
      if (!match || port < 1 || port > 65_535) throw new RangeError(`not host:port: ${entry}`);
      return { host: match[1]!, port };
    });
}

/**
 * A connection to the queue's Redis with `options` (for a cluster they apply to each node;
 * `retryStrategy` becomes the cluster's and `enableOfflineQueue` is set on the cluster itself).
 * Connects at once, as `new Redis` does.
 */
export function connectQueueRedis(redis: QueueRedis, options: RedisOptions): Redis | Cluster {
  if ('redisUrl' in redis) return new Redis(redis.redisUrl, options);
  const { retryStrategy, enableOfflineQueue, ...nodeOptions } = options;
  return new Cluster(
    redis.redisCluster.map((seed) => ({ host: seed.host, port: seed.port })),
    {
      redisOptions: nodeOptions,
      ...(retryStrategy ? { clusterRetryStrategy: retryStrategy } : {}),
      ...(enableOfflineQueue === undefined ? {} : { enableOfflineQueue }),
    },
  );
}

/**
 * The queue's Redis from the environment: the cluster of `BOO_REDIS_CLUSTER` when set, else the
 * server of `REDIS_URL`; undefined when neither is set (embedded mode).
 */
export function queueRedisOf(env: { readonly REDIS_URL?: string | undefined; readonly BOO_REDIS_CLUSTER?: string | undefined }): QueueRedis | undefined {
  if (env.BOO_REDIS_CLUSTER) return { redisCluster: parseClusterSeeds(env.BOO_REDIS_CLUSTER) };
  return env.REDIS_URL ? { redisUrl: env.REDIS_URL } : undefined;
}
