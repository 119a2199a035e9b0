import { randomUUID } from 'node:crypto';
import postgres from 'postgres';

/** The machine's shared Postgres; tests only ever create and drop their own databases on it. */
export const sharedPostgresUrl = 'postgres://root@127.0.0.1:5432/postgres';

/** A fresh, empty database on a Postgres server, dropped by `drop()`. */
export async function createScratchDatabase(serverUrl = sharedPostgresUrl): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `boo_test_${randomUUID().replaceAll('-', '')}`;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => undefined });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const dropper = postgres(serverUrl, { max: 1, onnotice: () => undefined });
      try {
        await dropper.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await dropper.end();
      }
    },
  };
}

/** Polls `read` until `done(value)` holds; returns the last value. @throws with the last value after `timeoutMs`. */
export async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 30_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
