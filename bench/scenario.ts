/** What every bench run sends and how it configures the gateway, so that their figures compare. */

/** A chat request of about 1 KB, as `npm run bench` sends it; `slow` asks the mock for one chunk every 100 ms. */
export function requestBody(stream: boolean, slow = false): string {
  const document = {
    model: 'auto:chat',
    messages: [
      { role: 'system', content: 'You are a helpful assistant. Answer briefly.' },
      { role: 'user', content: '' },
    ],
    max_tokens: 64,
    temperature: 0.7,
    stream,
    ...(slow ? { bench_slow: true } : {}),
  };
  const size = Buffer.byteLength(JSON.stringify(document));
  document.messages[1]!.content = 'Summarise the following text. '.repeat(40).slice(0, Math.max(0, 1024 - size));
  return JSON.stringify(document);
}

/**
 * `eventsFlushMs`: the gateway's `events.flushMs`, left at its default when omitted. Under
 * valgrind a request takes about 50 times longer, so the bench of instructions stretches the
 * flush delay as much: otherwise jobs would carry a handful of events instead of the
 * `eventsPerJob` they carry at full speed, and the per-job cost would swamp the count.
 * `healthTimeoutMs`: `healthCheck.timeoutMs`, stretched likewise under valgrind, where a check at
 * the default timeout can time out and mark the mock down.
 *
 * `limited`: the same gateway with capacity on (docs/capacity.md): both candidates and their
 * providers with a `maxInFlight`, a line, and the key named with per-minute limits, all far above
 * what the bench sends, so that every request pays for its slots and its rate limits and none
 * is ever refused or made to wait.
 */
export function gatewayConfig(
  upstream: string,
  keyDigest: string,
  options: { eventsFlushMs?: number; healthTimeoutMs?: number; limited?: boolean } = {},
): string {
  const limited = options.limited === true;
  const inFlight = limited ? `\n    maxInFlight: 10000` : '';
  const candidate = (target: string) => (limited ? `{ target: ${target}, maxInFlight: 5000 }` : target);
  return `# written by npm run bench
providers:
  mock:
    baseUrl: ${upstream}
    type: openai
    # The many-streams run holds 2,000 upstream connections open at once.
    maxConnections: 4096${inFlight}
  mock-b:
    baseUrl: ${upstream}
    type: openai${inFlight}
virtualModels:
  auto:chat:
    strategy: priority
    candidates:
      - ${candidate('mock/bench-model')}
      - ${candidate('mock-b/bench-model')}${limited ? '\n    queue: { maxWaitMs: 30000, maxQueued: 1000 }' : ''}
auth:
  apiKeys:
    - ${limited ? `{ sha256: ${keyDigest}, name: bench, requestsPerMinute: 100000000, tokensPerMinute: 1000000000000 }` : keyDigest}
${options.eventsFlushMs === undefined ? '' : `events:\n  flushMs: ${options.eventsFlushMs}\n`}${
    options.healthTimeoutMs === undefined ? '' : `healthCheck:\n  timeoutMs: ${options.healthTimeoutMs}\n`
  }`;
}
