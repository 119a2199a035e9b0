import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import postgres from 'postgres';
import { request } from 'undici';

/** Where the gateway under test sends its dispatch events. */
export type SinkMode = 'redis' | 'pglite' | 'postgres';
export const sinkModes: readonly SinkMode[] = ['redis', 'pglite', 'postgres'];

/** What the bench set up for one sink mode: the gateway's environment, and how to clean up. */
export interface EventStore {
  readonly mode: SinkMode;
  readonly env: Record<string, string>;
  readonly description: string;
  /** Drops what the run produced (queued jobs) without stopping anything; between scenarios. */
  trim(): Promise<void>;
  /** Removes everything the bench created (queue keys, database). */
  dispose(): Promise<void>;
}

/**
 * - `redis`: the deployment of SPEC §1 (REDIS_URL set: BullMQ producer, breakers shared through
 *   Redis) on a queue of its own, no worker; queued jobs are dropped between runs and the queue
 *   obliterated at the end.
 * - `pglite`: embedded mode on a bare machine (no REDIS_URL, no DATABASE_URL): the in-process
 *   batch writer into PGlite inside the gateway process.
 * - `postgres`: embedded mode with DATABASE_URL: the in-process batch writer into a throw-away
 *   database on `postgresUrl`.
 */
export async function prepareEventStore(mode: SinkMode, redisUrl: string, postgresUrl: string): Promise<EventStore> {
  const suffix = randomBytes(6).toString('hex');
  if (mode === 'redis') {
    const queueName = `boo-bench-${suffix}`;
    const queue = new Queue(queueName, { connection: { url: redisUrl } });
    await queue.waitUntilReady();
    return {
      mode,
      env: { REDIS_URL: redisUrl, BOO_QUEUE: queueName },
      description: `REDIS_URL (BullMQ producer to queue ${queueName}, no worker; shared breakers)`,
      trim: () => queue.drain(true),
      dispose: async () => {
        await queue.obliterate({ force: true });
        await queue.close();
      },
    };
  }
  if (mode === 'pglite') {
    return {
      mode,
      env: {},
      description: 'embedded: in-process batch writer into PGlite (no REDIS_URL, no DATABASE_URL)',
      trim: async () => {},
      dispose: async () => {},
    };
  }
  const database = `boo_bench_${suffix}`;
  const admin = postgres(postgresUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${database}`);
  const url = new URL(postgresUrl);
  url.pathname = `/${database}`;
  return {
    mode,
    env: { DATABASE_URL: url.toString() },
    description: `embedded: in-process batch writer into PostgreSQL (DATABASE_URL, database ${database})`,
    trim: async () => {},
    dispose: async () => {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      await admin.end();
    },
  };
}

function counter(metrics: string, name: string): number {
  const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(metrics);
  return match ? Number(match[1]) : 0;
}

async function metricsText(gatewayUrl: string): Promise<string> {
  const answer = await request(`${gatewayUrl}/metrics`);
  return answer.body.text();
}

/** The counter that says an event has gone all the way through the sink of `mode`. */
const takenCounter = (mode: SinkMode) => (mode === 'redis' ? 'boo_events_enqueued_total' : 'boo_events_inserted_total');

/** Events the gateway's sink has taken all the way (queued in Redis, or committed by the embedded store). */
export async function eventsTaken(gatewayUrl: string, mode: SinkMode): Promise<number> {
  return counter(await metricsText(gatewayUrl), takenCounter(mode));
}

/**
 * Waits until the gateway's sink has taken `count` events all the way (queued in Redis, or
 * inserted by the embedded writer): PGlite opens and migrates in the background for seconds
 * (tens on a loaded box), and a measurement during that would be of PGlite's start.
 */
export async function waitForSink(gatewayUrl: string, mode: SinkMode, count: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await eventsTaken(gatewayUrl, mode)) >= count) return;
    if (Date.now() > deadline) throw new Error(`gateway sink (${mode}) did not take ${count} events within ${timeoutMs} ms (${takenCounter(mode)})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/**
 * Waits until every event the gateway published has gone through its sink (or was counted as
 * invalid or dropped), so that a round's CPU includes the work its requests left behind: an
 * embedded store that inserted after the measured window would otherwise look free.
 */
export async function waitForSettled(gatewayUrl: string, mode: SinkMode, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await metricsText(gatewayUrl);
    const done = counter(text, takenCounter(mode)) + counter(text, 'boo_events_invalid_total') + sumOf(text, 'boo_events_dropped_total');
    if (done >= counter(text, 'boo_events_published_total')) return;
    if (Date.now() > deadline) throw new Error(`gateway sink (${mode}) still busy ${timeoutMs} ms after the load`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The sum of every series of a counter. */
function sumOf(metrics: string, name: string): number {
  let total = 0;
  for (const match of metrics.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) total += Number(match[1]);
  return total;
}
