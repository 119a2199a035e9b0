import type { Config, RateLimits } from '../config/load.js';
import { errorMessage } from '../shared/error-message.js';
import type { Logger } from '../shared/logger.js';
import { RateLimitedError, type LimitedBy } from './capacity-errors.js';
import { rateLimitHeaders, type LimitView } from './rate-limit-headers.js';
import type { BucketTake, RateLimitStore } from './rate-limit-store.js';
import { LocalBucket, minuteMs, msUntil, refilled } from './token-bucket.js';

/** Who a request counts against. */
export interface RateSubject {
  /** The name of the client's key (`auth.apiKeys[].name`); undefined for a plain sha256 entry or with auth off. */
  readonly keyName: string | undefined;
  /** `X-Boo-Source` as the client sent it; null without one. */
  readonly source: string | null;
}

/** Corrects the tokens a request was charged once its usage is known. */
export interface RateTicket {
  /**
   * The request's prompt plus completion tokens as the upstream reported them (undefined: not
   * reported; the estimate stands). The difference from the estimate is given back or taken.
   * Idempotent: only the first call counts.
   */
  settle(actualTokens: number | undefined): void;
}

export type Admission =
  | {
      readonly allowed: true;
      readonly ticket: RateTicket;
      /** The `x-ratelimit-*` headers of the answer; undefined when nothing limits the request. */
      readonly headers: Readonly<Record<string, string>> | undefined;
    }
  | { readonly allowed: false; readonly error: RateLimitedError };

/** What the limiter reports, for the metrics. */
export interface RateLimiterObserver {
  rejected(limitedBy: LimitedBy): void;
}

export interface RateLimiterOptions {
  /** Live config: `auth.apiKeys` limits (by name) and `limits.sources`. */
  readonly config: () => Config;
  readonly logger: Logger;
  /** Shares the buckets with every replica (REDIS_URL); absent, each process counts alone. */
  readonly store?: RateLimitStore | undefined;
  readonly observer?: RateLimiterObserver | undefined;
  /** Size of a budget leased from Redis, as a share of the per-minute limit. Default 0.05 (5 %). */
  readonly budgetShare?: number;
  /** Budgets are leased only while the bucket keeps this share of its limit after the lease. Default 0.5. */
  readonly reserveShare?: number;
  /** A budget not spent within this long goes back to Redis. Default 1 s. */
  readonly budgetTtlMs?: number;
  /** How often corrections and unspent budgets go back to Redis, in one call. Default 100 ms. */
  readonly flushMs?: number;
  readonly startTimeoutMs?: number;
  readonly now?: () => number;
}

interface BucketSpec {
  /** `k:<name>:requests` … */
  readonly id: string;
  readonly limitedBy: LimitedBy;
  readonly limit: number;
  /** Budget leased at once; 0: never (the bucket is too small to split: always exact). */
  readonly chunk: number;
  readonly reserve: number;
}

/** This replica's knowledge of one shared bucket. */
interface BucketState {
  /** Leased from Redis and not spent yet. */
  budget: number;
  /** The level Redis last reported (budgets leased anywhere already taken out), and when. */
  level: number;
  levelAt: number;
  leasedAt: number;
  /** Owed to Redis (positive: to give back; negative: to take), sent with the next flush. */
  owed: number;
  refilling: boolean;
}

const noTicket: RateTicket = { settle: () => undefined };
const unlimited: Admission = { allowed: true, ticket: noTicket, headers: undefined };

/**
 * Rate limits per key (`auth.apiKeys[].requestsPerMinute`, `tokensPerMinute`) and per source
 * (`limits.sources`), as token buckets: each refills continuously at its limit per minute, up to
 * its limit. A request must fit every bucket that limits it (its key's and its source's, requests
 * and tokens), and is charged in all of them or none. Tokens are estimated at admission and
 * corrected by {@link RateTicket.settle}.
 *
 * Without a store each process counts alone. With one, the buckets live in Redis and bind the
 * cluster, with Redis kept off the common path by budgets: a bucket far from its limit leases a
 * replica a small budget (`budgetShare` of the limit) that it spends locally, and refills in the
 * background when half of it is spent. A budget is leased only while the bucket keeps
 * `reserveShare` of its limit after it; below that, and for limits too small to split, every
 * request asks Redis (exact). A bucket that falls below its reserve or refuses is announced, and
 * every replica gives its unspent budget back at once. So the cluster never admits more than the
 * limit; see docs/capacity.md for how early it can refuse.
 */
export class RateLimiter {
  readonly #options: RateLimiterOptions;
  readonly #store: RateLimitStore | undefined;
  readonly #now: () => number;
  readonly #budgetShare: number;
  readonly #reserveShare: number;
  readonly #budgetTtlMs: number;
  readonly #specsByConfig = new WeakMap<Config, Map<string, readonly BucketSpec[]>>();
  readonly #shared = new Map<string, BucketState>();
  readonly #local = new Map<string, LocalBucket>();
  #flushTimer: NodeJS.Timeout | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #flushing = false;
  #started = false;
  #closed = false;

  constructor(options: RateLimiterOptions) {
    this.#options = options;
    this.#store = options.store;
    this.#now = options.now ?? Date.now;
    this.#budgetShare = options.budgetShare ?? 0.05;
    this.#reserveShare = options.reserveShare ?? 0.5;
    this.#budgetTtlMs = options.budgetTtlMs ?? 1_000;
  }

  /** Connects the store (bounded; never throws for it: unreachable, limits are counted per process until it answers). */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    this.#flushTimer = setInterval(() => void this.#flush(), this.#options.flushMs ?? 100).unref();
    this.#sweepTimer = setInterval(() => this.#sweep(), Math.max(50, Math.floor(this.#budgetTtlMs / 2))).unref();
    if (!this.#store) return;
    try {
      await this.#store.start(
        { low: (buckets) => this.#low(buckets), availability: (up) => this.#availabilityChanged(up) },
        this.#options.startTimeoutMs ?? 2_000,
      );
    } catch (err: unknown) {
      this.#options.logger.warn({ err: errorMessage(err) }, 'rate limits: redis unreachable at start; limits are counted per process until it answers');
    }
  }

  /**
   * Admits a request or refuses it, charging it one request and `estimatedTokens` in every bucket
   * that limits its key and its source. Synchronous when nothing limits it, without a store, or
   * when this replica's budgets cover it; otherwise one Redis round trip. Never rejects: a store
   * failure falls back to counting in this process.
   */
  admit(subject: RateSubject, estimatedTokens: number): Admission | Promise<Admission> {
    const specs = this.#specsOf(subject);
    if (specs.length === 0) return unlimited;
    const tokens = Math.max(0, Math.ceil(estimatedTokens));
    if (!this.#isShared()) return this.#admitLocal(specs, tokens);
    const now = this.#now();
    let covered = true;
    for (const spec of specs) {
      const cost = costOf(spec, tokens);
      if (cost > 0 && this.#state(spec.id, spec.limit, now).budget < cost) {
        covered = false;
        break;
      }
    }
    if (!covered) return this.#admitShared(specs, tokens);
    for (const spec of specs) {
      const state = this.#shared.get(spec.id)!;
      state.budget -= costOf(spec, tokens);
      if (spec.chunk > 0 && state.budget < spec.chunk / 2 && !state.refilling) void this.#refill(spec, state);
    }
    return { allowed: true, ticket: this.#ticket(specs, tokens), headers: this.#headers(specs, (spec) => this.#sharedRemaining(spec, now)) };
  }

  #isShared(): boolean {
    return this.#store !== undefined && this.#started && !this.#closed && this.#store.available;
  }

  #specsOf(subject: RateSubject): readonly BucketSpec[] {
    const config = this.#options.config();
    let cached = this.#specsByConfig.get(config);
    if (!cached) {
      cached = new Map();
      this.#specsByConfig.set(config, cached);
    }
    const cacheKey = `${subject.keyName ?? ''}\n${subject.source ?? ''}`;
    let specs = cached.get(cacheKey);
    if (specs) return specs;
    const list: BucketSpec[] = [];
    const add = (scope: 'key' | 'source', name: string, limits: RateLimits | undefined) => {
      if (!limits) return;
      for (const [dimension, limit] of [
        ['requests', limits.requestsPerMinute],
        ['tokens', limits.tokensPerMinute],
      ] as const) {
        if (limit === undefined) continue;
        const chunk = Math.floor(limit * this.#budgetShare);
        list.push({
          id: `${scope === 'key' ? 'k' : 's'}:${name}:${dimension}`,
          limitedBy: { scope, name, dimension },
          limit,
          // A budget of one is no budget: such a bucket is small enough to count exactly.
          chunk: chunk >= 2 ? chunk : 0,
          reserve: Math.ceil(limit * this.#reserveShare),
        });
      }
    };
    if (subject.keyName !== undefined) add('key', subject.keyName, config.clientKeys.find((key) => key.name === subject.keyName)?.limits);
    // Only a source that is configured: a client cannot make buckets by sending new names.
    if (subject.source !== null && Object.hasOwn(config.limits.sources, subject.source)) {
      const limits = config.limits.sources[subject.source]!;
      add('source', subject.source, { requestsPerMinute: limits.requestsPerMinute, tokensPerMinute: limits.tokensPerMinute });
    }
    specs = list;
    cached.set(cacheKey, specs);
    return specs;
  }

  #state(id: string, limit: number, now: number): BucketState {
    let state = this.#shared.get(id);
    if (!state) {
      state = { budget: 0, level: limit, levelAt: now, leasedAt: now, owed: 0, refilling: false };
      this.#shared.set(id, state);
    }
    return state;
  }

  /**
   * What this replica believes is left of a shared bucket: Redis' last level, refilled since, plus
   * its own unspent budget. Other replicas' unspent budgets are not seen: it may show less than is
   * left, by at most their budgets.
   */
  #sharedRemaining(spec: BucketSpec, now: number): number {
    const state = this.#shared.get(spec.id);
    if (!state) return spec.limit;
    // A budget being given back (owed) is still the cluster's to spend.
    return Math.min(spec.limit, refilled(state.level, now - state.levelAt, spec.limit) + state.budget + Math.max(0, state.owed));
  }

  #headers(specs: readonly BucketSpec[], remaining: (spec: BucketSpec) => number): Record<string, string> {
    // Each dimension shows the tighter of the key's and the source's buckets.
    let requests: LimitView | undefined;
    let tokens: LimitView | undefined;
    for (const spec of specs) {
      const view = { limit: spec.limit, remaining: remaining(spec) };
      if (spec.limitedBy.dimension === 'requests') {
        if (!requests || view.remaining < requests.remaining) requests = view;
      } else if (!tokens || view.remaining < tokens.remaining) tokens = view;
    }
    return rateLimitHeaders(requests, tokens);
  }

  #refused(specs: readonly BucketSpec[], index: number, retryInMs: number | undefined, remaining: (spec: BucketSpec) => number): Admission {
    const limitedBy = specs[index]!.limitedBy;
    this.#options.observer?.rejected(limitedBy);
    // A cost above the limit never fits; a minute is as good an answer as any.
    const retryAfterSeconds = Math.max(1, Math.ceil((retryInMs ?? minuteMs) / 1_000));
    return { allowed: false, error: new RateLimitedError(limitedBy, { retryAfterSeconds, headers: this.#headers(specs, remaining) }) };
  }

  #admitLocal(specs: readonly BucketSpec[], tokens: number): Admission {
    const now = this.#now();
    let refusedAt = -1;
    let waitMs = 0;
    for (let i = 0; i < specs.length; i++) {
      const spec = specs[i]!;
      const cost = costOf(spec, tokens);
      const level = this.#localBucket(spec, now).level(now);
      if (level >= cost) continue;
      if (refusedAt < 0) refusedAt = i;
      waitMs = Math.max(waitMs, msUntil(level, cost, spec.limit));
    }
    const remaining = (spec: BucketSpec) => this.#localBucket(spec, now).level(now);
    if (refusedAt >= 0) return this.#refused(specs, refusedAt, Number.isFinite(waitMs) ? waitMs : undefined, remaining);
    for (const spec of specs) this.#localBucket(spec, now).add(-costOf(spec, tokens), now);
    return { allowed: true, ticket: this.#ticket(specs, tokens), headers: this.#headers(specs, remaining) };
  }

  #localBucket(spec: BucketSpec, now: number): LocalBucket {
    let bucket = this.#local.get(spec.id);
    if (!bucket || bucket.limit !== spec.limit) {
      bucket = new LocalBucket(spec.limit, now);
      this.#local.set(spec.id, bucket);
    }
    return bucket;
  }

  async #admitShared(specs: readonly BucketSpec[], tokens: number): Promise<Admission> {
    const store = this.#store!;
    const now = this.#now();
    const takes: BucketTake[] = specs.map((spec) => {
      const state = this.#state(spec.id, spec.limit, now);
      const budget = spec.chunk > 0 && state.budget < spec.chunk / 2 && !state.refilling ? spec.chunk : 0;
      if (budget > 0) state.refilling = true;
      return { bucket: spec.id, limit: spec.limit, cost: costOf(spec, tokens), budget, reserve: spec.reserve };
    });
    try {
      const answer = await store.take(takes);
      const at = this.#now();
      for (let i = 0; i < specs.length; i++) {
        const state = this.#shared.get(specs[i]!.id)!;
        if (takes[i]!.budget > 0) state.refilling = false;
        state.level = answer.levels[i] ?? state.level;
        state.levelAt = at;
        if (answer.granted && (answer.budgets[i] ?? 0) > 0) {
          state.budget += answer.budgets[i]!;
          state.leasedAt = at;
        }
      }
      if (!answer.granted) return this.#refused(specs, answer.refusedIndex, answer.retryInMs, (spec) => this.#shared.get(spec.id)!.level);
      return { allowed: true, ticket: this.#ticket(specs, tokens), headers: this.#headers(specs, (spec) => this.#sharedRemaining(spec, at)) };
    } catch (err: unknown) {
      for (let i = 0; i < specs.length; i++) if (takes[i]!.budget > 0) this.#shared.get(specs[i]!.id)!.refilling = false;
      this.#options.logger.warn({ err: errorMessage(err) }, 'rate limits: redis check failed; this request is counted per process');
      return this.#admitLocal(specs, tokens);
    }
  }

  /** Tops up this replica's budget of a bucket in the background, ahead of need. */
  async #refill(spec: BucketSpec, state: BucketState): Promise<void> {
    state.refilling = true;
    try {
      const answer = await this.#store!.take([{ bucket: spec.id, limit: spec.limit, cost: 0, budget: spec.chunk, reserve: spec.reserve }]);
      const at = this.#now();
      state.level = answer.levels[0] ?? state.level;
      state.levelAt = at;
      if (answer.granted && (answer.budgets[0] ?? 0) > 0) {
        state.budget += answer.budgets[0]!;
        state.leasedAt = at;
      }
    } catch (err: unknown) {
      this.#options.logger.debug({ err: errorMessage(err), bucket: spec.id }, 'rate limits: budget refill failed');
    } finally {
      state.refilling = false;
    }
  }

  #ticket(specs: readonly BucketSpec[], estimated: number): RateTicket {
    if (!specs.some((spec) => spec.limitedBy.dimension === 'tokens')) return noTicket;
    let settled = false;
    return {
      settle: (actual) => {
        if (settled) return;
        settled = true;
        if (actual === undefined || !Number.isFinite(actual)) return;
        const amount = estimated - Math.max(0, Math.round(actual));
        if (amount !== 0) this.#correct(specs, amount);
      },
    };
  }

  /** Gives back (positive) or takes (negative) tokens of a request already admitted. */
  #correct(specs: readonly BucketSpec[], amount: number): void {
    const now = this.#now();
    for (const spec of specs) {
      if (spec.limitedBy.dimension !== 'tokens') continue;
      if (this.#isShared()) this.#state(spec.id, spec.limit, now).owed += amount;
      else this.#localBucket(spec, now).add(amount, now);
    }
  }

  #low(buckets: readonly string[]): void {
    for (const id of buckets) {
      const state = this.#shared.get(id);
      if (!state || state.budget <= 0) continue;
      state.owed += state.budget;
      state.budget = 0;
    }
    void this.#flush();
  }

  /** Budgets unspent past budgetTtlMs go back, so an idle replica does not sit on them. */
  #sweep(): void {
    const now = this.#now();
    for (const state of this.#shared.values()) {
      if (state.budget > 0 && now - state.leasedAt > this.#budgetTtlMs) {
        state.owed += state.budget;
        state.budget = 0;
      }
    }
  }

  /** Sends what is owed to Redis in one call. */
  async #flush(): Promise<void> {
    if (this.#flushing || !this.#store?.available) return;
    const amounts: Array<{ bucket: string; limit: number; amount: number }> = [];
    const limits = this.#limitsById();
    for (const [id, state] of this.#shared) {
      if (state.owed === 0) continue;
      const limit = limits.get(id);
      if (limit === undefined) {
        // No longer configured: nothing to give back to.
        state.owed = 0;
        continue;
      }
      amounts.push({ bucket: id, limit, amount: state.owed });
      state.owed = 0;
    }
    if (amounts.length === 0) return;
    this.#flushing = true;
    try {
      const levels = await this.#store.adjust(amounts);
      const at = this.#now();
      amounts.forEach(({ bucket }, i) => {
        const state = this.#shared.get(bucket);
        if (state && levels[i] !== undefined) {
          state.level = levels[i];
          state.levelAt = at;
        }
      });
    } catch (err: unknown) {
      // Put it back for the next flush: a correction lost would drift the bucket.
      for (const { bucket, amount } of amounts) {
        const state = this.#shared.get(bucket);
        if (state) state.owed += amount;
      }
      this.#options.logger.debug({ err: errorMessage(err) }, 'rate limits: corrections not sent; retried');
    } finally {
      this.#flushing = false;
    }
  }

  /** The limit of every bucket the current config defines, by id. */
  #limitsById(): Map<string, number> {
    const config = this.#options.config();
    const limits = new Map<string, number>();
    const add = (prefix: string, name: string, limit: RateLimits) => {
      if (limit.requestsPerMinute !== undefined) limits.set(`${prefix}:${name}:requests`, limit.requestsPerMinute);
      if (limit.tokensPerMinute !== undefined) limits.set(`${prefix}:${name}:tokens`, limit.tokensPerMinute);
    };
    for (const key of config.clientKeys) if (key.name !== undefined && key.limits) add('k', key.name, key.limits);
    for (const [name, limit] of Object.entries(config.limits.sources)) {
      add('s', name, { requestsPerMinute: limit.requestsPerMinute, tokensPerMinute: limit.tokensPerMinute });
    }
    return limits;
  }

  #availabilityChanged(available: boolean): void {
    if (available) {
      this.#options.logger.info('rate limits: redis reachable; limits are shared by the cluster again');
      return;
    }
    // Budgets cannot be spent against a store that is away: counting goes local until it returns.
    for (const state of this.#shared.values()) state.budget = 0;
    this.#options.logger.warn('rate limits: redis unreachable or slow; limits are counted per process until it returns');
  }

  /** Gives back unspent budgets and pending corrections (bounded by the store's timeout), then stops. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#flushTimer);
    clearInterval(this.#sweepTimer);
    for (const state of this.#shared.values()) {
      state.owed += state.budget;
      state.budget = 0;
    }
    this.#flushing = false;
    await this.#flush();
    await this.#store?.close();
  }
}

function costOf(spec: BucketSpec, tokens: number): number {
  return spec.limitedBy.dimension === 'requests' ? 1 : tokens;
}
