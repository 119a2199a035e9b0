import { mkdtemp, readdir, appendFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Spool } from './spool.js';
import { makeDispatchEvents } from '../../test/support/dispatch-events.js';
import type { DispatchEvent } from './dispatch-event.js';

async function drain(spool: Spool, chunk = 7): Promise<DispatchEvent[]> {
  const out: DispatchEvent[] = [];
  for (let read = await spool.read(chunk); read; read = await spool.read(chunk)) {
    out.push(...read.events);
    await read.commit();
  }
  return out;
}

describe('Spool', () => {
  let directory: string;
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), 'boo-spool-'));
  });
  afterEach(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it('gives events back in append order across segments, and deletes consumed segments', async () => {
    const spool = await Spool.open({ directory, maxBytes: 10_000_000, segmentBytes: 2_000 });
    const events = makeDispatchEvents(50);
    for (let i = 0; i < 50; i += 10) expect(await spool.append(events.slice(i, i + 10))).toBe(10);
    expect((await readdir(directory)).filter((f) => f.endsWith('.ndjson')).length).toBeGreaterThan(2);
    expect((await drain(spool)).map((e) => e.id)).toEqual(events.map((e) => e.id));
    expect(spool.isEmpty).toBe(true);
    expect((await readdir(directory)).filter((f) => f.endsWith('.ndjson'))).toEqual([]);
  });

  it('syncs each append to disk once, whatever the events it carries (group commit)', async () => {
    const fsyncs: number[] = [];
    const spool = await Spool.open({ directory, maxBytes: 10_000_000, observeFsync: (seconds) => fsyncs.push(seconds) });
    expect(await spool.append(makeDispatchEvents(500))).toBe(500);
    expect(fsyncs).toHaveLength(1);
    expect(await spool.append(makeDispatchEvents(1))).toBe(1);
    expect(await spool.append(makeDispatchEvents(20))).toBe(20);
    expect(fsyncs).toHaveLength(3);
    expect(fsyncs.every((seconds) => seconds >= 0 && seconds < 5)).toBe(true);
    expect(await drain(spool)).toHaveLength(521);
  });

  it('survives a restart: a reopened spool resumes after the last commit, not before', async () => {
    const events = makeDispatchEvents(30);
    const first = await Spool.open({ directory, maxBytes: 10_000_000, segmentBytes: 3_000 });
    await first.append(events);
    const read = await first.read(12);
    await read!.commit();
    await first.read(5); // read but never committed: must come back after the restart
    await first.close();

    const second = await Spool.open({ directory, maxBytes: 10_000_000, segmentBytes: 3_000 });
    expect((await drain(second)).map((e) => e.id)).toEqual(events.slice(12).map((e) => e.id));
  });

  it('writes what fits under maxBytes and reports the rest', async () => {
    const events = makeDispatchEvents(20);
    const lineBytes = Buffer.byteLength(`${JSON.stringify(events[0])}\n`);
    const spool = await Spool.open({ directory, maxBytes: lineBytes * 5 + 10 });
    expect(await spool.append(events)).toBe(5);
    expect(await spool.append(events.slice(5))).toBe(0);
    const read = await spool.read(2);
    await read!.commit();
    // Committed bytes are room again.
    expect(await spool.append(events.slice(5))).toBe(2);
    expect(spool.pendingBytes).toBeLessThanOrEqual(lineBytes * 5 + 10);
  });

  it('drops a torn last line left by a crash mid-write and keeps appending after it', async () => {
    const events = makeDispatchEvents(4);
    const spool = await Spool.open({ directory, maxBytes: 1_000_000 });
    await spool.append(events.slice(0, 3));
    await spool.close();
    const [segment] = (await readdir(directory)).filter((f) => f.endsWith('.ndjson'));
    await appendFile(join(directory, segment!), '{"id":"half-writ');

    const reopened = await Spool.open({ directory, maxBytes: 1_000_000 });
    await reopened.append(events.slice(3));
    const read = await reopened.read(100);
    expect(read!.corruptLines).toBe(0);
    expect(read!.events.map((e) => e.id)).toEqual(events.map((e) => e.id));
  });
});
