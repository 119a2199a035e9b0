import { setTimeout as sleep } from 'node:timers/promises';
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import { EventBatcher } from '../src/dispatch-log/event-batcher.js';
import type { DispatchLogRepository } from '../src/dispatch-log/dispatch-log-repository.js';
import { recordFailedBatch, recordWrittenBatch, writeErrorKind } from '../src/dispatch-log/batch-outcome.js';
import { writeBatch } from '../src/dispatch-log/write-batch.js';
import { errorMessage } from '../src/shared/error-message.js';
import { dispatchEventSchema, type DispatchEvent } from '../src/events/dispatch-event.js';
import { connectQueueRedis, queuePrefix, type QueueRedis } from '../src/events/queue-connection.js';
import { dispatchJobBackoff, dispatchJobDataSchema, eventsOfJobData } from '../src/events/dispatch-queue.js';
import type { DispatchLogMetrics } from '../src/metrics/registry.js';
import type { Logger } from '../src/shared/logger.js';

/** The consumer's settings; its Redis (one server or a cluster) comes beside them, as a `QueueRedis`. */
export interface DispatchLogConsumerOptions {
  queueName: string;
  repository: DispatchLogRepository;
  metrics: DispatchLogMetrics;
  logger: Logger;
  /** Events per insert statement (a batch gathers events across jobs). */
  batchSize: number;
  batchMaxWaitMs: number;
  /** Events the producer packs into one job (`events.eventsPerJob`): sizes the worker's concurrency. */
  eventsPerJob: number;
  /**
   * Job lock. BullMQ renews it every half of this while the job is in hand, however long its batch
   * takes; a killed worker's jobs go back to the queue at the first stalled check after it expires.
   */
  lockDurationMs: number;
}

/**
 * How often every worker looks for jobs whose lock expired (a killed worker's): with the lock
 * they bound the recovery, lock + this (7 s at the 5 s default). A check is one short Lua script,
 * so 2 s costs Redis nothing worth counting.
 */
const stalledIntervalMaxMs = 2_000;

/**
 * Pause between attempts to write a batch while the database is unreachable. The batch and its
 * jobs stay in hand (locks renewed) rather than going through the job's backoff, which had grown
 * to many seconds by the time a long outage ended: rows resume within this of Postgres's return.
 */
const databaseRetryMs = 500;

/** A job in hand: it completes when its last event is committed, fails when any of its batches fails. */
interface PendingJob {
  remaining: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface PendingEvent {
  event: DispatchEvent;
  job: PendingJob;
}

/**
 * The BullMQ consumer of dispatch events: validate each event -> batch across jobs -> one insert
 * -> complete.
 *
 * A job carries a chunk of events (`dispatchJobs`). Its processor returns a promise that settles
 * when the batches holding all its events have committed, and the worker takes enough jobs at
 * once to hold two batches, so a full batch can fill while the previous one is being inserted. We chose this over manual fetching (`getNextJob` +
 * `moveToCompleted`) because BullMQ then keeps doing what manual fetching would have us
 * re-implement: lock renewal while a batch waits, stalled-job recovery after a crash, retries with
 * backoff, the failed set, and a `close()` that waits for the jobs in hand. A job completes only
 * after its rows are committed; a crash or a failed batch before that redelivers the whole job,
 * and the rows already written are skipped by `ON CONFLICT (id, created_at) DO NOTHING`. A batch
 * that fails because the database is unreachable is not failed: it is retried in place every
 * 500 ms with its jobs in hand (their locks renewed) until the database is back or the worker
 * closes; any other failure goes through the job's retries and backoff.
 */
export class DispatchLogConsumer {
  readonly #options: DispatchLogConsumerOptions;
  readonly #connection: Redis | Cluster;
  readonly #worker: Worker<unknown>;
  readonly #batcher: EventBatcher<PendingEvent>;
  readonly #concurrency: number;
  /** Jobs whose processor has not settled yet. */
  #jobsInHand = 0;
  #databaseDown = false;
  #closing = false;
  #closed: Promise<void> | undefined;

  constructor(options: DispatchLogConsumerOptions & QueueRedis) {
    this.#options = options;
    const { logger, metrics } = options;
    this.#batcher = new EventBatcher<PendingEvent>({
      maxSize: options.batchSize,
      maxWaitMs: options.batchMaxWaitMs,
      onBatch: (batch) => void this.#flush(batch),
    });
    // Room for about four full batches (two inserting while the next fill), and never so few that
    // small jobs (a lightly loaded gateway sends a few events per job) starve the batch.
    this.#concurrency = Math.max(50, Math.ceil((4 * options.batchSize) / options.eventsPerJob));
    // Workers need `maxRetriesPerRequest: null`: their blocking fetch must wait through reconnections.
    this.#connection = connectQueueRedis(options, { maxRetriesPerRequest: null });
    this.#connection.on('error', (err: Error) => logger.debug({ err: err.message }, 'worker: redis connection error'));
    const prefix = queuePrefix(options);
    this.#worker = new Worker(options.queueName, (job) => this.#process(job), {
      connection: this.#connection,
      ...(prefix ? { prefix } : {}),
      concurrency: this.#concurrency,
      lockDuration: options.lockDurationMs,
      stalledInterval: Math.min(stalledIntervalMaxMs, Math.floor(options.lockDurationMs / 2)),
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
      if (job && job.attemptsMade >= (job.opts.attempts ?? 1))
        logger.error({ jobId: job.id, err: err.message }, 'worker: job failed for good; kept in the failed set with its events');
    });
  }

  /** Resolves once the worker is connected and fetching. */
  async waitUntilReady(): Promise<void> {
    await this.#worker.waitUntilReady();
  }

  /** Stops fetching, writes the batch in hand, waits for its jobs to complete, disconnects. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing = true;
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
    const { logger, metrics } = this.#options;
    const data = dispatchJobDataSchema.safeParse(job.data);
    if (!data.success) {
      // Not a chunk of events at all (another producer, another version): kept in the failed set.
      metrics.invalid.inc();
      logger.warn({ jobId: job.id, issues: data.error.issues.slice(0, 3) }, 'worker: invalid dispatch job rejected');
      return Promise.reject(new UnrecoverableError(`invalid dispatch job: ${data.error.issues[0]?.message ?? 'not a chunk of events'}`));
    }
    const events: DispatchEvent[] = [];
    eventsOfJobData(data.data).forEach((raw, index) => {
      const parsed = dispatchEventSchema.safeParse(raw);
      if (parsed.success) {
        events.push(parsed.data);
        return;
      }
      // Retrying cannot fix it, and failing the job would hold its valid neighbours hostage.
      metrics.invalid.inc();
      logger.warn({ jobId: job.id, index, eventId: eventIdOf(raw), issues: parsed.error.issues.slice(0, 3) }, 'worker: invalid dispatch event dropped');
    });
    if (events.length === 0) return Promise.resolve();
    this.#jobsInHand += 1;
    const done = new Promise<void>((resolve, reject) => {
      const pending: PendingJob = { remaining: events.length, resolve, reject };
      for (const event of events) this.#batcher.add({ event, job: pending });
    });
    // With every slot taken no other job can join the open batch before a commit: waiting out
    // its age bound would only add lag.
    if (this.#jobsInHand >= this.#concurrency) this.#batcher.flush();
    return done.finally(() => {
      this.#jobsInHand -= 1;
    });
  }

  async #flush(batch: PendingEvent[]): Promise<void> {
    const { logger, metrics, repository } = this.#options;
    const events = batch.map((pending) => pending.event);
    for (;;) {
      const started = performance.now();
      try {
        const result = await writeBatch(repository, events);
        recordWrittenBatch(metrics, logger, events, result, (performance.now() - started) / 1000);
        if (this.#databaseDown) logger.info('worker: database reachable again; writing the batches in hand');
        this.#databaseDown = false;
        for (const { job } of batch) {
          job.remaining -= 1;
          if (job.remaining === 0) job.resolve();
        }
        return;
      } catch (err: unknown) {
        // The database was migrated before the worker took its first job: it is ready.
        recordFailedBatch(metrics, err, true);
        if (writeErrorKind(err, true) === 'connection' && !this.#closing) {
          if (!this.#databaseDown) logger.warn({ err: errorMessage(err) }, 'worker: database unreachable; holding the batches in hand and retrying');
          this.#databaseDown = true;
          await sleep(databaseRetryMs);
          continue;
        }
        logger.warn({ err: errorMessage(err), events: batch.length }, 'worker: batch insert failed; its jobs will be retried');
        const failure = err instanceof Error ? err : new Error(String(err));
        // The job is retried whole; its events in other batches may still land, and the redelivery skips them.
        for (const job of new Set(batch.map((pending) => pending.job))) job.reject(failure);
        return;
      }
    }
  }
}

/** The `id` of something that failed validation, if it has a printable one (for the log line). */
function eventIdOf(raw: unknown): string | undefined {
  if (typeof raw !== 'object' || raw === null || !('id' in raw)) return undefined;
  const id = (raw as { id: unknown }).id;
  return typeof id === 'string' ? id.slice(0, 64) : undefined;
}
