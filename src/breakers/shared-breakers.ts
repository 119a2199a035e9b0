import { randomUUID } from 'node:crypto';
import type { Config } from '../config/load.js';
import type { CoolDown, FleetState } from '../fleet/fleet-state.js';
import type { Logger } from '../shared/logger.js';
import type { BreakerRegistry } from './breaker-registry.js';
import type { BreakerMessage, BreakerStateStore, OpenBreakerRecord, ProbeClaim, WindowCounts } from './breaker-state-store.js';
import { errorMessage } from '../shared/error-message.js';

export interface SharedBreakersOptions {
  readonly breakers: BreakerRegistry;
  readonly store: BreakerStateStore;
  readonly fleet: FleetState;
  /** Live config: the breaker settings in force when a breaker opens or counts are judged. */
  readonly config: () => Config;
  readonly logger: Logger;
  readonly replica: string;
  /**
   * Life of the probe lock without renewal: how long a probe holder that died keeps the others
   * waiting. Default: resetTimeoutMs, within 2..10 s.
   */
  readonly probeLockMs?: number;
  /** How often this replica's attempt counts go to the store. Default 100 ms. */
  readonly countFlushMs?: number;
  /** Bound of the start-up read of the open breakers. Default 2 s. */
  readonly startTimeoutMs?: number;
  readonly now?: () => number;
}

/** opossum's default: the rolling window is 10 buckets. */
const rollingBuckets = 10;

interface Hold {
  readonly token: string;
  readonly renew: NodeJS.Timeout;
  /** Last time the permit was in use (granted, or a probe in flight). */
  activeAt: number;
}

/**
 * Makes the breakers of this process one with those of every other replica, through a
 * {@link BreakerStateStore}, without putting the store on the request path:
 * - a trip here is stored and announced (`{openedAt, until}`); an announced trip opens the breaker here;
 * - when `until` comes, replicas claim the probe lock; the holder gets one probe permit from the
 *   registry (the others keep the breaker open); its verdict closes the breaker everywhere or re-opens
 *   it everywhere with a fresh `until`. A holder that dies stops renewing the lock; it expires
 *   and the others claim it again. A holder without traffic gives it back after one lock period;
 * - attempt counts go to the store every countFlushMs and the cluster-wide window can trip the breaker;
 * - 429 cooldowns are stored and announced;
 * - without the store (down or slow) each process decides alone, including its probes, and
 *   re-syncs when the store returns.
 */
export class SharedBreakers {
  private readonly options: SharedBreakersOptions;
  private readonly now: () => number;
  /** Open windows known here: when each candidate's probe is due. */
  private readonly windows = new Map<string, { record: OpenBreakerRecord; timer: NodeJS.Timeout | undefined }>();
  private readonly holds = new Map<string, Hold>();
  private readonly counts = new Map<string, { fires: number; failures: number }>();
  private flushTimer: NodeJS.Timeout | undefined;
  private syncing: Promise<void> | undefined;
  private closed = false;

  constructor(options: SharedBreakersOptions) {
    this.options = options;
    this.now = options.now ?? Date.now;
  }

  /** Store reachable and answering: `/readyz` says `ok`, else `degraded`. */
  get available(): boolean {
    return this.options.store.available;
  }

  private get log(): Logger {
    return this.options.logger;
  }

  private resetTimeoutMs(): number {
    return this.options.config().breaker.resetTimeoutMs;
  }

  private probeLockMs(): number {
    return this.options.probeLockMs ?? Math.min(10_000, Math.max(2_000, this.resetTimeoutMs()));
  }

  /**
   * Takes over the registry's probes, subscribes, and reads the open breakers and cooldowns
   * (bounded by startTimeoutMs) so the first request already skips them. Never throws for the
   * store: unreachable, the process starts with local breakers and syncs when it comes.
   */
  async start(): Promise<void> {
    const { breakers, fleet, store } = this.options;
    breakers.coordinateProbes();
    breakers.on('trip', ({ candidate }) => this.tripped(candidate));
    breakers.on('verdict', ({ candidate, healthy }) => this.judged(candidate, healthy));
    breakers.on('outcome', ({ candidate, failure }) => this.counted(candidate, failure));
    fleet.on('coolDown', (coolDown) => this.cooledDown(coolDown));
    const timeoutMs = this.options.startTimeoutMs ?? 2_000;
    try {
      await store.start({ message: (message) => this.received(message), availability: (up) => this.availabilityChanged(up) }, timeoutMs);
      await this.syncing;
    } catch (err: unknown) {
      this.log.warn({ err: errorMessage(err) }, 'shared breakers: redis unreachable at start; breakers are local until it answers');
    }
  }

  private availabilityChanged(available: boolean): void {
    if (!available) {
      this.log.warn('shared breakers: redis unreachable or slow; breakers are local to this process until it returns');
      return;
    }
    this.log.info('shared breakers: redis reachable; syncing breaker state');
    const sync = this.resync().catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'shared breakers: sync with redis failed'));
    this.syncing = sync;
  }

  /** Applies what the store holds and gives it what it missed from here (trips while it was away). */
  private async resync(): Promise<void> {
    const { store, breakers, fleet, replica } = this.options;
    const snapshot = await store.snapshot();
    const stored = new Set<string>();
    for (const record of snapshot.open) {
      stored.add(record.candidate);
      if (this.holds.has(record.candidate)) continue;
      this.opened(record);
    }
    for (const { candidate, until } of snapshot.cooldowns) fleet.coolDown(candidate, until, 'remote');
    for (const { candidate, origin } of breakers.openCandidates()) {
      if (origin !== 'local' || stored.has(candidate)) continue;
      const window = this.windows.get(candidate)?.record;
      const now = this.now();
      const record = window ?? { candidate, openedAt: now, until: now + this.resetTimeoutMs(), replica };
      await store.publishOpen(record, { graceMs: this.probeLockMs() * 2, onlyIfNewer: true });
    }
  }

  /** A breaker opened by another replica (or found in the store): open here and wait for its probe. */
  private opened(record: OpenBreakerRecord): void {
    const { breakers } = this.options;
    const { candidate } = record;
    const hold = this.holds.get(candidate);
    if (hold && !breakers.isProbing(candidate) && breakers.revokeProbe(candidate)) this.giveBack(candidate, hold);
    breakers.open(candidate, 'remote');
    this.schedule(record);
  }

  private received(message: BreakerMessage): void {
    const { breakers, fleet } = this.options;
    switch (message.type) {
      case 'open':
        this.opened(message);
        return;
      case 'close': {
        this.forget(message.candidate);
        const hold = this.holds.get(message.candidate);
        if (hold) this.giveBack(message.candidate, hold);
        breakers.close(message.candidate, 'remote');
        return;
      }
      case 'cooldown':
        fleet.coolDown(message.candidate, message.until, 'remote');
        return;
    }
  }

  private tripped(candidate: string): void {
    const now = this.now();
    const record: OpenBreakerRecord = { candidate, openedAt: now, until: now + this.resetTimeoutMs(), replica: this.options.replica };
    this.schedule(record);
    this.announceOpen(record);
  }

  private judged(candidate: string, healthy: boolean): void {
    const hold = this.holds.get(candidate);
    if (hold) this.drop(candidate, hold);
    const { store, replica } = this.options;
    if (healthy) {
      this.forget(candidate);
      if (!store.available) return;
      store
        .publishClose(candidate, replica, hold?.token)
        .catch((err: unknown) => this.log.warn({ err: errorMessage(err), candidate }, 'shared breakers: could not announce a close'));
      return;
    }
    const now = this.now();
    const record: OpenBreakerRecord = { candidate, openedAt: now, until: now + this.resetTimeoutMs(), replica };
    this.schedule(record);
    this.announceOpen(record, hold?.token);
  }

  private announceOpen(record: OpenBreakerRecord, releaseToken?: string): void {
    const { store } = this.options;
    // Away, the next sync pushes the trip.
    if (!store.available) return;
    const options = { graceMs: this.probeLockMs() * 2, ...(releaseToken === undefined ? {} : { releaseToken }) };
    store
      .publishOpen(record, options)
      .catch((err: unknown) => this.log.warn({ err: errorMessage(err), candidate: record.candidate }, 'shared breakers: could not announce an open breaker'));
  }

  private cooledDown({ candidate, until, origin }: CoolDown): void {
    const { store, replica } = this.options;
    if (origin !== 'local' || !store.available) return;
    store
      .publishCooldown(candidate, until, replica)
      .catch((err: unknown) => this.log.warn({ err: errorMessage(err), candidate }, 'shared breakers: could not announce a cooldown'));
  }

  private schedule(record: OpenBreakerRecord): void {
    const previous = this.windows.get(record.candidate);
    clearTimeout(previous?.timer);
    const entry = { record, timer: undefined as NodeJS.Timeout | undefined };
    this.windows.set(record.candidate, entry);
    if (this.holds.has(record.candidate)) return;
    entry.timer = setTimeout(() => void this.claim(record.candidate), Math.max(0, record.until - this.now())).unref();
  }

  private retryClaim(candidate: string, delayMs: number): void {
    const entry = this.windows.get(candidate);
    if (!entry) return;
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => void this.claim(candidate), delayMs).unref();
  }

  private forget(candidate: string): void {
    clearTimeout(this.windows.get(candidate)?.timer);
    this.windows.delete(candidate);
  }

  /** The reset time has come: claim the probe, or wait for the holder's verdict. */
  private async claim(candidate: string): Promise<void> {
    const { breakers, store } = this.options;
    if (this.closed || breakers.position(candidate) === 'closed') {
      this.forget(candidate);
      return;
    }
    if (this.holds.has(candidate)) return;
    if (!store.available) {
      breakers.permitProbe(candidate);
      return;
    }
    const token = `${this.options.replica}:${randomUUID()}`;
    const lockMs = this.probeLockMs();
    let claim: ProbeClaim;
    try {
      claim = await store.claimProbe(candidate, token, this.now(), lockMs);
    } catch (err: unknown) {
      this.log.warn({ err: errorMessage(err), candidate }, 'shared breakers: probe claim failed; probing from this process');
      breakers.permitProbe(candidate);
      return;
    }
    if (!claim.granted) {
      // Not due in the store (a newer window) or someone else holds the lock: check again when
      // that window ends or when a dead holder's lock would have expired.
      const dueAt = claim.dueAt;
      if (dueAt !== undefined) {
        const entry = this.windows.get(candidate);
        if (entry) entry.record = { ...entry.record, until: dueAt };
      }
      this.retryClaim(candidate, dueAt !== undefined ? Math.max(0, dueAt - this.now()) : lockMs);
      return;
    }
    if (this.closed || breakers.position(candidate) === 'closed') {
      await store.releaseProbe(candidate, token).catch((err: unknown) => this.log.debug({ err: errorMessage(err) }, 'shared breakers: release failed'));
      return;
    }
    const hold: Hold = {
      token,
      activeAt: this.now(),
      renew: setInterval(() => void this.renew(candidate), Math.max(50, Math.floor(lockMs / 3))).unref(),
    };
    this.holds.set(candidate, hold);
    breakers.permitProbe(candidate);
    this.log.info({ candidate }, 'shared breakers: this replica probes the candidate');
  }

  private async renew(candidate: string): Promise<void> {
    const hold = this.holds.get(candidate);
    if (!hold) return;
    const { breakers, store } = this.options;
    const lockMs = this.probeLockMs();
    if (breakers.isProbing(candidate)) {
      hold.activeAt = this.now();
    } else if (this.now() - hold.activeAt > lockMs && breakers.revokeProbe(candidate)) {
      // No request came to carry the probe: let a replica with traffic take it. The others claim
      // again one lock period after they lost the claim, so this one waits longer than that:
      // coming back sooner, it took the lock back every time and a replica with traffic waited.
      this.giveBack(candidate, hold);
      this.retryClaim(candidate, Math.round(lockMs * (1.5 + Math.random() / 2)));
      return;
    }
    try {
      if (!(await store.renewProbe(candidate, hold.token, lockMs))) this.log.warn({ candidate }, 'shared breakers: the probe lock expired before the verdict');
    } catch (err: unknown) {
      this.log.debug({ err: errorMessage(err), candidate }, 'shared breakers: probe lock renewal failed');
    }
  }

  private drop(candidate: string, hold: Hold): void {
    clearInterval(hold.renew);
    this.holds.delete(candidate);
  }

  private giveBack(candidate: string, hold: Hold): void {
    this.drop(candidate, hold);
    this.options.store
      .releaseProbe(candidate, hold.token)
      .catch((err: unknown) => this.log.debug({ err: errorMessage(err), candidate }, 'shared breakers: release failed'));
  }

  private counted(candidate: string, failure: boolean): void {
    if (!this.options.store.available) return;
    const counts = this.counts.get(candidate) ?? { fires: 0, failures: 0 };
    counts.fires += 1;
    if (failure) counts.failures += 1;
    this.counts.set(candidate, counts);
    this.flushTimer ??= setTimeout(() => void this.flush(), this.options.countFlushMs ?? 100).unref();
  }

  /** Sends this replica's counts and trips the breaker when the cluster-wide window says so, as opossum would on one process. */
  private async flush(): Promise<void> {
    this.flushTimer = undefined;
    const pending = [...this.counts];
    this.counts.clear();
    const { store, breakers } = this.options;
    const settings = this.options.config().breaker;
    const window = { bucketMs: Math.max(1, Math.floor(settings.rollingCountTimeoutMs / rollingBuckets)), buckets: rollingBuckets };
    await Promise.all(
      pending.map(async ([candidate, counts]) => {
        let totals: WindowCounts;
        try {
          totals = await store.addCounts(candidate, counts, this.now(), window);
        } catch (err: unknown) {
          this.log.debug({ err: errorMessage(err), candidate }, 'shared breakers: counts not shared');
          return;
        }
        if (totals.fires < settings.volumeThreshold || (totals.failures / totals.fires) * 100 <= settings.errorThresholdPercentage) return;
        if (breakers.position(candidate) !== 'closed') return;
        this.log.warn({ candidate, fires: totals.fires, failures: totals.failures }, 'shared breakers: cluster-wide failure rate trips the breaker');
        breakers.trip(candidate);
      }),
    );
  }

  /** Stops timers, gives back unused probe locks (bounded) and disconnects. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.flushTimer);
    for (const { timer } of this.windows.values()) clearTimeout(timer);
    this.windows.clear();
    const { store, breakers } = this.options;
    const releases: Promise<void>[] = [];
    for (const [candidate, hold] of this.holds) {
      clearInterval(hold.renew);
      if (breakers.isProbing(candidate)) continue;
      releases.push(
        store
          .releaseProbe(candidate, hold.token)
          .catch((err: unknown) => this.log.debug({ err: errorMessage(err), candidate }, 'shared breakers: release at close failed')),
      );
    }
    this.holds.clear();
    await Promise.all(releases);
    await store.close();
  }
}
