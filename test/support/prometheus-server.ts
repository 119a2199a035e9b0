import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify as stringifyYaml } from 'yaml';
import { freePort } from './free-port.js';

export interface PromQueryResponse {
  status: 'success' | 'error';
  data?: { resultType: string; result: { metric: Record<string, string>; value?: [number, string] }[] };
  errorType?: string;
  error?: string;
}

export interface PrometheusServer {
  readonly url: string;
  /** Instant query through `/api/v1/query`; parse errors come back as `status: "error"`, not thrown. */
  query(expr: string): Promise<PromQueryResponse>;
  /** GET of any API path, parsed JSON. */
  api<T>(path: string): Promise<T>;
  output(): string;
  stop(): Promise<void>;
}

export interface StartPrometheusOptions {
  /** job name -> `host:port` targets, scraped at /metrics. */
  readonly jobs: Record<string, readonly string[]>;
  /** Absolute paths of rule files to load. */
  readonly ruleFiles?: readonly string[];
  readonly scrapeIntervalSeconds?: number;
  readonly readyTimeoutMs?: number;
}

/**
 * Runs the real `prometheus` binary (Debian package) in a temporary directory on a free
 * loopback port, with a generated scrape config. Resolves once `/-/ready` answers.
 */
export async function startPrometheus(options: StartPrometheusOptions): Promise<PrometheusServer> {
  const directory = await mkdtemp(join(tmpdir(), 'boo-prometheus-'));
  const interval = `${options.scrapeIntervalSeconds ?? 1}s`;
  const config = {
    global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
    rule_files: options.ruleFiles ?? [],
    scrape_configs: Object.entries(options.jobs).map(([job, targets]) => ({ job_name: job, static_configs: [{ targets }] })),
  };
  await writeFile(join(directory, 'prometheus.yml'), stringifyYaml(config));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    'prometheus',
    [
      `--config.file=${join(directory, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(directory, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines: string[] = [];
  const keep = (chunk: Buffer) => {
    lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    if (lines.length > 100) lines.splice(0, lines.length - 100);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const output = () => lines.join('\n');

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(directory, { recursive: true, force: true });
    })();
    return stopping;
  };

  const api = async <T>(path: string): Promise<T> => {
    const response = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(10_000) });
    return (await response.json()) as T;
  };

  const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
  let lastProblem = 'no answer yet';
  while (Date.now() < deadline) {
    const failed = await Promise.race([spawnError, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 200))]);
    if (failed) {
      await stop();
      throw new Error(`cannot run prometheus (${failed.message}); run .ci/install-tools.sh`);
    }
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`prometheus exited (${child.exitCode}):\n${output()}`);
    }
    try {
      const response = await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1_000) });
      await response.arrayBuffer();
      if (response.ok) {
        return {
          url,
          api,
          output,
          stop,
          query: (expr) => api<PromQueryResponse>(`/api/v1/query?query=${encodeURIComponent(expr)}`),
        };
      }
      lastProblem = `/-/ready answered ${response.status}`;
    } catch (err: unknown) {
      lastProblem = err instanceof Error ? err.message : String(err);
    }
  }
  await stop();
  throw new Error(`prometheus was not ready in time (${lastProblem}):\n${output()}`);
}
