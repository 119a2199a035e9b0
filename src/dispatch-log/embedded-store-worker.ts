import { parentPort, workerData } from 'node:worker_threads';
import { writeCopyText } from './dispatch-log-repository.js';
import type { StoreError, StoreReply, StoreRequest, StoreWorkerData, StoreWriteResult } from './embedded-store.js';
import { storeTemplateDirectory } from './migrate.js';
import { openPgliteDatabase, type PgliteDatabase } from './sql-database.js';

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

/** Writes a batch (rows of COPY text) and reports the rows PGlite refused, by index in the batch. */
async function writeRows(db: PgliteDatabase, text: string): Promise<StoreWriteResult> {
  const { inserted, rejected } = await writeCopyText(db, text);
  return { inserted, rejected: rejected.map(({ index, error }) => ({ index, error: errorOf(error) })) };
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
    else result = await writeRows(db, request.text);
    port.postMessage({ id: request.id, result } satisfies StoreReply);
  } catch (err: unknown) {
    if (request.op === 'close') port.close();
    else port.postMessage({ id: request.id, error: errorOf(err) } satisfies StoreReply);
  }
}

port.on('message', (request: StoreRequest) => {
  queue = queue.then(() => handle(request));
});
