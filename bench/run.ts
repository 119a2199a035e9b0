import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { eventsTaken, prepareEventStore, sinkModes, waitForSettled, waitForSink, type EventStore, type SinkMode } from './event-store.js';
import { combineRounds, measureLoad, warmUp, type LoadResult } from './load.js';
import { measureManyStreams } from './many-streams.js';
import { gatewayConfig, requestBody } from './scenario.js';
import { memory } from './proc-stats.js';
import { measureIdleStart, measureRowsVisible, type RowsVisibleResult, type StartUpResult } from './start-up.js';
import { addedMs, cpuRatio, cpuRatiosByRound, renderMarkdown, type BenchReport, type Check, type ScenarioRow, type StreamsRow } from './report.js';
import { killAllServers, nginxVersion, pinLoadGenerator, repin, startGateway, startNginx, startNodeServer, startRedis, type ServerProcess } from './servers.js';

/**
 * `npm run bench`: a mock upstream, then direct / nginx / a no-framework Node forwarder / the
 * gateway (production entry point, auth on, breakers, metrics, event sink, logging at info) /
 * the gateway in embedded mode (the same entry point with neither REDIS_URL nor DATABASE_URL,
 * as a bare `npm start` runs), non-streaming and streaming at 50 connections and at 1, then many
 * slow streams at once. The embedded gateway is started first, alone, and watched through its
 * first seconds (health checks, memory), then asked for 1,000 dispatches whose rows are timed.
 * Loopback only; stops by itself (a hard deadline kills everything it started).
 */

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '4' },
    // Each scenario's seconds are split into this many rounds, every target measured once per
    // round, so that a drift of the machine's speed hits the targets alike (see perRound). Five,
    // not three: the median then stands two slow rounds, not one (on this VM the rounds of one
    // run ranged from 1.27 to 1.91× the floor's CPU).
    rounds: { type: 'string', default: '5' },
    only: { type: 'string' },
    runs: { type: 'string' },
    streams: { type: 'string', default: '2000' },
    'no-streams': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    deadline: { type: 'string', default: '300' },
    // Seconds of load every forwarder gets before the first scenario.
    warmup: { type: 'string', default: '3' },
    // How long the embedded gateway is watched, idle, from "listening" on.
    'idle-seconds': { type: 'string', default: '10' },
    sink: { type: 'string', default: 'redis' },
    // Default: a redis-server of the bench's own on the load generator's CPU (see startRedis).
    'redis-url': { type: 'string' },
    'postgres-url': { type: 'string', default: 'postgres://root@127.0.0.1:5432/postgres' },
  },
});
if (!(sinkModes as readonly string[]).includes(args.sink)) throw new Error(`--sink must be one of ${sinkModes.join(', ')}`);
const sinkMode = args.sink as SinkMode;

const here = fileURLToPath(new URL('.', import.meta.url));
const repoRoot = join(here, '..', '..');
const resultsDir = join(repoRoot, 'bench', 'results');
const seconds = Number(args.seconds);
const rounds = Number(args.rounds);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a positive integer');
const deadlineSeconds = Number(args.deadline);

const deadline = setTimeout(() => {
  process.stderr.write(`bench: still running after ${deadlineSeconds} s; stopping every server it started\n`);
  killAllServers();
  process.exit(2);
}, deadlineSeconds * 1000);
deadline.unref();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAllServers();
    process.exit(130);
  });
}
process.once('exit', killAllServers);
/** Removes the queue or database the run created; set once there is one. */
let disposeStore: (() => Promise<void>) | undefined;

async function sanityCheck(target: ServerProcess, headers: Record<string, string>): Promise<void> {
  for (const stream of [false, true]) {
    const answer = await request(`${target.url}/v1/chat/completions`, { method: 'POST', headers, body: requestBody(stream) });
    const text = await answer.body.text();
    const ok = answer.statusCode === 200 && (stream ? text.includes('data: [DONE]') : text.includes('"chat.completion"'));
    if (!ok) throw new Error(`${target.name} answered ${answer.statusCode} to a ${stream ? 'stream' : 'JSON'} request: ${text.slice(0, 300)}`);
  }
}

const scenarios = [
  { id: 'json c=50', stream: false, connections: 50, seconds },
  { id: 'json c=1', stream: false, connections: 1, seconds: Math.max(2, Math.round(seconds * 0.6)) },
  { id: 'sse c=50', stream: true, connections: 50, seconds },
  { id: 'sse c=1', stream: true, connections: 1, seconds: Math.max(2, Math.round(seconds * 0.6)) },
];

function commit(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const startedAt = new Date().toISOString();
  const loadAtStart = loadavg();
  const pinning = pinLoadGenerator();
  const dir = mkdtempSync(join(tmpdir(), 'boo-bench-'));
  const notes: string[] = [];
  const only = args.only?.split(',');
  const wanted = (name: string) => !only || only.includes(name);
  const key = randomBytes(24).toString('hex');
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${key}` };

  // Each profiled process writes its own CPU.<date>.<pid>.cpuprofile on exit.
  const profileDir = join(resultsDir, 'profiles');
  if (args.profile) mkdirSync(profileDir, { recursive: true });
  const profileArgs = args.profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];

  const mock = await startNodeServer(pinning, 'mock', join(here, 'mock-upstream.js'), {}, dir);
  const targets: ServerProcess[] = [{ ...mock, name: 'direct' }];
  let nginx: string | undefined;
  if (wanted('nginx')) {
    nginx = nginxVersion();
    if (nginx) targets.push(await startNginx(pinning, mock.url, dir));
    else notes.push('nginx is not installed: its rows are skipped (apt-get install -y nginx-light to add them).');
  }
  if (wanted('floor')) {
    targets.push(await startNodeServer(pinning, 'floor', join(here, 'floor-forwarder.js'), { UPSTREAM_URL: mock.url }, dir, { nodeArgs: profileArgs }));
  }
  const configDir = join(dir, 'config');
  mkdirSync(configDir);
  const configPath = join(configDir, 'gateway.yaml');
  writeFileSync(configPath, gatewayConfig(mock.url, createHash('sha256').update(key).digest('hex')));
  const gatewayScript = join(repoRoot, 'dist', 'src', 'main.js');

  let embedded: ServerProcess | undefined;
  let startUp: StartUpResult | undefined;
  let rowsVisible: RowsVisibleResult | undefined;
  if (wanted('embedded')) {
    // First, alone on a quiet machine, and as a bare `npm start` runs: ./gateway.yaml and ./data
    // of its working directory, no REDIS_URL, no DATABASE_URL (PORT and HOST keep it on loopback).
    const spawnedAt = performance.now();
    embedded = await startGateway(pinning, gatewayScript, { PORT: '0', HOST: '127.0.0.1' }, dir, { nodeArgs: profileArgs, cwd: configDir, name: 'embedded' });
    startUp = await measureIdleStart(embedded.url, embedded.pid, performance.now() - spawnedAt, Number(args['idle-seconds']));
    const { url } = embedded;
    rowsVisible = await measureRowsVisible({
      url,
      headers,
      body: requestBody(false),
      count: 1_000,
      countRows: () => eventsTaken(url, 'pglite'),
      timeoutMs: 60_000,
    });
    process.stderr.write(
      `bench: embedded start: worst /healthz ${startUp.healthzWorstMs.toFixed(1)} ms; 1,000 rows ${Math.round(rowsVisible.visibleAfterMs)} ms after the last response\n`,
    );
    targets.push(embedded);
  }
  let gateway: ServerProcess | undefined;
  let limited: ServerProcess | undefined;
  let store: EventStore | undefined;
  let redis: ServerProcess | undefined;
  if (wanted('gateway')) {
    let redisUrl = args['redis-url'] ?? 'redis://127.0.0.1:6379';
    if (sinkMode === 'redis' && args['redis-url'] === undefined) {
      redis = await startRedis(pinning, dir);
      if (redis) {
        redisUrl = redis.url;
        notes.push(`event sink: a redis-server of the bench's own on CPU ${pinning.loadCpu ?? '(unpinned)'}, with the load generator.`);
      } else {
        notes.push(`redis-server is not installed: the gateway used the Redis at ${redisUrl}, wherever it runs.`);
      }
    }
    store = await prepareEventStore(sinkMode, redisUrl, args['postgres-url']);
    disposeStore = () => store!.dispose();
    gateway = await startGateway(
      pinning,
      gatewayScript,
      { BOO_CONFIG: configPath, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', BOO_DATA_DIR: join(dir, 'data'), BOO_REPLICA_ID: 'bench', ...store.env },
      dir,
      { nodeArgs: profileArgs },
    );
    targets.push(gateway);
    if (wanted('limited')) {
      // The same gateway with capacity on: slots, a line and a rate-limited key, never reached.
      const limitedConfigPath = join(configDir, 'gateway-limited.yaml');
      writeFileSync(limitedConfigPath, gatewayConfig(mock.url, createHash('sha256').update(key).digest('hex'), { limited: true }));
      limited = await startGateway(
        pinning,
        gatewayScript,
        {
          BOO_CONFIG: limitedConfigPath,
          PORT: '0',
          HOST: '127.0.0.1',
          LOG_LEVEL: 'info',
          BOO_DATA_DIR: join(dir, 'data-limited'),
          BOO_REPLICA_ID: 'bench-limited',
          ...store.env,
        },
        dir,
        { nodeArgs: profileArgs, name: 'limited' },
      );
      targets.push(limited);
    }
  }
  for (const target of targets) await sanityCheck(target, headers);
  // The sanity check published two events: measure once the sink has taken them end to end.
  if (gateway && store) await waitForSink(gateway.url, store.mode, 2, 60_000);
  if (embedded) await waitForSettled(embedded.url, 'pglite', 60_000);
  /** After each round of a gateway, the events of its requests must be through its sink before its CPU is read. */
  const settleOf = (target: ServerProcess): (() => Promise<void>) | undefined => {
    if (target === embedded) return () => waitForSettled(target.url, 'pglite', 60_000);
    if ((target === gateway || target === limited) && store) return () => waitForSettled(target.url, store!.mode, 60_000);
    return undefined;
  };

  // Every forwarder gets the same long warm-up first: the rounds' short ones leave the first
  // scenario with compilation still going on, most of all in the embedded store, whose PGlite
  // moves to optimised WebAssembly only as rows go through it.
  for (const target of targets.filter((t) => t.name !== 'direct')) {
    const settle = settleOf(target);
    await warmUp(
      { url: `${target.url}/v1/chat/completions`, headers, body: requestBody(false), connections: 50, ...(settle ? { settle } : {}) },
      Number(args.warmup),
    );
  }

  const rows: ScenarioRow[] = [];
  const runs = args.runs?.split(',');
  for (const scenario of scenarios.filter((s) => !runs || runs.includes(s.id.replace(/[ =]/g, '')))) {
    const body = requestBody(scenario.stream);
    const measured = targets.filter((target) => target.name === 'direct' || wanted(target.name));
    const roundsOf = new Map<string, LoadResult[]>(measured.map((target) => [target.name, []]));
    for (let round = 0; round < rounds; round++) {
      // Alternate the order, so no target always runs first (or last) in a round.
      for (const target of round % 2 === 0 ? measured : [...measured].reverse()) {
        const isDirect = target.name === 'direct';
        const settle = settleOf(target);
        const result = await measureLoad({
          url: `${target.url}/v1/chat/completions`,
          headers,
          body,
          connections: scenario.connections,
          // New connections every round; the first warm-up also lets the JIT settle.
          warmupSeconds: round === 0 ? 1 : 0.25,
          seconds: scenario.seconds / rounds,
          pids: isDirect ? [mock.pid] : [target.pid, mock.pid],
          ...(settle ? { settle } : {}),
        });
        roundsOf.get(target.name)!.push(result);
        // No worker drains the bench's queue: jobs of one round are dropped before the next.
        if (target === gateway || target === limited) await store?.trim();
      }
    }
    for (const target of measured) {
      const isDirect = target.name === 'direct';
      const result = combineRounds(roundsOf.get(target.name)!);
      if (result.errors > 0 || result.non2xx > 0) notes.push(`${scenario.id} ${target.name}: ${result.errors} errors, ${result.non2xx} non-2xx answers`);
      rows.push({
        scenario: scenario.id,
        stream: scenario.stream,
        connections: scenario.connections,
        target: target.name,
        result,
        rounds: roundsOf.get(target.name)!,
        cpuMicrosPerRequest: isDirect ? undefined : result.cpuMicrosPerRequest[0],
        upstreamCpuMicrosPerRequest: result.cpuMicrosPerRequest[isDirect ? 0 : 1]!,
      });
      process.stderr.write(`bench: ${scenario.id} ${target.name}: ${Math.round(result.rps)} req/s\n`);
    }
  }
  const peakRssBytes: Record<string, number> = {};
  for (const target of targets) if (target.name !== 'direct') peakRssBytes[target.name] = memory(target.pid).peakRss;

  const streams: StreamsRow[] = [];
  if (!args['no-streams']) {
    const count = Number(args.streams);
    const body = requestBody(true, true);
    if (pinning.loadCpu !== undefined) {
      // 2,000 streams x 10 chunks/s is 20,000 writes/s from the mock alone: on the forwarder's
      // CPU it would starve the process being measured.
      repin(mock.pid, pinning.loadCpu);
      notes.push(
        `many streams: the mock upstream was moved to CPU ${pinning.loadCpu} (with the load generator) for this run, leaving CPU ${pinning.serverCpu} to the forwarder.`,
      );
    }
    // Direct and the gateway only: the floor saturates its CPU at this chunk rate just as the gateway does.
    for (const target of targets.filter((t) => t.name === 'direct' || t.name === 'gateway')) {
      const result = await measureManyStreams({
        url: `${target.url}/v1/chat/completions`,
        headers,
        body,
        streams: count,
        // 200 new streams a second: 2,000 are open after 10 s, well within the 20 s each lasts,
        // at a pace the relaying process keeps up with on one core.
        batch: 20,
        batchIntervalMs: 100,
        pid: target.name === 'direct' ? undefined : target.pid,
        timeoutMs: 60_000,
      });
      if (result.failed > 0) notes.push(`many streams ${target.name}: ${result.failed} failed (${result.firstError})`);
      streams.push({ target: target.name, result });
      process.stderr.write(`bench: many streams ${target.name}: ${result.peakOpen} open at once\n`);
    }
  }

  const row = (scenario: string, target: string) => rows.find((r) => r.scenario === scenario && r.target === target);
  const floorJson = row('json c=50', 'floor');
  /** CPU per request at json c=50 against the floor's, every round's ratio shown: one run's median says little here. */
  const cpuCheck = (name: string, target: string, limit: number): Check => {
    const measured = row('json c=50', target);
    const ratio = measured && floorJson ? cpuRatio(rows, measured) : NaN;
    if (!Number.isFinite(ratio)) return { name, target: `≤ ${limit.toFixed(1)}× floor`, measured: '–', pass: undefined };
    const rounds = cpuRatiosByRound(rows, measured!).map((each) => each.toFixed(2));
    return {
      name,
      target: `≤ ${limit.toFixed(1)}× floor`,
      measured: `${ratio.toFixed(2)}× (${Math.round(measured!.cpuMicrosPerRequest!)} vs ${Math.round(floorJson!.cpuMicrosPerRequest!)} µs; rounds ${rounds.join(', ')})`,
      pass: ratio <= limit,
    };
  };
  const msCheck = (name: string, ms: number, limit: number): Check => ({
    name,
    target: `≤ ${limit} ms`,
    measured: Number.isFinite(ms) ? `${ms.toFixed(3)} ms` : '–',
    pass: Number.isFinite(ms) ? ms <= limit : undefined,
  });
  const addedP50 = (target: string) => {
    const measured = row('json c=1', target);
    return measured ? addedMs(rows, measured, 'p50Ms') : NaN;
  };
  const sseC1 = row('sse c=1', 'gateway');
  const addedJson = addedP50('gateway');
  const checks: Check[] = [
    cpuCheck('gateway CPU per request (json c=50)', 'gateway', 1.6),
    msCheck('added latency, json c=1 (p50)', addedJson, 0.2),
    msCheck('added time to first streamed byte, c=1 (p50)', sseC1 ? addedMs(rows, sseC1, 'ttfbP50Ms') : NaN, 0.3),
    cpuCheck('capacity on: CPU per request (json c=50)', 'limited', 1.6),
    msCheck('capacity on: latency over the same gateway without it, json c=1 (p50)', addedP50('limited') - addedJson, 0.1),
    cpuCheck('embedded: CPU per request (json c=50)', 'embedded', 2.0),
    msCheck('embedded: added latency, json c=1 (p50)', addedP50('embedded'), 0.2),
  ];
  if (startUp) {
    const idle = args['idle-seconds'];
    checks.push(
      { name: 'embedded: from spawn to "listening"', target: '≤ 1,000 ms', measured: `${Math.round(startUp.listenMs)} ms`, pass: startUp.listenMs <= 1_000 },
      {
        name: `embedded: worst /healthz, first ${idle} s after "listening"`,
        target: '< 50 ms',
        measured: `${startUp.healthzWorstMs.toFixed(1)} ms at +${Math.round(startUp.healthzWorstAtMs)} ms (p99 ${startUp.healthzP99Ms.toFixed(1)} ms, ${startUp.healthChecks} checks)`,
        pass: startUp.healthzWorstMs < 50,
      },
      {
        name: `embedded: RSS after ${idle} s idle`,
        target: '< 150 MB',
        measured: `${(startUp.rssIdleBytes / 1048576).toFixed(1)} MB`,
        pass: startUp.rssIdleBytes < 150 * 1048576,
      },
      {
        name: 'embedded: peak RSS during start',
        target: '< 250 MB',
        measured: `${(startUp.peakRssBytes / 1048576).toFixed(1)} MB`,
        pass: startUp.peakRssBytes < 250 * 1048576,
      },
    );
  }
  if (rowsVisible) {
    checks.push({
      name: 'embedded: rows of 1,000 dispatches committed, after the last response',
      target: '≤ 2,000 ms',
      measured: `${Math.round(rowsVisible.visibleAfterMs)} ms`,
      pass: rowsVisible.visibleAfterMs <= 2_000,
    });
  }
  const many = streams.find((s) => s.target === 'gateway')?.result;
  const manyRss = many?.rssAllOpenBytes ?? NaN;
  checks.push({
    name: `RSS with ${args.streams} streams open at once`,
    target: '< 250 MB',
    measured: Number.isFinite(manyRss)
      ? `${(manyRss / 1048576).toFixed(1)} MB (${((many!.rssPerOpenStreamBytes ?? NaN) / 1024).toFixed(1)} KB per open stream)`
      : `– (at most ${many?.peakOpen ?? 0} open at once)`,
    pass: Number.isFinite(manyRss) ? manyRss < 250 * 1048576 : undefined,
  });

  for (const target of targets) if (target.name !== 'direct') await target.stop();
  await mock.stop();
  await store?.dispose();
  disposeStore = undefined;
  await redis?.stop();
  const loadAtEnd = loadavg();
  notes.push(
    `Each scenario ran in ${rounds} rounds, every target once per round, in alternating order. ` +
      'Latencies are per request from hrtime in the load generator (autocannon); p50/p99 = median of the rounds; added = median over rounds of forwarder p50 − direct p50. ' +
      'CPU = utime+stime of the forwarder process from /proc over the measured windows ÷ responses (10 ms tick resolution); × floor = median over rounds of the ratio.',
    'Shared machine: other processes ran during the bench; the load average above is the noise indicator. Repeat runs before trusting a small difference.',
  );
  const report: BenchReport = {
    startedAt,
    environment: {
      node: process.version,
      cpu: `${cpus()[0]?.model ?? 'unknown'} × ${cpus().length}`,
      pinning: pinning.note,
      'load average (1 min) at start / end': `${loadAtStart[0]!.toFixed(2)} / ${loadAtEnd[0]!.toFixed(2)}`,
      nginx: nginx ?? 'not run',
      commit: commit(),
      'measured seconds per run': `${seconds} (c=50), ${scenarios[1]!.seconds} (c=1), in ${rounds} rounds, each after a warm-up (1 s before the first, 0.25 s before the others), and ${args.warmup} s of load on every forwarder before the first scenario`,
      gateway:
        'dist/src/main.js (as npm start runs it): auth on (1 key), breakers, metrics, event sink as main.ts composes it, LOG_LEVEL=info, health checks on',
      'event sink': store?.description ?? 'not run',
      limited: limited
        ? 'the gateway with capacity on (REDIS_URL as the gateway): maxInFlight on both candidates and providers, a line, the key named with per-minute limits, none ever reached'
        : 'not run',
      embedded: embedded
        ? 'dist/src/main.js with ./gateway.yaml and ./data of its working directory, no REDIS_URL or DATABASE_URL (a bare npm start): the embedded store in the gateway process'
        : 'not run',
    },
    rows,
    peakRssBytes,
    streams,
    checks,
    notes,
  };
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `bench-${startedAt.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(report, null, 2));
  process.stdout.write(`${renderMarkdown(report)}\n\nJSON: ${file}\n`);
  rmSync(dir, { recursive: true, force: true });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    killAllServers();
    const cleanUp = disposeStore?.() ?? Promise.resolve();
    cleanUp.catch((cause: unknown) => process.stderr.write(`bench: could not remove its queue or database: ${String(cause)}\n`)).finally(() => process.exit(1));
  },
);
