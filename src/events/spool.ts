import { mkdir, open, readdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DispatchEvent } from './dispatch-event.js';

export interface SpoolOptions {
  directory: string;
  /** Bound of the bytes waiting for replay; an append beyond it writes what fits and reports the rest. */
  maxBytes: number;
  /** Size at which a new segment file starts; consumed segments are deleted whole. */
  segmentBytes?: number;
  /** Receives the duration of each append's `fdatasync`, in seconds (a histogram). */
  observeFsync?: (seconds: number) => void;
}

export interface SpoolRead {
  /** In append order. */
  events: DispatchEvent[];
  /** Lines that were not valid JSON (a torn write), skipped. */
  corruptLines: number;
  /** Marks these events consumed; the next `read` starts after them. Persisted. */
  commit(): Promise<void>;
}

interface Cursor {
  segment: number;
  offset: number;
}

const segmentName = (segment: number) => `${String(segment).padStart(12, '0')}.ndjson`;
const readChunkBytes = 1024 * 1024;

/**
 * An append-only, size-bounded spool of dispatch events on disk (newline-delimited JSON in
 * segment files plus a cursor file), read back in append order. It survives restarts: `open`
 * finds what was not yet committed, and drops a torn last line left by a crash mid-write. One
 * writer and one reader per directory (one gateway process).
 *
 * Durability, group commit: each `append` is one write of all its events and one `fdatasync`
 * (plus one of the directory when it starts a segment file), and resolves only after that. An
 * appended event survives a process crash and a power loss; the caller appends a whole flush at
 * once, so the cost is one fsync per flush, not per event (0.2-0.4 ms median on an SSD,
 * `boo_spool_fsync_seconds`). The cursor is replaced by rename without fsync: after a power loss
 * it may point before events already replayed, which are then sent again (harmless: the table's
 * key skips them).
 */
export class Spool {
  readonly #directory: string;
  readonly #maxBytes: number;
  readonly #segmentBytes: number;
  readonly #observeFsync: ((seconds: number) => void) | undefined;
  /** Segment number -> size in bytes, ascending. */
  readonly #segments = new Map<number, number>();
  #cursor: Cursor;
  #serial: Promise<unknown> = Promise.resolve();

  private constructor(options: SpoolOptions, cursor: Cursor) {
    this.#directory = options.directory;
    this.#maxBytes = options.maxBytes;
    this.#segmentBytes = options.segmentBytes ?? Math.max(64 * 1024, Math.min(16 * 1024 * 1024, Math.floor(options.maxBytes / 8)));
    this.#observeFsync = options.observeFsync;
    this.#cursor = cursor;
  }

  /** Opens (creating it if needed) the spool in `options.directory`. */
  static async open(options: SpoolOptions): Promise<Spool> {
    await mkdir(options.directory, { recursive: true });
    let cursor: Cursor = { segment: 1, offset: 0 };
    try {
      const saved = JSON.parse(await readFile(join(options.directory, 'cursor.json'), 'utf8')) as Partial<Cursor>;
      if (Number.isInteger(saved.segment) && Number.isInteger(saved.offset)) cursor = { segment: saved.segment!, offset: saved.offset! };
    } catch (err: unknown) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const segments = (await readdir(options.directory))
      .filter((name) => /^\d{12}\.ndjson$/.test(name))
      .map((name) => Number.parseInt(name, 10))
      .sort((a, b) => a - b);
    const spool = new Spool(options, cursor);
    for (const segment of segments) {
      const path = join(options.directory, segmentName(segment));
      if (segment < cursor.segment) {
        // Consumed before a crash that came between saving the cursor and deleting the file.
        await rm(path, { force: true });
        continue;
      }
      spool.#segments.set(segment, (await stat(path)).size);
    }
    const first = spool.#segments.keys().next();
    if (!first.done && first.value > cursor.segment) spool.#cursor = { segment: first.value, offset: 0 };
    await spool.#repairTornTail();
    return spool;
  }

  /** Bytes appended and not yet committed by the reader. */
  get pendingBytes(): number {
    let total = 0;
    for (const [segment, size] of this.#segments) total += segment === this.#cursor.segment ? size - this.#cursor.offset : size;
    return total;
  }

  get isEmpty(): boolean {
    return this.pendingBytes === 0;
  }

  /**
   * Appends events in order, as long as they fit under `maxBytes`, in one write and one
   * `fdatasync`: resolves once they are on disk.
   * @returns how many were written: the first `n` of `events`; the rest did not fit.
   */
  append(events: readonly DispatchEvent[]): Promise<number> {
    return this.#exclusive(async () => {
      let room = this.#maxBytes - this.pendingBytes;
      const lines: string[] = [];
      let bytes = 0;
      for (const event of events) {
        const line = `${JSON.stringify(event)}\n`;
        const size = Buffer.byteLength(line);
        if (size > room) break;
        room -= size;
        bytes += size;
        lines.push(line);
      }
      if (lines.length === 0) return 0;
      const segment = this.#activeSegment();
      const isNewFile = !this.#segments.has(segment);
      const handle = await open(join(this.#directory, segmentName(segment)), 'a');
      try {
        await handle.writeFile(lines.join(''));
        const started = performance.now();
        await handle.datasync();
        this.#observeFsync?.((performance.now() - started) / 1000);
      } finally {
        await handle.close();
      }
      // A new file's name is in the directory, which needs its own sync to outlive a power loss.
      if (isNewFile) await this.#syncDirectory();
      this.#segments.set(segment, (this.#segments.get(segment) ?? 0) + bytes);
      return lines.length;
    });
  }

  /** Reads up to `maxEvents` from the oldest uncommitted position; undefined when empty. */
  read(maxEvents: number): Promise<SpoolRead | undefined> {
    return this.#exclusive(async () => {
      for (;;) {
        const { segment, offset } = this.#cursor;
        const size = this.#segments.get(segment);
        if (size === undefined) return undefined;
        if (offset >= size) {
          if (!this.#hasSegmentAfter(segment)) return undefined;
          await this.#advancePast(segment);
          continue;
        }
        const buffer = Buffer.alloc(Math.min(readChunkBytes, size - offset));
        const handle = await open(join(this.#directory, segmentName(segment)), 'r');
        try {
          await handle.read(buffer, 0, buffer.length, offset);
        } finally {
          await handle.close();
        }
        const events: DispatchEvent[] = [];
        let corruptLines = 0;
        let consumed = 0;
        while (events.length < maxEvents) {
          const end = buffer.indexOf(0x0a, consumed);
          if (end === -1) break;
          const line = buffer.toString('utf8', consumed, end);
          consumed = end + 1;
          try {
            events.push(JSON.parse(line) as DispatchEvent);
          } catch {
            corruptLines++;
          }
        }
        if (consumed === 0) throw new Error(`spool segment ${segment} holds a line longer than ${readChunkBytes} bytes at offset ${offset}`);
        const next: Cursor = { segment, offset: offset + consumed };
        return {
          events,
          corruptLines,
          commit: () => this.#exclusive(() => this.#commit(next)),
        };
      }
    });
  }

  /** Waits for pending appends and commits. */
  async close(): Promise<void> {
    await this.#exclusive(async () => {});
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#serial.then(fn, fn);
    this.#serial = run.catch(() => undefined);
    return run;
  }

  #activeSegment(): number {
    let last: number | undefined;
    for (const segment of this.#segments.keys()) last = segment;
    if (last === undefined) return this.#cursor.segment;
    return this.#segments.get(last)! >= this.#segmentBytes ? last + 1 : last;
  }

  #hasSegmentAfter(segment: number): boolean {
    for (const other of this.#segments.keys()) if (other > segment) return true;
    return false;
  }

  async #commit(next: Cursor): Promise<void> {
    if (next.segment !== this.#cursor.segment || next.offset <= this.#cursor.offset) return;
    this.#cursor = next;
    if (next.offset >= (this.#segments.get(next.segment) ?? 0)) {
      await this.#advancePast(next.segment);
    } else {
      await this.#saveCursor();
    }
  }

  /** The cursor moves to the next segment and the consumed one is deleted (cursor saved first). */
  async #advancePast(segment: number): Promise<void> {
    this.#cursor = { segment: segment + 1, offset: 0 };
    for (const other of this.#segments.keys()) {
      if (other > segment) {
        this.#cursor = { segment: other, offset: 0 };
        break;
      }
    }
    await this.#saveCursor();
    this.#segments.delete(segment);
    await rm(join(this.#directory, segmentName(segment)), { force: true });
  }

  async #syncDirectory(): Promise<void> {
    const handle = await open(this.#directory, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  async #saveCursor(): Promise<void> {
    const path = join(this.#directory, 'cursor.json');
    await writeFile(`${path}.tmp`, JSON.stringify(this.#cursor));
    await rename(`${path}.tmp`, path);
  }

  async #repairTornTail(): Promise<void> {
    let last: number | undefined;
    for (const segment of this.#segments.keys()) last = segment;
    if (last === undefined) return;
    const size = this.#segments.get(last)!;
    if (size === 0) return;
    const path = join(this.#directory, segmentName(last));
    const content = await readFile(path);
    if (content[content.length - 1] === 0x0a) return;
    const keep = content.lastIndexOf(0x0a) + 1;
    await truncate(path, keep);
    this.#segments.set(last, keep);
    if (this.#cursor.segment === last && this.#cursor.offset > keep) this.#cursor = { segment: last, offset: keep };
  }
}
