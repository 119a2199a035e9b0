/**
 * A scope a slot counts against: `c:<provider/model>` (a candidate's `maxInFlight`) or
 * `p:<provider>` (a provider's).
 */
export interface ScopeLimit {
  readonly scope: string;
  readonly limit: number;
}

/** The answer to a lease request. */
export type LeaseAnswer =
  | { readonly granted: true }
  | {
      readonly granted: false;
      /** Until the earliest lease in a full scope expires (a dead replica's slot comes back then). */
      readonly retryInMs: number | undefined;
      /** Instances holding leases in the full scopes, this one included when it holds some. */
      readonly holders: ReadonlySet<string>;
    };

/**
 * What replicas tell each other about slots: `want` (a lease was refused: holders of idle leases
 * in these scopes give them back, the others answer `busy`), `freed` (a lease was given back),
 * `busy` (the sender holds leases in these scopes and none is idle).
 */
export interface SlotMessage {
  readonly type: 'want' | 'freed' | 'busy';
  /** The sender's instance. */
  readonly from: string;
  readonly scopes: readonly string[];
}

export interface SlotStoreListener {
  /** Another replica's announcement; a store never delivers an instance's own back to it. */
  message(message: SlotMessage): void;
  /** The store became reachable, or stopped being reachable or answering in time. */
  availability(available: boolean): void;
}

/**
 * Slot leases shared by every replica, as {@link SlotPool} needs them. A lease is one id in each
 * of its scopes, with an expiry; a scope holds at most its limit of live leases. Every method is
 * bounded in time and rejects (never hangs) when the store is down or slow.
 */
export interface SlotStore {
  /** This process's name in lease ids (`<instance>:<n>`) and announcements. */
  readonly instance: string;
  /** True while commands reach the store in time. */
  readonly available: boolean;
  /** Connects and subscribes; resolves when reachable, rejects after timeoutMs (it keeps trying). */
  start(listener: SlotStoreListener, timeoutMs: number): Promise<void>;
  /** Adds the lease to every scope if each has room (all or nothing); a refusal announces a `want`. */
  acquire(lease: string, scopes: readonly ScopeLimit[], lifeMs: number): Promise<LeaseAnswer>;
  /** Extends the leases held (lease id -> its scopes); returns those that had already expired. */
  renew(leases: ReadonlyMap<string, readonly string[]>, lifeMs: number): Promise<string[]>;
  /** Removes the lease from its scopes and announces it `freed`. */
  release(lease: string, scopes: readonly string[]): Promise<void>;
  /** Announces that this instance holds leases in these scopes and none is idle. */
  announceBusy(scopes: readonly string[]): Promise<void>;
  /** Stops delivering announcements. Idempotent. */
  close(): Promise<void>;
}

/** The instance part of a lease id. */
export function holderOf(lease: string): string {
  return lease.slice(0, lease.lastIndexOf(':'));
}
