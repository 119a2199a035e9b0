import { setTimeout as sleep } from 'node:timers/promises';

export interface TrafficOptions {
  /** Gateway or load balancer base URL, without `/v1`. */
  readonly baseUrl: string;
  /** Requested models, cycled in order; names containing "embed" go to `/v1/embeddings`. */
  readonly models: readonly string[];
  readonly ratePerSecond: number;
  /** Stops after this long; runs until `signal` aborts when absent. */
  readonly durationMs?: number;
  /** Every n-th chat request streams, n = round(1 / streamShare); 0 never streams. */
  readonly streamShare?: number;
  /** Requests still waiting for an answer beyond this are not started (the generator stays bounded). */
  readonly maxInFlight?: number;
  readonly apiKey?: string;
  readonly signal?: AbortSignal;
  readonly onResult?: (result: TrafficResult) => void;
}

export interface TrafficResult {
  readonly model: string;
  readonly stream: boolean;
  /** HTTP status, or 0 when the request did not get an answer (connection refused, reset). */
  readonly status: number;
  /** `x-boo-attempts`: upstream requests the gateway sent. */
  readonly attempts: number | null;
  readonly candidate: string | null;
  readonly ms: number;
  readonly error: string | null;
}

export interface TrafficSummary {
  sent: number;
  skipped: number;
  byStatus: Record<string, number>;
  /** Answers whose `x-boo-attempts` was above 1. */
  failovers: number;
}

async function sendOne(options: TrafficOptions, model: string, stream: boolean): Promise<TrafficResult> {
  const embedding = model.includes('embed');
  const url = `${options.baseUrl}/v1/${embedding ? 'embeddings' : 'chat/completions'}`;
  const body = embedding
    ? { model, input: 'boo traffic generator' }
    : { model, stream, max_tokens: 16, messages: [{ role: 'user', content: 'Say hello from the traffic generator.' }] };
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-boo-source': 'traffic-generator' };
  if (options.apiKey) headers['authorization'] = `Bearer ${options.apiKey}`;
  const started = performance.now();
  try {
    const response = await fetch(url, { method: 'POST', headers, body: JSON.stringify(body), ...(options.signal ? { signal: options.signal } : {}) });
    // Read to the end: a stream only counts once the gateway has finished relaying it.
    await response.arrayBuffer();
    const attempts = response.headers.get('x-boo-attempts');
    return {
      model,
      stream,
      status: response.status,
      attempts: attempts === null ? null : Number(attempts),
      candidate: response.headers.get('x-boo-candidate'),
      ms: performance.now() - started,
      error: null,
    };
  } catch (err: unknown) {
    const message = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    return { model, stream, status: 0, attempts: null, candidate: null, ms: performance.now() - started, error: message };
  }
}

/**
 * Open-loop traffic against an OpenAI-compatible endpoint: starts requests at a fixed rate
 * whatever the answers' latency (as real clients do), up to `maxInFlight` outstanding.
 * Resolves when the duration ends or `signal` aborts, after the requests in flight settle.
 */
export async function generateTraffic(options: TrafficOptions): Promise<TrafficSummary> {
  if (options.models.length === 0) throw new Error('generateTraffic needs at least one model');
  if (!(options.ratePerSecond > 0)) throw new Error('generateTraffic needs a positive ratePerSecond');
  const summary: TrafficSummary = { sent: 0, skipped: 0, byStatus: {}, failovers: 0 };
  const maxInFlight = options.maxInFlight ?? 64;
  const streamEvery = options.streamShare ? Math.max(1, Math.round(1 / options.streamShare)) : 0;
  const interval = 1000 / options.ratePerSecond;
  const start = performance.now();
  const inFlight = new Set<Promise<void>>();
  for (let index = 0; ; index += 1) {
    if (options.signal?.aborted) break;
    const due = start + index * interval;
    if (options.durationMs !== undefined && due - start >= options.durationMs) break;
    const wait = due - performance.now();
    if (wait > 0) {
      try {
        await sleep(wait, undefined, options.signal ? { signal: options.signal } : {});
      } catch {
        break; // aborted while waiting: stop starting requests
      }
    }
    if (inFlight.size >= maxInFlight) {
      summary.skipped += 1;
      continue;
    }
    const model = options.models[index % options.models.length]!;
    const stream = streamEvery > 0 && index % streamEvery === 0 && !model.includes('embed');
    summary.sent += 1;
    const request = sendOne(options, model, stream).then((result) => {
      const key = result.status === 0 ? 'no_answer' : String(result.status);
      summary.byStatus[key] = (summary.byStatus[key] ?? 0) + 1;
      if (result.attempts !== null && result.attempts > 1) summary.failovers += 1;
      options.onResult?.(result);
    });
    inFlight.add(request);
    void request.finally(() => inFlight.delete(request));
  }
  await Promise.all(inFlight);
  return summary;
}
