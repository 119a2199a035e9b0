import { errorMessage } from '../shared/error-message.js';
import type { Logger } from '../shared/logger.js';
import type { CapacityRedis } from './capacity-redis.js';
import type { BucketTake, RateLimitStore, RateLimitStoreListener, TakeAnswer } from './rate-limit-store.js';

/**
 * {@link RateLimitStore} on Redis. Keys: `<prefix>rate:<bucket>`, a hash of the level and the time
 * of that level on Redis' own clock (the replicas' clocks need not agree), gone once the bucket
 * would be full again; announcements on the channel `<prefix>rates`. Each operation is one script
 * (`commands/*-rate.lua`), one round trip.
 */
export class RedisRateLimitStore implements RateLimitStore {
  readonly #redis: CapacityRedis;
  readonly #logger: Logger;
  readonly #channel: string;
  readonly #keyPrefix: string;
  #listener: RateLimitStoreListener | undefined;

  constructor(redis: CapacityRedis, logger: Logger) {
    this.#redis = redis;
    this.#logger = logger;
    this.#keyPrefix = `${redis.prefix}rate:`;
    this.#channel = redis.channel('rates', {
      message: (text) => this.#deliver(text),
      availability: (available) => this.#listener?.availability(available),
    });
  }

  get available(): boolean {
    return this.#redis.available;
  }

  async start(listener: RateLimitStoreListener, timeoutMs: number): Promise<void> {
    this.#listener = listener;
    await this.#redis.start(timeoutMs);
  }

  #deliver(text: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err: unknown) {
      this.#logger.warn({ err: errorMessage(err) }, 'rate limits: ignored a malformed announcement');
      return;
    }
    const buckets = (parsed as { buckets?: unknown } | null)?.buckets;
    if ((parsed as { type?: unknown } | null)?.type !== 'low' || !Array.isArray(buckets)) {
      this.#logger.warn('rate limits: ignored an announcement of unknown shape');
      return;
    }
    const ids = buckets
      .filter((key): key is string => typeof key === 'string' && key.startsWith(this.#keyPrefix))
      .map((key) => key.slice(this.#keyPrefix.length));
    if (ids.length > 0) this.#listener?.low(ids);
  }

  async take(buckets: readonly BucketTake[]): Promise<TakeAnswer> {
    const keys = buckets.map(({ bucket }) => this.#keyPrefix + bucket);
    const args: Array<string | number> = [];
    for (const { limit, cost, budget, reserve } of buckets) args.push(limit, cost, budget, reserve);
    const reply = (await this.#redis.run(() => this.#redis.commands.takeRate(keys.length, ...keys, this.#channel, this.#redis.instance, ...args))) as Array<
      number | string
    >;
    if (Number(reply[0]) === 1) {
      const levels: number[] = [];
      const budgets: number[] = [];
      for (let i = 1; i < reply.length; i += 2) {
        levels.push(Number(reply[i]));
        budgets.push(Number(reply[i + 1]));
      }
      return { granted: true, levels, budgets };
    }
    const wait = Number(reply[2]);
    return { granted: false, refusedIndex: Number(reply[1]) - 1, retryInMs: wait < 0 ? undefined : wait, levels: reply.slice(3).map(Number) };
  }

  async adjust(amounts: readonly { readonly bucket: string; readonly limit: number; readonly amount: number }[]): Promise<number[]> {
    if (amounts.length === 0) return [];
    const keys = amounts.map(({ bucket }) => this.#keyPrefix + bucket);
    const args: Array<string | number> = [];
    for (const { limit, amount } of amounts) args.push(limit, amount);
    const reply = (await this.#redis.run(() => this.#redis.commands.adjustRate(keys.length, ...keys, ...args))) as string[];
    return reply.map(Number);
  }

  close(): Promise<void> {
    this.#listener = undefined;
    return Promise.resolve();
  }
}
