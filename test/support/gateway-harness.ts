import { buildConfig, type Config } from '../../src/config/load.js';
import type { DispatchEvent } from '../../src/events/dispatch-event.js';
import type { EventSink } from '../../src/events/event-sink.js';
import { startGateway, type Gateway } from '../../src/gateway.js';
import { createLogger, type Logger } from '../../src/shared/logger.js';
import type { FakeProvider } from './fake-provider.js';

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
