// The embedded store's CPU per event, without a gateway around it (docs/embedded-mode.md).
// (1) Stages, in this thread, on a PGlite of its own: what the gateway's thread does to hand a
// batch over (the COPY text), then what the store's thread does with it (the COPY).
// (2) The whole path through EmbeddedStore: the CPU of the store's thread (from /proc) and of this
// one, per event. Batches of events.batchSize, as the writer makes them under load, into a table
// that already holds BENCH_PREFILL rows: a store that has been running a while, whose indexes no
// longer fit PGlite's shared buffers.
// Run: npm run bench:embedded-store   (BENCH_EVENTS, BENCH_BATCH, BENCH_ROUNDS, BENCH_PREFILL override)
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { copyDispatchLog, toCopyText } from '../src/dispatch-log/dispatch-log-repository.js';
import { EmbeddedStore } from '../src/dispatch-log/embedded-store.js';
import { migrate, storeTemplateDirectory } from '../src/dispatch-log/migrate.js';
import { openPgliteDatabase, type PgliteDatabase } from '../src/dispatch-log/sql-database.js';
import type { DispatchEvent } from '../src/events/dispatch-event.js';
import { makeDispatchEvents } from '../test/support/dispatch-events.js';
import { testConfig, testLogger } from '../test/support/pipeline-fixtures.js';

const events = Number(process.env['BENCH_EVENTS'] ?? 20_000);
const batchSize = Number(process.env['BENCH_BATCH'] ?? testConfig().events.batchSize);
const rounds = Number(process.env['BENCH_ROUNDS'] ?? 3);
const prefill = Number(process.env['BENCH_PREFILL'] ?? 300_000);
const ticksPerSecond = 100;

/** CPU of this process so far, µs (getrusage: every thread, but the others are idle here). */
const processCpu = () => {
  const { user, system } = process.cpuUsage();
  return user + system;
};

/** CPU of the threads `tids` so far, µs (10 ms resolution). */
function threadsCpu(tids: readonly string[]): number {
  let ticks = 0;
  for (const tid of tids) {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return (ticks * 1_000_000) / ticksPerSecond;
}

const threads = () => readdirSync('/proc/self/task');

function batchesOf(count: number): DispatchEvent[][] {
  const batches: DispatchEvent[][] = [];
  for (let i = 0; i < count; i += batchSize) batches.push(makeDispatchEvents(Math.min(batchSize, count - i)));
  return batches;
}

const stageNames = ['copy text', 'COPY'] as const;
type Stage = (typeof stageNames)[number];

/** One pass of `batches` through the stages; adds each stage's CPU (µs) to `totals`. */
async function runStages(db: PgliteDatabase, batches: readonly DispatchEvent[][], totals: Map<Stage, number>): Promise<void> {
  const add = (stage: Stage, since: number) => totals.set(stage, (totals.get(stage) ?? 0) + processCpu() - since);
  for (const batch of batches) {
    let at = processCpu();
    const text = toCopyText(batch);
    add('copy text', at);
    at = processCpu();
    const copied = await copyDispatchLog(db, text);
    add('COPY', at);
    if (copied !== batch.length) throw new Error(`COPY wrote ${copied} rows of ${batch.length}`);
  }
}

async function stages(directory: string): Promise<void> {
  const db = await openPgliteDatabase(directory, storeTemplateDirectory());
  try {
    await migrate(db, testLogger);
    for (let i = 0; i < prefill; i += batchSize) await copyDispatchLog(db, toCopyText(makeDispatchEvents(Math.min(batchSize, prefill - i))));
    await runStages(db, batchesOf(Math.min(events, 5 * batchSize)), new Map());
    for (let round = 1; round <= rounds; round++) {
      const totals = new Map<Stage, number>();
      await runStages(db, batchesOf(events), totals);
      const perEvent = stageNames.map((stage) => `${stage} ${((totals.get(stage) ?? 0) / events).toFixed(2)}`);
      const sum = [...totals.values()].reduce((a, b) => a + b, 0) / events;
      console.log(`stages, round ${round}: ${perEvent.join(', ')}; sum ${sum.toFixed(2)} µs/event`);
    }
  } finally {
    await db.close();
  }
}

async function wholePath(directory: string): Promise<void> {
  const store = new EmbeddedStore({ directory, logger: testLogger, idleCloseMs: 600_000 });
  try {
    const before = new Set(threads());
    await migrate(store, testLogger);
    const storeThreads = threads().filter((tid) => !before.has(tid));
    for (const batch of batchesOf(Math.min(events, 5 * batchSize))) await store.writeEvents(batch);
    for (let round = 1; round <= rounds; round++) {
      const batches = batchesOf(events);
      const storeAt = threadsCpu(storeThreads);
      const processAt = processCpu();
      const started = performance.now();
      for (const batch of batches) {
        const { inserted, rejected } = await store.writeEvents(batch);
        if (inserted !== batch.length || rejected.length > 0) throw new Error(`wrote ${inserted} rows of ${batch.length}, ${rejected.length} rejected`);
      }
      const ms = performance.now() - started;
      const storeCpu = threadsCpu(storeThreads) - storeAt;
      const gatewayCpu = processCpu() - processAt - storeCpu;
      console.log(
        `whole path, round ${round}: store thread ${(storeCpu / events).toFixed(1)} µs/event, this thread ${(gatewayCpu / events).toFixed(1)} µs/event, ${Math.round((events / ms) * 1000)} events/s`,
      );
    }
  } finally {
    await store.close();
  }
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'boo-store-bench-'));
  try {
    console.log(`${events} events a round in batches of ${batchSize}, ${rounds} rounds after a warm-up, into a table of ${prefill} rows or more`);
    // The whole path goes on with the stages' store: its table is as large, and larger.
    await stages(join(dir, 'pglite'));
    await wholePath(join(dir, 'pglite'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
