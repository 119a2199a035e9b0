import { buildConfig, type Config } from '../../src/config/load.js';
import type { DispatchEvent } from '../../src/events/dispatch-event.js';
import type { EventSink } from '../../src/events/event-sink.js';
import { startGateway, type Gateway } from '../../src/gateway.js';
import { createLogger, type Logger } from '../../src/shared/logger.js';
import OpenAI from 'openai';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { startFakeFleet, type FakeProvider } from '../../simulator/fake-provider.js';

/** An event sink that keeps what it is given, for assertions. */
export interface RecordingSink extends EventSink {
  readonly events: DispatchEvent[];
}

export function createRecordingSink(): RecordingSink {
  const events: DispatchEvent[] = [];
  return {
    events,
    publish: (event) => void events.push(event),
    health: () => ({ redis: 'embedded', database: 'embedded' }),
    close: async () => {},
  };
}

/** A config document whose providers point at the given fakes (name -> fake; other entries, such as a fleet's closeAll, are ignored). */
export function fleetConfigDocument(
  fakes: Readonly<Record<string, FakeProvider | (() => unknown)>>,
  types: Record<string, 'llama-swap' | 'openai'> = {},
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const providers: Record<string, unknown> = {};
  for (const [name, fake] of Object.entries(fakes)) {
    if (typeof fake !== 'function') providers[name] = { baseUrl: fake.url, type: types[name] ?? 'openai' };
  }
  return { providers, ...extra };
}

export interface TestGateway extends Gateway {
  readonly sink: RecordingSink;
}

/** Starts an in-process gateway on a free loopback port with a recording sink. */
export async function startTestGateway(
  document: Record<string, unknown>,
  options: { env?: NodeJS.ProcessEnv; healthChecks?: boolean; logger?: Logger; seed?: number } = {},
): Promise<TestGateway> {
  const config: Config = buildConfig(document, 'test config', options.env ?? {});
  const sink = createRecordingSink();
  const gateway = await startGateway({
    config,
    logger: options.logger ?? createLogger(process.env.TEST_LOG_LEVEL ?? 'silent'),
    replica: 'test',
    port: 0,
    host: '127.0.0.1',
    createSink: () => sink,
    drainTimeoutMs: 2_000,
    healthChecks: options.healthChecks ?? false,
    random: seededRandom(options.seed ?? 42),
  });
  return Object.assign(gateway, { sink });
}

/** mulberry32: a small seeded PRNG, so that weighted and exploring strategies repeat run to run. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface TwoCandidateSetup {
  fleet: Record<'a' | 'b', FakeProvider> & { closeAll(): Promise<void> };
  gateway: TestGateway;
  /** The official OpenAI client on the gateway, without retries. */
  client: OpenAI;
}

/**
 * Registers, in the calling `describe`, two fakes `a` and `b` serving `m1` behind a gateway whose
 * `auto:chat` is `[a/m1, b/m1]`, an OpenAI client on it, and before each test a reset of the fakes
 * (replies `ok`, nothing received) and of the recorded events. Breakers are kept out of the way:
 * these tests send many failures at `a` on purpose. The fields are set once `beforeAll` ran.
 */
export function useTwoCandidateGateway(timeouts: Record<string, number>): TwoCandidateSetup {
  const setup = {} as TwoCandidateSetup;
  beforeAll(async () => {
    setup.fleet = await startFakeFleet({ a: { name: 'a' }, b: { name: 'b' } });
    setup.gateway = await startTestGateway(
      fleetConfigDocument(
        setup.fleet,
        {},
        {
          virtualModels: { 'auto:chat': { candidates: ['a/m1', 'b/m1'] } },
          timeouts,
          breaker: { volumeThreshold: 10_000 },
        },
      ),
    );
    setup.client = new OpenAI({ baseURL: `${setup.gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(async () => {
    await setup.gateway?.close();
    await setup.fleet?.closeAll();
  });
  beforeEach(() => {
    for (const fake of [setup.fleet.a, setup.fleet.b]) {
      fake.received.length = 0;
      fake.defaultReply = { kind: 'ok' };
    }
    setup.gateway.sink.events.length = 0;
  });
  return setup;
}
