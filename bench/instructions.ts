import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { testConfig } from '../test/support/pipeline-fixtures.js';
import { prepareEventStore, type EventStore } from './event-store.js';
import { gatewayConfig, requestBody } from './scenario.js';
import { killAllServers, pinLoadGenerator, startGateway, startNodeServer, startRedis, type ServerProcess } from './servers.js';

/**
 * `npm run bench:instructions`: user-space instructions per proxied request of the floor and of
 * the gateway, counted by valgrind's callgrind. On this shared 2-core VM the CPU time of a run
 * moves by ±15 % from minute to minute while an instruction count repeats within about 1–3 %, so a
 * change too small for `npm run bench` to see shows here. It is a proxy: it counts neither the
 * kernel (syscalls cost the same in both) nor cache misses. Under valgrind everything runs about
 * 50× slower, so timers fire about 50× more often per request than at full speed; the gateway's
 * event flush delay is stretched to match (see `gatewayConfig`), and the output gives the
 * measured requests per second under valgrind to check the factor against.
 */

const { values: args } = parseArgs({
  options: {
    requests: { type: 'string', default: '8000' },
    // 20,000: after 6,000 the gateway still compiled code inside the measured window (337k
    // instructions a request against 327k after 20,000, same build).
    warmup: { type: 'string', default: '20000' },
    connections: { type: 'string', default: '50' },
    only: { type: 'string' },
  },
});
const requests = Number(args.requests);
const warmup = Number(args.warmup);
const connections = Number(args.connections);
/** How much slower the gateway runs under callgrind than at full speed (measured: 40–60×). */
const valgrindSlowdown = 50;
const wanted = (name: string) => !args.only || args.only.split(',').includes(name);

const here = fileURLToPath(new URL('.', import.meta.url));
const repoRoot = join(here, '..', '..');
// vgdb finds a valgrind process by user and host name; every process here is given the same.
const vgdbEnv = { HOST: '127.0.0.1', USER: 'bench', LOGNAME: 'bench' };

process.once('exit', killAllServers);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAllServers();
    process.exit(130);
  });
}

/** Sends `count` chat requests over `connections` keep-alive connections, each waiting for its answer. */
async function send(url: string, count: number, headers: Record<string, string>): Promise<void> {
  const pool = new Pool(url, { connections });
  const body = requestBody(false);
  let left = count;
  try {
    await Promise.all(
      Array.from({ length: connections }, async () => {
        while (left-- > 0) {
          const answer = await pool.request({ path: '/v1/chat/completions', method: 'POST', headers, body });
          await answer.body.text();
          if (answer.statusCode !== 200) throw new Error(`${url} answered ${answer.statusCode}`);
        }
      }),
    );
  } finally {
    await pool.close();
  }
}

function callgrindControl(option: string, pid: number): void {
  execFileSync('callgrind_control', [option, String(pid)], { env: { ...process.env, ...vgdbEnv }, stdio: 'ignore' });
}

/** Instructions of the measured requests: counting starts after the warm-up (JIT settled) and stops with a dump. */
async function count(server: ServerProcess, outFile: string, headers: Record<string, string>): Promise<{ perRequest: number; requestsPerSecond: number }> {
  await send(server.url, warmup, headers);
  callgrindControl('--instr=on', server.pid);
  const startedAt = performance.now();
  await send(server.url, requests, headers);
  const requestsPerSecond = requests / ((performance.now() - startedAt) / 1000);
  callgrindControl('--dump', server.pid);
  const dump = readdirSync(join(outFile, '..')).find((file) => file.startsWith(`${outFile.split('/').pop()!}.`));
  if (!dump) throw new Error(`callgrind wrote no dump for ${server.name}`);
  const totals = /^totals: (\d+)$/m.exec(readFileSync(join(outFile, '..', dump), 'utf8'));
  if (!totals) throw new Error(`no totals in the callgrind dump of ${server.name}`);
  return { perRequest: Number(totals[1]) / requests, requestsPerSecond };
}

async function main(): Promise<void> {
  if (spawnSync('valgrind', ['--version']).status !== 0) {
    process.stderr.write('bench:instructions needs valgrind (apt-get install -y valgrind)\n');
    process.exit(2);
  }
  const pinning = pinLoadGenerator();
  const dir = mkdtempSync(join(tmpdir(), 'boo-instructions-'));
  const key = randomBytes(24).toString('hex');
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${key}` };
  const callgrind = (name: string) => ({
    launcher: ['valgrind', '--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${join(dir, name, 'callgrind.out')}`],
  });
  let store: EventStore | undefined;
  const results: Record<string, { perRequest: number; requestsPerSecond: number }> = {};
  try {
    const mock = await startNodeServer(pinning, 'mock', join(here, 'mock-upstream.js'), {}, dir);
    if (wanted('floor')) {
      mkdirSync(join(dir, 'floor'));
      const floor = await startNodeServer(pinning, 'floor', join(here, 'floor-forwarder.js'), { UPSTREAM_URL: mock.url, ...vgdbEnv }, dir, callgrind('floor'));
      results.floor = await count(floor, join(dir, 'floor', 'callgrind.out'), headers);
      await floor.stop();
    }
    // `limited`: the same gateway with capacity on (slots, a line, a rate-limited key; see gatewayConfig).
    for (const name of ['gateway', 'limited'] as const) {
      if (!wanted(name)) continue;
      mkdirSync(join(dir, name));
      if (!store) {
        const redis = await startRedis(pinning, dir);
        store = await prepareEventStore('redis', redis?.url ?? 'redis://127.0.0.1:6379', '');
      }
      const configPath = join(dir, `${name}.yaml`);
      writeFileSync(
        configPath,
        gatewayConfig(mock.url, createHash('sha256').update(key).digest('hex'), {
          eventsFlushMs: testConfig().events.flushMs * valgrindSlowdown,
          limited: name === 'limited',
        }),
      );
      const env = {
        BOO_CONFIG: configPath,
        PORT: '0',
        LOG_LEVEL: 'info',
        BOO_DATA_DIR: join(dir, `data-${name}`),
        BOO_REPLICA_ID: `bench-${name}`,
        ...store.env,
        ...vgdbEnv,
      };
      const gateway = await startGateway(pinning, join(repoRoot, 'dist', 'src', 'main.js'), env, dir, { ...callgrind(name), name });
      results[name] = await count(gateway, join(dir, name, 'callgrind.out'), headers);
      await gateway.stop();
    }
  } finally {
    await store?.dispose();
    killAllServers();
    rmSync(dir, { recursive: true, force: true });
  }

  const lines = [
    `## npm run bench:instructions — ${new Date().toISOString()}`,
    '',
    `- ${requests} measured JSON chat requests after ${warmup} of warm-up, ${connections} connections; load average ${loadavg()[0]!.toFixed(2)}`,
    `- ${pinning.note}`,
    '- user-space instructions (callgrind Ir) of the server process, all threads; the kernel is not counted',
    '',
    '| forwarder | instructions / request | × floor | req/s under valgrind |',
    '|---|--:|--:|--:|',
    ...Object.entries(results).map(
      ([name, { perRequest, requestsPerSecond }]) =>
        `| ${name} | ${Math.round(perRequest).toLocaleString('en-US')} | ${results.floor ? (perRequest / results.floor.perRequest).toFixed(2) : ''} | ${Math.round(requestsPerSecond)} |`,
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  const resultsDir = join(repoRoot, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `instructions-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify({ requests, warmup, connections, results }, null, 2)}\n`);
  process.stdout.write(`\nJSON: ${file}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench:instructions failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
