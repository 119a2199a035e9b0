import { createHash } from 'node:crypto';
import type { JobsOptions } from 'bullmq';
import { z } from 'zod';
import type { DispatchEvent } from './dispatch-event.js';

/** BullMQ job name of a chunk of dispatch events (`{ events: DispatchEvent[] }`). */
export const dispatchJobName = 'dispatch-events';

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

/**
 * The shape of a job's data as the worker reads it: the envelope is checked here, each event on
 * its own later, so one bad event does not condemn the others.
 */
export const dispatchJobDataSchema = z.object({ events: z.array(z.unknown()).min(1) });

/**
 * Job id of a chunk: a digest of its event ids, in order. Re-adding the same chunk while its job
 * exists is then a no-op in BullMQ; two different chunks never share an id (a shared prefix or
 * count would let BullMQ drop the second one silently). Not an event id: the row key is.
 */
export function dispatchJobId(events: readonly Pick<DispatchEvent, 'id'>[]): string {
  const hash = createHash('sha256');
  for (const event of events) hash.update(event.id).update('\n');
  // BullMQ refuses custom ids that contain ':' or are integers; a prefix rules out both.
  return `chunk-${events.length}-${hash.digest('hex').slice(0, 32)}`;
}

/** The `addBulk` entries carrying `events`, at most `eventsPerJob` per job, in order. */
export function dispatchJobs(events: readonly DispatchEvent[], eventsPerJob: number): { name: string; data: { events: DispatchEvent[] }; opts: JobsOptions }[] {
  if (!Number.isInteger(eventsPerJob) || eventsPerJob < 1) throw new RangeError('eventsPerJob must be a positive integer');
  const jobs = [];
  for (let from = 0; from < events.length; from += eventsPerJob) {
    const chunk = events.slice(from, from + eventsPerJob);
    jobs.push({ name: dispatchJobName, data: { events: chunk }, opts: { ...dispatchJobOptions, jobId: dispatchJobId(chunk) } });
  }
  return jobs;
}

/** Retry delay after `attemptsMade` failures: 500 ms doubling, capped at 60 s, with ±20 % jitter. */
export function dispatchJobBackoff(attemptsMade: number): number {
  const base = Math.min(500 * 2 ** Math.max(0, attemptsMade - 1), 60_000);
  return Math.round(base * (0.8 + Math.random() * 0.4));
}
