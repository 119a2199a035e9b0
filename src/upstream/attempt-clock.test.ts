import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AttemptClock, ClientWriteTimeoutError, FirstByteTimeoutError, IdleTimeoutError, TotalTimeoutError } from './attempt-clock.js';

const timeouts = { connectMs: 1_000, firstByteMs: 100, idleMs: 50, totalMs: 1_000 };

/** A clock whose expiries are recorded with the fake time they happened at. */
function clockWith(budgets: Partial<typeof timeouts> = {}, clientWriteMs = 10_000) {
  const expired: Array<{ at: number; reason: Error }> = [];
  const started = performance.now();
  const clock = new AttemptClock((reason) => expired.push({ at: performance.now() - started, reason }), { ...timeouts, ...budgets }, clientWriteMs);
  return { clock, expired };
}

describe('AttemptClock', () => {
  // performance.now() is faked with the timers: the budgets are checked against the same clock that fires them.
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('expires with FirstByteTimeoutError at firstByteMs when no byte came, the idle budget not running before it', () => {
    const { expired } = clockWith();
    vi.advanceTimersByTime(99);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired).toEqual([{ at: 100, reason: new FirstByteTimeoutError(100) }]);
    expect(expired[0]!.reason).toBeInstanceOf(FirstByteTimeoutError);
  });

  it('after the first byte, expires with IdleTimeoutError idleMs after the last activity, each activity pushing it back', () => {
    const { clock, expired } = clockWith();
    vi.advanceTimersByTime(10);
    clock.firstByte(performance.now());
    vi.advanceTimersByTime(40);
    clock.activity();
    vi.advanceTimersByTime(40);
    clock.activity();
    vi.advanceTimersByTime(49);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired).toEqual([{ at: 140, reason: new IdleTimeoutError(50) }]);
    expect(expired[0]!.reason).toBeInstanceOf(IdleTimeoutError);
  });

  it("stops the idle budget while the client is not reading, and runs the client's write budget instead", () => {
    const { clock, expired } = clockWith({ idleMs: 50 }, 300);
    clock.firstByte(performance.now());
    vi.advanceTimersByTime(10);
    clock.clientStalled();
    vi.advanceTimersByTime(299);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired).toEqual([{ at: 310, reason: new ClientWriteTimeoutError(300) }]);
    expect(expired[0]!.reason).toBeInstanceOf(ClientWriteTimeoutError);
  });

  it('runs the idle budget again from the moment the client drains', () => {
    const { clock, expired } = clockWith({ idleMs: 50 }, 300);
    clock.firstByte(performance.now());
    clock.clientStalled();
    vi.advanceTimersByTime(200);
    clock.activity();
    vi.advanceTimersByTime(49);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired.map(({ at, reason }) => [at, reason.name])).toEqual([[250, 'IdleTimeoutError']]);
  });

  it("fires the client's write budget on time when it is shorter than the idle budget armed before it", () => {
    const { clock, expired } = clockWith({ idleMs: 5_000, firstByteMs: 5_000, totalMs: 60_000 }, 100);
    clock.firstByte(performance.now());
    clock.clientStalled();
    vi.advanceTimersByTime(100);
    expect(expired.map(({ at, reason }) => [at, reason.name])).toEqual([[100, 'ClientWriteTimeoutError']]);
  });

  it('expires with TotalTimeoutError at totalMs however steadily the body flows', () => {
    const { clock, expired } = clockWith({ totalMs: 200 });
    clock.firstByte(performance.now());
    for (let at = 0; at < 199; at += 30) {
      vi.advanceTimersByTime(Math.min(30, 199 - at));
      clock.activity();
    }
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired).toEqual([{ at: 200, reason: new TotalTimeoutError(200) }]);
    expect(expired[0]!.reason).toBeInstanceOf(TotalTimeoutError);
  });

  it('runs the total budget before the first byte too, when it is the shorter one', () => {
    const { expired } = clockWith({ firstByteMs: 500, totalMs: 120 });
    vi.advanceTimersByTime(500);
    expect(expired.map(({ at, reason }) => [at, reason.name])).toEqual([[120, 'TotalTimeoutError']]);
  });

  it('expires once, and never after stop()', () => {
    const first = clockWith();
    vi.advanceTimersByTime(10_000);
    expect(first.expired).toHaveLength(1);
    const second = clockWith();
    vi.advanceTimersByTime(99);
    second.clock.stop();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(10_000);
    expect(second.expired).toEqual([]);
  });

  it('keeps one timer whatever the number of chunks, re-armed only when it fires', () => {
    const { clock } = clockWith({ idleMs: 1_000, firstByteMs: 1_000, totalMs: 10_000 });
    clock.firstByte(performance.now());
    const setTimeoutSpy = vi.spyOn(globalThis, 'setTimeout');
    for (let chunk = 0; chunk < 1_000; chunk++) {
      vi.advanceTimersByTime(1);
      clock.activity();
    }
    // One re-arm: the timer set for 1,000 ms fired once and found the idle budget renewed.
    expect(setTimeoutSpy).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(1);
    setTimeoutSpy.mockRestore();
    clock.stop();
  });
});
