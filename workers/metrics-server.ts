import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../src/shared/logger.js';
import { errorMessage } from '../src/shared/error-message.js';

export interface MetricsServerOptions {
  port: number;
  host?: string;
  register: Registry;
  logger: Logger;
  /** Refreshes gauges that are read on demand (queue depth); its failure is logged, not served. */
  beforeScrape?: () => Promise<void>;
}

export interface MetricsServer {
  /** The bound port (useful with port 0). */
  readonly port: number;
  close(): Promise<void>;
}

/** The worker's HTTP endpoint: `GET /metrics` (Prometheus text) and `GET /healthz`. */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const { register, logger, beforeScrape } = options;
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    if (req.method === 'GET' && path === '/metrics') {
      void (async () => {
        try {
          await beforeScrape?.();
        } catch (err: unknown) {
          logger.warn({ err: errorMessage(err) }, 'metrics: refresh before scrape failed');
        }
        try {
          const body = await register.metrics();
          res.writeHead(200, { 'content-type': register.contentType }).end(body);
        } catch (err: unknown) {
          logger.error({ err }, 'metrics: rendering failed');
          res.writeHead(500).end();
        }
      })();
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '0.0.0.0', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
