import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';

/** Where the bench pins itself and its servers, or why it does not. */
export interface Pinning {
  readonly loadCpu: number | undefined;
  readonly serverCpu: number | undefined;
  readonly note: string;
}

function hasTaskset(): boolean {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Pins this process (the load generator) to the first CPU and reserves the second for the
 * servers. With fewer than two CPUs or no taskset, everything runs unpinned and the output says so.
 */
export function pinLoadGenerator(): Pinning {
  if (availableParallelism() < 2) return { loadCpu: undefined, serverCpu: undefined, note: 'unpinned: fewer than 2 CPUs' };
  if (!hasTaskset()) return { loadCpu: undefined, serverCpu: undefined, note: 'unpinned: taskset not found' };
  execFileSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
  return { loadCpu: 0, serverCpu: 1, note: 'load generator (autocannon, this process) on CPU 0; every server (mock, nginx, floor, gateway) on CPU 1' };
}

/** Moves a running process (all its threads) to one CPU. */
export function repin(pid: number, cpu: number): void {
  execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' });
}

/** A server process the bench started; its pid is the one whose CPU and memory are read. */
export interface ServerProcess {
  readonly name: string;
  readonly pid: number;
  readonly url: string;
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();

/** Kills every server still running (on exit, on a signal, on the run's deadline). */
export function killAllServers(): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

function spawnPinned(
  pinning: Pinning,
  command: string,
  args: readonly string[],
  env: Record<string, string>,
  logFile: string,
  cpu = pinning.serverCpu,
  cwd?: string,
): ChildProcess {
  const log = openSync(logFile, 'a');
  const [file, argv] = cpu === undefined ? [command, args] : ['taskset', ['-c', String(cpu), command, ...args]];
  // taskset execs the command, so the pid is the server's own.
  const child = spawn(file, argv, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', log, log], ...(cwd ? { cwd } : {}) });
  closeSync(log);
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

async function waitForLog(logFile: string, pattern: RegExp, child: ChildProcess, what: string, timeoutMs = 15_000): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
    const match = pattern.exec(text);
    if (match) return match;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited before it was ready:\n${text}`);
    if (Date.now() > deadline) throw new Error(`${what} not ready within ${timeoutMs} ms:\n${text}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

function stopper(child: ChildProcess): () => Promise<void> {
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
}

/**
 * How a Node server is started: extra node flags, and optionally a launcher that runs node (such
 * as valgrind, which keeps the pid: the pid read for CPU and memory is still the server's).
 */
export interface NodeLaunch {
  readonly nodeArgs?: readonly string[];
  readonly launcher?: readonly string[];
  /** Working directory (default: the bench's own). */
  readonly cwd?: string;
  /** The server's name in the report and its log file's (default `gateway`, for startGateway). */
  readonly name?: string;
}

function nodeCommand(script: string, { nodeArgs = [], launcher = [] }: NodeLaunch): [string, string[]] {
  const [first, ...rest] = launcher;
  return first === undefined ? [process.execPath, [...nodeArgs, script]] : [first, [...rest, process.execPath, ...nodeArgs, script]];
}

/** A launcher makes start-up many times slower (valgrind: about 50×). */
const readyTimeoutMs = (launch: NodeLaunch) => (launch.launcher?.length ? 180_000 : 15_000);

/** Starts a built Node script that prints `listening <port>` when ready. */
export async function startNodeServer(
  pinning: Pinning,
  name: string,
  script: string,
  env: Record<string, string>,
  dir: string,
  launch: NodeLaunch = {},
): Promise<ServerProcess> {
  const logFile = join(dir, `${name}.log`);
  const child = spawnPinned(pinning, ...nodeCommand(script, launch), env, logFile);
  const [, port] = await waitForLog(logFile, /^listening (\d+)$/m, child, name, readyTimeoutMs(launch));
  return { name, pid: child.pid!, url: `http://127.0.0.1:${port}`, stop: stopper(child) };
}

/** Starts the gateway's production entry point (`dist/src/main.js`) with a config file. */
export async function startGateway(
  pinning: Pinning,
  script: string,
  env: Record<string, string>,
  dir: string,
  launch: NodeLaunch = {},
): Promise<ServerProcess> {
  const name = launch.name ?? 'gateway';
  const logFile = join(dir, `${name}.log`);
  const child = spawnPinned(pinning, ...nodeCommand(script, launch), env, logFile, pinning.serverCpu, launch.cwd);
  const [, url] = await waitForLog(logFile, /"url":"(http:\/\/[^"]+)"[^\n]*boo-gateway listening/m, child, name, readyTimeoutMs(launch));
  return { name, pid: child.pid!, url: url!, stop: stopper(child) };
}

/**
 * A redis-server of the bench's own (no persistence) on the load generator's CPU: Redis is a
 * service the gateway talks to, not part of it, and on the forwarder's CPU its work would slow
 * the gateway and not the floor (which has no Redis). Undefined when redis-server is not installed.
 */
export async function startRedis(pinning: Pinning, dir: string): Promise<ServerProcess | undefined> {
  if (spawnSync('redis-server', ['--version']).status !== 0) return undefined;
  const port = await freePort();
  const logFile = join(dir, 'redis.log');
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const child = spawnPinned(pinning, 'redis-server', args, {}, logFile, pinning.loadCpu);
  await waitForLog(logFile, /Ready to accept connections/, child, 'redis-server');
  return { name: 'redis', pid: child.pid!, url: `redis://127.0.0.1:${port}`, stop: stopper(child) };
}

/** A free loopback port (nginx and redis-server need one on their command line). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return address.port;
}

/** `nginx -v`, or undefined when nginx is not installed. */
export function nginxVersion(): string | undefined {
  // nginx prints its version on stderr.
  const probe = spawnSync('nginx', ['-v'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) return undefined;
  return `${probe.stderr}${probe.stdout}`.trim().replace(/^nginx version: /, '');
}

/**
 * nginx as a plain keep-alive reverse proxy in the foreground, one process (master_process
 * off), with its own config, pid, log and temp directories: never the system service.
 */
export async function startNginx(pinning: Pinning, upstreamUrl: string, dir: string): Promise<ServerProcess> {
  const root = join(dir, 'nginx');
  for (const sub of ['', 'body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(root, sub), { recursive: true });
  const port = await freePort();
  const upstream = new URL(upstreamUrl).host;
  const conf = join(root, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off;
master_process off;
pid ${root}/nginx.pid;
error_log ${root}/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${root}/body;
  proxy_temp_path ${root}/proxy;
  fastcgi_temp_path ${root}/fastcgi;
  uwsgi_temp_path ${root}/uwsgi;
  scgi_temp_path ${root}/scgi;
  keepalive_timeout 120s;
  keepalive_requests 1000000;
  upstream mock {
    server ${upstream};
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
`,
  );
  const logFile = join(root, 'stdout.log');
  const child = spawnPinned(pinning, 'nginx', ['-p', root, '-c', conf, '-e', join(root, 'error.log')], {}, logFile);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${readFileSync(join(root, 'error.log'), 'utf8')}`);
    try {
      const socket = connect(port, '127.0.0.1');
      await once(socket, 'connect');
      socket.destroy();
      break;
    } catch {
      if (Date.now() > deadline) throw new Error('nginx did not start listening');
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
  return { name: 'nginx', pid: child.pid!, url, stop: stopper(child) };
}
