import { Pool } from 'undici';
import { memory } from './proc-stats.js';

export interface StartUpResult {
  /** From the spawn to the "listening" log line, ms. */
  readonly listenMs: number;
  /** `/healthz` asked one at a time, 10 ms apart, from "listening" on. */
  readonly healthChecks: number;
  readonly healthzWorstMs: number;
  /** When the worst one was sent, ms after "listening" was seen. */
  readonly healthzWorstAtMs: number;
  readonly healthzP99Ms: number;
  /** RSS at the end of the idle window. */
  readonly rssIdleBytes: number;
  /** Highest RSS since the spawn (the kernel's VmHWM), read at the end of the idle window. */
  readonly peakRssBytes: number;
}

/**
 * Asks `/healthz` of a gateway that just logged "listening", one request at a time (the next 10 ms
 * after an answer), for `seconds`, with no other traffic; then reads its memory. A store that
 * opens on the gateway's event loop shows here as a stalled health check.
 */
export async function measureIdleStart(url: string, pid: number, listenMs: number, seconds: number): Promise<StartUpResult> {
  const pool = new Pool(url, { connections: 1 });
  const latencies: number[] = [];
  const begun = performance.now();
  const end = begun + seconds * 1000;
  let worst = { ms: -1, at: NaN };
  try {
    while (performance.now() < end) {
      const started = performance.now();
      const answer = await pool.request({ path: '/healthz', method: 'GET' });
      await answer.body.dump();
      const ms = performance.now() - started;
      latencies.push(ms);
      if (ms > worst.ms) worst = { ms, at: started - begun };
      if (answer.statusCode !== 200) throw new Error(`/healthz answered ${answer.statusCode}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  } finally {
    await pool.close();
  }
  const sorted = [...latencies].sort((a, b) => a - b);
  const { rss, peakRss } = memory(pid);
  return {
    listenMs,
    healthChecks: latencies.length,
    healthzWorstMs: sorted[sorted.length - 1] ?? NaN,
    healthzWorstAtMs: worst.at,
    healthzP99Ms: sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? NaN,
    rssIdleBytes: rss,
    peakRssBytes: peakRss,
  };
}

export interface RowsVisibleResult {
  readonly dispatches: number;
  /** From the last response to `count` more rows committed, ms. */
  readonly visibleAfterMs: number;
}

/**
 * Sends `count` requests (10 at a time) and measures how long after the last response their rows
 * are committed, as `countRows` sees it (polled every 20 ms).
 */
export async function measureRowsVisible(options: {
  url: string;
  headers: Record<string, string>;
  body: string;
  count: number;
  countRows: () => Promise<number>;
  timeoutMs: number;
}): Promise<RowsVisibleResult> {
  const before = await options.countRows();
  const pool = new Pool(options.url, { connections: 10 });
  let sent = 0;
  const client = async () => {
    while (sent < options.count) {
      sent++;
      const answer = await pool.request({ path: '/v1/chat/completions', method: 'POST', headers: options.headers, body: options.body });
      await answer.body.dump();
      if (answer.statusCode !== 200) throw new Error(`a dispatch answered ${answer.statusCode}`);
    }
  };
  try {
    await Promise.all(Array.from({ length: 10 }, client));
  } finally {
    await pool.close();
  }
  const lastResponse = performance.now();
  const deadline = lastResponse + options.timeoutMs;
  for (;;) {
    if ((await options.countRows()) - before >= options.count) return { dispatches: options.count, visibleAfterMs: performance.now() - lastResponse };
    if (performance.now() > deadline) throw new Error(`${options.count} rows not committed within ${options.timeoutMs} ms of the last response`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
