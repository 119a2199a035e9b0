import type { DispatchEvent } from './dispatch-event.js';

export type ComponentHealth = 'ok' | 'degraded' | 'embedded';

/**
 * Where the gateway hands dispatch events. `publish` must return at once and never throw: the
 * response path does not wait for a queue or a database.
 */
export interface EventSink {
  publish(event: DispatchEvent): void;
  /** What `/readyz` reports for the sink's backing services. */
  health(): { redis: ComponentHealth; database: ComponentHealth };
  /** Flushes what is buffered (bounded in time) and releases connections. Idempotent. */
  close(): Promise<void>;
}
