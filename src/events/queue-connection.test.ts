import { describe, expect, it } from 'vitest';
import { clusterQueuePrefix, parseClusterSeeds, queuePrefix, queueRedisOf } from './queue-connection.js';

describe('the queue Redis from the environment', () => {
  it('parses BOO_REDIS_CLUSTER seeds, spaces and an empty tail allowed', () => {
    expect(parseClusterSeeds('10.0.0.1:7000, redis-b:7001,')).toEqual([
      { host: '10.0.0.1', port: 7000 },
      { host: 'redis-b', port: 7001 },
    ]);
  });

  it('refuses an entry that is not host:port, naming it', () => {
    expect(() => parseClusterSeeds('a:7000,b')).toThrow('not host:port: b');
    expect(() => parseClusterSeeds('a:70000')).toThrow('not host:port: a:70000');
  });

  it('prefers the cluster to REDIS_URL, and gives a cluster the hash-tagged prefix', () => {
    const cluster = queueRedisOf({ REDIS_URL: 'redis://r:6379', BOO_REDIS_CLUSTER: 'a:7000' });
    expect(cluster).toEqual({ redisCluster: [{ host: 'a', port: 7000 }] });
    expect(queuePrefix(cluster!)).toBe(clusterQueuePrefix);
    const single = queueRedisOf({ REDIS_URL: 'redis://r:6379' });
    expect(single).toEqual({ redisUrl: 'redis://r:6379' });
    expect(queuePrefix(single!)).toBeUndefined();
    expect(queueRedisOf({})).toBeUndefined();
  });
});
