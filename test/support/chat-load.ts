import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';

export interface ChatLoadResult {
  /** Requests answered 200. */
  readonly ok: number;
  /** Requests answered otherwise, or whose connection failed (a killed gateway). */
  readonly failed: number;
  /** `performance.now()` when the last 200 arrived (0 when none did). */
  readonly lastOkAt: number;
  /** The `x-request-id` of each 200: the requests whose dispatch must have a row. */
  readonly okRequestIds: string[];
}

export interface ChatLoadOptions {
  /** Gateway base URL (127.0.0.1 only: a load test). */
  url: string;
  model: string;
  total: number;
  /** Requests in flight at once. */
  concurrency: number;
  /** Upper bound of the request rate, per second; unbounded when unset. */
  perSecond?: number;
  /** Stops sending new requests when aborted; the ones in flight finish. */
  signal?: AbortSignal;
}

/**
 * Sends `total` non-streamed chat completions to the gateway, `concurrency` at a time and at most
 * `perSecond`, and counts the answers: the client's view of which dispatches were served.
 */
export async function runChatLoad(options: ChatLoadOptions): Promise<ChatLoadResult> {
  const pool = new Pool(options.url, { connections: options.concurrency });
  const body = JSON.stringify({ model: options.model, messages: [{ role: 'user', content: 'hi' }] });
  const startedAt = performance.now();
  let next = 0;
  let ok = 0;
  let failed = 0;
  let lastOkAt = 0;
  const okRequestIds: string[] = [];
  const lane = async () => {
    for (;;) {
      if (options.signal?.aborted || next >= options.total) return;
      const index = next++;
      if (options.perSecond) {
        const due = startedAt + (index * 1000) / options.perSecond;
        if (due > performance.now()) await sleep(due - performance.now());
      }
      try {
        const response = await pool.request({ path: '/v1/chat/completions', method: 'POST', headers: { 'content-type': 'application/json' }, body });
        await response.body.text();
        if (response.statusCode === 200) {
          ok++;
          lastOkAt = performance.now();
          okRequestIds.push(String(response.headers['x-request-id']));
        } else {
          failed++;
        }
      } catch {
        // A refused or cut connection: the request was not served (counted, not retried).
        failed++;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: options.concurrency }, lane));
  } finally {
    await pool.destroy();
  }
  return { ok, failed, lastOkAt, okRequestIds };
}
