import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { EventBatcher } from '../src/dispatch-log/event-batcher.js';
import type { DispatchLogRepository } from '../src/dispatch-log/dispatch-log-repository.js';
import { writeBatch } from '../src/dispatch-log/write-batch.js';
import { dispatchEventSchema, type DispatchEvent } from '../src/events/dispatch-event.js';
import { dispatchJobBackoff } from '../src/events/dispatch-queue.js';
import type { DispatchLogMetrics } from '../src/metrics/registry.js';
import type { Logger } from '../src/shared/logger.js';

export interface DispatchLogConsumerOptions {
  redisUrl: string;
  queueName: string;
  repository: DispatchLogRepository;
  metrics: DispatchLogMetrics;
  logger: Logger;
  batchSize: number;
  batchMaxWaitMs: number;
  /** Job lock; a killed worker's jobs go back to the queue after about twice this. */
  lockDurationMs: number;
}

interface PendingJob {
  event: DispatchEvent;
  resolve: () => void;
  reject: (err: Error) => void;
}

const connectionErrorCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT']);

function isConnectionError(err: unknown): boolean {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
  return connectionErrorCodes.has(code) || code.startsWith('08') || code === '57P01' || code === '57P03';
}

/**
 * The BullMQ consumer of dispatch events: validate -> batch -> one insert -> complete.
 *
 * Each job's processor returns a promise that settles when the batch holding that job commits,
 * and the worker's concurrency is twice the batch size, so a full batch can fill while the
 * previous one is being inserted. We chose this over manual fetching (`getNextJob` +
 * `moveToCompleted`) because BullMQ then keeps doing what manual fetching would have us
 * re-implement: lock renewal while a batch waits, stalled-job recovery after a crash, retries with
 * backoff, the failed set, and a `close()` that waits for the jobs in hand. A job completes only
 * after its row is committed; a crash before that leaves it to the stalled check, and the
 * redelivery is skipped by `ON CONFLICT (id) DO NOTHING`.
 */
export class DispatchLogConsumer {
  readonly #options: DispatchLogConsumerOptions;
  readonly #connection: Redis;
  readonly #worker: Worker<unknown>;
  readonly #batcher: EventBatcher<PendingJob>;
  #closed: Promise<void> | undefined;

  constructor(options: DispatchLogConsumerOptions) {
    this.#options = options;
    const { logger, metrics } = options;
    this.#batcher = new EventBatcher<PendingJob>({
      maxSize: options.batchSize,
      maxWaitMs: options.batchMaxWaitMs,
      onBatch: (batch) => void this.#flush(batch),
    });
    // Workers need `maxRetriesPerRequest: null`: their blocking fetch must wait through reconnections.
    this.#connection = new Redis(options.redisUrl, { maxRetriesPerRequest: null });
    this.#connection.on('error', (err: Error) => logger.debug({ err: err.message }, 'worker: redis connection error'));
    this.#worker = new Worker(options.queueName, (job) => this.#process(job), {
      connection: this.#connection,
      concurrency: options.batchSize * 2,
      lockDuration: options.lockDurationMs,
      stalledInterval: options.lockDurationMs,
      // A job that was active in a worker killed several times in a row is suspect; it goes to the failed set.
      maxStalledCount: 3,
      settings: { backoffStrategy: (attemptsMade: number) => dispatchJobBackoff(attemptsMade) },
    });
    let lastErrorLog = 0;
    this.#worker.on('error', (err: Error) => {
      metrics.errors.labels('queue').inc();
      if (Date.now() - lastErrorLog > 5_000) logger.warn({ err: err.message }, 'worker: queue error');
      lastErrorLog = Date.now();
    });
    this.#worker.on('failed', (job: Job | undefined, err: Error) => {
      if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) logger.error({ jobId: job.id, err: err.message }, 'worker: job failed for good; kept in the failed set');
    });
  }

  /** Resolves once the worker is connected and fetching. */
  async waitUntilReady(): Promise<void> {
    await this.#worker.waitUntilReady();
  }

  /** Stops fetching, writes the batch in hand, waits for its jobs to complete, disconnects. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      const closing = this.#worker.close();
      // The jobs in hand wait for their batch: write it now rather than at the end of its age window.
      this.#batcher.flush();
      await closing;
      this.#batcher.flush();
      await this.#connection.quit().catch(() => this.#connection.disconnect());
    })();
    return this.#closed;
  }

  #process(job: Job<unknown>): Promise<void> {
    const parsed = dispatchEventSchema.safeParse(job.data);
    if (!parsed.success) {
      this.#options.metrics.invalid.inc();
      this.#options.logger.warn({ jobId: job.id, issues: parsed.error.issues.slice(0, 3) }, 'worker: invalid dispatch event rejected');
      return Promise.reject(new UnrecoverableError(`invalid dispatch event: ${parsed.error.issues[0]?.message ?? 'schema mismatch'}`));
    }
    return new Promise<void>((resolve, reject) => this.#batcher.add({ event: parsed.data, resolve, reject }));
  }

  async #flush(batch: PendingJob[]): Promise<void> {
    const { logger, metrics, repository } = this.#options;
    const events = batch.map((pending) => pending.event);
    const started = performance.now();
    try {
      const result = await writeBatch(repository, events);
      metrics.insertSeconds.observe((performance.now() - started) / 1000);
      metrics.batches.labels('ok').inc();
      metrics.batchSize.observe(batch.length);
      metrics.inserted.inc(result.inserted);
      const refused = new Map(result.rejected.map(({ index, error }) => [index, error]));
      const now = Date.now();
      batch.forEach((pending, index) => {
        const error = refused.get(index);
        if (error === undefined) {
          metrics.lag.observe((now - Date.parse(pending.event.created_at)) / 1000);
          pending.resolve();
          return;
        }
        metrics.invalid.inc();
        const message = error instanceof Error ? error.message : String(error);
        logger.warn({ eventId: pending.event.id, err: message }, 'worker: dispatch event refused by the database');
        pending.reject(new UnrecoverableError(`refused by the database: ${message}`));
      });
    } catch (err: unknown) {
      metrics.batches.labels('error').inc();
      metrics.errors.labels(isConnectionError(err) ? 'connection' : 'insert').inc();
      logger.warn({ err: err instanceof Error ? err.message : String(err), events: batch.length }, 'worker: batch insert failed; jobs will be retried');
      const failure = err instanceof Error ? err : new Error(String(err));
      for (const pending of batch) pending.reject(failure);
    }
  }
}
