import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

/**
 * The bench's upstream: an OpenAI-compatible answer as cheap as node:http allows, so the
 * forwarders measured in front of it are what the figures show. Everything is pre-encoded; the
 * request is classified by byte search, never parsed.
 *
 * - `POST .../chat/completions` with `"stream":true`: SSE, 20 content chunks, each on its own
 *   turn of the event loop (so a forwarder relays 20 separate chunks), then usage and `[DONE]`.
 * - the same with `"bench_slow":true` as well: one chunk every {@link slowIntervalMs} ms,
 *   {@link slowChunks} of them (the many-streams run).
 * - any other POST: a chat completion as JSON, with usage.
 * - `GET /v1/models`: the model list (the gateway's health checks).
 */

export const fastChunks = 20;
/** 20 s per slow stream: longer than opening 2,000 of them at the many-streams run's pace takes. */
export const slowChunks = 200;
export const slowIntervalMs = 100;

const completion = Buffer.from(
  JSON.stringify({
    id: 'chatcmpl-bench',
    object: 'chat.completion',
    created: 1_700_000_000,
    model: 'bench-model',
    choices: [{ index: 0, message: { role: 'assistant', content: 'The quick brown fox jumps over the lazy dog. '.repeat(4) }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 210, completion_tokens: 40, total_tokens: 250 },
  }),
);
const models = Buffer.from(JSON.stringify({ object: 'list', data: [{ id: 'bench-model', object: 'model', created: 0, owned_by: 'bench' }] }));

/** One SSE event of a chat.completion.chunk with the given choice (and usage, on the last). */
const sseEvent = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  `data: ${JSON.stringify({ id: 'chatcmpl-bench', object: 'chat.completion.chunk', created: 1_700_000_000, model: 'bench-model', choices: [{ index: 0, ...choice }], ...extra })}\n\n`;
const sseChunk = (i: number) => Buffer.from(sseEvent({ delta: { content: `tok${i} ` }, finish_reason: null }));
const sseTail = (chunks: number) =>
  Buffer.from(
    sseEvent({ delta: {}, finish_reason: 'stop' }, { usage: { prompt_tokens: 210, completion_tokens: chunks, total_tokens: 210 + chunks } }) +
      'data: [DONE]\n\n',
  );
const fastStream = [...Array.from({ length: fastChunks }, (_, i) => sseChunk(i)), sseTail(fastChunks)];
const slowStream = [...Array.from({ length: slowChunks }, (_, i) => sseChunk(i)), sseTail(slowChunks)];

const jsonHeaders = { 'content-type': 'application/json', 'content-length': String(completion.length) };
const sseHeaders = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' };
const streamMarker = Buffer.from('"stream":true');
const slowMarker = Buffer.from('"bench_slow":true');

function sendStream(res: ServerResponse, chunks: readonly Buffer[], intervalMs: number): void {
  res.writeHead(200, sseHeaders);
  let next = 0;
  let timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  const step = () => {
    if (res.destroyed) return;
    const chunk = chunks[next++]!;
    if (next === chunks.length) return void res.end(chunk);
    res.write(chunk);
    timer = intervalMs > 0 ? setTimeout(step, intervalMs) : setImmediate(step);
  };
  res.once('close', () => {
    clearTimeout(timer as NodeJS.Timeout);
    clearImmediate(timer as NodeJS.Immediate);
  });
  step();
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'GET') {
    if (req.url?.endsWith('/models')) res.writeHead(200, { 'content-type': 'application/json' }).end(models);
    else res.writeHead(404).end();
    return;
  }
  const parts: Buffer[] = [];
  req.on('data', (chunk: Buffer) => parts.push(chunk));
  req.on('end', () => {
    const body = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    if (!body.includes(streamMarker)) return void res.writeHead(200, jsonHeaders).end(completion);
    if (body.includes(slowMarker)) sendStream(res, slowStream, slowIntervalMs);
    else sendStream(res, fastStream, 0);
  });
}

const server = createServer({ keepAliveTimeout: 120_000 }, handle);
// A deep backlog: the many-streams run opens 2,000 connections within a second.
server.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1', backlog: 4096 }, () => {
  const address = server.address();
  process.stdout.write(`listening ${typeof address === 'object' && address ? address.port : ''}\n`);
});
process.once('SIGTERM', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
