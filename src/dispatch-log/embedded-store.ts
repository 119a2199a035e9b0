import { Worker, type WorkerOptions } from 'node:worker_threads';
import type { DispatchEvent } from '../events/dispatch-event.js';
import type { Logger } from '../shared/logger.js';
import { toCopyText } from './dispatch-log-repository.js';
import type { SqlDatabase, SqlSession } from './sql-database.js';
import type { BatchWriteResult } from './write-batch.js';

/** What the store's thread is started with. */
export interface StoreWorkerData {
  directory: string;
}

/** What the store's methods ask of its thread. */
type StoreRequestBody = { op: 'exec'; text: string } | { op: 'query'; text: string; params: readonly unknown[] } | { op: 'write'; text: string };

/** A request to the store's thread; answered in the order sent. */
export type StoreRequest = (StoreRequestBody | { op: 'close' }) & { id: number };

/** An error as it crosses threads: `code` is the SQLSTATE that `isRowDataError` reads. */
export interface StoreError {
  message: string;
  name: string;
  code?: string;
}

/** What a `write` did: new rows, and the events the database refused, by index. */
export interface StoreWriteResult {
  inserted: number;
  rejected: { index: number; error: StoreError }[];
}

/** The store thread's answer to request `id`, or `failed` when the store could not be opened. */
export interface StoreReply {
  id?: number;
  result?: { rows: object[]; count: number } | StoreWriteResult | undefined;
  error?: StoreError;
  failed?: StoreError;
}

export interface EmbeddedStoreOptions {
  /** PGlite's data directory (`embeddedStoreDirectory`). */
  directory: string;
  logger: Logger;
  /** The store's thread ends after this long without a request, and its memory goes back to the system. */
  idleCloseMs: number;
  /** Told when the store opens (its thread starts) and when it closes. */
  onOpenChange?: (open: boolean) => void;
}

const fromSources = import.meta.url.endsWith('.ts');
const workerScript = new URL(`./embedded-store-worker.${fromSources ? 'ts' : 'js'}`, import.meta.url);

/**
 * The store's thread. Run from TypeScript sources (vitest, `npm run dev`), it registers tsx
 * before loading its module: a worker does not inherit the loader of the thread that starts it.
 * `tsx` is then resolved from the working directory, the repository's.
 */
function startWorker(options: WorkerOptions): Worker {
  if (!fromSources) return new Worker(workerScript, options);
  const bootstrap = `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(workerScript.href)}); })`;
  return new Worker(bootstrap, { ...options, eval: true });
}

/**
 * The embedded store (PGlite) in a thread of its own. PGlite compiles and runs Postgres as WASM:
 * its opening takes about a second of CPU (5 s on a fresh directory), each batch tens of
 * milliseconds, and on the gateway's event loop those stalled every timer and health check.
 * Here the gateway's thread only posts requests and reads answers.
 *
 * It costs nothing until used: the thread starts with the first request and ends
 * `idleCloseMs` after the last one. Open, the store adds 170-190 MB to the process; closed, about
 * half of that goes back (PGlite's WebAssembly memory and the thread's heap; V8 keeps the
 * compiled module for the next opening). Requests are answered in order; when the thread dies
 * (out of memory, a failed opening) the requests in flight fail and the next one starts a new thread.
 */
export class EmbeddedStore implements SqlDatabase {
  readonly kind = 'pglite' as const;
  readonly #options: EmbeddedStoreOptions;
  readonly #pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  #nextId = 0;
  #worker: Worker | undefined;
  #stopping: Promise<void> | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  #closed: Promise<void> | undefined;

  constructor(options: EmbeddedStoreOptions) {
    this.#options = options;
  }

  async exec(text: string): Promise<void> {
    await this.#request({ op: 'exec', text });
  }

  query<Row extends object = Record<string, unknown>>(text: string, params: readonly unknown[] = []): Promise<{ rows: Row[]; count: number }> {
    return this.#request({ op: 'query', text, params }) as Promise<{ rows: Row[]; count: number }>;
  }

  /** PGlite is a single session already: the store itself is the session. */
  withSession<T>(fn: (session: SqlSession) => Promise<T>): Promise<T> {
    return fn(this);
  }

  /**
   * Writes a batch by COPY in the store's thread (`writeCopyText`). The COPY text is made here:
   * it costs this thread about what JSON of the batch would, and spares the store's thread
   * parsing it back (docs/embedded-mode.md, "Where the CPU goes").
   * @throws what the store throws (not open, connection-like errors): nothing of the batch was written.
   */
  async writeEvents(events: readonly DispatchEvent[]): Promise<BatchWriteResult> {
    const { inserted, rejected } = (await this.#request({ op: 'write', text: toCopyText(events) })) as StoreWriteResult;
    return { inserted, rejected: rejected.map(({ index, error }) => ({ index, error: this.#errorOf(error) })) };
  }

  /** Closes PGlite and ends its thread, waiting at most `timeoutMs`. Idempotent; later requests fail. */
  close(timeoutMs = 5_000): Promise<void> {
    this.#closed ??= this.#stop(timeoutMs);
    return this.#closed;
  }

  async #request(request: StoreRequestBody): Promise<unknown> {
    if (this.#closed) throw new Error('the embedded store is closed');
    await this.#stopping;
    clearTimeout(this.#idleTimer);
    const worker = (this.#worker ??= this.#start());
    const id = this.#nextId++;
    try {
      return await new Promise((resolve, reject) => {
        this.#pending.set(id, { resolve, reject });
        worker.postMessage({ ...request, id } satisfies StoreRequest);
      });
    } finally {
      if (this.#pending.size === 0 && this.#worker === worker && !this.#closed) {
        this.#idleTimer = setTimeout(() => void this.#stop(5_000), this.#options.idleCloseMs).unref();
      }
    }
  }

  #start(): Worker {
    const { directory, logger, onOpenChange } = this.#options;
    const started = performance.now();
    const worker = startWorker({
      workerData: { directory } satisfies StoreWorkerData,
      // The thread's own JavaScript: PGlite's glue and one batch at a time (PGlite's WASM memory
      // is bounded by the Postgres settings in sql-database.ts, not by these).
      resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16 },
    });
    let opened = false;
    worker.on('message', (reply: StoreReply) => {
      if (reply.failed) {
        this.#failAll(this.#errorOf(reply.failed));
        return;
      }
      if (!opened) {
        opened = true;
        logger.info({ ms: Math.round(performance.now() - started) }, 'embedded store open');
      }
      const pending = this.#pending.get(reply.id!);
      if (!pending) return;
      this.#pending.delete(reply.id!);
      if (reply.error) pending.reject(this.#errorOf(reply.error));
      else pending.resolve(reply.result);
    });
    worker.on('error', (err: Error) => {
      logger.error({ err }, 'embedded store thread failed');
      this.#failAll(err);
    });
    worker.on('exit', (code) => {
      if (this.#worker === worker) this.#worker = undefined;
      this.#failAll(new Error(`the embedded store thread exited (code ${code})`));
      onOpenChange?.(false);
    });
    onOpenChange?.(true);
    return worker;
  }

  /** Ends the thread after the requests already sent: PGlite closes in order, after them. */
  #stop(timeoutMs: number): Promise<void> {
    clearTimeout(this.#idleTimer);
    const worker = this.#worker;
    if (!worker) return this.#stopping ?? Promise.resolve();
    this.#worker = undefined;
    this.#stopping = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#options.logger.warn({ timeoutMs }, 'embedded store did not close in time; its thread is stopped');
        void worker.terminate();
      }, timeoutMs).unref();
      worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      worker.postMessage({ id: this.#nextId++, op: 'close' } satisfies StoreRequest);
    }).finally(() => {
      this.#stopping = undefined;
      this.#options.logger.info('embedded store closed');
    });
    return this.#stopping;
  }

  #failAll(err: Error): void {
    for (const { reject } of this.#pending.values()) reject(err);
    this.#pending.clear();
  }

  #errorOf(error: StoreError): Error {
    return Object.assign(new Error(error.message), { name: error.name, ...(error.code ? { code: error.code } : {}) });
  }
}
