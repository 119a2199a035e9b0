import { setTimeout as sleep } from 'node:timers/promises';
import { dispatchEventSchema, type DispatchEvent } from '../events/dispatch-event.js';
import type { DispatchLogMetrics } from '../metrics/registry.js';
import type { Logger } from '../shared/logger.js';
import { EventBatcher } from './event-batcher.js';
import type { BatchWriteResult } from './write-batch.js';
import { recordFailedBatch, recordWrittenBatch } from './batch-outcome.js';

export interface DispatchLogWriterOptions {
  /**
   * Writes one batch: `writeBatch` over a repository, or the embedded store's thread. Events it
   * reports rejected are counted as invalid and logged; a throw is retried with backoff.
   */
  write: (events: readonly DispatchEvent[]) => Promise<BatchWriteResult>;
  /**
   * Whether `push` checks each event against the schema unless told otherwise (default true). Off
   * in embedded mode: there the events are this process's own, typed by the compiler, and the
   * COPY's input functions refuse what a column cannot hold; the events that come back from the
   * spool on disk are checked as they are pushed (`push(event, true)`). Under load
   * the check cost about 75 µs of CPU a request (embedded mode, 6 s at 50 connections).
   */
  validate?: boolean;
  metrics: DispatchLogMetrics;
  logger: Logger;
  batchSize: number;
  batchMaxWaitMs: number;
  /** Events held in memory (open batch plus batches waiting); beyond it `push` refuses. */
  maxBuffered: number;
  /** Runs before the first insert (migrations), retried with the same backoff as inserts. */
  prepare?: () => Promise<void>;
  /**
   * Upkeep of the store (the daily partitions and their retention), due every `everyMs` from the
   * writer's start and run after a batch is written: when that batch left nothing waiting (the
   * first upkeep of an embedded store takes it about a second, which the rows of a burst should not
   * wait for), or anyway once it is an interval late. It runs only while rows come in, so it never
   * opens an embedded store that has closed for want of them. `run` reports its own failures.
   */
  upkeep?: { run: () => Promise<void>; everyMs: number };
  /** Backoff after a failed insert: doubles from `minRetryMs` up to `maxRetryMs`. */
  minRetryMs?: number;
  maxRetryMs?: number;
}

/**
 * The batch writer inside the gateway (embedded mode: no Redis). Events wait in memory, are
 * batched by size and age, and written one statement per batch; a failed insert is retried with
 * backoff and keeps its events, in order. Not crash-safe by itself: what is in memory when the
 * process dies is lost; `close()` hands back what it could not write so the caller can spool it.
 */
export class DispatchLogWriter {
  readonly #options: DispatchLogWriterOptions;
  readonly #batcher: EventBatcher<DispatchEvent>;
  readonly #ready: DispatchEvent[][] = [];
  #readyCount = 0;
  #prepared = false;
  /** When the last upkeep ran; the first is due at the start. */
  #upkeepAt: number;
  #healthy = true;
  #closing = false;
  #stopped = false;
  #draining: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  constructor(options: DispatchLogWriterOptions) {
    this.#options = options;
    this.#upkeepAt = performance.now() - (options.upkeep?.everyMs ?? 0);
    this.#batcher = new EventBatcher({
      maxSize: options.batchSize,
      maxWaitMs: options.batchMaxWaitMs,
      onBatch: (batch) => {
        this.#ready.push(batch);
        this.#readyCount += batch.length;
        this.#kick();
      },
    });
  }

  /** Events accepted and not yet committed. */
  get buffered(): number {
    return this.#batcher.size + this.#readyCount;
  }

  /** The bound of `buffered`, beyond which `push` refuses. */
  get maxBuffered(): number {
    return this.#options.maxBuffered;
  }

  /** False while the store is failing (inserts or preparation are being retried). */
  get healthy(): boolean {
    return this.#healthy;
  }

  /**
   * Queues an event; never blocks, never throws. `validate` overrides the writer's option for
   * this event (events read back from disk are checked whatever the option): a plain argument, as
   * this runs once a request.
   * @returns `'accepted'`, `'invalid'` (schema validation failed: counted, logged) or `'full'`
   *   (memory bound reached or closing: the caller decides where it goes).
   */
  push(event: DispatchEvent, validate = this.#options.validate !== false): 'accepted' | 'invalid' | 'full' {
    if (this.#closing || this.buffered >= this.#options.maxBuffered) return 'full';
    if (!validate) {
      this.#batcher.add(event);
    } else {
      const parsed = dispatchEventSchema.safeParse(event);
      if (!parsed.success) {
        this.#options.metrics.invalid.inc();
        this.#options.logger.warn({ eventId: (event as { id?: unknown }).id, issues: parsed.error.issues.slice(0, 3) }, 'invalid dispatch event rejected');
        return 'invalid';
      }
      this.#batcher.add(parsed.data);
    }
    // The store may take a second to open (embedded mode): start that with the first event, not its batch.
    if (!this.#prepared) this.#kick();
    return 'accepted';
  }

  /**
   * Writes what is buffered, waiting at most `timeoutMs`, then stops.
   * @returns the events that could not be written in time (oldest first). Idempotent.
   */
  async close(timeoutMs = 5_000): Promise<DispatchEvent[]> {
    if (!this.#closing) {
      this.#closing = true;
      this.#batcher.flush();
    }
    // A store that is failing gets no grace period: what is left goes back to the caller at once.
    // A healthy one finishes what it does (a batch, or the upkeep after one) before its store closes.
    if (!this.#stopped && this.#healthy && (this.#ready.length > 0 || this.#draining)) {
      this.#kick();
      await Promise.race([this.#draining, sleep(timeoutMs, undefined, { ref: false })]);
    }
    this.#stopped = true;
    this.#wake?.();
    const left = this.#ready.splice(0).flat();
    this.#readyCount = 0;
    return left;
  }

  #kick(): void {
    if (this.#wake) {
      this.#wake();
      return;
    }
    this.#draining ??= this.#drain().finally(() => {
      this.#draining = undefined;
    });
  }

  async #drain(): Promise<void> {
    const { logger, metrics, write } = this.#options;
    let delayMs = this.#options.minRetryMs ?? 100;
    while (!this.#stopped && (this.#ready.length > 0 || !this.#prepared)) {
      try {
        if (!this.#prepared) {
          await this.#options.prepare?.();
          this.#prepared = true;
          continue;
        }
        const batch = this.#ready[0]!;
        const started = performance.now();
        const result = await write(batch);
        const seconds = (performance.now() - started) / 1000;
        if (this.#ready[0] === batch) {
          this.#ready.shift();
          this.#readyCount -= batch.length;
        }
        recordWrittenBatch(metrics, logger, batch, result, seconds);
        if (!this.#healthy) logger.info('dispatch log store is writable again');
        this.#healthy = true;
        delayMs = this.#options.minRetryMs ?? 100;
        const { upkeep } = this.#options;
        const sinceUpkeep = performance.now() - this.#upkeepAt;
        if (upkeep && sinceUpkeep >= upkeep.everyMs && (this.buffered === 0 || sinceUpkeep >= 2 * upkeep.everyMs)) {
          this.#upkeepAt = performance.now();
          await upkeep.run();
        }
      } catch (err: unknown) {
        recordFailedBatch(metrics, err, this.#prepared);
        if (this.#healthy) logger.error({ err, buffered: this.buffered }, 'dispatch log write failed; retrying with backoff');
        this.#healthy = false;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delayMs);
          // close() wakes the loop so shutdown does not wait out a long backoff.
          this.#wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.#wake = undefined;
        delayMs = Math.min(delayMs * 2, this.#options.maxRetryMs ?? 5_000);
      }
    }
  }
}
