import fc from 'fast-check';
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { BoundCounter, BoundHistogram, type LabelNames } from './bound-metrics.js';
import { llmLatencyBuckets, overheadBuckets } from './registry.js';

type Values = [string, ...string[]];
type Op =
  | { kind: 'inc'; values: Values; amount: number | undefined }
  | { kind: 'observe'; values: Values; value: number }
  | { kind: 'zero'; values: Values }
  | { kind: 'labels'; target: 'counter' | 'histogram'; values: Values }
  | { kind: 'reset'; target: 'counter' | 'histogram' };

const labelNames = fc.uniqueArray(fc.constantFrom('route', 'code', 'candidate', 'virtual_model', 'stream', 'phase'), { minLength: 1, maxLength: 3 });
// A small pool makes label combinations repeat; the odd ones check escaping in the text format.
const labelValue = fc.oneof(fc.constantFrom('a', 'b', 'auto:chat', 'a/m1', '', 'say "hi"', 'back\\slash', 'two\nlines', 'é'), fc.string({ maxLength: 3 }));
const buckets = fc.oneof(
  fc.constant(llmLatencyBuckets),
  fc.constant(overheadBuckets),
  fc
    .uniqueArray(fc.double({ min: -100, max: 1000, noNaN: true }), { minLength: 1, maxLength: 12, comparator: 'SameValueZero' })
    .map((bounds) => bounds.map((bound) => bound + 0).sort((a, b) => a - b)),
);

const scenario = fc.record({ counterLabels: labelNames, histogramLabels: labelNames, buckets }).chain((setup) => {
  const valuesOf = (names: string[]) => fc.tuple(...names.map(() => labelValue)) as unknown as fc.Arbitrary<Values>;
  const counterValues = valuesOf(setup.counterLabels);
  const histogramValues = valuesOf(setup.histogramLabels);
  const op: fc.Arbitrary<Op> = fc.oneof(
    {
      arbitrary: fc.record({
        kind: fc.constant('inc' as const),
        values: counterValues,
        amount: fc.oneof(
          fc.constant(undefined),
          fc.constant(0),
          fc.integer({ min: 0, max: 1000 }),
          fc.double({ min: 0, max: 1e9, noNaN: true, noDefaultInfinity: true }),
        ),
      }),
      weight: 4,
    },
    {
      arbitrary: fc.record({
        kind: fc.constant('observe' as const),
        values: histogramValues,
        value: fc.oneof(fc.constantFrom(0, ...setup.buckets), fc.double({ min: -1000, max: 1e4, noNaN: true, noDefaultInfinity: true })),
      }),
      weight: 4,
    },
    { arbitrary: fc.record({ kind: fc.constant('zero' as const), values: histogramValues }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant('labels' as const), target: fc.constant('counter' as const), values: counterValues }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant('labels' as const), target: fc.constant('histogram' as const), values: histogramValues }), weight: 1 },
  );
  const reset = fc.record({ kind: fc.constant('reset' as const), target: fc.constantFrom('counter' as const, 'histogram' as const) });
  return fc.record({ setup: fc.constant(setup), ops: fc.array(fc.oneof({ arbitrary: op, weight: 30 }, { arbitrary: reset, weight: 1 }), { maxLength: 80 }) });
});

function registryWithDefaults(): Registry {
  const register = new Registry();
  register.setDefaultLabels({ replica: 'r1' });
  return register;
}

/** prom-client's JSON carries exemplar slots (null or undefined) that exemplar-less metrics never fill. */
async function json(register: Registry): Promise<unknown> {
  return (await register.getMetricsAsJSON()).map((metric) => ({
    ...metric,
    values: metric.values.map((sample) => {
      const { exemplar: _exemplar, ...rest } = sample as typeof sample & { exemplar?: unknown };
      return rest;
    }),
  }));
}

describe('BoundCounter and BoundHistogram', () => {
  it('expose exactly what prom-client Counter and Histogram expose after the same calls', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ setup, ops }) => {
        const ours = registryWithDefaults();
        const theirs = registryWithDefaults();
        const counter = { name: 'boo_test_total', help: 'Test counter' };
        const histogram = { name: 'boo_test_seconds', help: 'Test histogram', buckets: setup.buckets };
        const ourCounter = new BoundCounter({ ...counter, labelNames: setup.counterLabels as unknown as LabelNames, registers: [ours] });
        const ourHistogram = new BoundHistogram({ ...histogram, labelNames: setup.histogramLabels as unknown as LabelNames, registers: [ours] });
        const theirCounter = new Counter({ ...counter, labelNames: setup.counterLabels, registers: [theirs] });
        const theirHistogram = new Histogram({ ...histogram, labelNames: setup.histogramLabels, registers: [theirs] });
        const labelsOf = (values: Values) => Object.fromEntries(setup.histogramLabels.map((name, i) => [name, values[i]!]));

        for (const op of ops) {
          switch (op.kind) {
            case 'inc':
              ourCounter.labels(...op.values).inc(op.amount);
              theirCounter.labels(...op.values).inc(op.amount);
              break;
            case 'observe':
              ourHistogram.labels(...op.values).observe(op.value);
              theirHistogram.labels(...op.values).observe(op.value);
              break;
            case 'zero':
              ourHistogram.zero(labelsOf(op.values));
              theirHistogram.zero(labelsOf(op.values));
              break;
            case 'labels':
              (op.target === 'counter' ? ourCounter : ourHistogram).labels(...op.values);
              (op.target === 'counter' ? theirCounter : theirHistogram).labels(...op.values);
              break;
            case 'reset':
              (op.target === 'counter' ? ourCounter : ourHistogram).reset();
              (op.target === 'counter' ? theirCounter : theirHistogram).reset();
              break;
          }
        }
        expect(await ours.metrics()).toBe(await theirs.metrics());
        expect(await json(ours)).toEqual(await json(theirs));
      }),
      { numRuns: 300 },
    );
  });

  it('hands out one child per label combination, which exists in the exposition only once used', async () => {
    const register = registryWithDefaults();
    const counter = new BoundCounter({ name: 'c_total', help: 'c', labelNames: ['a', 'b'] as const, registers: [register] });
    expect(counter.labels('x', 'y')).toBe(counter.labels('x', 'y'));
    expect(counter.labels('x', 'z')).not.toBe(counter.labels('x', 'y'));
    expect(await register.metrics()).toBe('# HELP c_total c\n# TYPE c_total counter\n');
    counter.labels('x', 'z').inc(0);
    expect(await register.metrics()).toBe('# HELP c_total c\n# TYPE c_total counter\nc_total{a="x",b="z",replica="r1"} 0\n');
  });

  it('rejects a wrong number of label values when the child is created, naming the labels', () => {
    const counter = new BoundCounter({ name: 'c_total', help: 'c', labelNames: ['a', 'b'] as const, registers: [] });
    const histogram = new BoundHistogram({ name: 'h', help: 'h', labelNames: ['phase'] as const, buckets: [1], registers: [] });
    const untyped = counter.labels.bind(counter) as (...values: unknown[]) => unknown;
    expect(() => untyped('x')).toThrow(/c_total: expected 2 string label values for \(a, b\), got \[ 'x' \]/);
    expect(() => untyped('x', 'y', 'z')).toThrow(/expected 2 string label values/);
    expect(() => untyped('x', 200)).toThrow(/expected 2 string label values/);
    expect(() => histogram.zero({ phase: 'relay', other: 'x' } as { phase: string })).toThrow(/h: expected labels \(phase\)/);
    expect(() => histogram.zero({} as { phase: string })).toThrow(/h: expected labels \(phase\), got {}/);
  });

  it('rejects what prom-client would throw on or expose wrongly', () => {
    const labelNames = ['a'] as const;
    expect(() => new BoundHistogram({ name: 'h', help: 'h', labelNames: ['le'] as const, buckets: [1], registers: [] })).toThrow(/le is a reserved/);
    expect(() => new BoundHistogram({ name: 'h', help: 'h', labelNames, buckets: [1, 1], registers: [] })).toThrow(/strictly increasing/);
    expect(() => new BoundHistogram({ name: 'h', help: 'h', labelNames, buckets: [1, Infinity], registers: [] })).toThrow(/finite/);
    expect(() => new BoundCounter({ name: 'bad-name', help: 'c', labelNames, registers: [] })).toThrow(/invalid metric name/);
    expect(() => new BoundCounter({ name: 'c', help: 'c', labelNames: ['a-b'] as const, registers: [] })).toThrow(/invalid label name/);
    const child = new BoundCounter({ name: 'c', help: 'c', labelNames, registers: [] }).labels('x');
    for (const amount of [-1, Number.NaN, Infinity]) expect(() => child.inc(amount)).toThrow(RangeError);
    const observer = new BoundHistogram({ name: 'h', help: 'h', labelNames, buckets: [1], registers: [] }).labels('x');
    for (const value of [Number.NaN, Infinity]) expect(() => observer.observe(value)).toThrow(TypeError);
  });
});
