import { randomUUID } from 'node:crypto';
import type { Logger } from '../shared/logger.js';
import { errorMessage } from '../shared/error-message.js';
import { WatchedRedis } from '../shared/watched-redis.js';
import { defineBreakerCommands, type BreakerCommandsClient } from './redis-breaker-commands.js';
import type { BreakerMessage, BreakerStateStore, BreakerStoreListener, OpenBreakerRecord, ProbeClaim, WindowCounts } from './breaker-state-store.js';

export interface RedisBreakerStateStoreOptions {
  readonly url: string;
  readonly logger: Logger;
  /** Prefix of every key and of the channel. Default `boo:breaker:`. */
  readonly keyPrefix?: string;
  /** Upper bound of one command; a slower Redis counts as unavailable. Default 500 ms. */
  readonly commandTimeoutMs?: number;
  /** How often a PING checks that Redis answers in time. Default 1 s. */
  readonly heartbeatMs?: number;
}

function isMessage(value: unknown): value is BreakerMessage & { from: string } {
  if (typeof value !== 'object' || value === null) return false;
  const message = value as Record<string, unknown>;
  if (typeof message.candidate !== 'string' || typeof message.replica !== 'string' || typeof message.from !== 'string') return false;
  switch (message.type) {
    case 'open':
      return typeof message.openedAt === 'number' && typeof message.until === 'number';
    case 'cooldown':
      return typeof message.until === 'number';
    case 'close':
      return true;
    default:
      return false;
  }
}

/**
 * {@link BreakerStateStore} on Redis (ioredis). Keys: `<prefix>open:<candidate>` (hash openedAt,
 * until, replica; expires after the reset time plus a grace), `<prefix>probe:<candidate>` (the probe
 * lock, `SET NX PX`), `<prefix>cooldown:<candidate>`, `<prefix>counts:<candidate>` (per-bucket
 * counts); announcements on the channel `<prefix>events`. Its connections are a
 * {@link WatchedRedis}: every return of Redis reports `availability(true)`, so the consumer re-syncs.
 */
export class RedisBreakerStateStore implements BreakerStateStore {
  readonly #redis: WatchedRedis<BreakerCommandsClient>;
  readonly #prefix: string;
  readonly #channel: string;
  readonly #instance = randomUUID();
  readonly #logger: Logger;
  #listener: BreakerStoreListener | undefined;

  constructor(options: RedisBreakerStateStoreOptions) {
    this.#prefix = options.keyPrefix ?? 'boo:breaker:';
    this.#channel = `${this.#prefix}events`;
    this.#logger = options.logger;
    this.#redis = new WatchedRedis({
      url: options.url,
      logger: options.logger,
      name: 'breakers',
      define: defineBreakerCommands,
      commandTimeoutMs: options.commandTimeoutMs ?? 500,
      ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }),
    });
  }

  get available(): boolean {
    return this.#redis.available;
  }

  async start(listener: BreakerStoreListener, timeoutMs: number): Promise<void> {
    this.#listener = listener;
    this.#redis.listen(this.#channel, { message: (text) => this.#deliver(text), availability: (available) => this.#listener?.availability(available) });
    await this.#redis.start(timeoutMs);
  }

  #deliver(text: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err: unknown) {
      this.#logger.warn({ err: errorMessage(err) }, 'breaker store: ignored a malformed announcement');
      return;
    }
    if (!isMessage(parsed)) {
      this.#logger.warn('breaker store: ignored an announcement of unknown shape');
      return;
    }
    if (parsed.from === this.#instance) return;
    const { from: _from, ...message } = parsed;
    this.#listener?.message(message);
  }

  #announce(message: BreakerMessage): string {
    return JSON.stringify({ ...message, from: this.#instance });
  }

  #key(kind: 'open' | 'probe' | 'cooldown' | 'counts', candidate: string): string {
    return `${this.#prefix}${kind}:${candidate}`;
  }

  async snapshot(): Promise<{ open: OpenBreakerRecord[]; cooldowns: Array<{ candidate: string; until: number }> }> {
    const open: OpenBreakerRecord[] = [];
    const cooldowns: Array<{ candidate: string; until: number }> = [];
    for (const key of await this.#scan(`${this.#prefix}open:*`)) {
      const fields = await this.#redis.run(() => this.#redis.commands.hgetall(key));
      const openedAt = Number(fields.openedAt);
      const until = Number(fields.until);
      if (!Number.isFinite(openedAt) || !Number.isFinite(until)) continue;
      open.push({ candidate: key.slice(`${this.#prefix}open:`.length), openedAt, until, replica: fields.replica ?? 'unknown' });
    }
    for (const key of await this.#scan(`${this.#prefix}cooldown:*`)) {
      const until = Number(await this.#redis.run(() => this.#redis.commands.get(key)));
      if (Number.isFinite(until) && until > 0) cooldowns.push({ candidate: key.slice(`${this.#prefix}cooldown:`.length), until });
    }
    return { open, cooldowns };
  }

  async #scan(pattern: string): Promise<string[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await this.#redis.run(() => this.#redis.commands.scan(cursor, 'MATCH', pattern, 'COUNT', 1000));
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    return [...new Set(keys)];
  }

  async publishOpen(record: OpenBreakerRecord, options: { graceMs: number; releaseToken?: string; onlyIfNewer?: boolean }): Promise<boolean> {
    const ttl = Math.max(1, Math.round(record.until - Date.now() + options.graceMs));
    const message = this.#announce({ type: 'open', ...record });
    const stored = await this.#redis.run(() =>
      this.#redis.commands.openBreaker(
        this.#key('open', record.candidate),
        this.#key('probe', record.candidate),
        record.openedAt,
        record.until,
        record.replica,
        ttl,
        options.releaseToken ?? '',
        options.onlyIfNewer ? '1' : '0',
        this.#channel,
        message,
      ),
    );
    return stored === 1;
  }

  async publishClose(candidate: string, replica: string, releaseToken?: string): Promise<void> {
    const message = this.#announce({ type: 'close', candidate, replica });
    await this.#redis.run(() =>
      this.#redis.commands.closeBreaker(
        this.#key('open', candidate),
        this.#key('probe', candidate),
        this.#key('counts', candidate),
        releaseToken ?? '',
        this.#channel,
        message,
      ),
    );
  }

  async publishCooldown(candidate: string, until: number, replica: string): Promise<void> {
    const ttl = Math.max(1, Math.round(until - Date.now()));
    const message = this.#announce({ type: 'cooldown', candidate, until, replica });
    await this.#redis.run(() => this.#redis.commands.storeCooldown(this.#key('cooldown', candidate), until, ttl, this.#channel, message));
  }

  async claimProbe(candidate: string, token: string, now: number, ttlMs: number): Promise<ProbeClaim> {
    const answer = await this.#redis.run(() =>
      this.#redis.commands.claimProbe(this.#key('open', candidate), this.#key('probe', candidate), now, token, Math.round(ttlMs)),
    );
    if (answer === 'granted') return { granted: true };
    const dueAt = Number(answer);
    return { granted: false, dueAt: answer !== '' && Number.isFinite(dueAt) ? dueAt : undefined };
  }

  async renewProbe(candidate: string, token: string, ttlMs: number): Promise<boolean> {
    const renewed = await this.#redis.run(() =>
      this.#redis.commands.renewProbe(this.#key('open', candidate), this.#key('probe', candidate), token, Math.round(ttlMs)),
    );
    return renewed === 1;
  }

  async releaseProbe(candidate: string, token: string): Promise<void> {
    await this.#redis.run(() => this.#redis.commands.releaseProbe(this.#key('probe', candidate), token));
  }

  async addCounts(candidate: string, counts: WindowCounts, now: number, window: { bucketMs: number; buckets: number }): Promise<WindowCounts> {
    const bucket = Math.floor(now / window.bucketMs);
    const totals = await this.#redis.run(() =>
      this.#redis.commands.addCounts(
        this.#key('counts', candidate),
        bucket,
        counts.fires,
        counts.failures,
        bucket - window.buckets + 1,
        window.bucketMs * window.buckets,
      ),
    );
    const [fires, failures] = Array.isArray(totals) ? totals.map(Number) : [];
    return { fires: fires ?? 0, failures: failures ?? 0 };
  }

  async close(): Promise<void> {
    this.#listener = undefined;
    await this.#redis.close();
  }
}
