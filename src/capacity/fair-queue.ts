/**
 * Items waiting for their turn, in the order they are served: first come first served within a
 * source, and round-robin across sources, so one busy source cannot starve the others. Plain
 * data, no I/O and no clock; the line ({@link WaitLine}) puts timers and signals around it.
 *
 * The sources with items form a rotation. The head is the oldest item of the source at the front
 * of the rotation; taking it sends that source to the back (when it has more), so between two
 * turns of a waiting source every other source has at most one. A source that runs out of items
 * leaves the rotation; one that arrives joins at the back.
 *
 * @example
 * const queue = new FairQueue<string>();
 * queue.push('batch', 'b1'); queue.push('batch', 'b2'); queue.push('chat', 'c1');
 * [queue.shift(), queue.shift(), queue.shift()]; // ['b1', 'c1', 'b2']
 */
export class FairQueue<T> {
  readonly #bySource = new Map<string, T[]>();
  /** Sources with at least one item; the first is served next. */
  readonly #rotation: string[] = [];
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** Adds an item behind the others of its source. */
  push(source: string, item: T): void {
    const items = this.#bySource.get(source);
    if (items) items.push(item);
    else {
      this.#bySource.set(source, [item]);
      this.#rotation.push(source);
    }
    this.#size += 1;
  }

  /** The item served next, left in place. */
  peek(): T | undefined {
    const source = this.#rotation[0];
    return source === undefined ? undefined : this.#bySource.get(source)?.[0];
  }

  /** Takes the item served next; its source goes to the back of the rotation. */
  shift(): T | undefined {
    const source = this.#rotation.shift();
    if (source === undefined) return undefined;
    const items = this.#bySource.get(source)!;
    const item = items.shift();
    this.#size -= 1;
    if (items.length > 0) this.#rotation.push(source);
    else this.#bySource.delete(source);
    return item;
  }

  /** Takes an item out wherever it stands (a waiter that gave up); false when it is not here. */
  remove(source: string, item: T): boolean {
    const items = this.#bySource.get(source);
    const index = items?.indexOf(item) ?? -1;
    if (!items || index < 0) return false;
    items.splice(index, 1);
    this.#size -= 1;
    if (items.length === 0) {
      this.#bySource.delete(source);
      this.#rotation.splice(this.#rotation.indexOf(source), 1);
    }
    return true;
  }
}
