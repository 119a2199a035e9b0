import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The example config of the package, found from its root: this module runs from `src/` (tsx, vitest) and from `dist/src/`. */
function shippedExampleConfig(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const candidate = join(dir, 'config', 'gateway.example.yaml');
    if (existsSync(join(dir, 'package.json')) && existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) throw new Error('config/gateway.example.yaml not found above this module');
  }
}

/** The config file both processes read: `BOO_CONFIG`, else ./gateway.yaml, else the shipped example. */
export function configPath(explicit: string | undefined): string {
  if (explicit) return explicit;
  return existsSync('gateway.yaml') ? 'gateway.yaml' : shippedExampleConfig();
}
