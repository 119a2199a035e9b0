import type { Logger } from './logger.js';
import { errorMessage } from './error-message.js';

export interface ShutdownOptions {
  readonly logger: Logger;
  /** Finishes the process's work for this signal; the process exits 0 when it resolves, 1 when it rejects. */
  readonly close: (signal: NodeJS.Signals) => Promise<void>;
  /** How long `close` may take before the process exits 1 regardless. */
  readonly deadlineMs: (signal: NodeJS.Signals) => number;
}

/**
 * The shutdown of both entry points: on the first SIGTERM or SIGINT, run `close` under a
 * deadline (a timer that does not keep the process alive) and exit with its outcome. A second
 * signal meanwhile changes nothing: the first shutdown is already bounded.
 */
export function handleShutdownSignals({ logger, close, deadlineMs }: ShutdownOptions): void {
  let started = false;
  const shutdown = (signal: NodeJS.Signals) => {
    if (started) return;
    started = true;
    const deadline = deadlineMs(signal);
    logger.info({ signal, deadlineMs: deadline }, 'shutting down');
    setTimeout(() => {
      logger.error({ signal, deadlineMs: deadline }, 'shutdown took too long; exiting');
      process.exit(1);
    }, deadline).unref();
    close(signal).then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err: errorMessage(err) }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}
