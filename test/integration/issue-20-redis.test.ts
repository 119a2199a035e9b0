import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { startFakeProvider } from '../../simulator/fake-provider.js';
import { runChatLoad } from '../support/chat-load.js';
import { countRows, createTestSink, oneRowEach, publishSteadily, rowsAgainstSent, waitForQueueDrained } from '../support/pipeline-fixtures.js';
import { startThrowawayRedisCluster } from '../support/throwaway-redis-cluster.js';
import { waitForValue } from '../support/wait-for.js';
import { entryPoints, startBooProcess, startNodeProcess, type RunningProcess } from '../support/processes.js';
import { createMigratedScratchDatabase } from '../support/scratch-database.js';
import { startThrowawayRedis } from '../support/throwaway-redis.js';

// Issue 20, Redis durability (docs/operations.md, "Redis durability"): a queued event lives only
// in Redis until a worker commits it, so the gateway and the worker say loudly at start when
// Redis would lose it in a crash, and /readyz says it too.

const dir = mkdtempSync(join(tmpdir(), 'boo-issue-20-redis-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function startGateway(redisUrl: string, name: string, env: Record<string, string> = {}): Promise<{ process: RunningProcess; url: string }> {
  const gateway = startNodeProcess(entryPoints.gateway, {
    PORT: '0',
    HOST: '127.0.0.1',
    BOO_CONFIG: join(process.cwd(), 'config/gateway.example.yaml'),
    BOO_DATA_DIR: join(dir, name),
    BOO_QUEUE: `issue-20-${randomUUID()}`,
    ...(redisUrl ? { REDIS_URL: redisUrl } : {}),
    LOG_LEVEL: 'info',
    ...env,
  });
  const line = await gateway.waitForLine(/boo-gateway listening/, 20_000);
  return { process: gateway, url: (JSON.parse(line) as { url: string }).url };
}

async function readyz(url: string): Promise<Record<string, unknown>> {
  for (;;) {
    const body = (await (await fetch(`${url}/readyz`)).json()) as Record<string, unknown>;
    if ('redisPersistence' in body) return body;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('issue 20: Redis persistence, said at start', () => {
  it('a Redis without persistence: the gateway and the worker log an error, /readyz says "none"', async () => {
    const redis = await startThrowawayRedis({ appendOnly: false });
    const scratch = await createMigratedScratchDatabase();
    try {
      const gateway = await startGateway(redis.url, 'none');
      try {
        expect(await readyz(gateway.url)).toMatchObject({ status: 'ready', redis: 'ok', redisPersistence: 'none' });
        const line = await gateway.process.waitForLine(/REDIS HAS NO PERSISTENCE/);
        expect(JSON.parse(line)).toMatchObject({ level: 50, redisPersistence: 'none' });
      } finally {
        await gateway.process.stop();
      }
      const worker = await startBooProcess({ kind: 'worker', env: { REDIS_URL: redis.url, DATABASE_URL: scratch.url, BOO_QUEUE: `issue-20-${randomUUID()}` } });
      try {
        expect(JSON.parse(await worker.waitForLine(/REDIS HAS NO PERSISTENCE/))).toMatchObject({ level: 50, process: 'worker' });
      } finally {
        await worker.stop();
      }
    } finally {
      await scratch.drop();
      await redis.cleanup();
    }
  }, 60_000);

  it('a Redis with an append-only file: no warning, /readyz says "aof"', async () => {
    const redis = await startThrowawayRedis({ appendOnly: true });
    try {
      const gateway = await startGateway(redis.url, 'aof');
      try {
        expect(await readyz(gateway.url)).toMatchObject({ redisPersistence: 'aof' });
        await gateway.process.waitForLine(/Redis persists with an append-only file/);
        expect(gateway.process.output()).not.toMatch(/NO PERSISTENCE|snapshots only|cannot read the persistence/);
      } finally {
        await gateway.process.stop();
      }
    } finally {
      await redis.cleanup();
    }
  }, 60_000);
});

describe('issue 20: a Redis crash after a worker crash', () => {
  it('with an append-only file: a worker SIGKILLed, then Redis SIGKILLed and restarted, exactly N rows', async () => {
    const redis = await startThrowawayRedis({ appendOnly: true });
    const scratch = await createMigratedScratchDatabase();
    const queue = `issue-20-${randomUUID()}`;
    const { sink, spoolDir } = await createTestSink(redis.url, queue);
    const workerEnv = { REDIS_URL: redis.url, DATABASE_URL: scratch.url, BOO_QUEUE: queue };
    const workers: RunningProcess[] = [];
    try {
      workers.push(await startBooProcess({ kind: 'worker', env: workerEnv }));
      const traffic = publishSteadily((event) => sink.publish(event), 6_000, 2_000);
      await waitForValue(
        () => countRows(scratch.db),
        (count) => count.rows > 0,
        20_000,
        'the first rows',
      );
      await workers[0]!.stop(0, 'SIGKILL');
      // Jobs still queued and jobs the killed worker held exist only in Redis now.
      await redis.kill();
      await redis.start();
      const sent = await traffic;
      workers.push(await startBooProcess({ kind: 'worker', env: workerEnv }));
      await waitForValue(
        () => countRows(scratch.db),
        (count) => count.rows >= sent.length,
        30_000,
        `${sent.length} rows`,
      );
      await waitForQueueDrained(redis.url, queue);
      expect(await rowsAgainstSent(scratch.db, sent)).toEqual(oneRowEach(sent));
    } finally {
      await sink.close();
      for (const worker of workers) await worker.stop(0, 'SIGKILL');
      rmSync(spoolDir, { recursive: true, force: true });
      await scratch.drop();
      await redis.cleanup();
    }
  }, 90_000);
});

describe('issue 20: the dispatch log on a Redis Cluster', () => {
  it('a gateway and a worker on a 3-node cluster (BOO_REDIS_CLUSTER, prefix {bull}): exactly N rows', async () => {
    const cluster = await startThrowawayRedisCluster(3);
    const scratch = await createMigratedScratchDatabase();
    const upstream = await startFakeProvider({ name: 'a' });
    const queue = `issue-20-${randomUUID()}`;
    const config = join(dir, 'cluster.yaml');
    writeFileSync(config, JSON.stringify({ providers: { a: { baseUrl: upstream.url } }, virtualModels: { 'auto:chat': { candidates: ['a/m1'] } } }));
    const processes: RunningProcess[] = [];
    try {
      const env = { BOO_REDIS_CLUSTER: cluster.seeds, BOO_QUEUE: queue, BOO_CONFIG: config };
      const gateway = await startGateway('', 'cluster', env);
      processes.push(gateway.process);
      expect(gateway.process.output()).toMatch(/breaker state and capacity slots are not shared on a cluster/);
      processes.push(await startBooProcess({ kind: 'worker', env: { ...env, DATABASE_URL: scratch.url } }));
      const { ok, failed, okRequestIds } = await runChatLoad({ url: gateway.url, model: 'auto:chat', total: 1_500, concurrency: 16 });
      expect(failed).toBe(0);
      await waitForValue(
        () => countRows(scratch.db),
        (count) => count.rows >= ok,
        30_000,
        `${ok} rows`,
      );
      expect(await rowsAgainstSent(scratch.db, okRequestIds)).toEqual(oneRowEach(okRequestIds));
      // Every key of the queue sits in the slot of the hash tag, on one node.
      const perNode = await Promise.all(cluster.ports.map(async (port) => (await runRedisCli(port, '--scan', '--pattern', `{bull}:${queue}:*`)).length));
      expect(perNode.filter((keys) => keys > 0)).toHaveLength(1);
    } finally {
      for (const running of processes.reverse()) await running.stop();
      await upstream.close();
      await scratch.drop();
      await cluster.cleanup();
    }
  }, 90_000);
});

/** Lines printed by `redis-cli -p <port> <args>`. */
async function runRedisCli(port: number, ...args: string[]): Promise<string[]> {
  const { stdout } = await promisify(execFile)('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args]);
  return stdout.split('\n').filter((line) => line.trim() !== '');
}
