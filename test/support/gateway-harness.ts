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

/** A config document whose providers point at the given fakes (name -> fake). */
export function fleetConfigDocument(
  fakes: Record<string, FakeProvider>,
  types: Record<string, 'llama-swap' | 'openai'> = {},
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const providers: Record<string, unknown> = {};
  for (const [name, fake] of Object.entries(fakes)) providers[name] = { baseUrl: fake.url, type: types[name] ?? 'openai' };
  return { providers, ...extra };
}

export interface TestGateway extends Gateway {
  readonly sink: RecordingSink;
}

/** Starts an in-process gateway on a free loopback port with a recording sink. */
export async function startTestGateway(
  document: Record<string, unknown>,
  options: { env?: NodeJS.ProcessEnv; healthChecks?: boolean; logger?: Logger } = {},
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
  });
  return Object.assign(gateway, { sink });
}

/** Polls until the predicate holds, failing after the deadline. */
export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
