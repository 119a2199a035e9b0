import type { Logger } from '../shared/logger.js';
import type { DispatchEvent } from './dispatch-event.js';
import type { EventSink } from './event-sink.js';

/** A sink that writes each event as a debug log line; for tests and for running without a store. */
export function createLogSink(logger: Logger): EventSink {
  return {
    publish(event: DispatchEvent) {
      logger.debug({ event }, 'dispatch event');
    },
    health: () => ({ redis: 'embedded', database: 'embedded' }),
    close: async () => {},
  };
}
