import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';

/**
 * One Lua script in a `commands/` folder, with a header naming its KEYS and ARGV.
 * `numberOfKeys` undefined: the caller passes the count of keys first (scripts over a varying
 * number of keys, `KEYS[1..n]`).
 */
export interface LuaCommandFile {
  readonly file: string;
  readonly numberOfKeys?: number;
}

/**
 * The folder `relative` (e.g. `src/breakers/commands`) of the package, found by walking up from
 * `from` to the package root: the same code runs from `src/` (tsx, vitest) and from `dist/src/`
 * (built), and tsc copies no `.lua` file into `dist/`.
 */
export function findCommandsDirectory(relative: string, from: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, ...relative.split('/'));
    if (existsSync(join(dir, 'package.json')) && existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) throw new Error(`no ${relative}/ folder found above ${from}`);
  }
}

const read = new Map<string, string>();

/** Reads a script once per process. @throws when the file is missing: its store cannot work without it. */
function readScript(path: string): string {
  let lua = read.get(path);
  if (lua === undefined) {
    lua = readFileSync(path, 'utf8');
    read.set(path, lua);
  }
  return lua;
}

/** A client with scripts defined: each takes its KEYS (after their count, when it varies), then its ARGV. */
export type LuaCommandsClient<Name extends string> = Redis & { [name in Name]: (...keysThenArgs: Array<string | number>) => Promise<unknown> };

/**
 * Defines the scripts on a client with `defineCommand`: ioredis sends each script's body once per
 * connection, then only its SHA (EVALSHA), and sends the body again when Redis answers NOSCRIPT
 * (a restarted Redis has lost its script cache).
 */
export function defineLuaCommands<Name extends string>(
  redis: Redis,
  directory: string,
  files: Readonly<Record<Name, LuaCommandFile>>,
): LuaCommandsClient<Name> {
  for (const [name, { file, numberOfKeys }] of Object.entries(files) as Array<[Name, LuaCommandFile]>) {
    const lua = readScript(join(directory, file));
    redis.defineCommand(name, numberOfKeys === undefined ? { lua } : { lua, numberOfKeys });
  }
  return redis as LuaCommandsClient<Name>;
}
