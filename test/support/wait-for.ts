/** Polls until the predicate holds. @throws after timeoutMs, naming what it waited for. */
export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Polls `read` until `done(value)` holds; returns that value. @throws with the last value after timeoutMs. */
export async function waitForValue<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 30_000, what = 'condition'): Promise<T> {
  let last: T | undefined;
  try {
    await waitFor(async () => done((last = await read())), timeoutMs, what);
  } catch (err: unknown) {
    throw new Error(`${err instanceof Error ? err.message : String(err)}; last value: ${JSON.stringify(last)}`, { cause: err });
  }
  return last as T;
}
