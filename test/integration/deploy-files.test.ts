import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { buildConfig } from '../../src/config/load.js';
import { createDispatchLogMetrics, createGatewayMetrics, createMetricsRegistry } from '../../src/metrics/registry.js';
import { booMetricNames, dashboardExpressions, dashboardPanels, dashboardVariableExpressions, ruleExpressions } from '../support/promql-expressions.js';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;
const read = (path: string) => readFile(join(root, path), 'utf8');

interface ComposeService {
  command?: string[];
  environment?: Record<string, string>;
}

describe('docker-compose.yml', () => {
  let services: Record<string, ComposeService>;
  let scratch: string;

  beforeAll(async () => {
    // `config` without -q prints the resolved file: anchors and merge keys expanded as compose sees them.
    const { stdout } = await run('docker-compose', ['-f', 'docker-compose.yml', 'config'], { cwd: root });
    services = (parseYaml(stdout) as { services: Record<string, ComposeService> }).services;
    scratch = await mkdtemp(join(tmpdir(), 'boo-compose-'));
  });
  afterAll(() => rm(scratch, { recursive: true, force: true }));

  it('is accepted by docker-compose config -q', async () => {
    await expect(run('docker-compose', ['-f', 'docker-compose.yml', 'config', '-q'], { cwd: root })).resolves.toBeDefined();
  });

  it('is checked for real: docker-compose rejects a broken copy of it', async () => {
    const broken = (await read('docker-compose.yml')).replace('condition: service_healthy', 'condition: service_hungry');
    await writeFile(join(scratch, 'docker-compose.yml'), broken);
    await expect(run('docker-compose', ['-f', join(scratch, 'docker-compose.yml'), '--project-directory', root, 'config', '-q'])).rejects.toThrow(
      /service_hungry/,
    );
  });

  it('runs several gateway replicas, each with its own replica id, plus the worker, fleet, traffic, Prometheus and Grafana', () => {
    const gateways = Object.keys(services).filter((name) => /^gateway-\d+$/.test(name));
    expect(gateways.length).toBeGreaterThanOrEqual(2);
    expect(new Set(gateways.map((name) => services[name]!.environment?.['BOO_REPLICA_ID'])).size).toBe(gateways.length);
    for (const name of ['redis', 'postgres', 'worker', 'lb', 'fleet', 'traffic', 'prometheus', 'grafana']) expect(services).toHaveProperty(name);
  });

  it('mounts only files that are committed (a git-ignored config would be missing from every clone)', async () => {
    const sources = [...(await read('docker-compose.yml')).matchAll(/^\s*- \.\/([^:]+):/gm)].map((m) => m[1]!);
    expect(sources.length).toBeGreaterThan(3);
    await expect(run('git', ['ls-files', '--error-unmatch', ...sources], { cwd: root })).resolves.toBeDefined();
  });

  it('has Prometheus scrape every gateway replica and the worker, and nginx balance over every replica', async () => {
    const gateways = Object.keys(services)
      .filter((name) => /^gateway-\d+$/.test(name))
      .sort();
    const scrape = parseYaml(await read('prometheus/prometheus.yml')) as {
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[];
    };
    const targets = (job: string) =>
      scrape.scrape_configs
        .filter((config) => config.job_name === job)
        .flatMap((config) => config.static_configs.flatMap((s) => s.targets))
        .sort();
    expect(targets('boo-gateway')).toEqual(gateways.map((name) => `${name}:${services[name]!.environment?.['PORT']}`));
    expect(targets('boo-worker')).toEqual([`worker:${services['worker']!.environment?.['METRICS_PORT']}`]);

    const nginx = await read('deploy/nginx.conf');
    expect([...nginx.matchAll(/^\s*server (gateway-\d+):(\d+)/gm)].map((m) => `${m[1]}:${m[2]}`).sort()).toEqual(
      gateways.map((name) => `${name}:${services[name]!.environment?.['PORT']}`),
    );
    expect(nginx).toMatch(/proxy_buffering off;/);
    expect(nginx).toMatch(/proxy_read_timeout \d{3,}s;/);
  });
});

describe('prometheus/', () => {
  it('alert rules pass promtool check rules', async () => {
    const { stdout } = await run('promtool', ['check', 'rules', 'alerts.yml'], { cwd: join(root, 'prometheus') });
    expect(stdout).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('the scrape config passes promtool check config', async () => {
    await expect(run('promtool', ['check', 'config', 'prometheus.yml'], { cwd: join(root, 'prometheus') })).resolves.toBeDefined();
  });

  it('alerts fire on the conditions they name (promtool test rules)', async () => {
    const { stdout } = await run('promtool', ['test', 'rules', 'alerts.test.yml'], { cwd: join(root, 'prometheus') });
    expect(stdout).toMatch(/SUCCESS/);
  });

  it('every alert has a severity and a summary', async () => {
    const file = parseYaml(await read('prometheus/alerts.yml')) as {
      groups: { rules: { alert?: string; labels?: Record<string, string>; annotations?: Record<string, string> }[] }[];
    };
    const alerts = file.groups.flatMap((group) => group.rules).filter((rule) => rule.alert);
    expect(alerts.length).toBeGreaterThanOrEqual(5);
    for (const alert of alerts) {
      expect(['warning', 'critical'], alert.alert).toContain(alert.labels?.['severity']);
      expect(alert.annotations?.['summary'], alert.alert).toBeTruthy();
    }
  });
});

describe('grafana/', () => {
  let dashboard: unknown;
  beforeAll(async () => {
    dashboard = JSON.parse(await read('grafana/dashboards/boo-gateway.json'));
  });

  it('every panel has at least one PromQL expression on the provisioned datasource', async () => {
    const datasources = parseYaml(await read('grafana/provisioning/datasources/prometheus.yml')) as { datasources: { uid: string; url: string }[] };
    const uid = datasources.datasources[0]!.uid;
    const panels = dashboardPanels(dashboard) as {
      title: string;
      datasource?: { uid?: string };
      targets?: { expr?: string; datasource?: { uid?: string } }[];
    }[];
    expect(panels.length).toBeGreaterThan(10);
    for (const panel of panels) {
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      expect(panel.datasource?.uid, panel.title).toBe(uid);
      for (const target of panel.targets ?? []) expect(target.expr?.trim(), panel.title).toBeTruthy();
    }
  });

  it('has the panels the operators asked for', () => {
    const titles = dashboardPanels(dashboard).map((panel) => panel.title);
    for (const title of [
      'Request rate by route and status',
      'Failover rate per virtual model',
      'No-candidate and all-failed rates',
      'Attempts by candidate and outcome',
      'Breaker state per candidate',
      'Time to first byte p50 / p95 / p99',
      'Dispatch duration p50 / p95 / p99',
      'Gateway overhead p50 / p95 / p99',
      'Queue depth',
      'Event lag p50 / p95 / p99',
      'Spool size',
    ]) {
      expect(titles).toContain(title);
    }
    const failover = dashboardExpressions(dashboard).find((e) => e.source.startsWith('panel "Failover rate per virtual model"'))!;
    expect(failover.expr.replace(/\{[^}]*\}/g, '').replace(/\s+/g, ' ')).toBe(
      'sum by (virtual_model) (rate(boo_failovers_total[$__rate_interval])) / sum by (virtual_model) (rate(boo_dispatches_total[$__rate_interval]))',
    );
  });

  it('dashboard and alerts only read metrics that src/metrics/registry.ts defines', async () => {
    const config = buildConfig({ providers: { p: { baseUrl: 'http://127.0.0.1:1' } }, virtualModels: { v: { candidates: ['p/m'] } } }, 'test', {});
    const register = createMetricsRegistry('test');
    createGatewayMetrics(register, config);
    createDispatchLogMetrics(register);
    const defined = new Set<string>();
    for (const metric of await register.getMetricsAsJSON()) {
      defined.add(metric.name);
      if (String(metric.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) defined.add(metric.name + suffix);
    }
    const expressions = [
      ...dashboardExpressions(dashboard),
      ...dashboardVariableExpressions(dashboard),
      ...ruleExpressions(parseYaml(await read('prometheus/alerts.yml'))),
    ];
    const unknown = expressions.flatMap((e) =>
      booMetricNames(e.expr)
        .filter((name) => !defined.has(name))
        .map((name) => `${e.source}: ${name}`),
    );
    expect(unknown).toEqual([]);
  });
});
