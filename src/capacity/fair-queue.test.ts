import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FairQueue } from './fair-queue.js';

interface Item {
  readonly source: string;
  /** Order of arrival across all sources. */
  readonly seq: number;
}

type Op = { kind: 'push'; source: string } | { kind: 'shift' } | { kind: 'remove'; pick: number };

const ops = fc.array(
  fc.oneof(
    { arbitrary: fc.record({ kind: fc.constant('push' as const), source: fc.constantFrom('a', 'b', 'c', 'd', '') }), weight: 5 },
    { arbitrary: fc.record({ kind: fc.constant('shift' as const) }), weight: 4 },
    { arbitrary: fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }), weight: 1 },
  ),
  { maxLength: 200 },
);

/** Runs the operations, then drains the queue; returns what came out of it, in order. */
function run(list: readonly Op[]): { served: Item[]; removed: Item[]; pushed: Item[]; log: Array<{ op: 'push' | 'serve' | 'remove'; item: Item }> } {
  const queue = new FairQueue<Item>();
  const waiting: Item[] = [];
  const pushed: Item[] = [];
  const served: Item[] = [];
  const removed: Item[] = [];
  const log: Array<{ op: 'push' | 'serve' | 'remove'; item: Item }> = [];
  const serve = () => {
    const expected = queue.peek();
    const item = queue.shift();
    expect(item).toBe(expected);
    if (!item) return;
    waiting.splice(waiting.indexOf(item), 1);
    served.push(item);
    log.push({ op: 'serve', item });
  };
  for (const op of list) {
    if (op.kind === 'push') {
      const item = { source: op.source, seq: pushed.length };
      queue.push(op.source, item);
      pushed.push(item);
      waiting.push(item);
      log.push({ op: 'push', item });
    } else if (op.kind === 'shift') {
      serve();
    } else if (waiting.length > 0) {
      const item = waiting[op.pick % waiting.length]!;
      expect(queue.remove(item.source, item)).toBe(true);
      expect(queue.remove(item.source, item)).toBe(false);
      waiting.splice(waiting.indexOf(item), 1);
      removed.push(item);
      log.push({ op: 'remove', item });
    }
    expect(queue.size).toBe(waiting.length);
  }
  while (queue.size > 0) serve();
  expect(queue.peek()).toBeUndefined();
  expect(queue.shift()).toBeUndefined();
  return { served, removed, pushed, log };
}

describe('FairQueue', () => {
  it('serves sources in turn, each first come first served', () => {
    const queue = new FairQueue<string>();
    for (const item of ['b1', 'b2', 'b3']) queue.push('batch', item);
    queue.push('chat', 'c1');
    queue.push('ide', 'i1');
    queue.push('chat', 'c2');
    const served: Array<string | undefined> = [];
    while (queue.size > 0) served.push(queue.shift());
    expect(served).toEqual(['b1', 'c1', 'i1', 'b2', 'c2', 'b3']);
  });

  it('leaves the head in place when it is only looked at, so a head that could not be served keeps its turn', () => {
    const queue = new FairQueue<string>();
    queue.push('a', 'a1');
    queue.push('b', 'b1');
    expect(queue.peek()).toBe('a1');
    expect(queue.peek()).toBe('a1');
    expect(queue.shift()).toBe('a1');
    expect(queue.peek()).toBe('b1');
  });

  it('lets a source that arrives wait behind those already waiting, and one that empties leave the rotation', () => {
    const queue = new FairQueue<string>();
    queue.push('a', 'a1');
    queue.push('a', 'a2');
    queue.push('b', 'b1');
    expect(queue.remove('b', 'b1')).toBe(true);
    queue.push('c', 'c1');
    queue.push('b', 'b2');
    expect([queue.shift(), queue.shift(), queue.shift(), queue.shift()]).toEqual(['a1', 'c1', 'b2', 'a2']);
  });

  it('gives out every item exactly once, served or removed', () => {
    fc.assert(
      fc.property(ops, (list) => {
        const { served, removed, pushed } = run(list);
        expect([...served, ...removed].sort((x, y) => x.seq - y.seq)).toEqual(pushed);
      }),
    );
  });

  it('serves the items of one source in the order they arrived', () => {
    fc.assert(
      fc.property(ops, (list) => {
        const { served } = run(list);
        for (const source of new Set(served.map((item) => item.source))) {
          const seqs = served.filter((item) => item.source === source).map((item) => item.seq);
          expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
        }
      }),
    );
  });

  it('serves no other source twice while a source waits for its turn', () => {
    fc.assert(
      fc.property(ops, (list) => {
        const { log } = run(list);
        // For each source: how many times each other source was served since it last started
        // waiting or was last served, while it kept at least one item.
        const waitingCount = new Map<string, number>();
        const servedSince = new Map<string, Map<string, number>>();
        for (const { op, item } of log) {
          const count = waitingCount.get(item.source) ?? 0;
          if (op === 'push') {
            if (count === 0) servedSince.set(item.source, new Map());
            waitingCount.set(item.source, count + 1);
            continue;
          }
          waitingCount.set(item.source, count - 1);
          if (op === 'remove') {
            if (count - 1 === 0) servedSince.delete(item.source);
            continue;
          }
          for (const [source, others] of servedSince) {
            if (source === item.source) continue;
            const times = (others.get(item.source) ?? 0) + 1;
            expect(times, `${JSON.stringify(item.source)} served twice while ${JSON.stringify(source)} waited`).toBe(1);
            others.set(item.source, times);
          }
          if (count - 1 === 0) servedSince.delete(item.source);
          else servedSince.set(item.source, new Map());
        }
      }),
    );
  });
});
