import { median, perRound, type LoadResult } from './load.js';
import type { ManyStreamsResult } from './many-streams.js';

export interface ScenarioRow {
  readonly scenario: string;
  readonly stream: boolean;
  readonly connections: number;
  readonly target: string;
  /** The rounds combined (see `combineRounds`). */
  readonly result: LoadResult;
  /** Each round on its own, in order: round i of every target of a scenario ran back to back. */
  readonly rounds: readonly LoadResult[];
  /** CPU µs per request of the forwarder itself (undefined for direct). */
  readonly cpuMicrosPerRequest: number | undefined;
  /** CPU µs per request of the mock upstream, for context. */
  readonly upstreamCpuMicrosPerRequest: number;
}

export interface StreamsRow {
  readonly target: string;
  readonly result: ManyStreamsResult;
}

export interface Check {
  readonly name: string;
  readonly target: string;
  readonly measured: string;
  readonly pass: boolean | undefined;
}

export interface BenchReport {
  readonly startedAt: string;
  readonly environment: Record<string, string | number>;
  readonly rows: readonly ScenarioRow[];
  readonly peakRssBytes: Record<string, number>;
  readonly streams: readonly StreamsRow[];
  readonly checks: readonly Check[];
  readonly notes: readonly string[];
}

const ms = (value: number) => (Number.isFinite(value) ? value.toFixed(3) : '–');
const signedMs = (value: number) => (Number.isFinite(value) ? `${value >= 0 ? '+' : ''}${value.toFixed(3)}` : '–');
const mb = (bytes: number | null | undefined) => (bytes === null || bytes === undefined || !Number.isFinite(bytes) ? '–' : (bytes / 1048576).toFixed(1));
const int = (value: number) => Math.round(value).toLocaleString('en-US');

function direct(rows: readonly ScenarioRow[], scenario: string): ScenarioRow | undefined {
  return rows.find((row) => row.scenario === scenario && row.target === 'direct');
}

/** Latency a forwarder adds over going straight to the mock: median over rounds of the difference of p50s, ms. */
export function addedMs(rows: readonly ScenarioRow[], row: ScenarioRow, field: 'p50Ms' | 'ttfbP50Ms'): number {
  const base = direct(rows, row.scenario);
  return base ? median(perRound(row.rounds, base.rounds, (round, baseRound) => round[field] - baseRound[field])) : NaN;
}

/** A forwarder's CPU per request over the floor's in each round; empty for direct or without a floor. */
export function cpuRatiosByRound(rows: readonly ScenarioRow[], row: ScenarioRow): number[] {
  const floor = rows.find((other) => other.scenario === row.scenario && other.target === 'floor');
  if (row.cpuMicrosPerRequest === undefined || !floor) return [];
  return perRound(row.rounds, floor.rounds, (round, floorRound) => round.cpuMicrosPerRequest[0]! / floorRound.cpuMicrosPerRequest[0]!);
}

/** A forwarder's CPU per request over the floor's: the median of {@link cpuRatiosByRound}. */
export function cpuRatio(rows: readonly ScenarioRow[], row: ScenarioRow): number {
  return median(cpuRatiosByRound(rows, row));
}

/** The bench's results as markdown: one table per kind of run, then the targets. */
export function renderMarkdown(report: BenchReport): string {
  const lines: string[] = [];
  lines.push(`## npm run bench — ${report.startedAt}`, '');
  for (const [key, value] of Object.entries(report.environment)) lines.push(`- ${key}: ${value}`);
  lines.push('');
  lines.push('| run | forwarder | req/s | p50 ms | p99 ms | added p50 | TTFB p50 | added TTFB | CPU µs/req | × floor CPU | peak RSS MB |');
  lines.push('|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
  for (const row of report.rows) {
    const ratio = cpuRatio(report.rows, row);
    const isDirect = row.target === 'direct';
    lines.push(
      `| ${row.scenario} | ${row.target} | ${int(row.result.rps)} | ${ms(row.result.p50Ms)} | ${ms(row.result.p99Ms)} | ` +
        `${isDirect ? '' : signedMs(addedMs(report.rows, row, 'p50Ms'))} | ${row.stream ? ms(row.result.ttfbP50Ms) : ''} | ` +
        `${row.stream && !isDirect ? signedMs(addedMs(report.rows, row, 'ttfbP50Ms')) : ''} | ` +
        `${row.cpuMicrosPerRequest === undefined ? `(mock ${int(row.upstreamCpuMicrosPerRequest)})` : int(row.cpuMicrosPerRequest)} | ` +
        `${Number.isFinite(ratio) ? ratio.toFixed(2) : ''} | ${isDirect ? '' : mb(report.peakRssBytes[row.target])} |`,
    );
  }
  if (report.streams.length > 0) {
    lines.push(
      '',
      '| many streams | streams | completed | peak open | TTFB p50 ms | TTFB p99 ms | added TTFB p50 | s to open all | RSS before MB | RSS all open MB | RSS peak MB | RSS KB / open stream | CPU µs / stream |',
    );
    lines.push('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
    const base = report.streams.find((row) => row.target === 'direct');
    for (const { target, result } of report.streams) {
      const added = base && target !== 'direct' ? signedMs(result.ttfbP50Ms - base.result.ttfbP50Ms) : '';
      lines.push(
        `| ${target} | ${int(result.streams)} | ${int(result.completed)} | ${int(result.peakOpen)} | ${ms(result.ttfbP50Ms)} | ${ms(result.ttfbP99Ms)} | ${added} | ` +
          `${Number.isFinite(result.openingSeconds) ? result.openingSeconds.toFixed(1) : '–'} | ${mb(result.rssBeforeBytes)} | ${mb(result.rssAllOpenBytes)} | ${mb(result.rssPeakBytes)} | ${result.rssPerOpenStreamBytes === null ? '–' : (result.rssPerOpenStreamBytes / 1024).toFixed(1)} | ` +
          `${result.cpuMicrosPerStream === null ? '–' : int(result.cpuMicrosPerStream)} |`,
      );
    }
  }
  lines.push('', '| target | goal | measured | |', '|---|---|--:|---|');
  for (const check of report.checks) {
    lines.push(`| ${check.name} | ${check.target} | ${check.measured} | ${check.pass === undefined ? 'not measured' : check.pass ? 'met' : 'MISSED'} |`);
  }
  if (report.notes.length > 0) lines.push('', ...report.notes.map((note) => `- ${note}`));
  return lines.join('\n');
}
