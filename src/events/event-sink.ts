import type { DispatchEvent } from './dispatch-event.js';
import type { RedisPersistence } from './redis-persistence.js';

export type ComponentHealth = 'ok' | 'degraded' | 'embedded';

/** What `/readyz` reports of the services behind the dispatch log. */
export interface BackingServicesHealth {
  redis: ComponentHealth;
  database: ComponentHealth;
  /** With Redis: how it persists the queued events (absent until read, and in embedded mode). */
  redisPersistence?: RedisPersistence;
}

/**
 * Where the gateway hands dispatch events. `publish` must return at once and never throw: the
 * response path does not wait for a queue or a database.
 */
export interface EventSink {
  publish(event: DispatchEvent): void;
  /** What `/readyz` reports for the sink's backing services. */
  health(): BackingServicesHealth;
  /** Flushes what is buffered (bounded in time) and releases connections. Idempotent. */
  close(): Promise<void>;
}
