import type { DispatchLogWriter } from '../dispatch-log/dispatch-log-writer.js';
import type { SqlDatabase } from '../dispatch-log/sql-database.js';
import type { GatewayMetrics } from '../metrics/registry.js';
import type { Logger } from '../shared/logger.js';
import type { DispatchEvent } from './dispatch-event.js';
import type { BackingServicesHealth, ComponentHealth, EventSink } from './event-sink.js';
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
 * Embedded mode (no Redis): events go straight to the batch writer in this process. When the
 * writer holds its bound of events (the store is slow, down, or still opening), new events go
 * to the spool on disk instead, counted in `boo_events_spooled_total` and logged, and come back
 * to the writer as it drains: memory stays bounded, and events are dropped (counted in
 * `boo_events_dropped_total`, logged) only when the spool is full too (`spool_full`) or its
 * appends fall behind by the writer's bound (`buffer_full`). Events that took the spool may be
 * written after later ones; each row keeps its `created_at`. What is still unwritten at shutdown
 * goes to the spool and is written after the next start; a crash loses what was in memory.
 */
export class InProcessSink implements EventSink {
  readonly #options: InProcessSinkOptions;
  #closed: Promise<void> | undefined;
  #closing = false;
  #dropLoggedAt = 0;
  #spoolLoggedAt = 0;
  /** Refused by the full writer, on their way to the spool. */
  #overflow: DispatchEvent[] = [];
  #spooling: Promise<void> | undefined;
  #replaying: Promise<void> | undefined;

  constructor(options: InProcessSinkOptions) {
    this.#options = options;
    options.metrics.spoolBytes.set(options.spool.pendingBytes);
    this.#replay();
  }

  publish(event: DispatchEvent): void {
    const { metrics, writer } = this.#options;
    metrics.eventsPublished.inc();
    const outcome = writer.push(event);
    if (outcome === 'accepted') metrics.eventsEnqueued.inc();
    else if (outcome === 'full') this.#toSpool(event);
  }

  health(): BackingServicesHealth {
    const { db, writer } = this.#options;
    const healthy: ComponentHealth = db.kind === 'pglite' ? 'embedded' : 'ok';
    return { redis: 'embedded', database: writer.healthy ? healthy : 'degraded' };
  }

  close(timeoutMs = 5_000): Promise<void> {
    this.#closed ??= (async () => {
      const { db, logger, writer } = this.#options;
      this.#closing = true;
      await this.#replaying;
      const left = await writer.close(timeoutMs);
      if (left.length > 0) {
        logger.warn({ events: left.length }, 'dispatch log: store unavailable at shutdown; events kept in the spool');
        this.#overflow.push(...left);
      }
      this.#flushOverflow();
      await this.#spooling;
      await this.#options.spool.close();
      await db.close();
    })();
    return this.#closed;
  }

  #toSpool(event: DispatchEvent): void {
    const { logger, writer } = this.#options;
    // Bounded like the writer: appends that fall that far behind mean a disk that cannot keep up.
    if (this.#overflow.length >= writer.maxBuffered) {
      this.#drop('buffer_full', 1);
      return;
    }
    this.#overflow.push(event);
    const now = Date.now();
    if (!this.#closing && now - this.#spoolLoggedAt >= 5_000) {
      logger.warn({ buffered: writer.buffered }, 'dispatch log: the writer is full; events go to the spool (boo_events_spooled_total)');
      this.#spoolLoggedAt = now;
    }
    if (!this.#spooling) queueMicrotask(() => this.#flushOverflow());
  }

  /** Appends what waits in `#overflow`, one append at a time, then lets the replay take it back. */
  #flushOverflow(): void {
    this.#spooling ??= (async () => {
      const { logger, metrics, spool } = this.#options;
      while (this.#overflow.length > 0) {
        const events = this.#overflow;
        this.#overflow = [];
        let written = 0;
        try {
          written = await spool.append(events);
        } catch (err: unknown) {
          logger.error({ err }, 'dispatch log: spool append failed');
        }
        metrics.eventsSpooled.inc(written);
        metrics.spoolBytes.set(spool.pendingBytes);
        if (written < events.length) this.#drop('spool_full', events.length - written);
      }
    })().finally(() => {
      this.#spooling = undefined;
      if (this.#overflow.length > 0) this.#flushOverflow();
      else this.#replay();
    });
  }

  #replay(): void {
    if (this.#closing || this.#replaying || this.#options.spool.isEmpty) return;
    this.#replaying = this.#replaySpool()
      .catch((err: unknown) => this.#options.logger.error({ err }, 'dispatch log: spool replay failed'))
      .finally(() => {
        this.#replaying = undefined;
      });
  }

  async #replaySpool(): Promise<void> {
    const { logger, metrics, spool, writer } = this.#options;
    const chunkSize = Math.max(1, Math.min(this.#options.chunkSize, Math.floor(writer.maxBuffered / 2)));
    for (;;) {
      // Keep the rest on disk while memory is full; the writer drains between polls.
      while (!this.#closing && writer.buffered + chunkSize > writer.maxBuffered) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      // Left uncommitted: the next start replays it.
      if (this.#closing) return;
      const read = await spool.read(chunkSize);
      if (!read) return;
      if (read.corruptLines > 0) {
        metrics.eventsDropped.labels('spool_corrupt').inc(read.corruptLines);
        logger.error({ lines: read.corruptLines }, 'dispatch log: unreadable lines in the spool skipped');
      }
      // Lines from disk may come from an older gateway or a damaged file: checked whatever the writer's option.
      for (const event of read.events) if (writer.push(event, true) === 'full') this.#toSpool(event);
      await read.commit();
      metrics.spoolBytes.set(spool.pendingBytes);
    }
  }

  #drop(reason: 'buffer_full' | 'spool_full', count: number): void {
    this.#options.metrics.eventsDropped.labels(reason).inc(count);
    const now = Date.now();
    if (now - this.#dropLoggedAt >= 5_000) {
      this.#options.logger.error({ reason }, 'dispatch events dropped at a bound (see boo_events_dropped_total)');
      this.#dropLoggedAt = now;
    }
  }
}
