import { EventEmitter } from 'node:events';
import CircuitBreaker from 'opossum';
import type { Config } from '../config/load.js';
import type { BreakerPosition } from './breaker-position.js';

/** An error of an upstream attempt that tells the breaker whether it counts against the candidate. */
export interface BreakerVerdict {
  /** false for errors that say nothing about the candidate's health (429, client went away). */
  readonly countsAsBreakerFailure: boolean;
}

function isExcusedError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as Partial<BreakerVerdict>).countsAsBreakerFailure === false;
}

/** Who changed a breaker: this process (its own traffic) or another replica (through the shared store). */
export type BreakerOrigin = 'local' | 'remote';

export type BreakerTransition = { candidate: string; to: BreakerPosition; origin: BreakerOrigin };

export interface BreakerEvents {
  /** Every change of {@link BreakerRegistry.position}, for metrics and logs. */
  transition: [BreakerTransition];
  /** The breaker opened because of this process's traffic (not because another replica said so). */
  trip: [{ candidate: string }];
  /** A probe (or a forced panic attempt) said whether the candidate works again. */
  verdict: [{ candidate: string; healthy: boolean }];
  /** An attempt ran through a closed breaker; `failure` as the breaker counted it. */
  outcome: [{ candidate: string; failure: boolean }];
}

type Attempt<T> = () => Promise<T>;

/** Refusal of an open breaker whose probe belongs to someone else (coordinated mode). */
class ProbeNotPermittedError extends Error {
  readonly code = 'EOPENBREAKER';
}

interface Entry {
  readonly breaker: CircuitBreaker<[Attempt<unknown>], unknown>;
  /** Coordinated mode: one probe may be sent from here. */
  permit: boolean;
  /** Coordinated mode: the probe is in flight. */
  probing: boolean;
  origin: BreakerOrigin;
  /** Last position reported through `transition`. */
  reported: BreakerPosition;
}

/**
 * One opossum breaker per candidate, in this process. The breaker guards the attempt up to the
 * commit point (first byte), not the whole stream. opossum's own timeout and abortController are
 * off: every request has its own AbortController, since one per breaker would abort every
 * request in flight on that candidate. Emits the events of {@link BreakerEvents}.
 *
 * Alone, opossum decides when an open breaker goes half-open (after resetTimeout) and lets the
 * next call through as the probe. Once {@link coordinateProbes} is called, that decision belongs
 * to the caller: an open breaker stays open (opossum's half-open included) until
 * {@link permitProbe} lets exactly one attempt through, so that one replica in a cluster probes.
 */
export class BreakerRegistry extends EventEmitter<BreakerEvents> {
  private readonly entries = new Map<string, Entry>();
  private options: Config['breaker'];
  private coordinated = false;
  /** Origin of the state change being applied; opossum emits its events synchronously inside it. */
  private applying: BreakerOrigin | undefined;

  constructor(options: Config['breaker']) {
    super();
    this.options = options;
  }

  /** New settings apply to breakers created from now on; existing ones keep their state and settings. */
  reconfigure(options: Config['breaker']): void {
    this.options = options;
  }

  /** Hands the half-open decision to the caller (see the class comment). Call before traffic. */
  coordinateProbes(): void {
    this.coordinated = true;
  }

  private entry(candidate: string): Entry {
    let entry = this.entries.get(candidate);
    if (!entry) {
      const breaker = new CircuitBreaker((attempt: Attempt<unknown>) => attempt(), {
        name: candidate,
        timeout: false,
        errorThresholdPercentage: this.options.errorThresholdPercentage,
        volumeThreshold: this.options.volumeThreshold,
        rollingCountTimeout: this.options.rollingCountTimeoutMs,
        resetTimeout: this.options.resetTimeoutMs,
        errorFilter: isExcusedError,
        // Latency percentiles are ours (fleet EWMA, Prometheus): opossum's would keep every
        // call's latency in its window and sort them all on each failure.
        rollingPercentilesEnabled: false,
        enableSnapshots: false,
      });
      const created: Entry = { breaker, permit: false, probing: false, origin: 'local', reported: 'closed' };
      breaker.on('open', () => {
        if (this.applying === undefined) {
          created.origin = 'local';
          this.emit('trip', { candidate });
        }
        this.report(candidate, created);
      });
      breaker.on('halfOpen', () => this.report(candidate, created));
      breaker.on('close', () => this.report(candidate, created));
      this.entries.set(candidate, created);
      entry = created;
    }
    return entry;
  }

  private report(candidate: string, entry: Entry): void {
    const to = this.positionOf(entry);
    if (to === entry.reported) return;
    entry.reported = to;
    this.emit('transition', { candidate, to, origin: this.applying ?? 'local' });
  }

  private positionOf(entry: Entry): BreakerPosition {
    const { breaker } = entry;
    if (breaker.closed) return 'closed';
    if (this.coordinated) return entry.permit || entry.probing ? 'halfOpen' : 'open';
    return breaker.halfOpen ? 'halfOpen' : 'open';
  }

  position(candidate: string): BreakerPosition {
    const entry = this.entries.get(candidate);
    return entry ? this.positionOf(entry) : 'closed';
  }

  /** Who set the current state of a breaker that is not closed; undefined when closed. */
  origin(candidate: string): BreakerOrigin | undefined {
    const entry = this.entries.get(candidate);
    return entry && !entry.breaker.closed ? entry.origin : undefined;
  }

  /**
   * Runs an attempt through the candidate's breaker. Resolves with the attempt's value; rejects
   * with its error, or with a refusal ({@link isRejection}) when the breaker is open (then nothing
   * was sent).
   *
   * `force` runs it even when open: the panic case, where every candidate of a virtual model is
   * open and one is tried anyway. A panic attempt serves its request and changes no breaker: its
   * success closes nothing and its failure is not counted. Only the probe decides, after the
   * reset time, on the one replica that holds the probe (docs/architecture.md, "Circuit
   * breakers"); a panic attempt that meets this replica's own probe permit is that probe.
   * Otherwise a flaky candidate's one lucky answer would close its breaker on every replica at
   * once, skipping the reset time and the single probe.
   */
  async run<T>(candidate: string, attempt: Attempt<T>, force = false): Promise<T> {
    const entry = this.entry(candidate);
    const { breaker } = entry;
    if (this.coordinated && !breaker.closed) {
      if (entry.permit) return this.probe(candidate, entry, attempt);
      if (!force) throw new ProbeNotPermittedError(`breaker of ${candidate} is open`);
    }
    if (force && (breaker.opened || (this.coordinated && !breaker.closed))) return attempt();
    const wasClosed = breaker.closed;
    try {
      const value = (await breaker.fire(attempt)) as T;
      if (wasClosed) this.emit('outcome', { candidate, failure: false });
      return value;
    } catch (err: unknown) {
      if (wasClosed && !BreakerRegistry.isRejection(err)) this.emit('outcome', { candidate, failure: !isExcusedError(err) });
      throw err;
    }
  }

  /** The one permitted attempt of an open breaker in coordinated mode: its result is the verdict. */
  private async probe<T>(candidate: string, entry: Entry, attempt: Attempt<T>): Promise<T> {
    entry.permit = false;
    entry.probing = true;
    try {
      const value = await attempt();
      entry.probing = false;
      this.apply(candidate, entry, 'local', () => entry.breaker.close());
      this.emit('verdict', { candidate, healthy: true });
      return value;
    } catch (err: unknown) {
      entry.probing = false;
      if (isExcusedError(err)) {
        // A 429 or a client that left says nothing about the candidate: the next request probes.
        if (!entry.breaker.closed) entry.permit = true;
        this.report(candidate, entry);
      } else {
        this.apply(candidate, entry, 'local', () => {
          entry.origin = 'local';
          entry.breaker.open();
        });
        this.emit('verdict', { candidate, healthy: false });
      }
      throw err;
    }
  }

  /** Runs a state change of ours, so opossum's events inside it are reported with our origin. */
  private apply(candidate: string, entry: Entry, origin: BreakerOrigin, change: () => void): void {
    const previous = this.applying;
    this.applying = origin;
    try {
      change();
      this.report(candidate, entry);
    } finally {
      this.applying = previous;
    }
  }

  /** Opens the candidate's breaker as if it had tripped here (state learnt from another replica). */
  open(candidate: string, origin: BreakerOrigin = 'remote'): void {
    const entry = this.entry(candidate);
    this.apply(candidate, entry, origin, () => {
      entry.permit = false;
      entry.origin = origin;
      entry.breaker.open();
    });
  }

  /** Opens the breaker as a trip of this process (a decision from cluster-wide counts); emits `trip`. */
  trip(candidate: string): void {
    const entry = this.entry(candidate);
    if (!entry.breaker.closed) return;
    entry.origin = 'local';
    entry.breaker.open();
  }

  close(candidate: string, origin: BreakerOrigin = 'remote'): void {
    const entry = this.entries.get(candidate);
    if (!entry) return;
    this.apply(candidate, entry, origin, () => {
      entry.permit = false;
      entry.breaker.close();
    });
  }

  /** Coordinated mode: the next attempt on this open breaker is the probe. No-op when closed. */
  permitProbe(candidate: string): void {
    const entry = this.entries.get(candidate);
    if (!entry || entry.breaker.closed || entry.probing) return;
    entry.permit = true;
    this.report(candidate, entry);
  }

  /** Withdraws an unused probe permit (it stays open). Returns false when the probe already started or the breaker closed. */
  revokeProbe(candidate: string): boolean {
    const entry = this.entries.get(candidate);
    if (!entry?.permit) return false;
    entry.permit = false;
    this.report(candidate, entry);
    return true;
  }

  /** True while this process's probe of the candidate is in flight. */
  isProbing(candidate: string): boolean {
    return this.entries.get(candidate)?.probing ?? false;
  }

  /** Candidates whose breaker is not closed, with who set them. */
  openCandidates(): Array<{ candidate: string; origin: BreakerOrigin }> {
    const open: Array<{ candidate: string; origin: BreakerOrigin }> = [];
    for (const [candidate, entry] of this.entries) if (!entry.breaker.closed) open.push({ candidate, origin: entry.origin });
    return open;
  }

  /** True when the breaker refused the call without running it. */
  static isRejection(error: unknown): boolean {
    return error instanceof ProbeNotPermittedError || CircuitBreaker.isOurError(error as Error);
  }

  shutdown(): void {
    for (const { breaker } of this.entries.values()) breaker.shutdown();
    this.entries.clear();
  }
}
