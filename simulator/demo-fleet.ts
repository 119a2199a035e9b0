/**
 * The demo's simulated fleet: two llama-swap hosts (gpu-b flaky: ~30% of dispatches fail before
 * the first byte, the rest are slow) and one OpenAI-compatible server. `npm run demo` starts it
 * beside a gateway; run on its own (`node dist/simulator/demo-fleet.js`) it is the compose
 * stack's `fleet` service, listening on FLEET_HOST (default 127.0.0.1) until SIGTERM.
 */
import { pathToFileURL } from 'node:url';
import { startFakeProvider, type FakeProvider, type FakeProviderOptions, type Reply } from './fake-provider.js';

/** ~30% failures before the first byte, slow streams otherwise. */
function flakyReply(request: { body: unknown }): Reply {
  const roll = Math.random();
  if (roll < 0.12) return { kind: 'status', status: 500 };
  if (roll < 0.21) return { kind: 'reset' };
  if (roll < 0.3) return { kind: 'closeBeforeFirstChunk' };
  const stream = (request.body as { stream?: unknown } | undefined)?.stream === true;
  if (!stream) return { kind: 'ok', delayMs: 400, content: 'gpu-b took its time, but here is the answer.' };
  // A GPU that runs out of memory mid-answer now and then: the gateway resumes the stream elsewhere.
  if (roll < 0.5) return { kind: 'stream', chunks: 12, firstChunkDelayMs: 300, chunkDelayMs: 150, breakAfter: 4 + Math.floor(Math.random() * 6) };
  return { kind: 'stream', chunks: 12, firstChunkDelayMs: 300, chunkDelayMs: 150 };
}

const fleetSpecs: Record<string, FakeProviderOptions & { port: number }> = {
  'gpu-a': {
    type: 'llama-swap',
    port: 18081,
    models: ['qwen2.5-7b-instruct', 'llama-3.2-3b-instruct'],
    loaded: ['qwen2.5-7b-instruct'],
    swapDelayMs: 800,
    contextSize: { 'qwen2.5-7b-instruct': 32768, 'llama-3.2-3b-instruct': 8192 },
  },
  'gpu-b': {
    type: 'llama-swap',
    port: 18082,
    models: ['qwen2.5-7b-instruct'],
    loaded: ['qwen2.5-7b-instruct'],
    contextSize: { 'qwen2.5-7b-instruct': 16384 },
    pickReply: flakyReply,
  },
  cloud: { type: 'openai', port: 18083, models: ['gpt-4o-mini'], contextSize: { 'gpt-4o-mini': 128000 } },
};

/** The fixed port when it is free, else any free one. */
async function startOnPreferredPort(name: string, spec: FakeProviderOptions & { port: number }): Promise<FakeProvider> {
  try {
    return await startFakeProvider({ name, ...spec });
  } catch (err: unknown) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    return startFakeProvider({ name, ...spec, port: 0 });
  }
}

/** Starts every host of the demo fleet, on its fixed port when free. */
export async function startDemoFleet(host = '127.0.0.1'): Promise<Record<string, FakeProvider>> {
  const fleet: Record<string, FakeProvider> = {};
  for (const [name, spec] of Object.entries(fleetSpecs)) fleet[name] = await startOnPreferredPort(name, { ...spec, host });
  return fleet;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const fleet = await startDemoFleet(process.env['FLEET_HOST'] ?? '127.0.0.1');
  for (const [name, provider] of Object.entries(fleet)) process.stdout.write(`fleet: ${name} on port ${provider.port}\n`);
  const stop = () => void Promise.all(Object.values(fleet).map((provider) => provider.close())).then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
