import autocannon from 'autocannon';
import { cpuMicros } from './proc-stats.js';

export interface LoadOptions {
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly connections: number;
  readonly warmupSeconds: number;
  readonly seconds: number;
  /** Processes whose CPU time is read around the measured window. */
  readonly pids: readonly number[];
  /**
   * Awaited after the warm-up (before CPU is first read) and after the load (before it is read
   * again): the work the measured requests left behind counts, and only theirs.
   */
  readonly settle?: () => Promise<void>;
}

export interface LoadResult {
  readonly requests: number;
  readonly errors: number;
  readonly non2xx: number;
  readonly rps: number;
  /** Whole response, ms, from hrtime per request (autocannon's own histogram rounds to 1 ms). */
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Request written to first body byte, ms. */
  readonly ttfbP50Ms: number;
  readonly ttfbP99Ms: number;
  /** CPU µs per completed request of each pid in `pids`. */
  readonly cpuMicrosPerRequest: readonly number[];
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface Samples {
  latency: number[];
  ttfb: number[];
  statuses: number;
}

function run(options: LoadOptions, seconds: number, samples: Samples | undefined): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: options.url,
        method: 'POST',
        headers: options.headers,
        body: options.body,
        connections: options.connections,
        pipelining: 1,
        duration: seconds,
        // autocannon stops at its first sample tick after the duration: at the default 1 s ticks a
        // 0.25 s warm-up ran 1 s and a 1.33 s round 2 s (measured), which made the bench slower and
        // its rounds longer than intended.
        sampleInt: 100,
        timeout: 20,
        setupClient: (client) => {
          if (!samples) return;
          let sentAt = 0;
          let first = true;
          client.on('request', () => {
            sentAt = performance.now();
            first = true;
          });
          client.on('body', () => {
            if (!first) return;
            first = false;
            samples.ttfb.push(performance.now() - sentAt);
          });
        },
      },
      (err, result) => (err ? reject(err) : resolve(result)),
    );
    if (samples) {
      instance.on('response', (_client, status, _bytes, ms) => {
        samples.latency.push(ms);
        if (status < 200 || status > 299) samples.statuses++;
      });
    }
  });
}

/**
 * Drives a target for `seconds` and measures nothing: a process's JIT compilers (V8's for
 * JavaScript, and for WebAssembly, such as the embedded store's PGlite) reach their steady state.
 */
export async function warmUp(options: Omit<LoadOptions, 'warmupSeconds' | 'seconds' | 'pids'>, seconds: number): Promise<void> {
  await run({ ...options, warmupSeconds: 0, seconds, pids: [] }, seconds, undefined);
  await options.settle?.();
}

/**
 * Warms the target up, then drives it with autocannon for `seconds` at `connections`, one request
 * in flight per connection, and reads the servers' CPU time around the measured window (and the
 * `settle` that follows it) only.
 */
export async function measureLoad(options: LoadOptions): Promise<LoadResult> {
  if (options.warmupSeconds > 0) {
    await run(options, options.warmupSeconds, undefined);
    // The warm-up's own leftovers (events still on their way) must not land in the window.
    await options.settle?.();
  }
  const samples: Samples = { latency: [], ttfb: [], statuses: 0 };
  const cpuBefore = options.pids.map(cpuMicros);
  const startedAt = performance.now();
  const result = await run(options, options.seconds, samples);
  const elapsed = (performance.now() - startedAt) / 1000;
  await options.settle?.();
  const cpuAfter = options.pids.map(cpuMicros);
  const latency = Float64Array.from(samples.latency).sort();
  const ttfb = Float64Array.from(samples.ttfb).sort();
  const requests = samples.latency.length;
  return {
    requests,
    errors: result.errors + result.timeouts,
    non2xx: samples.statuses,
    rps: requests / elapsed,
    p50Ms: percentile(latency, 50),
    p99Ms: percentile(latency, 99),
    ttfbP50Ms: percentile(ttfb, 50),
    ttfbP99Ms: percentile(ttfb, 99),
    cpuMicrosPerRequest: options.pids.map((_, i) => (cpuAfter[i]! - cpuBefore[i]!) / Math.max(1, requests)),
  };
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * One result of several rounds of the same load: counts summed, rates averaged, latency
 * percentiles as the median of the rounds' own, CPU per request over all rounds' requests.
 */
export function combineRounds(rounds: readonly LoadResult[]): LoadResult {
  const requests = rounds.reduce((sum, round) => sum + round.requests, 0);
  const cpuOf = (pid: number) => rounds.reduce((sum, round) => sum + round.cpuMicrosPerRequest[pid]! * round.requests, 0) / Math.max(1, requests);
  return {
    requests,
    errors: rounds.reduce((sum, round) => sum + round.errors, 0),
    non2xx: rounds.reduce((sum, round) => sum + round.non2xx, 0),
    rps: rounds.reduce((sum, round) => sum + round.rps, 0) / rounds.length,
    p50Ms: median(rounds.map((round) => round.p50Ms)),
    p99Ms: median(rounds.map((round) => round.p99Ms)),
    ttfbP50Ms: median(rounds.map((round) => round.ttfbP50Ms)),
    ttfbP99Ms: median(rounds.map((round) => round.ttfbP99Ms)),
    cpuMicrosPerRequest: rounds[0]!.cpuMicrosPerRequest.map((_, pid) => cpuOf(pid)),
  };
}

/**
 * A figure that compares two targets measured in the same round (a CPU ratio, a latency
 * difference), round by round. On a shared VM whose speed drifts from one minute to the next,
 * pairing by round cancels the drift that comparing two whole runs would keep.
 */
export function perRound(rounds: readonly LoadResult[], baseRounds: readonly LoadResult[], compare: (round: LoadResult, base: LoadResult) => number): number[] {
  return rounds.map((round, index) => (baseRounds[index] ? compare(round, baseRounds[index]) : NaN)).filter(Number.isFinite);
}
