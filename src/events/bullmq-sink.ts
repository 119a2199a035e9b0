import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from '../shared/logger.js';
import type { GatewayMetrics } from '../metrics/registry.js';
import type { DispatchEvent } from './dispatch-event.js';
import type { BackingServicesHealth, ComponentHealth, EventSink } from './event-sink.js';
import { checkRedisPersistence, type RedisPersistence } from './redis-persistence.js';
import { connectQueueRedis, queuePrefix, type QueueRedis } from './queue-connection.js';
import { dispatchJobs } from './dispatch-queue.js';
import type { Spool } from './spool.js';
import { errorMessage } from '../shared/error-message.js';

/** The sink's settings; its Redis (one server or a cluster) comes beside them, as a {@link QueueRedis}. */
export interface BullmqSinkOptions {
  queueName: string;
  /** Where events go while Redis is unreachable or slow; replayed in order when it is back. */
  spool: Spool;
  metrics: GatewayMetrics;
  logger: Logger;
  /** Events held in memory on their way out; beyond it they are dropped and counted. */
  maxBuffered: number;
  /** Events per `addBulk`. */
  chunkSize: number;
  /** Events per BullMQ job inside an `addBulk` (see `dispatchJobs`). */
  eventsPerJob: number;
  /** Longest time an event waits in memory before its micro-batch is sent; a full job goes at once. */
  flushDelayMs?: number;
  /** Bound of every Redis command; a slower Redis counts as down and events go to the spool. */
  commandTimeoutMs?: number;
  /** What `/readyz` reports as `database` (the gateway itself does not write to it in this mode). */
  databaseHealth?: () => ComponentHealth;
}

/**
 * The producer side of the dispatch log: `publish` only appends to an in-memory buffer; a
 * background pump sends micro-batches with `addBulk`, `eventsPerJob` events to a job (job id derived
 * from the event ids, see `dispatchJobs`) and, when Redis is down, slow or refuses a batch, appends
 * them to the spool instead. While the spool holds anything, new
 * events queue up behind it so the queue receives events in publication order.
 */
export class BullmqSink implements EventSink {
  readonly #options: Required<Omit<BullmqSinkOptions, 'databaseHealth'>> & Pick<BullmqSinkOptions, 'databaseHealth'>;
  readonly #redis: Redis | Cluster;
  readonly #queue: Queue;
  #queueReady = false;
  #redisPersistence: RedisPersistence | undefined;
  readonly #startedAt = Date.now();
  #buffer: DispatchEvent[] = [];
  #pumping: Promise<void> | undefined;
  #pumpAgain = false;
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #tick: ReturnType<typeof setInterval>;
  #redisBackoffUntil = 0;
  #lastEnqueueFailed = false;
  #closing = false;
  #closed: Promise<void> | undefined;
  readonly #dropLog = { lastAt: 0, suppressed: 0 };

  constructor(options: BullmqSinkOptions & QueueRedis) {
    this.#options = { flushDelayMs: 100, commandTimeoutMs: 2_000, ...options };
    const { logger, metrics } = this.#options;
    // Fail fast instead of waiting for a reconnection: no offline queue, bounded commands,
    // one retry. The pump turns every failure into a spool append, so nothing piles up here.
    this.#redis = connectQueueRedis(options, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: this.#options.commandTimeoutMs,
      connectTimeout: this.#options.commandTimeoutMs,
      retryStrategy: (times) => Math.min(times * 200, 2_000),
    });
    let redisErrorLogged = false;
    this.#redis.on('error', (err: Error) => {
      if (!redisErrorLogged) logger.warn({ err: err.message }, 'event queue: redis connection error; events go to the spool');
      redisErrorLogged = true;
    });
    this.#redis.on('ready', () => {
      if (redisErrorLogged) logger.info('event queue: redis reachable again');
      redisErrorLogged = false;
      this.#kick();
    });
    const prefix = queuePrefix(options);
    this.#queue = new Queue(options.queueName, { connection: this.#redis, ...(prefix ? { prefix } : {}) });
    this.#queue.on('error', () => {
      // Already reported by the client's own 'error' listener above.
    });
    this.#queue.waitUntilReady().then(
      () => {
        this.#queueReady = true;
        this.#kick();
        // Once, at start: said loudly in the log and on /readyz when a Redis crash would lose queued events.
        void checkRedisPersistence(this.#redis, logger).then((persistence) => (this.#redisPersistence = persistence));
      },
      (err: unknown) => logger.error({ err }, 'event queue: initialisation failed; events stay in the spool'),
    );
    metrics.spoolBytes.set(options.spool.pendingBytes);
    // Retries the spool after a failed send, and catches anything a missed kick left behind.
    this.#tick = setInterval(() => this.#kick(), 1_000).unref();
  }

  publish(event: DispatchEvent): void {
    const { metrics } = this.#options;
    metrics.eventsPublished.inc();
    if (this.#closing || this.#buffer.length >= this.#options.maxBuffered) {
      this.#drop('buffer_full', 1);
      return;
    }
    this.#buffer.push(event);
    if (this.#buffer.length === this.#options.eventsPerJob || this.#buffer.length >= this.#options.chunkSize) {
      if (this.#flushTimer !== undefined) clearTimeout(this.#flushTimer);
      this.#flushTimer = undefined;
      setImmediate(() => this.#kick());
    } else {
      this.#flushTimer ??= setTimeout(() => {
        this.#flushTimer = undefined;
        this.#kick();
      }, this.#options.flushDelayMs);
    }
  }

  health(): BackingServicesHealth {
    const redis = this.#isRedisUsable() && !this.#lastEnqueueFailed ? 'ok' : 'degraded';
    return {
      redis,
      database: this.#options.databaseHealth?.() ?? 'embedded',
      ...(this.#redisPersistence ? { redisPersistence: this.#redisPersistence } : {}),
    };
  }

  /** Sends what is buffered to the queue, else to the spool (bounded by `timeoutMs`), then disconnects. */
  close(timeoutMs = 5_000): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing = true;
      clearInterval(this.#tick);
      if (this.#flushTimer !== undefined) clearTimeout(this.#flushTimer);
      const flushed = (async () => {
        await this.#pumping;
        await this.#pump();
      })();
      if ((await Promise.race([flushed.then(() => 'done' as const), sleep(timeoutMs, 'timeout' as const, { ref: false })])) === 'timeout') {
        this.#options.logger.warn({ buffered: this.#buffer.length }, 'event queue: flush timed out at shutdown; spooling the rest');
      }
      await this.#toSpool(this.#buffer.splice(0));
      await this.#options.spool.close();
      await this.#queue.close().catch((err: unknown) => this.#options.logger.debug({ err }, 'event queue: close error'));
      this.#redis.disconnect();
    })();
    return this.#closed;
  }

  #isRedisUsable(): boolean {
    return this.#queueReady && this.#redis.status === 'ready' && Date.now() >= this.#redisBackoffUntil;
  }

  #kick(): void {
    if (this.#pumping) {
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = this.#pump()
      .catch((err: unknown) => this.#options.logger.error({ err }, 'event queue: pump failed'))
      .finally(() => {
        this.#pumping = undefined;
        if (this.#pumpAgain && !this.#closing) {
          this.#pumpAgain = false;
          this.#kick();
        }
      });
  }

  async #pump(): Promise<void> {
    const { spool, chunkSize, logger, metrics } = this.#options;
    for (;;) {
      const redisUsable = this.#isRedisUsable();
      if (this.#buffer.length > 0 && redisUsable && spool.isEmpty) {
        const chunk = this.#buffer.splice(0, chunkSize);
        if (!(await this.#enqueue(chunk))) await this.#toSpool(chunk);
        // What arrived during the send waits for its flush timer unless it fills a job: sending
        // it at once made a job of every round trip, a handful of events each.
        if (this.#buffer.length < this.#options.eventsPerJob && !this.#closing) return;
        continue;
      }
      // At start the connection is usually a few ms away: hold events in memory that long.
      if (!this.#queueReady && !this.#closing && Date.now() - this.#startedAt < this.#options.commandTimeoutMs) return;
      // Redis is out, or older events wait in the spool: these go behind them.
      if (this.#buffer.length > 0) await this.#toSpool(this.#buffer.splice(0));
      if (!redisUsable || spool.isEmpty || this.#closing) return;
      const read = await spool.read(chunkSize);
      if (!read) return;
      if (read.corruptLines > 0) {
        metrics.eventsDropped.labels('spool_corrupt').inc(read.corruptLines);
        logger.error({ lines: read.corruptLines }, 'event queue: unreadable lines in the spool skipped');
      }
      if (read.events.length > 0 && !(await this.#enqueue(read.events))) return;
      await read.commit();
      metrics.spoolBytes.set(spool.pendingBytes);
      if (spool.isEmpty) logger.info('event queue: spool replayed');
    }
  }

  /** One send of the events' jobs; false (and Redis considered out for a second) when it fails or is too slow. */
  async #enqueue(events: readonly DispatchEvent[]): Promise<boolean> {
    const { logger, metrics, commandTimeoutMs } = this.#options;
    const jobs = dispatchJobs(events, this.#options.eventsPerJob);
    try {
      // A send is usually one job. `add` runs its script on the connection itself; `addBulk`
      // builds an ioredis pipeline, which copies every script BullMQ defined onto itself
      // (~120 µs a pipeline, measured: more than serialising 50 events).
      const [first] = jobs;
      const added: Promise<unknown> = jobs.length === 1 && first ? this.#queue.add(first.name, first.data, first.opts) : this.#queue.addBulk(jobs);
      // A backstop over the per-command timeout: if the call still succeeds after we gave up,
      // the spooled copy is replayed later (perhaps chunked otherwise) and lands on the same rows.
      const outcome = await Promise.race([added.then(() => 'added' as const), sleep(commandTimeoutMs * 2, 'timeout' as const, { ref: false })]);
      if (outcome === 'timeout') {
        added.catch(() => undefined);
        throw new Error(`sending events took longer than ${commandTimeoutMs * 2} ms`);
      }
      metrics.eventsEnqueued.inc(events.length);
      this.#lastEnqueueFailed = false;
      return true;
    } catch (err: unknown) {
      if (!this.#lastEnqueueFailed) logger.warn({ err: errorMessage(err) }, 'event queue: sending events failed; spooling');
      this.#lastEnqueueFailed = true;
      this.#redisBackoffUntil = Date.now() + 1_000;
      return false;
    }
  }

  async #toSpool(events: DispatchEvent[]): Promise<void> {
    if (events.length === 0) return;
    const { spool, metrics, logger } = this.#options;
    let written = 0;
    try {
      written = await spool.append(events);
    } catch (err: unknown) {
      logger.error({ err }, 'event queue: spool write failed');
    }
    metrics.eventsSpooled.inc(written);
    metrics.spoolBytes.set(spool.pendingBytes);
    if (written < events.length) this.#drop('spool_full', events.length - written);
  }

  #drop(reason: 'buffer_full' | 'spool_full', count: number): void {
    this.#options.metrics.eventsDropped.labels(reason).inc(count);
    const now = Date.now();
    // Logged at most every 5 s with the number of drops in between, so a flood does not become a log flood.
    if (now - this.#dropLog.lastAt >= 5_000) {
      this.#options.logger.error({ reason, dropped: count + this.#dropLog.suppressed }, 'dispatch events dropped at a bound');
      this.#dropLog.lastAt = now;
      this.#dropLog.suppressed = 0;
    } else {
      this.#dropLog.suppressed += count;
    }
  }
}
