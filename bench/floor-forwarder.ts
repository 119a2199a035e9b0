import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { Pool } from 'undici';

/**
 * The floor the gateway's targets are relative to: the least a correct Node forwarder does
 * (node:http in, an undici keep-alive pool out, no framework): read the body, send it upstream,
 * relay status, content type and body with backpressure. No auth, routing, metrics or logs.
 */

const upstream = process.env.UPSTREAM_URL;
if (!upstream) throw new Error('UPSTREAM_URL is required');
const pool = new Pool(upstream, { connections: Number(process.env.UPSTREAM_CONNECTIONS ?? 4096) });

async function forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const parts: Buffer[] = [];
  for await (const chunk of req) parts.push(chunk as Buffer);
  const answer = await pool.request({
    path: req.url ?? '/',
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: parts.length === 1 ? parts[0]! : Buffer.concat(parts),
  });
  const headers: Record<string, string> = {};
  const type = answer.headers['content-type'];
  const length = answer.headers['content-length'];
  if (typeof type === 'string') headers['content-type'] = type;
  if (typeof length === 'string') headers['content-length'] = length;
  res.writeHead(answer.statusCode, headers);
  for await (const chunk of answer.body) {
    if (!res.write(chunk)) await once(res, 'drain');
  }
  res.end();
}

const server = createServer({ keepAliveTimeout: 120_000 }, (req, res) => {
  forward(req, res).catch((err: unknown) => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
    process.stderr.write(`floor: ${String(err)}\n`);
  });
});
server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => {
  const address = server.address();
  process.stdout.write(`listening ${typeof address === 'object' && address ? address.port : ''}\n`);
});
process.once('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => void pool.close().then(() => process.exit(0)));
});
