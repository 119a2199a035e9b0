import type { DispatchEvent } from '../events/dispatch-event.js';
import type { DispatchLogMetrics } from '../metrics/registry.js';
import { errorMessage } from '../shared/error-message.js';
import type { Logger } from '../shared/logger.js';
import type { BatchWriteResult } from './write-batch.js';

const connectionErrorCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
]);

/**
 * How `boo_dispatch_log_errors_total` labels a failed write, one rule for the worker and for
 * embedded mode: `connection` when the store could not be reached or made ready (not yet opened
 * or migrated, a refused or lost connection, SQLSTATE class 08, the server shutting down), else
 * `insert` (the statement itself failed).
 */
export function writeErrorKind(err: unknown, storeReady: boolean): 'connection' | 'insert' {
  if (!storeReady) return 'connection';
  const code = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
  return connectionErrorCodes.has(code) || code.startsWith('08') || code === '57P01' || code === '57P03' ? 'connection' : 'insert';
}

/**
 * Counts a batch that was written: the batch, its size and insert time, the new rows, the lag of
 * each event that landed, and each event the database refused (counted as invalid and logged
 * with its id; it is dropped, as retrying cannot help it).
 * @returns the indexes of the refused events.
 */
export function recordWrittenBatch(
  metrics: DispatchLogMetrics,
  logger: Logger,
  events: readonly DispatchEvent[],
  result: BatchWriteResult,
  seconds: number,
): ReadonlySet<number> {
  metrics.batches.labels('ok').inc();
  metrics.batchSize.observe(events.length);
  metrics.insertSeconds.observe(seconds);
  metrics.inserted.inc(result.inserted);
  const refused = new Set<number>();
  for (const { index, error } of result.rejected) {
    refused.add(index);
    metrics.invalid.inc();
    logger.warn({ eventId: events[index]?.id, err: errorMessage(error) }, 'dispatch event refused by the database; dropped');
  }
  const now = Date.now();
  for (let index = 0; index < events.length; index++) {
    if (!refused.has(index)) metrics.lag.observe((now - Date.parse(events[index]!.created_at)) / 1000);
  }
  return refused;
}

/** Counts a batch whose write failed (it is retried): the batch, and the error by {@link writeErrorKind}. */
export function recordFailedBatch(metrics: DispatchLogMetrics, err: unknown, storeReady: boolean): void {
  metrics.batches.labels('error').inc();
  metrics.errors.labels(writeErrorKind(err, storeReady)).inc();
}
