import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';

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
export type BreakerCommandsClient = Redis & { [name in BreakerCommandName]: (...keysThenArgs: Array<string | number>) => Promise<unknown> };

/**
 * The `src/breakers/commands/` folder of the package, found by walking up from `from` to the
 * package root: the same code runs from `src/` (tsx, vitest) and from `dist/src/` (built), and
 * tsc copies no `.lua` file into `dist/`.
 */
export function findBreakerCommandsDirectory(from: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'src', 'breakers', 'commands');
    if (existsSync(join(dir, 'package.json')) && existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) throw new Error(`no src/breakers/commands/ folder found above ${from}`);
  }
}

let scripts: ReadonlyMap<BreakerCommandName, { lua: string; numberOfKeys: number }> | undefined;

/** Reads the scripts once per process. @throws when a file is missing: the store cannot work without it. */
function readScripts(): ReadonlyMap<BreakerCommandName, { lua: string; numberOfKeys: number }> {
  if (scripts) return scripts;
  const directory = findBreakerCommandsDirectory();
  const read = new Map<BreakerCommandName, { lua: string; numberOfKeys: number }>();
  for (const [name, { file, numberOfKeys }] of Object.entries(commandFiles) as Array<[BreakerCommandName, (typeof commandFiles)[BreakerCommandName]]>) {
    read.set(name, { lua: readFileSync(join(directory, file), 'utf8'), numberOfKeys });
  }
  scripts = read;
  return read;
}

/**
 * Defines the scripts on a client with `defineCommand`: ioredis sends each script's body once per
 * connection, then only its SHA (EVALSHA), and sends the body again when Redis answers NOSCRIPT
 * (a restarted Redis has lost its script cache).
 */
export function defineBreakerCommands(redis: Redis): BreakerCommandsClient {
  for (const [name, definition] of readScripts()) redis.defineCommand(name, definition);
  return redis as BreakerCommandsClient;
}
