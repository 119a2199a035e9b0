import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { defineBreakerCommands, findBreakerCommandsDirectory } from './redis-breaker-commands.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

function defined(): Map<string, { lua: string; numberOfKeys?: number }> {
  const commands = new Map<string, { lua: string; numberOfKeys?: number }>();
  const client = { defineCommand: (name: string, definition: { lua: string; numberOfKeys?: number }) => commands.set(name, definition) };
  defineBreakerCommands(client as unknown as Redis);
  return commands;
}

/** Indices of `KEYS[n]` or `ARGV[n]` in a piece of Lua, sorted, without repeats. */
function indices(lua: string, array: 'KEYS' | 'ARGV'): number[] {
  return [...new Set([...lua.matchAll(new RegExp(`${array}\\[(\\d+)\\]`, 'g'))].map((match) => Number(match[1])))].sort((a, b) => a - b);
}

const oneTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

describe('the breaker store commands', () => {
  it('are found from the built module in dist/ as from the source, since tsc copies no .lua file', () => {
    const commands = join(root, 'src', 'breakers', 'commands');
    expect(findBreakerCommandsDirectory(join(root, 'dist', 'src', 'breakers'))).toBe(commands);
    expect(findBreakerCommandsDirectory(join(root, 'src', 'breakers'))).toBe(commands);
    expect(() => findBreakerCommandsDirectory('/')).toThrow(/no src\/breakers\/commands\/ folder/);
  });

  it('are defined with as many keys as each header names, and each body reads only the KEYS and ARGV its header names', () => {
    const commands = defined();
    expect([...commands.keys()].sort()).toEqual(['addCounts', 'claimProbe', 'closeBreaker', 'openBreaker', 'releaseProbe', 'renewProbe', 'storeCooldown']);
    for (const [name, { lua, numberOfKeys }] of commands) {
      const headerEnd = lua.indexOf(']]');
      expect(lua.startsWith('--[['), name).toBe(true);
      const header = lua.slice(0, headerEnd);
      const body = lua.slice(headerEnd);
      expect(indices(header, 'KEYS'), name).toEqual(oneTo(numberOfKeys ?? -1));
      expect(indices(body, 'KEYS'), name).toEqual(oneTo(numberOfKeys ?? -1));
      const argv = indices(header, 'ARGV');
      expect(argv, name).toEqual(oneTo(argv.length));
      expect(indices(body, 'ARGV'), name).toEqual(argv);
    }
  });
});
