import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { configFileSchema, envSchema } from '../../src/config/schema.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

/** Every key path of a zod object schema, records as `<name>`: `providers.<name>.baseUrl`. */
function keyPaths(schema: z.ZodType, prefix = ''): string[] {
  let inner: z.ZodType = schema;
  // Defaults, optionals and prefaults wrap the object they describe.
  while (inner instanceof z.ZodDefault || inner instanceof z.ZodOptional || inner instanceof z.ZodPrefault || inner instanceof z.ZodNullable) {
    inner = inner.unwrap() as z.ZodType;
  }
  if (inner instanceof z.ZodObject) {
    return Object.entries(inner.shape as Record<string, z.ZodType>).flatMap(([key, child]) => {
      const path = prefix ? `${prefix}.${key}` : key;
      return [path, ...keyPaths(child, path)];
    });
  }
  if (inner instanceof z.ZodRecord) return keyPaths(inner.valueType as z.ZodType, `${prefix}.<name>`);
  return [];
}

describe('docs/configuration.md', () => {
  it('documents every key of the config file and every environment variable', async () => {
    const text = (await readFile(`${root}docs/configuration.md`, 'utf8')).replace(/```[\s\S]*?```/g, '');
    const documented = new Set([...text.matchAll(/`([^`]+)`/g)].map((match) => match[1]!));
    const keys = keyPaths(configFileSchema);
    expect(keys.length).toBeGreaterThan(30);
    // A section is documented through its keys; a candidate's own keys, and a provider's
    // overrides of the global timeouts, as one entry with prose.
    const asOne = ['virtualModels.<name>.candidates', 'providers.<name>.timeouts'];
    const leaves = keys.filter((key) => !keys.some((other) => other.startsWith(`${key}.`)) || key.endsWith('<name>') || asOne.includes(key));
    const missing = leaves.filter((key) => !documented.has(key) && !asOne.some((whole) => key.startsWith(`${whole}.`)));
    expect(missing).toEqual([]);
    expect(Object.keys(envSchema.shape).filter((name) => !documented.has(name))).toEqual([]);
  });
});

describe('docs/operations.md', () => {
  it('has a runbook entry for every alert', async () => {
    const rules = parseYaml(await readFile(`${root}prometheus/alerts.yml`, 'utf8')) as { groups: Array<{ rules: Array<{ alert?: string }> }> };
    const alerts = rules.groups.flatMap((group) => group.rules.map((rule) => rule.alert)).filter((name): name is string => name !== undefined);
    const headings = (await readFile(`${root}docs/operations.md`, 'utf8')).split('\n').filter((line) => line.startsWith('### '));
    expect(alerts.length).toBeGreaterThan(10);
    expect(alerts.filter((alert) => !headings.some((heading) => heading.split(/[ /]+/).includes(alert)))).toEqual([]);
  });
});
