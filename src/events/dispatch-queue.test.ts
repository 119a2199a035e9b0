import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { makeDispatchEvent, makeDispatchEvents } from '../../test/support/dispatch-events.js';
import { dispatchEventSchema } from './dispatch-event.js';
import { dispatchJobDataSchema, dispatchJobId, dispatchJobName, dispatchJobOptions, dispatchJobs, eventsOfJobData } from './dispatch-queue.js';

const eventsOf = (data: unknown) => eventsOfJobData(dispatchJobDataSchema.parse(JSON.parse(JSON.stringify(data))));

describe('dispatchJobs', () => {
  it('packs events in order, at most eventsPerJob to a job, every event exactly once', () => {
    const events = makeDispatchEvents(250);
    const jobs = dispatchJobs(events, 100);
    expect(jobs.map((job) => job.data.rows.length)).toEqual([100, 100, 50]);
    expect(jobs.flatMap((job) => eventsOf(job.data))).toEqual(events);
    for (const job of jobs) {
      expect(job.name).toBe(dispatchJobName);
      expect(job.opts).toMatchObject({ ...dispatchJobOptions, jobId: dispatchJobId(eventsOf(job.data) as typeof events) });
    }
    expect(dispatchJobs([], 100)).toEqual([]);
    expect(() => dispatchJobs(events, 0)).toThrow(RangeError);
  });

  it('carries every field of every event through JSON as rows, values intact', () => {
    const events = [
      ...makeDispatchEvents(3),
      makeDispatchEvent({
        status: 'failed',
        chosen_provider_id: null,
        chosen_model: null,
        error: 'a: upstream answered 503 "busy"\n',
        source: 'näive ✓',
        attempts: [
          { candidate: 'a/m1', outcome: 'http_5xx', http_status: 503, ms: 12 },
          { candidate: 'b/m1', outcome: 'timeout', http_status: null, ms: 400 },
        ],
        candidates_tried: ['a/m1', 'b/m1'],
      }),
    ];
    const decoded = eventsOf(dispatchJobs(events, 10)[0]!.data);
    expect(decoded).toEqual(events);
    for (const event of decoded) expect(dispatchEventSchema.safeParse(event).success).toBe(true);
  });

  it('reads a row that is short as an event that fails on its own', () => {
    const events = makeDispatchEvents(2);
    const [job] = dispatchJobs(events, 10);
    job!.data.rows[0] = job!.data.rows[0]!.slice(0, 5);
    const [short, whole] = eventsOf(job!.data);
    expect(dispatchEventSchema.safeParse(short).success).toBe(false);
    expect(whole).toEqual(events[1]);
    expect(dispatchJobDataSchema.safeParse({ rows: [] }).success).toBe(false);
    expect(dispatchJobDataSchema.safeParse(events[0]).success).toBe(false);
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

  it('keeps the id of a chunk across versions: sha256 of the ids, each followed by a newline', () => {
    // A job queued before an upgrade and re-sent after it must be recognised as the same job.
    const ids = ['0b9c4a4e-6f0e-4a55-9a7b-1f2d3c4b5a69', '5f1d2e3c-4b5a-4c69-8d7e-0a1b2c3d4e5f'];
    const digest = createHash('sha256').update(`${ids[0]}\n${ids[1]}\n`).digest('hex');
    expect(dispatchJobId(ids.map((id) => ({ id })))).toBe(`chunk-2-${digest.slice(0, 32)}`);
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
