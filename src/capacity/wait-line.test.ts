import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CapacityExceededError } from './capacity-errors.js';
import { WaitLine, type LeaveOutcome, type Turn } from './wait-line.js';

/** Capacity as a number of free slots, taken one per successful try; every try is recorded. */
class Slots {
  free = 0;
  readonly tries: string[] = [];
  readonly disposed: string[] = [];

  attempt(name: string): () => Turn<string> {
    return () => {
      this.tries.push(name);
      if (this.free === 0) return {};
      this.free -= 1;
      return { value: name };
    };
  }

  dispose = (value: string) => {
    this.disposed.push(value);
    this.free += 1;
  };
}

function lineOf(settings = { maxWaitMs: 1_000, maxQueued: 10 }) {
  const left: Array<[LeaveOutcome, number]> = [];
  const depths: number[] = [];
  const line = new WaitLine<string>('auto:chat', () => settings, {
    observer: { depth: (n) => depths.push(n), left: (outcome, ms) => left.push([outcome, ms]) },
  });
  return { line, left, depths };
}

describe('WaitLine', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('lets a waiter that finds the line empty try at once', async () => {
    const { line } = lineOf();
    const slots = new Slots();
    slots.free = 1;
    await expect(line.wait({ source: 'a', attempt: slots.attempt('a1'), dispose: slots.dispose })).resolves.toEqual({ value: 'a1', queuedMs: 0 });
    expect(line.size).toBe(0);
  });

  it('gives freed capacity to waiters first come first served within a source and in turn across sources', async () => {
    const { line } = lineOf();
    const slots = new Slots();
    const served: string[] = [];
    const waits = ['a1', 'a2', 'a3', 'b1', 'c1', 'b2'].map((name) =>
      line.wait({ source: name[0]!, attempt: slots.attempt(name), dispose: slots.dispose }).then(({ value }) => served.push(value)),
    );
    expect(line.size).toBe(6);
    // Only the head tries while nothing is free; the others wait without trying.
    expect(new Set(slots.tries)).toEqual(new Set(['a1']));
    for (let freed = 0; freed < 6; freed++) {
      slots.free += 1;
      line.wake();
    }
    await Promise.all(waits);
    expect(served).toEqual(['a1', 'b1', 'c1', 'a2', 'b2', 'a3']);
  });

  it('serves the next heads at once while capacity lasts, and no more', async () => {
    const { line } = lineOf();
    const slots = new Slots();
    const served: string[] = [];
    for (const name of ['a1', 'a2', 'a3'])
      void line.wait({ source: 'a', attempt: slots.attempt(name), dispose: slots.dispose }).then(({ value }) => served.push(value));
    slots.free = 2;
    slots.tries.length = 0;
    line.wake();
    await vi.advanceTimersByTimeAsync(0);
    expect(served).toEqual(['a1', 'a2']);
    expect(slots.tries).toEqual(['a1', 'a2', 'a3']);
    expect(line.size).toBe(1);
  });

  it('refuses a newcomer at once when maxQueued are waiting, with a Retry-After', async () => {
    const { line, left } = lineOf({ maxWaitMs: 1_000, maxQueued: 2 });
    const slots = new Slots();
    void line.wait({ source: 'a', attempt: slots.attempt('a1'), dispose: slots.dispose }).catch(() => undefined);
    void line.wait({ source: 'b', attempt: slots.attempt('b1'), dispose: slots.dispose }).catch(() => undefined);
    const refused = await line.wait({ source: 'c', attempt: slots.attempt('c1'), dispose: slots.dispose }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(CapacityExceededError);
    expect(refused).toMatchObject({ status: 429, code: 'capacity_exceeded', refusal: 'rejected', queuedMs: 0, headers: { 'retry-after': '1' } });
    expect(slots.tries).not.toContain('c1');
    expect(left).toEqual([['rejected', 0]]);
    line.close(new Error('end'));
  });

  it('times a waiter out after maxWaitMs, and the rest of the line keeps its order', async () => {
    const { line, left } = lineOf({ maxWaitMs: 500, maxQueued: 10 });
    const slots = new Slots();
    const first = line.wait({ source: 'a', attempt: slots.attempt('a1'), dispose: slots.dispose }).catch((err: unknown) => err);
    await vi.advanceTimersByTimeAsync(200);
    const second = line.wait({ source: 'a', attempt: slots.attempt('a2'), dispose: slots.dispose });
    await vi.advanceTimersByTimeAsync(300);
    expect(await first).toMatchObject({ code: 'capacity_exceeded', refusal: 'queue_timeout', queuedMs: 500, headers: { 'retry-after': '1' } });
    expect(left).toEqual([['queue_timeout', 500]]);
    slots.free = 1;
    line.wake();
    await expect(second).resolves.toEqual({ value: 'a2', queuedMs: 300 });
  });

  it('counts the wait of a request that comes back to the line from when it first entered', async () => {
    const { line } = lineOf({ maxWaitMs: 1_000, maxQueued: 10 });
    const enteredAt = Date.now();
    await vi.advanceTimersByTimeAsync(600);
    const back = line.wait({ source: 'a', attempt: () => ({}), dispose: () => undefined, enteredAt }).catch((err: unknown) => err);
    await vi.advanceTimersByTimeAsync(400);
    expect(await back).toMatchObject({ refusal: 'queue_timeout', queuedMs: 1_000 });
    await vi.advanceTimersByTimeAsync(100);
    await expect(line.wait({ source: 'a', attempt: () => ({ value: 'late' }), dispose: () => undefined, enteredAt })).rejects.toMatchObject({
      refusal: 'queue_timeout',
      queuedMs: 1_100,
    });
  });

  it('takes a waiter whose client disconnects out of line at once, with the signal reason', async () => {
    const { line, depths, left } = lineOf();
    const slots = new Slots();
    const controller = new AbortController();
    const gone = line.wait({ source: 'a', attempt: slots.attempt('a1'), dispose: slots.dispose, signal: controller.signal }).catch((err: unknown) => err);
    const next = line.wait({ source: 'a', attempt: slots.attempt('a2'), dispose: slots.dispose });
    await vi.advanceTimersByTimeAsync(50);
    controller.abort(new Error('client closed'));
    expect(await gone).toMatchObject({ message: 'client closed' });
    expect(line.size).toBe(1);
    expect(depths).toEqual([1, 2, 1]);
    expect(left).toEqual([['client_closed', 50]]);
    slots.free = 1;
    line.wake();
    await expect(next).resolves.toMatchObject({ value: 'a2' });
    const aborted = AbortSignal.abort(new Error('already gone'));
    await expect(line.wait({ source: 'a', attempt: slots.attempt('a3'), dispose: slots.dispose, signal: aborted })).rejects.toThrow('already gone');
  });

  it('gives back what a try took for a waiter that left while the try was in flight, and the next head gets it', async () => {
    const { line } = lineOf();
    const controller = new AbortController();
    const disposed: string[] = [];
    let finishTry: ((turn: Turn<string>) => void) | undefined;
    let free = 0;
    const gone = line
      .wait({
        source: 'a',
        attempt: () => new Promise<Turn<string>>((resolve) => (finishTry = resolve)),
        dispose: (value) => {
          disposed.push(value);
          free += 1;
        },
        signal: controller.signal,
      })
      .catch((err: unknown) => err);
    const next = line.wait({ source: 'b', attempt: () => (free > 0 ? { value: 'b1' } : {}), dispose: () => undefined });
    controller.abort(new Error('client closed'));
    await gone;
    finishTry!({ value: 'slot-taken-for-a1' });
    expect(await next).toMatchObject({ value: 'b1' });
    expect(disposed).toEqual(['slot-taken-for-a1']);
  });

  it('tries again when a wake came while the head was trying', async () => {
    const { line } = lineOf();
    let free = 0;
    let tries = 0;
    let finishTry: (() => void) | undefined;
    const waited = line.wait({
      source: 'a',
      attempt: async () => {
        tries += 1;
        const answer: Turn<string> = free > 0 ? { value: 'a1' } : {};
        await new Promise<void>((resolve) => (finishTry = resolve));
        return answer;
      },
      dispose: () => undefined,
    });
    expect(tries).toBe(1);
    free = 1;
    line.wake();
    expect(tries).toBe(1);
    finishTry!();
    await vi.advanceTimersByTimeAsync(0);
    expect(tries).toBe(2);
    finishTry!();
    await expect(waited).resolves.toMatchObject({ value: 'a1' });
  });

  it('tries again at the time a failed try names, without any wake', async () => {
    const { line } = lineOf({ maxWaitMs: 5_000, maxQueued: 10 });
    const tries: number[] = [];
    const waited = line.wait({
      source: 'a',
      attempt: () => {
        tries.push(Date.now());
        return tries.length < 2 ? { retryAt: Date.now() + 1_500 } : { value: 'a1' };
      },
      dispose: () => undefined,
    });
    await vi.advanceTimersByTimeAsync(1_499);
    expect(tries).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    await expect(waited).resolves.toEqual({ value: 'a1', queuedMs: 1_500 });
  });

  it('names the next expected capacity in the Retry-After of a refusal', async () => {
    const { line } = lineOf({ maxWaitMs: 1_000, maxQueued: 1 });
    const waited = line.wait({ source: 'a', attempt: () => ({ retryAt: Date.now() + 4_200 }), dispose: () => undefined }).catch((err: unknown) => err);
    await expect(line.wait({ source: 'b', attempt: () => ({}), dispose: () => undefined })).rejects.toMatchObject({ headers: { 'retry-after': '5' } });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await waited).toMatchObject({ refusal: 'queue_timeout', retryAfterSeconds: 4 });
  });

  it('fails the waiter whose try throws, and the next head tries', async () => {
    const { line, left } = lineOf();
    const failed = line
      .wait({
        source: 'a',
        attempt: () => {
          throw new Error('store down');
        },
        dispose: () => undefined,
      })
      .catch((err: unknown) => err);
    expect(await failed).toMatchObject({ message: 'store down' });
    await expect(line.wait({ source: 'a', attempt: () => Promise.reject(new Error('again')), dispose: () => undefined })).rejects.toThrow('again');
    expect(left.map(([outcome]) => outcome)).toEqual(['failed', 'failed']);
    expect(line.size).toBe(0);
  });

  it('refuses every waiter on close', async () => {
    const { line } = lineOf();
    const waits = [1, 2].map(() => line.wait({ source: 'a', attempt: () => ({}), dispose: () => undefined }).catch((err: unknown) => err));
    line.close(new Error('shutting down'));
    expect(await Promise.all(waits)).toMatchObject([{ message: 'shutting down' }, { message: 'shutting down' }]);
    expect(line.size).toBe(0);
  });
});
