import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from '../shared/logger.js';
import { errorMessage } from '../shared/error-message.js';
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
 * counts); announcements on the channel `<prefix>events`. Two connections (pub/sub needs its own),
 * no offline queue and a command timeout: a command fails at once or after the timeout, never
 * waits for a reconnect. ioredis reconnects forever; every return reports `availability(true)`
 * so the consumer re-syncs.
 */
export class RedisBreakerStateStore implements BreakerStateStore {
  readonly #commands: BreakerCommandsClient;
  readonly #subscriber: Redis;
  readonly #prefix: string;
  readonly #channel: string;
  readonly #instance = randomUUID();
  readonly #logger: Logger;
  readonly #heartbeatMs: number;
  #listener: BreakerStoreListener | undefined;
  #subscribed = false;
  #slow = false;
  #reported = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: RedisBreakerStateStoreOptions) {
    this.#prefix = options.keyPrefix ?? 'boo:breaker:';
    this.#channel = `${this.#prefix}events`;
    this.#logger = options.logger;
    this.#heartbeatMs = options.heartbeatMs ?? 1_000;
    const connection = {
      lazyConnect: true,
      enableOfflineQueue: false,
      // Commands in flight when the connection drops fail at once instead of waiting for a reconnect.
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? 500,
      connectTimeout: 1_000,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 5), 1_000),
    };
    this.#commands = defineBreakerCommands(new Redis(options.url, { ...connection, connectionName: 'boo-breakers' }));
    this.#subscriber = new Redis(options.url, { ...connection, connectionName: 'boo-breakers-sub', autoResubscribe: false });
    for (const connection of [this.#commands, this.#subscriber]) {
      // ioredis reports every failed reconnect; the availability change is what operators need.
      connection.on('error', (err: Error) => this.#logger.debug({ err: err.message }, 'breaker store: redis connection error'));
      connection.on('close', () => {
        if (connection === this.#subscriber) this.#subscribed = false;
        this.#update();
      });
    }
    this.#commands.on('ready', () => {
      this.#slow = false;
      this.#update();
    });
    this.#subscriber.on('ready', () => void this.#subscribe());
    this.#subscriber.on('message', (channel: string, text: string) => this.#deliver(channel, text));
  }

  get available(): boolean {
    return !this.#closed && this.#commands.status === 'ready' && this.#subscribed && !this.#slow;
  }

  async start(listener: BreakerStoreListener, timeoutMs: number): Promise<void> {
    this.#listener = listener;
    this.#heartbeat = setInterval(() => void this.#ping(), this.#heartbeatMs).unref();
    // A failed first connect still leaves ioredis reconnecting under retryStrategy.
    const connecting = Promise.allSettled([this.#commands.connect(), this.#subscriber.connect()]);
    const deadline = Date.now() + timeoutMs;
    await connecting;
    while (!this.available) {
      if (Date.now() > deadline) throw new Error(`redis not reachable within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async #subscribe(): Promise<void> {
    try {
      await this.#subscriber.subscribe(this.#channel);
      this.#subscribed = true;
    } catch (err: unknown) {
      this.#logger.debug({ err: errorMessage(err) }, 'breaker store: subscribe failed; retried on reconnect');
      this.#subscriber.disconnect(true);
    }
    this.#update();
  }

  async #ping(): Promise<void> {
    if (this.#commands.status !== 'ready') return;
    try {
      await this.#commands.ping();
      if (this.#slow) {
        this.#slow = false;
        this.#update();
      }
    } catch (err: unknown) {
      this.#failed(err);
    }
  }

  /** A command that timed out means Redis is slow: it counts as unavailable until a PING answers in time. */
  #failed(err: unknown): void {
    if (err instanceof Error && /timed out/i.test(err.message) && !this.#slow) {
      this.#slow = true;
      this.#logger.warn('breaker store: redis is not answering in time');
      this.#update();
    }
  }

  #update(): void {
    const available = this.available;
    if (available === this.#reported) return;
    this.#reported = available;
    this.#listener?.availability(available);
  }

  #deliver(channel: string, text: string): void {
    if (channel !== this.#channel) return;
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

  async #run<T>(command: () => Promise<T>): Promise<T> {
    try {
      return await command();
    } catch (err: unknown) {
      this.#failed(err);
      throw err;
    }
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
      const fields = await this.#run(() => this.#commands.hgetall(key));
      const openedAt = Number(fields.openedAt);
      const until = Number(fields.until);
      if (!Number.isFinite(openedAt) || !Number.isFinite(until)) continue;
      open.push({ candidate: key.slice(`${this.#prefix}open:`.length), openedAt, until, replica: fields.replica ?? 'unknown' });
    }
    for (const key of await this.#scan(`${this.#prefix}cooldown:*`)) {
      const until = Number(await this.#run(() => this.#commands.get(key)));
      if (Number.isFinite(until) && until > 0) cooldowns.push({ candidate: key.slice(`${this.#prefix}cooldown:`.length), until });
    }
    return { open, cooldowns };
  }

  async #scan(pattern: string): Promise<string[]> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await this.#run(() => this.#commands.scan(cursor, 'MATCH', pattern, 'COUNT', 1000));
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    return [...new Set(keys)];
  }

  async publishOpen(record: OpenBreakerRecord, options: { graceMs: number; releaseToken?: string; onlyIfNewer?: boolean }): Promise<boolean> {
    const ttl = Math.max(1, Math.round(record.until - Date.now() + options.graceMs));
    const message = this.#announce({ type: 'open', ...record });
    const stored = await this.#run(() =>
      this.#commands.openBreaker(
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
    await this.#run(() =>
      this.#commands.closeBreaker(
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
    await this.#run(() => this.#commands.storeCooldown(this.#key('cooldown', candidate), until, ttl, this.#channel, message));
  }

  async claimProbe(candidate: string, token: string, now: number, ttlMs: number): Promise<ProbeClaim> {
    const answer = await this.#run(() => this.#commands.claimProbe(this.#key('open', candidate), this.#key('probe', candidate), now, token, Math.round(ttlMs)));
    if (answer === 'granted') return { granted: true };
    const dueAt = Number(answer);
    return { granted: false, dueAt: answer !== '' && Number.isFinite(dueAt) ? dueAt : undefined };
  }

  async renewProbe(candidate: string, token: string, ttlMs: number): Promise<boolean> {
    const renewed = await this.#run(() => this.#commands.renewProbe(this.#key('open', candidate), this.#key('probe', candidate), token, Math.round(ttlMs)));
    return renewed === 1;
  }

  async releaseProbe(candidate: string, token: string): Promise<void> {
    await this.#run(() => this.#commands.releaseProbe(this.#key('probe', candidate), token));
  }

  async addCounts(candidate: string, counts: WindowCounts, now: number, window: { bucketMs: number; buckets: number }): Promise<WindowCounts> {
    const bucket = Math.floor(now / window.bucketMs);
    const totals = await this.#run(() =>
      this.#commands.addCounts(
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
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#heartbeat);
    this.#listener = undefined;
    await Promise.allSettled([this.#commands.quit(), this.#subscriber.quit()]);
    this.#commands.disconnect();
    this.#subscriber.disconnect();
  }
}
