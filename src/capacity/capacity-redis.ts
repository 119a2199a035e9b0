import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { errorMessage } from '../shared/error-message.js';
import type { Logger } from '../shared/logger.js';
import { defineLuaCommands, findCommandsDirectory, type LuaCommandsClient } from '../shared/lua-commands.js';

/**
 * The Lua scripts of capacity, one file each in `commands/` with a header naming its KEYS and
 * ARGV. Those over the scopes of one request take a varying number of keys (`KEYS[1..n]`): their
 * count goes first.
 */
const commandFiles = {
  acquireSlot: { file: 'acquire-slot.lua' },
  renewSlots: { file: 'renew-slots.lua' },
  releaseSlot: { file: 'release-slot.lua' },
  takeRate: { file: 'take-rate.lua' },
  adjustRate: { file: 'adjust-rate.lua' },
} as const;

export type CapacityCommandName = keyof typeof commandFiles;
export type CapacityCommandsClient = LuaCommandsClient<CapacityCommandName>;

/** The `src/capacity/commands/` folder of the package (see {@link findCommandsDirectory}). */
export function findCapacityCommandsDirectory(from?: string): string {
  return findCommandsDirectory('src/capacity/commands', from);
}

/** Defines the capacity scripts on a client. @throws when a file is missing */
export function defineCapacityCommands(redis: Redis): CapacityCommandsClient {
  return defineLuaCommands(redis, findCapacityCommandsDirectory(), commandFiles);
}

export interface CapacityRedisOptions {
  readonly url: string;
  readonly logger: Logger;
  /** Prefix of every key and channel. Default `boo:capacity:`. */
  readonly keyPrefix?: string;
  /**
   * Upper bound of one command. A slot or an exact rate-limit check waits for Redis on the request
   * path, so this is short; a slower Redis counts as unavailable and capacity falls back to
   * per-process counting. Default 250 ms.
   */
  readonly commandTimeoutMs?: number;
  /** How often a PING checks that Redis answers in time. Default 1 s. */
  readonly heartbeatMs?: number;
}

/** Someone to tell what arrives on a channel, and when Redis comes and goes. */
export interface CapacityRedisListener {
  message(text: string): void;
  availability(available: boolean): void;
}

/**
 * The Redis connections of capacity, shared by the slot store and the rate-limit store of one
 * process: one for commands (the scripts defined on it), one subscribed to their channels
 * (pub/sub needs its own). No offline queue and a command timeout: a command fails at once or
 * after the timeout, never waits for a reconnect; ioredis reconnects forever and every return is
 * reported, so the stores can re-sync. `instance` names this process in lease ids and
 * announcements; a store ignores its own announcements by it.
 */
export class CapacityRedis {
  readonly instance = randomUUID();
  readonly prefix: string;
  readonly commands: CapacityCommandsClient;
  readonly #subscriber: Redis;
  readonly #logger: Logger;
  readonly #heartbeatMs: number;
  readonly #listeners = new Map<string, CapacityRedisListener>();
  #subscribed = false;
  #slow = false;
  #reported = false;
  #heartbeat: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: CapacityRedisOptions) {
    this.prefix = options.keyPrefix ?? 'boo:capacity:';
    this.#logger = options.logger;
    this.#heartbeatMs = options.heartbeatMs ?? 1_000;
    const connection = {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? 250,
      connectTimeout: 1_000,
      retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 5), 1_000),
    };
    this.commands = defineCapacityCommands(new Redis(options.url, { ...connection, connectionName: 'boo-capacity' }));
    this.#subscriber = new Redis(options.url, { ...connection, connectionName: 'boo-capacity-sub', autoResubscribe: false });
    for (const connection of [this.commands, this.#subscriber]) {
      // ioredis reports every failed reconnect; the availability change is what operators need.
      connection.on('error', (err: Error) => this.#logger.debug({ err: err.message }, 'capacity: redis connection error'));
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

  /** Registers the listener of a channel (`<prefix><name>`) and subscribes to it. Returns the channel. */
  listen(name: string, listener: CapacityRedisListener): string {
    const channel = `${this.prefix}${name}`;
    this.#listeners.set(channel, listener);
    if (this.#subscribed) {
      this.#subscriber.subscribe(channel).catch((err: unknown) => {
        this.#logger.warn({ err: errorMessage(err), channel }, 'capacity: subscribe failed; resubscribing');
        this.#subscriber.disconnect(true);
      });
    }
    return channel;
  }

  /** Connects and subscribes; resolves when reachable, rejects after timeoutMs (it keeps reconnecting). */
  async start(timeoutMs: number): Promise<void> {
    this.#heartbeat ??= setInterval(() => void this.#ping(), this.#heartbeatMs).unref();
    // A failed first connect still leaves ioredis reconnecting under retryStrategy.
    await Promise.allSettled([this.commands.connect(), this.#subscriber.connect()]);
    const deadline = Date.now() + timeoutMs;
    while (!this.available) {
      if (this.#closed) throw new Error('capacity redis closed');
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
      this.#logger.debug({ err: errorMessage(err) }, 'capacity: subscribe failed; retried on reconnect');
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
      this.#logger.warn('capacity: redis is not answering in time; counting per process until it does');
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
    this.#update();
    this.#listeners.clear();
    await Promise.allSettled([this.commands.quit(), this.#subscriber.quit()]);
    this.commands.disconnect();
    this.#subscriber.disconnect();
  }
}
