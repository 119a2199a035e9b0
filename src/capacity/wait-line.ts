import type { QueueSettings } from '../config/load.js';
import { CapacityExceededError } from './capacity-errors.js';
import { FairQueue } from './fair-queue.js';

/**
 * What one try to take capacity gave: the thing taken (a slot), or nothing, with the time at
 * which trying again makes sense when one is known (a cooldown's end, a dead replica's lease
 * running out). Without one, the line waits for {@link WaitLine.wake}.
 */
export type Turn<T> = { readonly value: T; readonly retryAt?: undefined } | { readonly value?: undefined; readonly retryAt?: number | undefined };

export interface WaitOptions<T> {
  /** `X-Boo-Source`, or `''` for none: turns go round-robin across sources. */
  readonly source: string;
  /** Tries to take capacity now. Called only on this waiter's turn, never twice at once. A throw fails the waiter. */
  readonly attempt: () => Turn<T> | Promise<Turn<T>>;
  /**
   * Gives back a value that was taken for a waiter who had left meanwhile (its deadline or its
   * client went while its try was in flight): without it that slot would be held for nobody.
   */
  readonly dispose: (value: T) => void;
  /** The client's: aborting it takes the waiter out of line at once. */
  readonly signal?: AbortSignal | undefined;
  /**
   * When the request first entered this line (epoch ms), for one that comes back after the
   * capacity it was given failed it (the candidate answered 429): its deadline and `queuedMs`
   * count from then. It waits behind the others of its source again. Default: now.
   */
  readonly enteredAt?: number | undefined;
}

export interface Waited<T> {
  readonly value: T;
  /** Time from entering the line to taking the value. */
  readonly queuedMs: number;
}

/** How a waiter left the line; `rejected`: it never entered, the line was full. */
export type LeaveOutcome = 'served' | 'queue_timeout' | 'rejected' | 'client_closed' | 'failed';

/** What the line reports, for the metrics of its virtual model. */
export interface LineObserver {
  depth(waiting: number): void;
  left(outcome: LeaveOutcome, queuedMs: number): void;
}

interface Waiter<T> {
  readonly options: WaitOptions<T>;
  readonly enteredAt: number;
  readonly resolve: (waited: Waited<T>) => void;
  readonly reject: (error: unknown) => void;
  timer: NodeJS.Timeout | undefined;
  onAbort: (() => void) | undefined;
  /** Out of line: served, timed out, aborted or failed. */
  gone: boolean;
}

const isPromise = <T>(value: T | Promise<T>): value is Promise<T> => typeof (value as { then?: unknown } | undefined)?.then === 'function';

/**
 * The line of one virtual model on this replica: requests that no candidate could take wait here
 * for capacity, first come first served within a source and round-robin across sources
 * ({@link FairQueue}). Only the head tries; when capacity may have come back ({@link wake}: a slot
 * freed here or on another replica, a cooldown ended) it tries at once, no polling. When the head
 * takes capacity the next head tries at once too; when it finds none it keeps its place. A waiter
 * leaves at its deadline (`maxWaitMs`: {@link CapacityExceededError} `queue_timeout`) or when its
 * client goes (`signal`: rejected with the signal's reason); a newcomer finding `maxQueued`
 * waiting is refused at once (`rejected`).
 *
 * @example
 * const { value: slot, queuedMs } = await line.wait({
 *   source, signal: client.signal,
 *   attempt: async () => ({ value: await takeAnySlot() }),   // or { retryAt } / {}
 *   dispose: (slot) => slot.release(),
 * });
 */
export class WaitLine<T> {
  readonly name: string;
  readonly #settings: () => QueueSettings;
  readonly #now: () => number;
  readonly #observer: LineObserver | undefined;
  readonly #queue = new FairQueue<Waiter<T>>();
  /** The head's try is in flight. */
  #trying = false;
  /** Something woke the line while a try was in flight: try again when it ends. */
  #wokenMeanwhile = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #retryAt = Infinity;

  /**
   * @param name the virtual model, for messages
   * @param settings read at each entry, so a reload applies to newcomers
   */
  constructor(name: string, settings: () => QueueSettings, options: { observer?: LineObserver; now?: () => number } = {}) {
    this.name = name;
    this.#settings = settings;
    this.#now = options.now ?? Date.now;
    this.#observer = options.observer;
  }

  /** Requests waiting. A newcomer to a line that is not empty should wait behind them rather than try first. */
  get size(): number {
    return this.#queue.size;
  }

  /**
   * Waits in line until `attempt` takes capacity on this waiter's turn. A waiter that finds the
   * line empty tries at once: capacity may have come back since the caller's own try.
   * @throws CapacityExceededError `rejected` at once when `maxQueued` are waiting; `queue_timeout` after `maxWaitMs`
   * @throws the signal's reason when it aborts; whatever `attempt` throws
   */
  wait(options: WaitOptions<T>): Promise<Waited<T>> {
    const settings = this.#settings();
    const now = this.#now();
    const enteredAt = options.enteredAt ?? now;
    if (options.signal?.aborted) return Promise.reject(abortReason(options.signal));
    if (now - enteredAt >= settings.maxWaitMs) {
      this.#observer?.left('queue_timeout', now - enteredAt);
      return Promise.reject(new CapacityExceededError(this.name, 'queue_timeout', { queuedMs: now - enteredAt, retryAfterSeconds: this.#retryAfterSeconds() }));
    }
    if (this.#queue.size >= settings.maxQueued) {
      this.#observer?.left('rejected', 0);
      return Promise.reject(new CapacityExceededError(this.name, 'rejected', { queuedMs: 0, retryAfterSeconds: this.#retryAfterSeconds() }));
    }
    return new Promise<Waited<T>>((resolve, reject) => {
      const waiter: Waiter<T> = { options, enteredAt, resolve, reject, timer: undefined, onAbort: undefined, gone: false };
      waiter.timer = setTimeout(
        () => {
          const queuedMs = this.#now() - enteredAt;
          this.#leave(
            waiter,
            'queue_timeout',
            new CapacityExceededError(this.name, 'queue_timeout', { queuedMs, retryAfterSeconds: this.#retryAfterSeconds() }),
          );
        },
        enteredAt + settings.maxWaitMs - now,
      );
      if (options.signal) {
        const signal = options.signal;
        waiter.onAbort = () => this.#leave(waiter, 'client_closed', abortReason(signal));
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.#queue.push(options.source, waiter);
      this.#observer?.depth(this.#queue.size);
      if (this.#queue.peek() === waiter) this.wake();
    });
  }

  /** Capacity may have come back: the head tries now (or as soon as its try in flight ends). */
  wake(): void {
    if (this.#trying) {
      this.#wokenMeanwhile = true;
      return;
    }
    this.#serve();
  }

  /** Tries again at `at` (epoch ms) unless something wakes the line sooner; the earliest time asked for wins. */
  wakeAt(at: number): void {
    if (at >= this.#retryAt) return;
    clearTimeout(this.#retryTimer);
    this.#retryAt = at;
    this.#retryTimer = setTimeout(
      () => {
        this.#retryTimer = undefined;
        this.#retryAt = Infinity;
        this.wake();
      },
      Math.max(0, at - this.#now()),
    );
  }

  /** Refuses everyone waiting (shutdown): each gets `error`. */
  close(error: unknown): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#retryAt = Infinity;
    for (let waiter = this.#queue.peek(); waiter; waiter = this.#queue.peek()) this.#leave(waiter, 'failed', error);
  }

  /** Tries the head, and the next heads while they take capacity. */
  #serve(): void {
    for (;;) {
      const head = this.#queue.peek();
      if (!head) return;
      this.#wokenMeanwhile = false;
      let turn: Turn<T> | Promise<Turn<T>>;
      try {
        turn = head.options.attempt();
      } catch (err: unknown) {
        this.#leave(head, 'failed', err);
        continue;
      }
      if (isPromise(turn)) {
        this.#trying = true;
        turn.then(
          (result) => this.#after(head, result),
          (err: unknown) => this.#after(head, undefined, err),
        );
        return;
      }
      if (!this.#took(head, turn)) return;
    }
  }

  #after(head: Waiter<T>, turn: Turn<T> | undefined, error?: unknown): void {
    this.#trying = false;
    if (turn === undefined) this.#leave(head, 'failed', error);
    else if (!this.#took(head, turn) && !this.#wokenMeanwhile) return;
    this.#serve();
  }

  /** Settles one try of `head`; true when the next head should try at once. */
  #took(head: Waiter<T>, turn: Turn<T>): boolean {
    if (turn.value !== undefined) {
      if (head.gone) {
        head.options.dispose(turn.value);
        return true;
      }
      const queuedMs = this.#now() - head.enteredAt;
      this.#remove(head, 'served', queuedMs);
      head.resolve({ value: turn.value, queuedMs });
      return true;
    }
    // The head left while its try was in flight: the next one gets its turn.
    if (head.gone) return true;
    if (turn.retryAt !== undefined) this.wakeAt(turn.retryAt);
    return false;
  }

  #leave(waiter: Waiter<T>, outcome: LeaveOutcome, error: unknown): void {
    if (waiter.gone) return;
    this.#remove(waiter, outcome, this.#now() - waiter.enteredAt);
    waiter.reject(error);
  }

  #remove(waiter: Waiter<T>, outcome: LeaveOutcome, queuedMs: number): void {
    waiter.gone = true;
    clearTimeout(waiter.timer);
    if (waiter.onAbort) waiter.options.signal?.removeEventListener('abort', waiter.onAbort);
    // A served head goes through shift(), which passes the turn to the next source; removal does not.
    if (outcome === 'served' && this.#queue.peek() === waiter) this.#queue.shift();
    else this.#queue.remove(waiter.options.source, waiter);
    this.#observer?.depth(this.#queue.size);
    this.#observer?.left(outcome, queuedMs);
    if (this.#queue.size === 0) {
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
      this.#retryAt = Infinity;
    }
  }

  /** When a refused client should come back: when the line next expects capacity, else in a second. */
  #retryAfterSeconds(): number {
    const known = this.#retryAt === Infinity ? undefined : this.#retryAt - this.#now();
    return Math.max(1, Math.ceil((known ?? 1_000) / 1_000));
  }
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new Error('the client left the line');
}
