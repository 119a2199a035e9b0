import { createHash } from 'node:crypto';
import type { JobsOptions } from 'bullmq';
import { z } from 'zod';
import { attemptSchema, dispatchEventSchema, type Attempt, type DispatchEvent } from './dispatch-event.js';

/** BullMQ job name of a chunk of dispatch events ({@link DispatchJobData}). */
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

/** A job's columns: the table's, in the order the event schema lists them. */
const eventColumns = Object.keys(dispatchEventSchema.shape) as Array<keyof DispatchEvent>;
const attemptColumns = Object.keys(attemptSchema.shape) as Array<keyof Attempt>;

/**
 * A job's data: its events as rows of values under one header of column names. Keys repeated
 * in every event were half of a job's bytes and of its `JSON.stringify` time (0.75 against
 * 2 µs an event, measured), and a queue that holds a Postgres outage's worth of events holds
 * twice as many. The header travels with the rows, so the worker reads columns by name.
 */
const rowsJobDataSchema = z.object({ columns: z.array(z.string()), attemptColumns: z.array(z.string()), rows: z.array(z.array(z.unknown())).min(1) });
export type DispatchJobData = z.infer<typeof rowsJobDataSchema>;

/**
 * The shape of a job's data as the worker reads it. The envelope is checked here, each event on
 * its own later, so one bad event does not condemn the others.
 */
export const dispatchJobDataSchema = rowsJobDataSchema;

/**
 * An event's values in {@link eventColumns} order. Written out rather than looped over the
 * column names: a loop reads every field through one megamorphic keyed load, which made the rows
 * no cheaper to build than the objects were to serialise. The round-trip test holds the order.
 */
function toRow(e: DispatchEvent): unknown[] {
  const attempts = e.attempts.map((a) => [a.candidate, a.outcome, a.http_status, a.ms]);
  return [
    e.id,
    e.created_at,
    e.request_id,
    e.requested_model,
    e.virtual_model,
    e.chosen_provider_id,
    e.chosen_model,
    e.candidates_tried,
    attempts,
    e.status,
    e.source,
    e.error,
    e.duration_ms,
    e.ttfb_ms,
    e.stream,
    e.prompt_tokens,
    e.completion_tokens,
    e.replica,
    e.endpoint,
    e.resumes,
    e.queued_ms,
    e.key_name,
  ];
}

/** A row back to an object under `names`; anything that is not a row is left for the schema to refuse. */
function objectOf(row: unknown, names: readonly string[]): unknown {
  return Array.isArray(row) ? Object.fromEntries(names.map((name, index) => [name, row[index]])) : row;
}

/** The events of a job's data, not yet checked one by one (see `dispatchEventSchema`). */
export function eventsOfJobData(data: DispatchJobData): unknown[] {
  const { columns, attemptColumns: attemptNames, rows } = data;
  return rows.map((row) => {
    const event = objectOf(row, columns) as Record<string, unknown>;
    if (Array.isArray(event.attempts)) event.attempts = event.attempts.map((attempt: unknown) => objectOf(attempt, attemptNames));
    return event;
  });
}

/**
 * Job id of a chunk: a digest of its event ids, in order. Re-adding the same chunk while its job
 * exists is then a no-op in BullMQ; two different chunks never share an id (a shared prefix or
 * count would let BullMQ drop the second one silently). Not an event id: the row key is.
 */
export function dispatchJobId(events: readonly Pick<DispatchEvent, 'id'>[]): string {
  // One update of every id, each followed by a newline: an update per id crossed into C++ twice an
  // event (3,700 instructions a request, by callgrind). The digest is the same either way.
  let ids = '';
  for (const event of events) ids += `${event.id}\n`;
  // BullMQ refuses custom ids that contain ':' or are integers; a prefix rules out both.
  return `chunk-${events.length}-${createHash('sha256').update(ids).digest('hex').slice(0, 32)}`;
}

/** The `addBulk` entries carrying `events`, at most `eventsPerJob` per job, in order. */
export function dispatchJobs(events: readonly DispatchEvent[], eventsPerJob: number): { name: string; data: DispatchJobData; opts: JobsOptions }[] {
  if (!Number.isInteger(eventsPerJob) || eventsPerJob < 1) throw new RangeError('eventsPerJob must be a positive integer');
  const jobs = [];
  for (let from = 0; from < events.length; from += eventsPerJob) {
    const chunk = events.slice(from, from + eventsPerJob);
    jobs.push({
      name: dispatchJobName,
      data: { columns: eventColumns, attemptColumns, rows: chunk.map(toRow) },
      opts: { ...dispatchJobOptions, jobId: dispatchJobId(chunk) },
    });
  }
  return jobs;
}

/** Retry delay after `attemptsMade` failures: 500 ms doubling, capped at 60 s, with ±20 % jitter. */
export function dispatchJobBackoff(attemptsMade: number): number {
  const base = Math.min(500 * 2 ** Math.max(0, attemptsMade - 1), 60_000);
  return Math.round(base * (0.8 + Math.random() * 0.4));
}
