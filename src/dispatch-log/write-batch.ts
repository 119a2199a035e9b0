export interface BatchWriteResult {
  /** New rows committed (redeliveries of rows already there are not counted). */
  inserted: number;
  /** Items Postgres refused for their own content, by index in the input; retrying cannot help them. */
  rejected: { index: number; error: unknown }[];
}

/** Inserts a batch of rows in one statement: dispatch events, or rows of COPY text. */
export interface BatchInserter<Row> {
  /** @returns the new rows. @throws the driver's error; nothing of the batch was then written. */
  insertBatch(rows: readonly Row[]): Promise<number>;
}

/**
 * True for errors caused by the data of a row, not by the database being unavailable:
 * SQLSTATE class 22 (data exception, e.g. a NUL in text) and 23 (constraint violation).
 */
export function isRowDataError(err: unknown): boolean {
  const code = typeof err === 'object' && err !== null && 'code' in err ? (err as { code: unknown }).code : undefined;
  return typeof code === 'string' && /^(22|23)[0-9A-Z]{3}$/.test(code);
}

/**
 * Inserts `rows` as one statement; if Postgres refuses it because of a row's content, splits the
 * batch in halves and recurses, so the good rows land and each bad row is isolated (about
 * 2·log2(n) extra statements per bad row). This is the net for what only the database can judge.
 * @throws any other error (connection lost, timeout...): nothing of the failing part was written
 *   by this call and the caller retries it (rows committed earlier are skipped then, by `id`).
 */
export async function writeBatch<Row>(inserter: BatchInserter<Row>, rows: readonly Row[]): Promise<BatchWriteResult> {
  const result: BatchWriteResult = { inserted: 0, rejected: [] };
  const write = async (from: number, to: number): Promise<void> => {
    try {
      result.inserted += await inserter.insertBatch(rows.slice(from, to));
    } catch (err: unknown) {
      if (!isRowDataError(err)) throw err;
      if (to - from === 1) {
        result.rejected.push({ index: from, error: err });
        return;
      }
      const middle = from + Math.ceil((to - from) / 2);
      await write(from, middle);
      await write(middle, to);
    }
  };
  await write(0, rows.length);
  return result;
}
