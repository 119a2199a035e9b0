import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { defineCapacityCommands, findCapacityCommandsDirectory } from './capacity-redis.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

function defined(): Map<string, { lua: string; numberOfKeys?: number }> {
  const commands = new Map<string, { lua: string; numberOfKeys?: number }>();
  const client = { defineCommand: (name: string, definition: { lua: string; numberOfKeys?: number }) => commands.set(name, definition) };
  defineCapacityCommands(client as unknown as Redis);
  return commands;
}

/** Literal indices of `ARGV[n]` in a piece of Lua, sorted, without repeats. */
function argvIndices(lua: string): number[] {
  return [...new Set([...lua.matchAll(/ARGV\[(\d+)\]/g)].map((match) => Number(match[1])))].sort((a, b) => a - b);
}

describe('the capacity store commands', () => {
  it('are found from the built module in dist/ as from the source, since tsc copies no .lua file', () => {
    const commands = join(root, 'src', 'capacity', 'commands');
    expect(findCapacityCommandsDirectory(join(root, 'dist', 'src', 'capacity'))).toBe(commands);
    expect(findCapacityCommandsDirectory(join(root, 'src', 'capacity'))).toBe(commands);
    expect(() => findCapacityCommandsDirectory('/')).toThrow(/no src\/capacity\/commands\/ folder/);
  });

  it('are every .lua file of the folder, each over a varying number of keys named in its header, reading only the ARGV its header names', () => {
    const commands = defined();
    expect(commands.size).toBe(readdirSync(findCapacityCommandsDirectory()).filter((file) => file.endsWith('.lua')).length);
    for (const [name, { lua, numberOfKeys }] of commands) {
      expect(lua.startsWith('--[['), name).toBe(true);
      expect(numberOfKeys, name).toBeUndefined();
      const headerEnd = lua.indexOf(']]');
      const header = lua.slice(0, headerEnd);
      const body = lua.slice(headerEnd);
      expect(header, name).toContain('KEYS[1..n]');
      expect(body, name).not.toMatch(/KEYS\[\d+\]/);
      const named = argvIndices(header);
      expect(header, name).toMatch(/ARGV\[\d+(\.\.\]|\])/);
      expect(
        argvIndices(body).filter((index) => !named.includes(index)),
        name,
      ).toEqual([]);
    }
  });
});
