import { Pool } from 'undici';
import { cpuMicros, memory } from './proc-stats.js';
import { errorMessage } from '../src/shared/error-message.js';

export interface ManyStreamsOptions {
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly streams: number;
  /** Streams are opened in batches of this many ... */
  readonly batch: number;
  /** ... this many ms apart, so that no listen backlog overflows. */
  readonly batchIntervalMs: number;
  /** The forwarder whose memory is sampled; undefined for the direct run. */
  readonly pid: number | undefined;
  readonly timeoutMs: number;
}

export interface ManyStreamsResult {
  readonly streams: number;
  readonly completed: number;
  readonly failed: number;
  /** Why the first failed stream failed, when one did. */
  readonly firstError: string | null;
  /** Most streams open at once (first byte seen, end not yet). */
  readonly peakOpen: number;
  readonly ttfbP50Ms: number;
  readonly ttfbP99Ms: number;
  readonly rssBeforeBytes: number | null;
  /** Highest RSS sampled (every 100 ms) while streams were open. */
  readonly rssPeakBytes: number | null;
  /** Highest RSS sampled while every stream was open at once; null when they never all were. */
  readonly rssAllOpenBytes: number | null;
  /** (RSS with every stream open − RSS before) ÷ streams; null when they were never all open. */
  readonly rssPerOpenStreamBytes: number | null;
  /** Seconds from the first stream sent to the last one's first byte. */
  readonly openingSeconds: number;
  readonly cpuMicrosPerStream: number | null;
}

function percentile(values: number[], p: number): number {
  const sorted = Float64Array.from(values).sort();
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Opens `streams` slow SSE streams through one target, `batch` every `batchIntervalMs`, and
 * holds them to their end (each outlasts the opening of all): time to first byte of each, and
 * the target's resident memory sampled while every one of them is open at once.
 */
export async function measureManyStreams(options: ManyStreamsOptions): Promise<ManyStreamsResult> {
  const origin = new URL(options.url);
  const pool = new Pool(origin.origin, { connections: options.streams, headersTimeout: options.timeoutMs, bodyTimeout: options.timeoutMs });
  const ttfb: number[] = [];
  let open = 0;
  let peakOpen = 0;
  let completed = 0;
  let failed = 0;
  let firstError: string | null = null;
  const fail = (why: string) => {
    failed++;
    firstError ??= why;
  };
  const before = options.pid === undefined ? undefined : memory(options.pid);
  const cpuBefore = options.pid === undefined ? 0 : cpuMicros(options.pid);
  let rssPeak = before?.rss ?? 0;
  let rssAllOpen: number | null = null;
  const startedAt = performance.now();
  let allOpenAt = NaN;
  const sampler =
    options.pid === undefined
      ? undefined
      : setInterval(() => {
          const { rss } = memory(options.pid!);
          rssPeak = Math.max(rssPeak, rss);
          if (open === options.streams) rssAllOpen = Math.max(rssAllOpen ?? 0, rss);
        }, 100);

  const one = async () => {
    const sentAt = performance.now();
    let first = true;
    try {
      const { statusCode, body } = await pool.request({
        path: origin.pathname,
        method: 'POST',
        headers: options.headers,
        body: options.body,
        signal: AbortSignal.timeout(options.timeoutMs),
      });
      for await (const chunk of body) {
        if (first && (chunk as Buffer).length > 0) {
          first = false;
          ttfb.push(performance.now() - sentAt);
          peakOpen = Math.max(peakOpen, ++open);
          if (open === options.streams) allOpenAt = performance.now();
        }
      }
      if (statusCode === 200 && !first) completed++;
      else fail(`status ${statusCode}, ${first ? 'no body' : 'body'}`);
    } catch (err: unknown) {
      fail(errorMessage(err));
    } finally {
      if (!first) open--;
    }
  };

  const running: Promise<void>[] = [];
  for (let started = 0; started < options.streams; started += options.batch) {
    for (let i = started; i < Math.min(options.streams, started + options.batch); i++) running.push(one());
    await new Promise((resolve) => setTimeout(resolve, options.batchIntervalMs));
  }
  await Promise.all(running);
  clearInterval(sampler);
  await pool.close();
  const cpu = options.pid === undefined ? null : (cpuMicros(options.pid) - cpuBefore) / options.streams;
  return {
    streams: options.streams,
    completed,
    failed,
    firstError,
    peakOpen,
    ttfbP50Ms: percentile(ttfb, 50),
    ttfbP99Ms: percentile(ttfb, 99),
    rssBeforeBytes: before?.rss ?? null,
    rssPeakBytes: before ? rssPeak : null,
    rssAllOpenBytes: rssAllOpen,
    rssPerOpenStreamBytes: before && rssAllOpen !== null ? (rssAllOpen - before.rss) / options.streams : null,
    openingSeconds: Number.isFinite(allOpenAt) ? (allOpenAt - startedAt) / 1000 : NaN,
    cpuMicrosPerStream: cpu,
  };
}
