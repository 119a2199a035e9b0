import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as stringifyYaml } from 'yaml';
import { startBooProcess, type RunningProcess } from '../support/processes.js';
import { freePort } from '../support/free-port.js';
import { createScratchDatabase } from '../support/scratch-database.js';
import { deleteQueueKeys, testRedisUrl as redisUrl } from '../support/test-services.js';

// The metrics table of docs/metrics.md (between <!-- metrics:start --> and <!-- metrics:end -->) is what
// operators build dashboards from: it must list exactly what the gateway and the worker serve.

const root = fileURLToPath(new URL('../../', import.meta.url));

interface Documented {
  name: string;
  type: string;
  labels: string[];
}

/** Rows of the markdown table: `name` | type | `label`, `label` | meaning. */
function documentedMetrics(readme: string): Documented[] {
  const start = readme.indexOf('<!-- metrics:start -->');
  const end = readme.indexOf('<!-- metrics:end -->');
  if (start < 0 || end < start) throw new Error('docs/metrics.md has no <!-- metrics:start --> ... <!-- metrics:end --> section');
  const rows: Documented[] = [];
  for (const line of readme.slice(start, end).split('\n')) {
    const cells = line.split('|').map((cell) => cell.trim());
    const name = /^`([^`]+)`$/.exec(cells[1] ?? '')?.[1];
    if (!name) continue;
    rows.push({ name, type: cells[2] ?? '', labels: [...(cells[3] ?? '').matchAll(/`([^`]+)`/g)].map((m) => m[1]!).sort() });
  }
  return rows;
}

interface Served {
  type: string;
  labels: Set<string>;
}

/** Metric families of a text exposition with their type and label names (default `replica` and histogram `le` excluded). */
function servedMetrics(text: string, into: Map<string, Served>): void {
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      if (!into.has(type[1]!)) into.set(type[1]!, { type: type[2]!, labels: new Set() });
      continue;
    }
    const sample = /^(\w+)\{(.*)\} /.exec(line);
    if (!sample) continue;
    const name = sample[1]!;
    const family = into.get(name) ?? into.get(name.replace(/_(bucket|sum|count)$/, ''));
    for (const [, label] of sample[2]!.matchAll(/(\w+)="/g)) if (label !== 'replica' && label !== 'le') family?.labels.add(label!);
  }
}

describe('docs/metrics.md metrics table', () => {
  const queue = `boo-readme-${randomUUID()}`;
  let dir: string;
  let database: Awaited<ReturnType<typeof createScratchDatabase>>;
  let gateway: RunningProcess;
  let worker: RunningProcess;
  const served = new Map<string, Served>();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'boo-readme-'));
    database = await createScratchDatabase();
    const configPath = join(dir, 'gateway.yaml');
    await writeFile(
      configPath,
      stringifyYaml({
        providers: { p: { baseUrl: 'http://127.0.0.1:9', maxInFlight: 4 } },
        // Resume and a line on, so that their series exist from the start too.
        virtualModels: { 'auto:chat': { candidates: [{ target: 'p/m', maxInFlight: 2 }], queue: { maxWaitMs: 1_000 }, resume: { maxResumes: 1 } } },
        healthCheck: { intervalMs: 60_000 },
        // Limits bring the series of their rejections.
        auth: { apiKeys: [{ sha256: '0'.repeat(64), name: 'app', requestsPerMinute: 60 }] },
        limits: { sources: { batch: { tokensPerMinute: 1_000 } } },
      }),
    );
    const env = { BOO_CONFIG: configPath, REDIS_URL: redisUrl, DATABASE_URL: database.url, BOO_QUEUE: queue, BOO_DATA_DIR: join(dir, 'data') };
    const workerPort = await freePort();
    const gatewayPort = await freePort();
    [worker, gateway] = await Promise.all([
      startBooProcess({ kind: 'worker', env: { ...env, METRICS_PORT: String(workerPort) }, readyUrl: `http://127.0.0.1:${workerPort}/metrics` }),
      startBooProcess({ kind: 'gateway', env: { ...env, PORT: String(gatewayPort), HOST: '127.0.0.1' }, readyUrl: `http://127.0.0.1:${gatewayPort}/readyz` }),
    ]);
    for (const url of [`http://127.0.0.1:${gatewayPort}/metrics`, `http://127.0.0.1:${workerPort}/metrics`]) {
      servedMetrics(await (await fetch(url)).text(), served);
    }
  }, 90_000);

  afterAll(async () => {
    await Promise.allSettled([gateway?.stop(), worker?.stop()]);
    await database?.drop();
    await deleteQueueKeys(queue);
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('lists exactly the metric names that /metrics serves', async () => {
    const documented = documentedMetrics(await readFile(join(root, 'docs/metrics.md'), 'utf8'));
    const prefixes = documented.filter((row) => row.name.endsWith('*')).map((row) => row.name.slice(0, -1));
    const exact = documented
      .filter((row) => !row.name.endsWith('*'))
      .map((row) => row.name)
      .sort();
    const servedNames = [...served.keys()].filter((name) => !prefixes.some((prefix) => name.startsWith(prefix))).sort();
    expect(servedNames.length).toBeGreaterThan(10);
    expect(servedNames, 'names served by /metrics (received) vs the docs table (expected)').toEqual(exact);
    for (const prefix of prefixes)
      expect(
        [...served.keys()].some((name) => name.startsWith(prefix)),
        `${prefix}*`,
      ).toBe(true);
  });

  it('gives each metric its served type and label names', async () => {
    const documented = documentedMetrics(await readFile(join(root, 'docs/metrics.md'), 'utf8')).filter((row) => !row.name.endsWith('*'));
    const mismatches = documented.flatMap((row) => {
      const actual = served.get(row.name);
      if (!actual) return [];
      const labels = [...actual.labels].sort();
      return row.type === actual.type && row.labels.join(',') === labels.join(',')
        ? []
        : [`${row.name}: docs/metrics.md says ${row.type} (${row.labels.join(', ')}), /metrics serves ${actual.type} (${labels.join(', ')})`];
    });
    expect(mismatches).toEqual([]);
  });
});
