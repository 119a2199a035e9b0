import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '../shared/logger.js';
import { defineLuaCommands, findCommandsDirectory, type LuaCommandsClient } from '../shared/lua-commands.js';
import { WatchedRedis, type ChannelListener } from '../shared/watched-redis.js';

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

/**
 * The Redis connections of capacity ({@link WatchedRedis}), shared by the slot store and the
 * rate-limit store of one process. `instance` names this process in lease ids and announcements;
 * a store ignores its own announcements by it.
 */
export class CapacityRedis extends WatchedRedis<CapacityCommandsClient> {
  readonly instance = randomUUID();
  readonly prefix: string;

  constructor(options: CapacityRedisOptions) {
    super({
      url: options.url,
      logger: options.logger,
      name: 'capacity',
      define: defineCapacityCommands,
      commandTimeoutMs: options.commandTimeoutMs ?? 250,
      ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }),
    });
    this.prefix = options.keyPrefix ?? 'boo:capacity:';
  }

  /** Listens on the channel `<prefix><name>`; returns the channel. */
  channel(name: string, listener: ChannelListener): string {
    const channel = `${this.prefix}${name}`;
    this.listen(channel, listener);
    return channel;
  }
}
