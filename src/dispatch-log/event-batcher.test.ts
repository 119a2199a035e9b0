import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EventBatcher } from './event-batcher.js';

describe('EventBatcher', () => {
  let batches: number[][];
  const make = (maxSize: number, maxWaitMs: number) => new EventBatcher<number>({ maxSize, maxWaitMs, onBatch: (batch) => batches.push(batch) });

  beforeEach(() => {
    batches = [];
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('closes a batch the moment it reaches the size bound', () => {
    const batcher = make(3, 1000);
    [1, 2, 3, 4].forEach((n) => batcher.add(n));
    expect(batches).toEqual([[1, 2, 3]]);
    expect(batcher.size).toBe(1);
  });

  it('closes a partial batch maxWaitMs after its first item, not after its last', () => {
    const batcher = make(10, 200);
    batcher.add(1);
    vi.advanceTimersByTime(150);
    batcher.add(2);
    vi.advanceTimersByTime(49);
    expect(batches).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(batches).toEqual([[1, 2]]);
  });

  it('starts a fresh age window for the batch after a size flush', () => {
    const batcher = make(2, 100);
    batcher.add(1);
    vi.advanceTimersByTime(90);
    batcher.add(2);
    batcher.add(3);
    vi.advanceTimersByTime(99);
    expect(batches).toEqual([[1, 2]]);
    vi.advanceTimersByTime(1);
    expect(batches).toEqual([[1, 2], [3]]);
  });

  it('never emits an empty batch, from the timer or from flush()', () => {
    const batcher = make(2, 50);
    batcher.flush();
    batcher.add(1);
    batcher.add(2);
    vi.advanceTimersByTime(1000);
    batcher.flush();
    expect(batches).toEqual([[1, 2]]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('flush() closes the open batch at once and cancels its timer', () => {
    const batcher = make(10, 100);
    batcher.add(1);
    batcher.flush();
    expect(batches).toEqual([[1]]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('keeps order across batches', () => {
    const batcher = make(4, 10);
    for (let n = 0; n < 10; n++) batcher.add(n);
    vi.advanceTimersByTime(10);
    expect(batches.flat()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(batches.map((b) => b.length)).toEqual([4, 4, 2]);
  });

  it('rejects bounds that make no sense', () => {
    expect(() => make(0, 10)).toThrow(RangeError);
    expect(() => make(1, -1)).toThrow(RangeError);
  });
});
