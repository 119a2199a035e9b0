import { describe, expect, it } from 'vitest';
import { makeDispatchEvent, makeDispatchEvents } from '../../test/support/dispatch-events.js';
import { dispatchJobDataSchema, dispatchJobId, dispatchJobName, dispatchJobOptions, dispatchJobs } from './dispatch-queue.js';

describe('dispatchJobs', () => {
  it('packs events in order, at most eventsPerJob to a job, every event exactly once', () => {
    const events = makeDispatchEvents(250);
    const jobs = dispatchJobs(events, 100);
    expect(jobs.map((job) => job.data.events.length)).toEqual([100, 100, 50]);
    expect(jobs.flatMap((job) => job.data.events)).toEqual(events);
    for (const job of jobs) {
      expect(job.name).toBe(dispatchJobName);
      expect(job.opts).toMatchObject({ ...dispatchJobOptions, jobId: dispatchJobId(job.data.events) });
      expect(dispatchJobDataSchema.safeParse(job.data).success).toBe(true);
    }
    expect(dispatchJobs([], 100)).toEqual([]);
    expect(() => dispatchJobs(events, 0)).toThrow(RangeError);
  });

  it('derives the job id from the event ids: the same chunk gets the same id, any other chunk another', () => {
    const [a, b, c] = [makeDispatchEvent(), makeDispatchEvent(), makeDispatchEvent()];
    const id = dispatchJobId([a, b]);
    // The ids alone decide: a re-sent copy of the chunk (other field values, same ids) is the same job.
    const resent = [{ ...a, duration_ms: 1 }, { ...b }];
    expect(dispatchJobId(resent)).toBe(id);
    // Same first event and same count, or same events in another order: a different job, never deduplicated away.
    expect(dispatchJobId([a, c])).not.toBe(id);
    expect(dispatchJobId([b, a])).not.toBe(id);
    expect(dispatchJobId([a])).not.toBe(id);
    expect(dispatchJobId([a, b, c])).not.toBe(id);
  });

  it('makes ids BullMQ accepts as custom ids (no ":", not an integer)', () => {
    for (const events of [makeDispatchEvents(1), makeDispatchEvents(200)]) {
      const id = dispatchJobId(events);
      expect(id).not.toContain(':');
      expect(String(Number.parseInt(id, 10))).not.toBe(id);
      expect(id).toMatch(/^chunk-\d+-[0-9a-f]{32}$/);
    }
  });
});
