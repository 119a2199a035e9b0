import { parentPort, workerData } from 'node:worker_threads';
import { dispatchEventSchema, type DispatchEvent } from '../events/dispatch-event.js';
import { createCopyDispatchLogRepository, type DispatchLogRepository } from './dispatch-log-repository.js';
import type { StoreError, StoreReply, StoreRequest, StoreWorkerData, StoreWriteResult } from './embedded-store.js';
import { storeTemplateDirectory } from './migrate.js';
import { openPgliteDatabase } from './sql-database.js';
import { writeBatch } from './write-batch.js';

// The store's thread (see embedded-store.ts): opens PGlite, answers one request at a time in
// the order they came, and on `close` closes PGlite and lets the thread end.
const port = parentPort!;
const { directory } = workerData as StoreWorkerData;
const opening = openPgliteDatabase(directory, storeTemplateDirectory());
// A store that cannot be opened ends the thread; the next request starts another attempt.
opening.catch((err: unknown) => {
  port.postMessage({ failed: errorOf(err) } satisfies StoreReply);
  port.close();
});
let queue = Promise.resolve();
let repository: DispatchLogRepository | undefined;

/**
 * Checks each event of a batch (JSON of an array), writes the valid ones by `writeBatch`, and
 * reports the rejected ones by their index in the batch.
 */
async function writeEvents(json: string): Promise<StoreWriteResult> {
  repository ??= createCopyDispatchLogRepository(await opening);
  const valid: DispatchEvent[] = [];
  const indexes: number[] = [];
  const rejected: StoreWriteResult['rejected'] = [];
  (JSON.parse(json) as unknown[]).forEach((event, index) => {
    const parsed = dispatchEventSchema.safeParse(event);
    if (parsed.success) {
      valid.push(parsed.data);
      indexes.push(index);
    } else {
      const issues = parsed.error.issues.slice(0, 3).map((issue) => `${issue.path.join('.')}: ${issue.message}`);
      rejected.push({ index, error: { name: 'ZodError', message: `invalid dispatch event (${issues.join('; ')})` } });
    }
  });
  const result = await writeBatch(repository, valid);
  for (const { index, error } of result.rejected) rejected.push({ index: indexes[index]!, error: errorOf(error) });
  return { inserted: result.inserted, rejected };
}

function errorOf(err: unknown): StoreError {
  const error = err instanceof Error ? err : new Error(String(err));
  const code = (error as { code?: unknown }).code;
  return { message: error.message, name: error.name, ...(typeof code === 'string' ? { code } : {}) };
}

async function handle(request: StoreRequest): Promise<void> {
  try {
    const db = await opening;
    if (request.op === 'close') {
      await db.close();
      port.close();
      return;
    }
    let result: StoreReply['result'];
    if (request.op === 'exec') await db.exec(request.text);
    else if (request.op === 'query') result = await db.query(request.text, request.params);
    else result = await writeEvents(request.json);
    port.postMessage({ id: request.id, result } satisfies StoreReply);
  } catch (err: unknown) {
    if (request.op === 'close') port.close();
    else port.postMessage({ id: request.id, error: errorOf(err) } satisfies StoreReply);
  }
}

port.on('message', (request: StoreRequest) => {
  queue = queue.then(() => handle(request));
});
