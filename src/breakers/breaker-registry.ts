import { EventEmitter } from 'node:events';
import CircuitBreaker from 'opossum';
import type { Config } from '../config/load.js';
import type { BreakerPosition } from '../routing/select-targets.js';

/** An error of an upstream attempt that tells the breaker whether it counts against the candidate. */
export interface BreakerVerdict {
  /** false for errors that say nothing about the candidate's health (429, client went away). */
  readonly countsAsBreakerFailure: boolean;
}

function isExcusedError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as Partial<BreakerVerdict>).countsAsBreakerFailure === false;
}

export type BreakerTransition = { candidate: string; to: BreakerPosition };

type Attempt<T> = () => Promise<T>;

/**
 * One opossum breaker per candidate, in this process. The breaker guards the attempt up to the
 * commit point (first byte), not the whole stream. opossum's own timeout and abortController are
 * off: every request has its own AbortController, since one per breaker would abort every
 * request in flight on that candidate. Emits `transition` ({@link BreakerTransition}).
 */
export class BreakerRegistry extends EventEmitter<{ transition: [BreakerTransition] }> {
  private readonly breakers = new Map<string, CircuitBreaker<[Attempt<unknown>], unknown>>();
  private options: Config['breaker'];

  constructor(options: Config['breaker']) {
    super();
    this.options = options;
  }

  /** New settings apply to breakers created from now on; existing ones keep their state and settings. */
  reconfigure(options: Config['breaker']): void {
    this.options = options;
  }

  private breaker(candidate: string): CircuitBreaker<[Attempt<unknown>], unknown> {
    let breaker = this.breakers.get(candidate);
    if (!breaker) {
      breaker = new CircuitBreaker((attempt: Attempt<unknown>) => attempt(), {
        name: candidate,
        timeout: false,
        errorThresholdPercentage: this.options.errorThresholdPercentage,
        volumeThreshold: this.options.volumeThreshold,
        rollingCountTimeout: this.options.rollingCountTimeoutMs,
        resetTimeout: this.options.resetTimeoutMs,
        errorFilter: isExcusedError,
      });
      breaker.on('open', () => this.emit('transition', { candidate, to: 'open' }));
      breaker.on('halfOpen', () => this.emit('transition', { candidate, to: 'halfOpen' }));
      breaker.on('close', () => this.emit('transition', { candidate, to: 'closed' }));
      this.breakers.set(candidate, breaker);
    }
    return breaker;
  }

  position(candidate: string): BreakerPosition {
    const breaker = this.breakers.get(candidate);
    if (!breaker || breaker.closed) return 'closed';
    return breaker.halfOpen ? 'halfOpen' : 'open';
  }

  /**
   * Runs an attempt through the candidate's breaker. Resolves with the attempt's value; rejects
   * with its error, or with opossum's EOPENBREAKER when the breaker refuses (then nothing was sent).
   * `force` runs it even when open (the panic case): success then closes the breaker.
   */
  async run<T>(candidate: string, attempt: Attempt<T>, force = false): Promise<T> {
    const breaker = this.breaker(candidate);
    if (force && breaker.opened) {
      const value = await attempt();
      breaker.close();
      return value;
    }
    return (await breaker.fire(attempt)) as T;
  }

  /** Opens the candidate's breaker as if it had tripped here (state learnt from another replica). */
  open(candidate: string): void {
    this.breaker(candidate).open();
  }

  close(candidate: string): void {
    this.breaker(candidate).close();
  }

  /** True when opossum refused the call without running it. */
  static isRejection(error: unknown): boolean {
    return CircuitBreaker.isOurError(error as Error);
  }

  shutdown(): void {
    for (const breaker of this.breakers.values()) breaker.shutdown();
    this.breakers.clear();
  }
}
