export interface EventBatcherOptions<T> {
  /** A batch closes as soon as it holds this many items. */
  maxSize: number;
  /** ...or this long after its first item arrived, whichever comes first. */
  maxWaitMs: number;
  /** Receives each closed batch (never empty). Called synchronously from `add`, `flush` or the timer. */
  onBatch: (batch: T[]) => void;
}

/**
 * Groups items into batches closed by size or by age. Pure: no I/O, only a timer, so the flush
 * rules are tested with fake timers.
 *
 * @example
 * const batcher = new EventBatcher({ maxSize: 500, maxWaitMs: 200, onBatch: (batch) => write(batch) });
 * batcher.add(event);
 */
export class EventBatcher<T> {
  readonly #options: EventBatcherOptions<T>;
  #items: T[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: EventBatcherOptions<T>) {
    if (!Number.isInteger(options.maxSize) || options.maxSize < 1) throw new RangeError('maxSize must be a positive integer');
    if (!(options.maxWaitMs >= 0)) throw new RangeError('maxWaitMs must be >= 0');
    this.#options = options;
  }

  /** Items waiting in the open batch. */
  get size(): number {
    return this.#items.length;
  }

  add(item: T): void {
    this.#items.push(item);
    if (this.#items.length >= this.#options.maxSize) {
      this.flush();
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.flush();
      }, this.#options.maxWaitMs);
    }
  }

  /** Closes the open batch now (shutdown, or a caller that knows no more items are coming). */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#items.length === 0) return;
    const batch = this.#items;
    this.#items = [];
    this.#options.onBatch(batch);
  }
}
