import { inspect } from 'node:util';
import { validateMetricName, type Metric, type Registry } from 'prom-client';

/*
 * Counters and histograms for the per-request hot path. prom-client's children re-validate and
 * re-hash their labels on every `inc` / `observe`; here a child is built once per label
 * combination and then only adds to numbers it owns. The classes register into a prom-client
 * `Registry` and hand it the same samples prom-client's own Counter and Histogram would, so the
 * exposition does not change.
 */

export type LabelNames = readonly [string, ...string[]];
/** One value per label name, in the order of the names. */
export type LabelValues<L extends LabelNames> = { readonly [K in keyof L]: string };
export type SeriesLabels<L extends LabelNames> = Readonly<Record<L[number], string>>;

/** A sample as prom-client's Registry reads it; `sharedLabels` are printed after the default labels. */
export interface Sample {
  value: number;
  labels: Readonly<Record<string, string | number>>;
  metricName?: string;
  sharedLabels?: Readonly<Record<string, string>>;
}

export interface MetricData {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  values: Sample[];
  aggregator: 'sum';
}

export interface BoundMetricConfiguration<L extends LabelNames> {
  name: string;
  help: string;
  labelNames: L;
  registers: readonly Registry[];
}

const labelNamePattern = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

type Trie<S> = Map<string, Trie<S> | S>;

/** A series that can go back to "never touched": what `reset()` leaves, as prom-client does. */
interface Series {
  clear(): void;
}

abstract class BoundMetric<L extends LabelNames, S extends Series> {
  abstract readonly type: MetricData['type'];
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  readonly labelNames: L;
  /**
   * Series that hold a value, in the order they first took one. prom-client exposes a series only
   * once it is incremented, observed or zeroed (`labels()` alone creates none), in that order.
   */
  protected readonly shown = new Set<S>();
  /** Children by label values, one level per label: no key string to build on a lookup. */
  private readonly children: Trie<S> = new Map();

  constructor(config: BoundMetricConfiguration<L>) {
    if (!validateMetricName(config.name)) throw new Error(`invalid metric name "${config.name}"`);
    if (!config.help) throw new Error(`${config.name}: help is required`);
    for (const label of config.labelNames) {
      if (!labelNamePattern.test(label)) throw new Error(`${config.name}: invalid label name "${label}"`);
    }
    if (new Set(config.labelNames).size !== config.labelNames.length) throw new Error(`${config.name}: duplicate label names`);
    this.name = config.name;
    this.help = config.help;
    this.labelNames = config.labelNames;
    // prom-client types registerMetric for its own classes only; the registry reads no more of a
    // metric than name, type, help, aggregator, get() or getForPromString(), and reset().
    for (const register of config.registers) register.registerMetric(this as unknown as Metric);
  }

  /** The child of these label values; the same object on every call. */
  labels(...values: LabelValues<L>): S {
    const list: readonly string[] = values;
    const last = this.labelNames.length - 1;
    if (list.length === last + 1) {
      let node: Trie<S> | undefined = this.children;
      for (let i = 0; i < last && node !== undefined; i++) node = node.get(list[i]!) as Trie<S> | undefined;
      const child = node?.get(list[last]!) as S | undefined;
      if (child !== undefined) return child;
    }
    return this.create(list);
  }

  /** Drops every series from the exposition, as prom-client's `reset()` does; children stay valid. */
  reset(): void {
    for (const series of this.shown) series.clear();
    this.shown.clear();
  }

  protected abstract createSeries(labels: SeriesLabels<L>): S;

  /** Validation lives here, once per label combination, so that the hot path needs none. */
  private create(values: readonly unknown[]): S {
    const names = this.labelNames;
    if (values.length !== names.length || values.some((value) => typeof value !== 'string')) {
      throw new TypeError(`${this.name}: expected ${names.length} string label values for (${names.join(', ')}), got ${inspect(values)}`);
    }
    const labels = Object.freeze(Object.fromEntries(names.map((name, i) => [name, values[i]]))) as SeriesLabels<L>;
    const child = this.createSeries(labels);
    let node = this.children;
    for (let i = 0; i < names.length - 1; i++) {
      const value = values[i] as string;
      let next = node.get(value) as Trie<S> | undefined;
      if (next === undefined) {
        next = new Map();
        node.set(value, next);
      }
      node = next;
    }
    node.set(values[names.length - 1] as string, child);
    return child;
  }

  protected snapshot(values: Sample[]): MetricData {
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

export class CounterChild {
  private total = 0;
  private isShown = false;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly shown: Set<CounterChild>,
  ) {}

  inc(amount = 1): void {
    // A NaN or infinite amount would stick in the total for the life of the process.
    if (!(amount >= 0 && amount < Infinity)) throw new RangeError(`counter increment must be finite and not negative, got ${amount}`);
    this.total += amount;
    if (!this.isShown) this.show();
  }

  get value(): number {
    return this.total;
  }

  clear(): void {
    this.total = 0;
    this.isShown = false;
  }

  private show(): void {
    this.isShown = true;
    this.shown.add(this);
  }
}

export class BoundCounter<L extends LabelNames> extends BoundMetric<L, CounterChild> {
  readonly type = 'counter';

  async get(): Promise<MetricData> {
    return this.snapshot(Array.from(this.shown, (child) => ({ value: child.value, labels: child.labels })));
  }

  protected createSeries(labels: SeriesLabels<L>): CounterChild {
    return new CounterChild(labels, this.shown);
  }
}

export class HistogramChild {
  /**
   * Observations per bucket (not cumulative), then those above the last bound, then their sum.
   * The count is the total of the buckets, so an observation is two writes.
   */
  readonly counts: Float64Array;
  private isShown = false;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: Float64Array,
    private readonly shown: Set<HistogramChild>,
  ) {
    this.counts = new Float64Array(bounds.length + 2);
  }

  observe(value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`histogram value must be a finite number, got ${value}`);
    const bounds = this.bounds;
    let bucket = 0;
    while (bucket < bounds.length && value > bounds[bucket]!) bucket++;
    this.counts[bucket]! += 1;
    this.counts[bounds.length + 1]! += value;
    if (!this.isShown) this.show();
  }

  /** Sets every count and the sum to 0, and exposes the series (prom-client's `zero`). */
  zero(): void {
    this.counts.fill(0);
    if (!this.isShown) this.show();
  }

  clear(): void {
    this.counts.fill(0);
    this.isShown = false;
  }

  private show(): void {
    this.isShown = true;
    this.shown.add(this);
  }
}

export interface BoundHistogramConfiguration<L extends LabelNames> extends BoundMetricConfiguration<L> {
  buckets: readonly number[];
}

export class BoundHistogram<L extends LabelNames> extends BoundMetric<L, HistogramChild> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];
  private readonly bounds: Float64Array;

  constructor(config: BoundHistogramConfiguration<L>) {
    // Checked before registering, so that a bad histogram leaves no trace in the registry.
    if (config.labelNames.includes('le')) throw new Error(`${config.name}: le is a reserved label name`);
    const { buckets } = config;
    // The bucket search stops at the first bound not below the value, which needs them in order.
    if (buckets.length === 0 || buckets.some((bound, i) => !Number.isFinite(bound) || (i > 0 && bound <= buckets[i - 1]!))) {
      throw new Error(`${config.name}: buckets must be finite and strictly increasing, got ${inspect(buckets)}`);
    }
    super(config);
    this.buckets = Object.freeze([...buckets]);
    this.bounds = Float64Array.from(buckets);
  }

  /** Creates the series of these labels at 0, or sets it back to 0 if it exists. */
  zero(labels: SeriesLabels<L>): void {
    const values = this.labelNames.map((name) => (labels as Record<string, string>)[name]);
    if (Object.keys(labels).length !== values.length) {
      throw new TypeError(`${this.name}: expected labels (${this.labelNames.join(', ')}), got ${inspect(labels)}`);
    }
    this.labels(...(values as unknown as LabelValues<L>)).zero();
  }

  /**
   * The series' labels go in `sharedLabels`, as prom-client's do: the registry then prints them
   * after `le` and the default labels, and the text stays what it was.
   */
  async getForPromString(): Promise<MetricData> {
    const bucketName = `${this.name}_bucket`;
    const sumName = `${this.name}_sum`;
    const countName = `${this.name}_count`;
    const values: Sample[] = [];
    for (const child of this.shown) {
      const { counts, labels: sharedLabels } = child;
      let cumulative = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        cumulative += counts[i]!;
        values.push({ labels: { le: this.buckets[i]! }, value: cumulative, metricName: bucketName, sharedLabels });
      }
      cumulative += counts[this.buckets.length]!;
      values.push({ labels: { le: '+Inf' }, value: cumulative, metricName: bucketName, sharedLabels });
      values.push({ labels: {}, value: counts[this.buckets.length + 1]!, metricName: sumName, sharedLabels });
      values.push({ labels: {}, value: cumulative, metricName: countName, sharedLabels });
    }
    return this.snapshot(values);
  }

  async get(): Promise<MetricData> {
    const data = await this.getForPromString();
    data.values = data.values.map(({ sharedLabels, labels, ...sample }) => ({ ...sample, labels: { ...labels, ...sharedLabels } }));
    return data;
  }

  protected createSeries(labels: SeriesLabels<L>): HistogramChild {
    return new HistogramChild(labels, this.bounds, this.shown);
  }
}
