import type { DispatchLogWriter } from '../dispatch-log/dispatch-log-writer.js';
import type { SqlDatabase } from '../dispatch-log/sql-database.js';
import type { GatewayMetrics } from '../metrics/registry.js';
import type { Logger } from '../shared/logger.js';
import type { DispatchEvent } from './dispatch-event.js';
import type { ComponentHealth, EventSink } from './event-sink.js';
import type { Spool } from './spool.js';

export interface InProcessSinkOptions {
  writer: DispatchLogWriter;
  /** Owned by the sink: closed after the last write. */
  db: SqlDatabase;
  /** Receives what the writer could not store by shutdown; replayed at the next start. */
  spool: Spool;
  metrics: GatewayMetrics;
  logger: Logger;
  /** Events per replayed chunk. */
  chunkSize: number;
}

/**
 * Embedded mode (no Redis): events go straight to the batch writer in this process. What is
 * still unwritten at shutdown (the store is down) goes to the spool and is written after the next
 * start; a crash loses what was in memory.
 */
export class InProcessSink implements EventSink {
  readonly #options: InProcessSinkOptions;
  #closed: Promise<void> | undefined;
  #closing = false;
  #dropLoggedAt = 0;
  readonly #replayed: Promise<void>;

  constructor(options: InProcessSinkOptions) {
    this.#options = options;
    options.metrics.spoolBytes.set(options.spool.pendingBytes);
    this.#replayed = this.#replaySpool().catch((err: unknown) => options.logger.error({ err }, 'dispatch log: spool replay failed'));
  }

  publish(event: DispatchEvent): void {
    const { metrics, writer } = this.#options;
    metrics.eventsPublished.inc();
    const outcome = writer.push(event);
    if (outcome === 'accepted') metrics.eventsEnqueued.inc();
    else if (outcome === 'full') this.#drop(1);
  }

  health(): { redis: ComponentHealth; database: ComponentHealth } {
    const { db, writer } = this.#options;
    const healthy: ComponentHealth = db.kind === 'pglite' ? 'embedded' : 'ok';
    return { redis: 'embedded', database: writer.healthy ? healthy : 'degraded' };
  }

  close(timeoutMs = 5_000): Promise<void> {
    this.#closed ??= (async () => {
      const { db, logger, metrics, spool, writer } = this.#options;
      this.#closing = true;
      await this.#replayed;
      const left = await writer.close(timeoutMs);
      if (left.length > 0) {
        const written = await spool.append(left);
        metrics.eventsSpooled.inc(written);
        metrics.spoolBytes.set(spool.pendingBytes);
        logger.warn({ spooled: written }, 'dispatch log: store unavailable at shutdown; events kept in the spool');
        if (written < left.length) {
          metrics.eventsDropped.labels('spool_full').inc(left.length - written);
          logger.error({ dropped: left.length - written }, 'dispatch events dropped at a bound');
        }
      }
      await spool.close();
      await db.close();
    })();
    return this.#closed;
  }

  async #replaySpool(): Promise<void> {
    const { chunkSize, logger, metrics, spool, writer } = this.#options;
    for (let read = await spool.read(chunkSize); read; read = await spool.read(chunkSize)) {
      if (read.corruptLines > 0) {
        metrics.eventsDropped.labels('spool_corrupt').inc(read.corruptLines);
        logger.error({ lines: read.corruptLines }, 'dispatch log: unreadable lines in the spool skipped');
      }
      // Keep the rest on disk while memory is full; the writer drains between polls.
      while (!this.#closing && writer.buffered > chunkSize * 4) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      // Left uncommitted: the next start replays it.
      if (this.#closing) return;
      for (const event of read.events) if (writer.push(event) === 'full') this.#drop(1);
      await read.commit();
      metrics.spoolBytes.set(spool.pendingBytes);
    }
  }

  #drop(count: number): void {
    this.#options.metrics.eventsDropped.labels('buffer_full').inc(count);
    const now = Date.now();
    if (now - this.#dropLoggedAt >= 5_000) {
      this.#options.logger.error({ reason: 'buffer_full' }, 'dispatch events dropped at a bound (see boo_events_dropped_total)');
      this.#dropLoggedAt = now;
    }
  }
}
