/** A breaker open somewhere in the cluster. Times are epoch ms. */
export interface OpenBreakerRecord {
  readonly candidate: string;
  /** When the breaker (re-)opened: the trip or the failed probe. */
  readonly openedAt: number;
  /** When its probe is due (openedAt + resetTimeoutMs of the replica that opened it). */
  readonly until: number;
  /** BOO_REPLICA_ID of the replica that opened it. */
  readonly replica: string;
}

/** What another replica announced. A store never delivers an instance's own announcements back to it. */
export type BreakerMessage =
  | ({ readonly type: 'open' } & OpenBreakerRecord)
  | { readonly type: 'close'; readonly candidate: string; readonly replica: string }
  | { readonly type: 'cooldown'; readonly candidate: string; readonly until: number; readonly replica: string };

/** What a store tells its consumer, as it happens. */
export interface BreakerStoreListener {
  message(message: BreakerMessage): void;
  /** The store became reachable (connected and subscribed) or stopped being reachable or answering in time. */
  availability(available: boolean): void;
}

/** The answer to a probe claim. `dueAt`: the window in the store is not due yet; try again then. */
export type ProbeClaim = { readonly granted: true } | { readonly granted: false; readonly dueAt: number | undefined };

/** Cluster-wide attempt counts of one candidate over the rolling window. */
export interface WindowCounts {
  readonly fires: number;
  readonly failures: number;
}

/**
 * Breaker state shared by every gateway replica, as {@link SharedBreakers} needs it. Every
 * method is bounded in time and rejects (never hangs) when the store is down or slow; none is
 * called on the request path.
 */
export interface BreakerStateStore {
  /** True while commands reach the store in time. */
  readonly available: boolean;
  /** Connects and subscribes; resolves when reachable, rejects after timeoutMs (it keeps reconnecting). */
  start(listener: BreakerStoreListener, timeoutMs: number): Promise<void>;
  /** Every open breaker and active cooldown in the store. */
  snapshot(): Promise<{ open: OpenBreakerRecord[]; cooldowns: Array<{ candidate: string; until: number }> }>;
  /**
   * Stores the open record (kept at least until its `until` plus `graceMs`) and announces it.
   * `releaseToken` releases the probe lock held under that token in the same step.
   * `onlyIfNewer`: skip (and resolve false) when the store already has a record with a later `until`.
   */
  publishOpen(record: OpenBreakerRecord, options: { graceMs: number; releaseToken?: string; onlyIfNewer?: boolean }): Promise<boolean>;
  /** Deletes the open record and the candidate's counts, releases the lock under `releaseToken`, announces the close. */
  publishClose(candidate: string, replica: string, releaseToken?: string): Promise<void>;
  /** Stores and announces a cooldown until `until`. */
  publishCooldown(candidate: string, until: number, replica: string): Promise<void>;
  /**
   * Claims the probe of an open candidate: granted when the record's `until` has passed (or there
   * is no record) and no one holds the lock. The lock expires after ttlMs unless renewed.
   */
  claimProbe(candidate: string, token: string, now: number, ttlMs: number): Promise<ProbeClaim>;
  /** Extends a held lock (and the open record with it); false when the lock is no longer ours. */
  renewProbe(candidate: string, token: string, ttlMs: number): Promise<boolean>;
  releaseProbe(candidate: string, token: string): Promise<void>;
  /** Adds this replica's attempts to the current bucket and returns the totals over the window. */
  addCounts(candidate: string, counts: WindowCounts, now: number, window: { bucketMs: number; buckets: number }): Promise<WindowCounts>;
  /** Disconnects. Idempotent. */
  close(): Promise<void>;
}
