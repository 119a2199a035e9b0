import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { startBooProcess, type RunningProcess } from '../support/processes.js';
import { startFakeProvider, type FakeProvider } from '../../simulator/fake-provider.js';
import { freePort } from '../support/free-port.js';
import { startPrometheus, type PrometheusServer } from '../support/prometheus-server.js';
import {
  dashboardExpressions,
  dashboardVariableExpressions,
  ruleExpressions,
  substituteDashboardVariables,
  withBoolComparisons,
  type SourcedExpression,
} from '../support/promql-expressions.js';
import { createScratchDatabase } from '../support/scratch-database.js';
import { generateTraffic, type TrafficSummary } from '../../simulator/traffic-generator.js';
import { deleteQueueKeys, testRedisUrl as redisUrl } from '../support/test-services.js';

// SPEC §8 / issue 6: a real Prometheus scrapes a real gateway and a real worker while traffic
// with failovers flows; every PromQL expression of the dashboard and of the alert rules must
// parse and return data.

const root = fileURLToPath(new URL('../../', import.meta.url));
const alertsFile = join(root, 'prometheus/alerts.yml');
// The whole test fits in a minute: a 1m rate window sees every sample since start-up.
const intervals = { rate: '1m', interval: '1s', range: '1m' };

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

describe('Prometheus over a live gateway and worker', () => {
  const queue = `boo-e2e-${randomUUID()}`;
  let dir: string;
  let database: Awaited<ReturnType<typeof createScratchDatabase>>;
  let good: FakeProvider;
  let bad: FakeProvider;
  let worker: RunningProcess;
  let gateway: RunningProcess;
  let gatewayUrl: string;
  let prometheus: PrometheusServer;
  let traffic: TrafficSummary;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'boo-e2e-'));
    database = await createScratchDatabase();
    good = await startFakeProvider({ name: 'good', models: ['m1'] });
    bad = await startFakeProvider({ name: 'bad', models: ['m1', 'm2'] });
    bad.defaultReply = { kind: 'status', status: 500 };
    const config = {
      providers: { good: { baseUrl: good.url }, bad: { baseUrl: bad.url } },
      virtualModels: {
        // The first candidate always fails: failovers, until its breaker opens (then probes again).
        'auto:chat': { strategy: 'priority', candidates: ['bad/m1', 'good/m1'], resume: { maxResumes: 1 } },
        // A single failing candidate: 502 all_candidates_failed, breaker open.
        'auto:down': { candidates: ['bad/m2'] },
      },
      breaker: { errorThresholdPercentage: 50, volumeThreshold: 3, rollingCountTimeoutMs: 10_000, resetTimeoutMs: 2_000 },
      healthCheck: { intervalMs: 1_000, timeoutMs: 500 },
      // A source allowed two requests a minute: the burst below is refused by its rate limit.
      limits: { sources: { 'e2e-burst': { requestsPerMinute: 2 } } },
    };
    const configPath = join(dir, 'gateway.yaml');
    await writeFile(configPath, stringifyYaml(config));
    const env = { BOO_CONFIG: configPath, REDIS_URL: redisUrl, DATABASE_URL: database.url, BOO_QUEUE: queue, BOO_DATA_DIR: join(dir, 'data') };

    const workerPort = await freePort();
    worker = await startBooProcess({
      kind: 'worker',
      env: { ...env, METRICS_PORT: String(workerPort), BOO_REPLICA_ID: 'e2e-worker' },
      readyUrl: `http://127.0.0.1:${workerPort}/metrics`,
    });
    const gatewayPort = await freePort();
    gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
    gateway = await startBooProcess({
      kind: 'gateway',
      env: { ...env, PORT: String(gatewayPort), HOST: '127.0.0.1', BOO_REPLICA_ID: 'e2e-gateway' },
      readyUrl: `${gatewayUrl}/readyz`,
    });
    prometheus = await startPrometheus({
      jobs: { 'boo-gateway': [`127.0.0.1:${gatewayPort}`], 'boo-worker': [`127.0.0.1:${workerPort}`] },
      ruleFiles: [alertsFile],
      scrapeIntervalSeconds: 1,
    });
    await until(
      'both targets up',
      async () => {
        const response = await prometheus.query('sum(up{job=~"boo-gateway|boo-worker"})');
        return response.data?.result[0]?.value?.[1] === '2' ? true : undefined;
      },
      30_000,
    );

    traffic = await generateTraffic({
      baseUrl: gatewayUrl,
      models: ['auto:chat', 'auto:chat', 'auto:down', 'no-such-model'],
      ratePerSecond: 20,
      durationMs: 4_000,
      streamShare: 0.5,
    });
    const burst = await Promise.all(
      Array.from({ length: 4 }, () =>
        fetch(`${gatewayUrl}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-boo-source': 'e2e-burst' },
          body: JSON.stringify({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }] }),
        }).then(async (response) => {
          await response.arrayBuffer();
          return response.status;
        }),
      ),
    );
    expect(burst.filter((status) => status === 429)).toHaveLength(2);
    // Counters moved in Prometheus' view, and the worker wrote rows: the pipeline is live end to end.
    await until(
      'failovers and inserted events scraped',
      async () => {
        const [failovers, inserted] = await Promise.all([prometheus.query('sum(boo_failovers_total)'), prometheus.query('sum(boo_events_inserted_total)')]);
        const positive = (r: typeof failovers) => Number(r.data?.result[0]?.value?.[1] ?? '0') > 0;
        return positive(failovers) && positive(inserted) ? true : undefined;
      },
      30_000,
    );
    // Two more scrapes, so every rate window holds samples after the last increments.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
  }, 120_000);

  afterAll(async () => {
    await Promise.allSettled([prometheus?.stop(), gateway?.stop(), worker?.stop()]);
    await Promise.allSettled([good?.close(), bad?.close(), database?.drop()]);
    await deleteQueueKeys(queue);
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('drove traffic with failovers, all-failed dispatches and unknown models through the gateway', () => {
    expect(traffic.failovers, JSON.stringify(traffic)).toBeGreaterThan(0);
    expect(traffic.byStatus['200'] ?? 0).toBeGreaterThan(0);
    expect(traffic.byStatus['502'] ?? 0).toBeGreaterThan(0);
    expect(traffic.byStatus['404'] ?? 0).toBeGreaterThan(0);
  });

  async function problemsOf(expressions: SourcedExpression[], transform: (expr: string) => string): Promise<string[]> {
    const problems: string[] = [];
    for (const { source, expr } of expressions) {
      const query = transform(expr);
      const response = await prometheus.query(query);
      if (response.status !== 'success') problems.push(`${source}: ${response.errorType ?? 'error'}: ${response.error ?? '?'}\n    ${query}`);
      else if ((response.data?.result.length ?? 0) === 0) problems.push(`${source}: no data\n    ${query}`);
    }
    return problems;
  }

  it('every dashboard expression parses and returns data', async () => {
    const dashboard: unknown = JSON.parse(await readFile(join(root, 'grafana/dashboards/boo-gateway.json'), 'utf8'));
    const expressions = [...dashboardExpressions(dashboard), ...dashboardVariableExpressions(dashboard)];
    expect(expressions.length).toBeGreaterThan(20);
    const substitute = (expr: string) => {
      const query = substituteDashboardVariables(expr, intervals);
      expect(query, 'unsubstituted Grafana variable').not.toContain('$');
      return query;
    };
    expect(await problemsOf(expressions, substitute)).toEqual([]);
  });

  it('every alert expression parses, and every series it reads exists', async () => {
    const expressions = ruleExpressions(parseYaml(await readFile(alertsFile, 'utf8')));
    expect(expressions.length).toBeGreaterThan(5);
    // As written: must parse (a quiet alert legitimately returns nothing).
    const parseProblems = (await problemsOf(expressions, (expr) => expr)).filter((problem) => !problem.includes(': no data'));
    expect(parseProblems).toEqual([]);
    // With `bool` comparisons: 0/1 per series read, so no data means a metric or label that does not exist.
    expect(await problemsOf(expressions, withBoolComparisons)).toEqual([]);
  });

  it('Prometheus loaded the alert rules and evaluates them without errors', async () => {
    interface RulesResponse {
      data: { groups: { name: string; rules: { name: string; health: string; lastError?: string; lastEvaluation: string }[] }[] };
    }
    const rules = await until(
      'every rule evaluated',
      async () => {
        const response = await prometheus.api<RulesResponse>('/api/v1/rules');
        const all = response.data.groups.flatMap((group) => group.rules);
        return all.length > 0 && all.every((rule) => !rule.lastEvaluation.startsWith('0001')) ? all : undefined;
      },
      15_000,
    );
    const expected = ruleExpressions(parseYaml(await readFile(alertsFile, 'utf8'))).length;
    expect(rules).toHaveLength(expected);
    expect(rules.filter((rule) => rule.health !== 'ok').map((rule) => `${rule.name}: ${rule.health} ${rule.lastError ?? ''}`)).toEqual([]);
  });
});
