import { createServer } from 'node:net';

/**
 * A TCP port that was free a moment ago on 127.0.0.1, for processes that need a port number
 * before they start (Prometheus targets). Another process could take it in between; callers
 * start their process right away.
 */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  return address.port;
}
