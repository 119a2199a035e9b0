import type { Redis } from 'ioredis';
import { defineLuaCommands, findCommandsDirectory, type LuaCommandsClient } from '../shared/lua-commands.js';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The Lua scripts of the Redis breaker state store, one file each in `commands/` with a header
 * naming its KEYS and ARGV. Each script is one round trip and atomic, so a record, its lock and
 * its announcement never disagree.
 */
const commandFiles = {
  openBreaker: { file: 'open-breaker.lua', numberOfKeys: 2 },
  closeBreaker: { file: 'close-breaker.lua', numberOfKeys: 3 },
  storeCooldown: { file: 'store-cooldown.lua', numberOfKeys: 1 },
  claimProbe: { file: 'claim-probe.lua', numberOfKeys: 2 },
  renewProbe: { file: 'renew-probe.lua', numberOfKeys: 2 },
  releaseProbe: { file: 'release-probe.lua', numberOfKeys: 1 },
  addCounts: { file: 'add-counts.lua', numberOfKeys: 1 },
} as const;

export type BreakerCommandName = keyof typeof commandFiles;

/** A client with the scripts defined: each takes its KEYS, then its ARGV, as its file's header lists them. */
export type BreakerCommandsClient = LuaCommandsClient<BreakerCommandName>;

/** The `src/breakers/commands/` folder of the package (see {@link findCommandsDirectory}). */
export function findBreakerCommandsDirectory(from: string = dirname(fileURLToPath(import.meta.url))): string {
  return findCommandsDirectory('src/breakers/commands', from);
}

/** Defines the breaker scripts on a client (see {@link defineLuaCommands}). @throws when a file is missing */
export function defineBreakerCommands(redis: Redis): BreakerCommandsClient {
  return defineLuaCommands(redis, findBreakerCommandsDirectory(), commandFiles);
}
