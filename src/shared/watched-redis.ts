import { Redis } from 'ioredis';
import { errorMessage } from './error-message.js';
import type { Logger } from './logger.js';

export interface WatchedRedisOptions<Commands extends Redis> {
  readonly url: string;
  readonly logger: Logger;
  /** Names the connections (`boo-<name>`, `boo-<name>-sub`) and prefixes the log lines. */
  readonly name: string;
  /** Defines the Lua commands on the command connection. */
  readonly define: (redis: Redis) => Commands;
  /** Upper bound of one command; a slower Redis counts as unavailable until a PING answers in time. */
  readonly commandTimeoutMs: number;
  /** How often a PING checks that Redis answers in time. Default 1 s. */
  readonly heartbeatMs?: number;
}

/** Someone to tell what arrives on a channel, and when Redis comes and goes. */
export interface ChannelListener {
  message(text: string): void;
  availability(available: boolean): void;
}

/**
 * A pair of Redis connections for state shared between replicas (breakers, capacity): one for
 * commands (the Lua scripts defined on it), one subscribed to the channels (pub/sub needs its
 * own). No offline queue and a command timeout: a command fails at once or after the timeout,
 * never waits for a reconnect. ioredis reconnects forever, and every change of availability is
 * reported to the listeners, so their stores can re-sync when Redis returns. Available means:
 * commands connected and answering in time, and the channels subscribed.
 */
export class WatchedRedis<Commands extends Redis> {
  readonly commands: Commands;
  readonly #subscriber: Redis;
  readonly #logger: Logger;
  readonly #name: string;
  readonly #heartbeatMs: number;
  readonly #listeners = new Map<string, ChannelListener>();
  #subscribed = false;
  #slow = false;
  #reported = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: WatchedRedisOptions<Commands>) {
    this.#logger = options.logger;
    this.#name = options.name;
    this.#heartbeatMs = options.heartbeatMs ?? 1_000;
    const connection = {
      lazyConnect: true,
      enableOfflineQueue: false,
      // Commands in flight when the connection drops fail at once instead of waiting for a reconnect.
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs,
      connectTimeout: 1_000,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 5), 1_000),
    };
    this.commands = options.define(new Redis(options.url, { ...connection, connectionName: `boo-${options.name}` }));
    this.#subscriber = new Redis(options.url, { ...connection, connectionName: `boo-${options.name}-sub`, autoResubscribe: false });
    for (const connection of [this.commands, this.#subscriber]) {
      // ioredis reports every failed reconnect; the availability change is what operators need.
      connection.on('error', (err: Error) => this.#logger.debug({ err: err.message }, `${this.#name}: redis connection error`));
      connection.on('close', () => {
        if (connection === this.#subscriber) this.#subscribed = false;
        this.#update();
      });
    }
    this.commands.on('ready', () => {
      this.#slow = false;
      this.#update();
    });
    this.#subscriber.on('ready', () => void this.#subscribe());
    this.#subscriber.on('message', (channel: string, text: string) => this.#listeners.get(channel)?.message(text));
  }

  /** True while commands reach Redis in time and the channels are subscribed. */
  get available(): boolean {
    return !this.#closed && this.commands.status === 'ready' && this.#subscribed && !this.#slow;
  }

  /** Registers the listener of a channel and subscribes to it (now, or when the subscriber connects). */
  listen(channel: string, listener: ChannelListener): void {
    this.#listeners.set(channel, listener);
    if (this.#subscribed) {
      this.#subscriber.subscribe(channel).catch((err: unknown) => {
        this.#logger.warn({ err: errorMessage(err), channel }, `${this.#name}: subscribe failed; resubscribing`);
        this.#subscriber.disconnect(true);
      });
    }
  }

  /** Connects and subscribes; resolves when available, rejects after timeoutMs (it keeps reconnecting). */
  async start(timeoutMs: number): Promise<void> {
    this.#heartbeat ??= setInterval(() => void this.#ping(), this.#heartbeatMs).unref();
    // A failed first connect still leaves ioredis reconnecting under retryStrategy.
    await Promise.allSettled([this.commands.connect(), this.#subscriber.connect()]);
    const deadline = Date.now() + timeoutMs;
    while (!this.available) {
      if (this.#closed) throw new Error(`${this.#name}: redis closed`);
      if (Date.now() > deadline) throw new Error(`redis not reachable within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Runs a command; a timeout marks Redis as slow (unavailable) until a PING answers in time. */
  async run<T>(command: () => Promise<T>): Promise<T> {
    try {
      return await command();
    } catch (err: unknown) {
      this.#failed(err);
      throw err;
    }
  }

  async #subscribe(): Promise<void> {
    try {
      if (this.#listeners.size > 0) await this.#subscriber.subscribe(...this.#listeners.keys());
      this.#subscribed = true;
    } catch (err: unknown) {
      this.#logger.debug({ err: errorMessage(err) }, `${this.#name}: subscribe failed; retried on reconnect`);
      this.#subscriber.disconnect(true);
    }
    this.#update();
  }

  async #ping(): Promise<void> {
    if (this.commands.status !== 'ready') return;
    try {
      await this.commands.ping();
      if (this.#slow) {
        this.#slow = false;
        this.#update();
      }
    } catch (err: unknown) {
      this.#failed(err);
    }
  }

  #failed(err: unknown): void {
    if (err instanceof Error && /timed out/i.test(err.message) && !this.#slow) {
      this.#slow = true;
      this.#logger.warn(`${this.#name}: redis is not answering in time`);
      this.#update();
    }
  }

  #update(): void {
    const available = this.available;
    if (available === this.#reported) return;
    this.#reported = available;
    for (const listener of this.#listeners.values()) listener.availability(available);
  }

  /** Disconnects. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#heartbeat);
    // Closing is not Redis going away: the listeners are not told.
    this.#listeners.clear();
    await Promise.allSettled([this.commands.quit(), this.#subscriber.quit()]);
    this.commands.disconnect();
    this.#subscriber.disconnect();
  }
}
