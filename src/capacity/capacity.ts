import type { Config } from '../config/load.js';
import { GatewayError } from '../errors.js';
import { errorMessage } from '../shared/error-message.js';
import type { Logger } from '../shared/logger.js';
import { CapacityRedis } from './capacity-redis.js';
import { RateLimiter } from './rate-limiter.js';
import { RedisRateLimitStore } from './redis-rate-limit-store.js';
import { RedisSlotStore } from './redis-slot-store.js';
import { SlotPool, type FreedSlot, type SlotHandle } from './slot-pool.js';
import { WaitLine } from './wait-line.js';

/**
 * The metrics capacity feeds, as the gateway's metrics registry has them (declared here, so this
 * layer does not import the registry).
 */
export interface CapacityMetrics {
  readonly queueDepth: { labels(virtualModel: string): { set(value: number): void } };
  queueWaitOf(virtualModel: string): { observe(seconds: number): void };
  capacityRejectionsOf(virtualModel: string, reason: 'queue_timeout' | 'rejected'): { inc(): void };
  /** Registers what boo_slots_in_use reports at each scrape. */
  readSlotsInUseFrom(read: () => ReadonlyMap<string, number>): void;
  rateLimitRejectionsOf(scope: 'key' | 'source', name: string, dimension: 'requests' | 'tokens'): { inc(): void };
}

export interface CapacityOptions {
  readonly config: () => Config;
  readonly logger: Logger;
  /** Shares slots and rate limits with every replica; absent, each process counts alone. */
  readonly redisUrl?: string | undefined;
  /** Prefix of capacity's Redis keys and channels. Default `boo:capacity:`. */
  readonly keyPrefix?: string;
  readonly metrics?: CapacityMetrics | undefined;
  /** Passed on to the slot pool (lease life, linger, …) and the limiter (budget shares, …). */
  readonly slots?: Partial<ConstructorParameters<typeof SlotPool>[0]>;
  readonly rates?: Partial<ConstructorParameters<typeof RateLimiter>[0]>;
}

/**
 * Capacity of one gateway process: the slots ({@link SlotPool}), the rate limits
 * ({@link RateLimiter}) and a line per virtual model that has a `queue` ({@link WaitLine}), which
 * wakes whenever a slot of one of its candidates (or of their providers) frees, here or on any
 * replica. With `redisUrl`, one pair of Redis connections serves slots and limits. Built by the
 * composition root; see docs/capacity.md for the calls the dispatch path makes.
 */
export class Capacity {
  readonly slots: SlotPool;
  readonly limiter: RateLimiter;
  readonly #options: CapacityOptions;
  readonly #redis: CapacityRedis | undefined;
  readonly #lines = new Map<string, WaitLine<SlotHandle>>();
  #closed = false;

  constructor(options: CapacityOptions) {
    this.#options = options;
    const { config, logger, metrics } = options;
    this.#redis = options.redisUrl
      ? new CapacityRedis({ url: options.redisUrl, logger, ...(options.keyPrefix === undefined ? {} : { keyPrefix: options.keyPrefix }) })
      : undefined;
    this.slots = new SlotPool({
      config,
      logger: logger.child({ component: 'slots' }),
      store: this.#redis ? new RedisSlotStore(this.#redis, logger) : undefined,
      ...options.slots,
    });
    this.limiter = new RateLimiter({
      config,
      logger: logger.child({ component: 'rate-limits' }),
      store: this.#redis ? new RedisRateLimitStore(this.#redis, logger) : undefined,
      observer: metrics ? { rejected: ({ scope, name, dimension }) => metrics.rateLimitRejectionsOf(scope, name, dimension).inc() } : undefined,
      ...options.rates,
    });
    this.slots.onFreed((freed) => this.#wake(freed));
    metrics?.readSlotsInUseFrom(() => this.slots.inUseByCandidate());
  }

  /** Connects to Redis (bounded; never throws for it: capacity then counts per process until Redis answers). */
  async start(): Promise<void> {
    await Promise.all([this.slots.start(), this.limiter.start()]);
  }

  /**
   * The line of a virtual model, or undefined when it has no `queue`. One line per virtual model
   * for the life of the process; its settings follow reloads (a newcomer gets the current ones).
   */
  line(virtualModel: string): WaitLine<SlotHandle> | undefined {
    const existing = this.#lines.get(virtualModel);
    const current = this.#options.config().virtualModels[virtualModel]?.queue;
    if (existing) return current ? existing : undefined;
    if (!current || this.#closed) return undefined;
    let settings = current;
    const metrics = this.#options.metrics;
    const line = new WaitLine<SlotHandle>(virtualModel, () => (settings = this.#options.config().virtualModels[virtualModel]?.queue ?? settings), {
      observer: {
        depth: (waiting) => metrics?.queueDepth.labels(virtualModel).set(waiting),
        left: (outcome, queuedMs) => {
          if (outcome === 'served') metrics?.queueWaitOf(virtualModel).observe(queuedMs / 1_000);
          else if (outcome === 'queue_timeout' || outcome === 'rejected') metrics?.capacityRejectionsOf(virtualModel, outcome).inc();
        },
      },
    });
    this.#lines.set(virtualModel, line);
    return line;
  }

  /** Wakes the lines whose virtual model has the freed candidate, or a candidate on the freed provider. */
  #wake(freed: FreedSlot): void {
    const { virtualModels } = this.#options.config();
    for (const [name, line] of this.#lines) {
      if (line.size === 0) continue;
      const candidates = virtualModels[name]?.candidates ?? [];
      if (candidates.some((candidate) => candidate.id === freed.candidate || candidate.provider === freed.provider)) line.wake();
    }
  }

  /** Refuses everyone in line (503), gives back slots and budgets, disconnects. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const shuttingDown = new GatewayError('the gateway is shutting down; retry on another replica', {
      code: 'shutting_down',
      status: 503,
      openaiType: 'service_unavailable_error',
    });
    for (const line of this.#lines.values()) line.close(shuttingDown);
    const results = await Promise.allSettled([this.slots.close(), this.limiter.close()]);
    for (const result of results) {
      if (result.status === 'rejected') this.#options.logger.warn({ err: errorMessage(result.reason) }, 'capacity: close failed');
    }
    await this.#redis?.close();
  }
}
