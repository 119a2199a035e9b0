import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './free-port.js';

const run = promisify(execFile);

/** A Redis Cluster of a test's own: `redis-server --cluster-enabled yes` on free ports, its slots spread over every node. */
export interface ThrowawayRedisCluster {
  readonly ports: readonly number[];
  /** `127.0.0.1:p1,127.0.0.1:p2,…`, as `BOO_REDIS_CLUSTER` takes it. */
  readonly seeds: string;
  /** Kills every node and deletes their directory. Idempotent; call it in `afterAll`. */
  cleanup(): Promise<void>;
}

/** Starts `nodes` cluster-enabled Redis servers (no replicas, no persistence) and joins them with `redis-cli --cluster create`. */
export async function startThrowawayRedisCluster(nodes = 3): Promise<ThrowawayRedisCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'boo-redis-cluster-'));
  const children: ChildProcess[] = [];
  const ports: number[] = [];
  let cleaned: Promise<void> | undefined;
  const cleanup = () =>
    (cleaned ??= (async () => {
      const running = children.filter((child) => child.exitCode === null && child.signalCode === null);
      await Promise.all(
        running.map(
          (child) =>
            new Promise<void>((resolve) => {
              child.once('exit', () => resolve());
              child.kill('SIGKILL');
            }),
        ),
      );
      await rm(dir, { recursive: true, force: true });
    })());
  try {
    for (let i = 0; i < nodes; i++) {
      const [port, busPort] = [await freePort(), await freePort()];
      ports.push(port);
      const args = ['--port', String(port), '--cluster-port', String(busPort), '--bind', '127.0.0.1', '--cluster-enabled', 'yes'];
      args.push('--cluster-config-file', join(dir, `nodes-${port}.conf`), '--dir', dir, '--save', '', '--appendonly', 'no');
      children.push(spawn('redis-server', args, { stdio: 'ignore' }));
    }
    const cli = (port: number, ...args: string[]) => run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args]);
    const deadline = Date.now() + 20_000;
    const until = async (what: string, check: () => Promise<boolean>) => {
      while (!(await check().catch(() => false))) {
        if (Date.now() > deadline) throw new Error(`redis cluster on ${ports.join(',')}: ${what} within 20 s`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };
    await until('every node answers PING', async () =>
      (await Promise.all(ports.map(async (port) => (await cli(port, 'PING')).stdout.trim() === 'PONG'))).every(Boolean),
    );
    await cli(ports[0]!, '--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes');
    await until('cluster_state:ok on every node', async () =>
      (await Promise.all(ports.map(async (port) => (await cli(port, 'CLUSTER', 'INFO')).stdout.includes('cluster_state:ok')))).every(Boolean),
    );
  } catch (err: unknown) {
    await cleanup();
    throw err;
  }
  return { ports, seeds: ports.map((port) => `127.0.0.1:${port}`).join(','), cleanup };
}
