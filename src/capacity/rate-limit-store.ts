/** One bucket's part in a request: its cost, and the budget the replica would like leased. */
export interface BucketTake {
  /** Bucket id: `k:<key name>:requests`, `s:<source>:tokens`, … */
  readonly bucket: string;
  /** Per minute; also the bucket's size. */
  readonly limit: number;
  readonly cost: number;
  /** Budget to lease to this replica on top of the cost, granted only if the bucket keeps `reserve` after it; 0: none. */
  readonly budget: number;
  readonly reserve: number;
}

export type TakeAnswer =
  | {
      readonly granted: true;
      /** Each bucket's level after the take and the lease, in the order asked. */
      readonly levels: readonly number[];
      /** The budget leased from each bucket (0 when it was below its reserve). */
      readonly budgets: readonly number[];
    }
  | {
      readonly granted: false;
      /** Index of the first bucket that refused. */
      readonly refusedIndex: number;
      /** Until every refusing bucket holds the cost; undefined: never (a cost above the limit). */
      readonly retryInMs: number | undefined;
      readonly levels: readonly number[];
    };

export interface RateLimitStoreListener {
  /** These buckets fell below their reserve or refused: give back the budgets held of them. */
  low(buckets: readonly string[]): void;
  availability(available: boolean): void;
}

/**
 * Token buckets shared by every replica, as {@link RateLimiter} needs them. Every method is one
 * atomic step, bounded in time, and rejects (never hangs) when the store is down or slow.
 */
export interface RateLimitStore {
  readonly available: boolean;
  start(listener: RateLimitStoreListener, timeoutMs: number): Promise<void>;
  /** Takes each bucket's cost, all or none, and leases the budgets that leave their reserve. */
  take(buckets: readonly BucketTake[]): Promise<TakeAnswer>;
  /** Adds amounts to buckets (negative: takes), returning their levels. */
  adjust(amounts: readonly { readonly bucket: string; readonly limit: number; readonly amount: number }[]): Promise<number[]>;
  /** Stops delivering announcements. Idempotent. */
  close(): Promise<void>;
}
