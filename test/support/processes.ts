import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findMigrationsDirectory } from '../../src/dispatch-log/migrate.js';

/** The repository, from `test/support/` or from `dist/test/support/` (the built benches). */
export const repoRoot = `${dirname(findMigrationsDirectory(dirname(fileURLToPath(import.meta.url))))}/`;

/** The built entry points (`npm test` builds before it runs vitest). */
export const entryPoints = {
  gateway: join(repoRoot, 'dist/src/main.js'),
  worker: join(repoRoot, 'dist/workers/main.js'),
} as const;

export interface RunningProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Every stdout/stderr line so far. */
  readonly lines: string[];
  /** Everything printed so far, for assertion messages. */
  output(): string;
  /** Resolves with the exit code (null when killed by a signal) once it exits. */
  readonly exited: Promise<number | null>;
  /** Resolves with the first line matching; rejects after timeoutMs or when the process exits first. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Polls `url` until it answers 2xx; rejects after timeoutMs or when the process exits first. */
  waitForHttp(url: string, timeoutMs?: number): Promise<void>;
  /** Sends `signal` (SIGTERM by default), SIGKILL after graceMs; resolves with the exit code. Idempotent. */
  stop(graceMs?: number, signal?: NodeJS.Signals): Promise<number | null>;
}

const hasExited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

/** Starts `node <script>` in the repository with exactly the env given, plus PATH and HOME. */
export function startNodeProcess(script: string, env: Record<string, string>): RunningProcess {
  const child = spawn(process.execPath, [script], {
    cwd: repoRoot,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream?.on('data', (chunk: Buffer) => {
      const parts = (rest + chunk.toString()).split('\n');
      rest = parts.pop() ?? '';
      lines.push(...parts);
      for (const wake of waiters) wake();
    });
  }
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  void exited.then(() => {
    for (const wake of waiters) wake();
  });
  const output = () => lines.join('\n');

  const deadlineError = (what: string, timeoutMs: number) =>
    new Error(`${what} within ${timeoutMs} ms (${hasExited(child) ? `exited ${child.exitCode ?? child.signalCode}` : 'still running'}); output:\n${output()}`);

  let stopping: Promise<number | null> | undefined;
  return {
    child,
    pid: child.pid!,
    lines,
    output,
    exited,
    waitForLine(pattern, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const wake = () => {
          const line = lines.find((candidate) => pattern.test(candidate));
          if (line === undefined && !hasExited(child)) return;
          clearTimeout(timer);
          waiters.delete(wake);
          if (line === undefined) reject(deadlineError(`no line matching ${pattern}`, timeoutMs));
          else resolve(line);
        };
        const timer = setTimeout(() => {
          waiters.delete(wake);
          reject(deadlineError(`no line matching ${pattern}`, timeoutMs));
        }, timeoutMs);
        waiters.add(wake);
        wake();
      });
    },
    async waitForHttp(url, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (!hasExited(child) && Date.now() < deadline) {
        try {
          const response = await fetch(url, { signal: AbortSignal.timeout(1_000) });
          await response.arrayBuffer();
          if (response.ok) return;
        } catch {
          // not listening yet
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      throw deadlineError(`${url} did not answer 2xx`, timeoutMs);
    },
    stop(graceMs = 10_000, signal: NodeJS.Signals = 'SIGTERM') {
      stopping ??= (async () => {
        if (!hasExited(child)) child.kill(signal);
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        const code = await exited;
        clearTimeout(timer);
        return code;
      })();
      return stopping;
    },
  };
}

/**
 * Starts the real gateway or worker, configured only through the environment of SPEC §2, and
 * waits until it answers `readyUrl` (or, for a worker without one, logs "worker ready").
 */
export async function startBooProcess(options: {
  kind: keyof typeof entryPoints;
  env: Record<string, string>;
  readyUrl?: string;
  readyTimeoutMs?: number;
}): Promise<RunningProcess> {
  const running = startNodeProcess(entryPoints[options.kind], {
    LOG_LEVEL: 'info',
    BOO_CONFIG: join(repoRoot, 'config/gateway.example.yaml'),
    ...(options.kind === 'worker' ? { METRICS_PORT: '0' } : {}),
    ...options.env,
  });
  const timeoutMs = options.readyTimeoutMs ?? 30_000;
  try {
    if (options.readyUrl) await running.waitForHttp(options.readyUrl, timeoutMs);
    else await running.waitForLine(options.kind === 'worker' ? /"msg":"worker ready"/ : /boo-gateway listening/, timeoutMs);
  } catch (err: unknown) {
    await running.stop(1_000, 'SIGKILL');
    throw err;
  }
  return running;
}
