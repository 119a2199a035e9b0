import type { JobsOptions } from 'bullmq';

/** BullMQ job name of a dispatch event; the job id is the event id. */
export const dispatchJobName = 'dispatch';

/** Name of the custom backoff; every worker must register `dispatchJobBackoff` under it. */
export const dispatchBackoffType = 'boo-capped-exponential';

/**
 * Options of every dispatch job, set by the producer. About 40 attempts at the capped backoff
 * below ride out a Postgres outage of half an hour; after that the job stays in the failed set
 * for inspection (never removed). Completed jobs are removed: the row is the record, and the
 * table's key, not the job id, is what makes a redelivery harmless.
 */
export const dispatchJobOptions = {
  attempts: 40,
  backoff: { type: dispatchBackoffType },
  removeOnComplete: true,
  removeOnFail: false,
} as const satisfies JobsOptions;

/** Retry delay after `attemptsMade` failures: 500 ms doubling, capped at 60 s, with ±20 % jitter. */
export function dispatchJobBackoff(attemptsMade: number): number {
  const base = Math.min(500 * 2 ** Math.max(0, attemptsMade - 1), 60_000);
  return Math.round(base * (0.8 + Math.random() * 0.4));
}
