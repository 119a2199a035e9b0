import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

const entries = { gateway: 'src/main.ts', worker: 'workers/main.ts' } as const;

export interface BooProcess {
  readonly child: ChildProcess;
  /** The last lines the process printed, for assertion messages. */
  output(): string;
  /** SIGTERM, then SIGKILL after `timeoutMs`; resolves once the process has exited. Idempotent. */
  stop(timeoutMs?: number): Promise<void>;
}

export interface StartBooProcessOptions {
  readonly kind: keyof typeof entries;
  /** Added to the test runner's environment. */
  readonly env: Record<string, string>;
  /** Polled until it answers 2xx. */
  readonly readyUrl: string;
  readonly readyTimeoutMs?: number;
}

/**
 * Starts the real gateway or worker entry point (through tsx, no build needed) as a separate
 * process, configured only through the environment of SPEC §2, and waits until it answers.
 * @throws when the process exits or does not answer in time, with its last output.
 */
export async function startBooProcess(options: StartBooProcessOptions): Promise<BooProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', entries[options.kind]], {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: 'warn', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const keep = (chunk: Buffer) => {
    lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    if (lines.length > 200) lines.splice(0, lines.length - 200);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const output = () => lines.join('\n');

  let stopping: Promise<void> | undefined;
  const stop = (timeoutMs = 10_000) => {
    stopping ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      await exited;
      clearTimeout(timer);
    })();
    return stopping;
  };

  const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
  let lastProblem = 'no answer yet';
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${options.kind} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${output()}`);
    }
    try {
      const response = await fetch(options.readyUrl, { signal: AbortSignal.timeout(1_000) });
      await response.arrayBuffer();
      if (response.ok) return { child, output, stop };
      lastProblem = `${options.readyUrl} answered ${response.status}`;
    } catch (err: unknown) {
      lastProblem = err instanceof Error ? err.message : String(err);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await stop();
  throw new Error(`${options.kind} was not ready in time (${lastProblem}):\n${output()}`);
}
