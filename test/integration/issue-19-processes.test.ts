import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeProvider, type FakeProvider } from '../../simulator/fake-provider.js';
import { maxConcurrency } from '../support/concurrency.js';
import { entryPoints, startNodeProcess, type RunningProcess } from '../support/processes.js';
import { startThrowawayRedis, type ThrowawayRedis } from '../support/throwaway-redis.js';
import { waitFor } from '../support/wait-for.js';

// Capacity across replicas (docs/capacity.md): three gateway processes on one throw-away Redis
// share the slots of a candidate and the rate limits of keys and sources.

const sha256 = (key: string) => createHash('sha256').update(key).digest('hex');
const dir = mkdtempSync(join(tmpdir(), 'boo-issue-19-'));

interface Replica {
  readonly process: RunningProcess;
  readonly url: string;
}

describe('issue 19: capacity across three gateway processes', () => {
  let redis: ThrowawayRedis;
  let upstream: FakeProvider;
  let replicas: Replica[] = [];
  const queue = `issue-19-${randomUUID()}`;

  async function startReplica(name: string): Promise<Replica> {
    const child = startNodeProcess(entryPoints.gateway, {
      PORT: '0',
      HOST: '127.0.0.1',
      BOO_CONFIG: join(dir, 'gateway.yaml'),
      BOO_DATA_DIR: join(dir, `data-${name}`),
      BOO_REPLICA_ID: name,
      BOO_QUEUE: queue,
      REDIS_URL: redis.url,
      LOG_LEVEL: 'info',
    });
    const line = await child.waitForLine(/boo-gateway listening/, 20_000);
    return { process: child, url: (JSON.parse(line) as { url: string }).url };
  }

  beforeAll(async () => {
    redis = await startThrowawayRedis({ appendOnly: false });
    upstream = await startFakeProvider({ name: 'a', models: ['m1', 'm2'] });
    writeFileSync(
      join(dir, 'gateway.yaml'),
      JSON.stringify({
        providers: { a: { baseUrl: upstream.url } },
        virtualModels: {
          'auto:chat': { candidates: [{ target: 'a/m1', maxInFlight: 2 }], queue: { maxWaitMs: 10_000 } },
          'free:chat': { candidates: ['a/m2'] },
        },
        auth: {
          apiKeys: [
            { sha256: sha256('key-four'), name: 'four', requestsPerMinute: 4 },
            { sha256: sha256('key-four-too'), name: 'four-too', requestsPerMinute: 4 },
            sha256('key-plain'),
          ],
        },
        limits: { sources: { nightly: { requestsPerMinute: 4 } } },
        healthCheck: { intervalMs: 60_000 },
      }),
    );
    replicas = await Promise.all(['r1', 'r2', 'r3'].map((name) => startReplica(name)));
  }, 60_000);
  afterAll(async () => {
    await Promise.all(replicas.map((replica) => replica.process.stop(5_000)));
    await upstream?.close();
    await redis?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    upstream.received.length = 0;
    upstream.defaultReply = { kind: 'ok' };
  });

  async function chat(replica: Replica, model: string, options: { key?: string; source?: string } = {}) {
    const response = await request(`${replica.url}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${options.key ?? 'key-plain'}`,
        ...(options.source ? { 'x-boo-source': options.source } : {}),
      },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
    });
    const body = (await response.body.json()) as { error?: { code: string } };
    return { status: response.statusCode, headers: response.headers, code: body.error?.code };
  }

  it('never sends a candidate limited to 2 more than 2 requests at once across the cluster, while 6 clients on 3 replicas all get answers', async () => {
    upstream.defaultReply = { kind: 'ok', delayMs: 250 };
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => chat(replicas[i % 3]!, 'auto:chat')));
    expect(answers.map((answer) => answer.status)).toEqual(Array(6).fill(200));
    expect(upstream.dispatched()).toHaveLength(6);
    expect(maxConcurrency(upstream.dispatched())).toBe(2);
  });

  it("admits exactly a key's 4 requests a minute across the cluster, however they are spread", async () => {
    const answers = await Promise.all(Array.from({ length: 9 }, (_, i) => chat(replicas[i % 3]!, 'free:chat', { key: 'key-four' })));
    expect(answers.filter((answer) => answer.status === 200)).toHaveLength(4);
    expect(answers.filter((answer) => answer.status === 429 && answer.code === 'rate_limit_exceeded')).toHaveLength(5);
    expect(upstream.dispatched()).toHaveLength(4);
  });

  it('counts the x-ratelimit-* headers down across replicas', async () => {
    const remaining: string[] = [];
    for (let i = 0; i < 5; i++) {
      const answer = await chat(replicas[i % 3]!, 'free:chat', { key: 'key-four-too' });
      remaining.push(`${answer.status}:${String(answer.headers['x-ratelimit-remaining-requests'])}`);
      if (answer.status === 429) expect(Number(answer.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    }
    expect(remaining).toEqual(['200:3', '200:2', '200:1', '200:0', '429:0']);
  });

  it("admits exactly a source's 4 requests a minute across the cluster, whatever key sends them", async () => {
    const answers = await Promise.all(Array.from({ length: 9 }, (_, i) => chat(replicas[i % 3]!, 'free:chat', { source: 'nightly' })));
    expect(answers.filter((answer) => answer.status === 200)).toHaveLength(4);
    expect(answers.filter((answer) => answer.status === 429)).toHaveLength(5);
  });

  it("gives a killed replica's slots to a request waiting on another replica within the lease time", async () => {
    // r3 takes both slots with requests the upstream never answers, then dies.
    upstream.script({ kind: 'hang' }, { kind: 'hang' });
    const doomed = replicas[2]!;
    const held = [chat(doomed, 'auto:chat'), chat(doomed, 'auto:chat')].map((pending) => pending.catch(() => undefined));
    await waitFor(() => upstream.dispatched().length === 2, 5_000, 'two slots held by r3');
    const waiting = chat(replicas[0]!, 'auto:chat');
    // It waits: both slots are r3's.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(upstream.dispatched()).toHaveLength(2);
    await doomed.process.stop(0, 'SIGKILL');
    const killedAt = Date.now();
    const answer = await waiting;
    const servedAfterMs = Date.now() - killedAt;
    expect(answer.status).toBe(200);
    // Leases live 3 s without renewal; r3 last renewed them up to a second before it died.
    expect(servedAfterMs).toBeGreaterThanOrEqual(1_000);
    expect(servedAfterMs).toBeLessThan(3_000 + 1_000);
    await Promise.all(held);
    replicas[2] = await startReplica('r3-again');
  }, 30_000);
});
