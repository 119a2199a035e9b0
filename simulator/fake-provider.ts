import http from 'node:http';
import { once } from 'node:events';
import { setTimeout as sleepTimer } from 'node:timers/promises';
import type { Socket } from 'node:net';
import { canStream, formModel, jsonAnswer, simulatedPaths, streamEvents, type SimulatedEndpoint, type Usage } from './protocol-answers.js';

/**
 * What the fake answers to one dispatch request (a POST to any model-routed path, in that path's
 * protocol). Every delay is cut short when the client goes away or the fake is stopped.
 */
export type Reply =
  | {
      kind: 'ok';
      /** Wait this long before sending the status line. */
      delayMs?: number;
      /** Assistant text; streamed as one chunk per word. Default `hello from <name>`. */
      content?: string;
      /** Default `{ prompt_tokens: 7, completion_tokens: <number of chunks> }`; null omits it. */
      usage?: { prompt_tokens: number; completion_tokens: number } | null;
      headers?: Record<string, string>;
    }
  | {
      kind: 'status';
      status: number;
      /** A string is sent as text/plain, an object as JSON. Default: an OpenAI-shaped error. */
      body?: string | object;
      headers?: Record<string, string>;
      delayMs?: number;
    }
  /** Destroys the socket as soon as the request body has arrived (the client sees ECONNRESET or "other side closed"). */
  | { kind: 'reset' }
  /** Never answers, until the client aborts or the fake is stopped. */
  | { kind: 'hang' }
  /** Same as `ok`, with the status line sent after `delayMs`. */
  | { kind: 'slowHeaders'; delayMs: number }
  /** Sends 200 and the headers (SSE or JSON, per the request), then destroys the socket before any body byte. */
  | { kind: 'closeBeforeFirstChunk' }
  /** Sends 200, its whole length and half of a JSON answer, then destroys the socket (a host dying mid-answer). */
  | { kind: 'breakMidBody' }
  | {
      kind: 'stream';
      /** Content chunks, each with delta content `tok<i> ` (i from 0). */
      chunks: number;
      /** Pause before each chunk after the first. */
      chunkDelayMs?: number;
      /** Pause before the first chunk; the status line and headers are sent at once. */
      firstChunkDelayMs?: number;
      /** Destroy the socket after this many content chunks. */
      breakAfter?: number;
      /** With `breakAfter`: send the first half of the next event's bytes before the break (an upstream dying mid-write). */
      breakMidEvent?: boolean;
      /** Pad each content chunk's text to at least this many bytes (to fill socket buffers quickly). */
      chunkBytes?: number;
      /** Chat: the first chunk starts a tool call (a `tool_calls` delta) instead of text. */
      toolCallFirst?: boolean;
      /** Stop sending after this many content chunks but keep the socket open. */
      stallAfter?: number;
      /** Sent in the final chunk; default `{ prompt_tokens: 7, completion_tokens: chunks }`; null omits it. */
      usage?: { prompt_tokens: number; completion_tokens: number } | null;
    };

/** One request as the fake saw it. */
export interface ReceivedRequest {
  method: string;
  /** URL path without the query string. */
  path: string;
  headers: http.IncomingHttpHeaders;
  /** Parsed JSON when the body is JSON, else the raw text; undefined when there was no body. */
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- tests read arbitrary fields of the bodies they sent
  /** The body's bytes as received; undefined when there was no body. */
  rawBody: Buffer | undefined;
  /** True when the client closed or aborted before the response finished (not when the fake itself cut it). */
  aborted: boolean;
  /** Date.now() when the request arrived. */
  receivedAt: number;
  /** Date.now() when the exchange ended, whoever ended it. */
  closedAt?: number;
  /** Response body bytes written so far. */
  bytesWritten: number;
  /** The client's port: two requests with the same one came over the same keep-alive connection. */
  remotePort: number | undefined;
}

export interface FakeProviderOptions {
  /** Default 'openai'. 'llama-swap' adds /running, /upstream/<model>/... and model swapping. */
  type?: 'llama-swap' | 'openai';
  /** Served models, as listed by /v1/models. Default ['m1']. */
  models?: string[];
  /** llama-swap: models loaded at start (listed by /running). Default none. */
  loaded?: string[];
  /** llama-swap: extra delay of a request whose model is not loaded; that model then becomes the only loaded one. */
  swapDelayMs?: number;
  /** n_ctx per model, reported by /upstream/<model>/props and in /v1/models `meta`. Default 4096. */
  contextSize?: Record<string, number>;
  /** Shown in default contents and error messages, and sent as `x-fake-provider`. Default 'fake'. */
  name?: string;
  /** Port to listen on; default 0 (a free one). */
  port?: number;
  /** When set, every request must carry `Authorization: Bearer <apiKey>`; others get 401 (as llama-swap's apiKeys). */
  apiKey?: string;
  /** Address to listen on; default 127.0.0.1 (0.0.0.0 in containers). */
  host?: string;
  /**
   * Chooses the reply of a dispatch request when the script queue is empty; returning undefined
   * falls back to `defaultReply`. For randomised fleets such as the demo's flaky provider.
   */
  pickReply?: (request: ReceivedRequest) => Reply | undefined;
}

/** A scripted OpenAI-compatible (or llama-swap) server on 127.0.0.1. */
export interface FakeProvider {
  /** `http://127.0.0.1:PORT`, without a trailing slash and without /v1. */
  readonly url: string;
  readonly port: number;
  /** Every request in arrival order, including /running, /v1/models, /health and /upstream/... */
  readonly received: ReceivedRequest[];
  /** Queues replies for the next dispatch requests, in order; when the queue is empty `defaultReply` is used. */
  script(...replies: Reply[]): void;
  /** Initially `{ kind: 'ok' }`. */
  defaultReply: Reply;
  /** Only the dispatch requests (POSTs to a model-routed path). */
  dispatched(): ReceivedRequest[];
  setLoaded(models: string[]): void;
  /** llama-swap: models swapped in so far (requests of any kind for a model that was not loaded). */
  readonly swaps: number;
  /** Stops listening and destroys every open socket: connections are refused afterwards, like a dead host. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
  /** Alias of stop, for afterAll. */
  close(): Promise<void>;
  /** Resolves when request `index` of `received` has ended (closed by either side); rejects after timeoutMs. */
  waitForClose(index: number, timeoutMs: number): Promise<ReceivedRequest>;
}

/** Per-exchange state shared by the reply writers. */
interface Exchange {
  readonly req: http.IncomingMessage;
  readonly res: http.ServerResponse;
  readonly record: ReceivedRequest;
  /** Aborted when the response closes, so every pending delay ends with it. */
  readonly signal: AbortSignal;
  /** Set when the fake itself destroys the socket, so that is not reported as a client abort. */
  cutByServer: boolean;
}

/** Resolves true after ms, or false as soon as the signal aborts. */
async function sleep(ms: number | undefined, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  if (!ms || ms <= 0) return true;
  try {
    await sleepTimer(ms, undefined, { signal });
    return true;
  } catch (err: unknown) {
    if (err instanceof Error && err.name === 'AbortError') return false;
    throw err;
  }
}

function errorBody(message: string, type: string, code: string | null): object {
  return { error: { message, type, param: null, code } };
}

/** Starts a fake provider on 127.0.0.1 (port 0 unless `options.port`). Close it with `close()`. */
export async function startFakeProvider(options: FakeProviderOptions = {}): Promise<FakeProvider> {
  const type = options.type ?? 'openai';
  const name = options.name ?? 'fake';
  const models = options.models ?? ['m1'];
  const contextSize = options.contextSize ?? {};
  let loaded = [...(options.loaded ?? [])];
  let swaps = 0;
  let idCounter = 0;
  const queue: Reply[] = [];
  const received: ReceivedRequest[] = [];
  const closeListeners = new Set<() => void>();
  const created = Math.floor(Date.now() / 1000);

  const nCtx = (model: string): number => contextSize[model] ?? 4096;

  /** llama-swap loads the model a request names, evicting the others (one swap group). */
  async function ensureLoaded(model: string, exchange: Exchange): Promise<boolean> {
    if (type !== 'llama-swap' || loaded.includes(model)) return true;
    swaps += 1;
    const completed = await sleep(options.swapDelayMs, exchange.signal);
    if (completed) loaded = [model];
    return completed;
  }

  function write(exchange: Exchange, chunk: string): boolean {
    exchange.record.bytesWritten += Buffer.byteLength(chunk);
    return exchange.res.write(chunk);
  }

  /** Honours backpressure: resolves when the socket drained, or when the exchange ended. */
  async function drained(exchange: Exchange): Promise<void> {
    if (exchange.signal.aborted || !exchange.res.writableNeedDrain) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        exchange.res.off('drain', done);
        exchange.signal.removeEventListener('abort', done);
        resolve();
      };
      exchange.res.on('drain', done);
      exchange.signal.addEventListener('abort', done);
    });
  }

  /** Destroys the socket once what was written has left the process, so the client sees those bytes and then the break. */
  async function cut(exchange: Exchange): Promise<void> {
    exchange.cutByServer = true;
    const socket = exchange.req.socket;
    const deadline = Date.now() + 1_000;
    while (socket.writableLength > 0 && !socket.destroyed && Date.now() < deadline) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    socket.destroy();
  }

  function sendJson(exchange: Exchange, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    exchange.record.bytesWritten += Buffer.byteLength(text);
    exchange.res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': String(Buffer.byteLength(text)),
      ...headers,
    });
    exchange.res.end(text);
  }

  function sendText(exchange: Exchange, status: number, text: string, headers: Record<string, string> = {}): void {
    exchange.record.bytesWritten += Buffer.byteLength(text);
    exchange.res.writeHead(status, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': String(Buffer.byteLength(text)),
      ...headers,
    });
    exchange.res.end(text);
  }

  function startSse(exchange: Exchange, headers: Record<string, string> = {}): void {
    exchange.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...headers });
    exchange.res.flushHeaders();
  }

  /** Streams `pieces` as SSE; returns when done, cut, stalled, or the client left. */
  async function streamPieces(
    exchange: Exchange,
    endpoint: SimulatedEndpoint,
    model: string,
    pieces: readonly string[],
    plan: {
      firstChunkDelayMs?: number | undefined;
      chunkDelayMs?: number | undefined;
      breakAfter?: number | undefined;
      breakMidEvent?: boolean | undefined;
      toolCallFirst?: boolean | undefined;
      stallAfter?: number | undefined;
      usage: Usage | null;
      headers?: Record<string, string> | undefined;
    },
  ): Promise<void> {
    const events = streamEvents(endpoint, `${name}-${++idCounter}`, model, created);
    startSse(exchange, plan.headers);
    for (let i = 0; i < pieces.length; i += 1) {
      if (plan.breakAfter === i) {
        if (plan.breakMidEvent) {
          const event = events.piece(pieces[i] ?? '', i);
          write(exchange, event.slice(0, Math.floor(event.length / 2)));
        }
        return cut(exchange);
      }
      if (plan.stallAfter === i) return;
      if (!(await sleep(i === 0 ? plan.firstChunkDelayMs : plan.chunkDelayMs, exchange.signal))) return;
      const piece = i === 0 && plan.toolCallFirst ? events.toolCall() : events.piece(pieces[i] ?? '', i);
      write(exchange, (i === 0 ? events.start() : '') + piece);
      await drained(exchange);
      if (exchange.signal.aborted) return;
    }
    if (plan.breakAfter !== undefined && plan.breakAfter >= pieces.length) return cut(exchange);
    if (plan.stallAfter !== undefined && plan.stallAfter >= pieces.length) return;
    write(exchange, events.end(pieces.join(''), plan.usage));
    exchange.res.end();
  }

  async function answerDispatch(exchange: Exchange, endpoint: SimulatedEndpoint, model: string, reply: Reply): Promise<void> {
    const body = typeof exchange.record.body === 'object' && exchange.record.body !== null ? (exchange.record.body as Record<string, unknown>) : undefined;
    const isStream = body?.stream === true && canStream(endpoint);
    switch (reply.kind) {
      case 'reset':
        exchange.cutByServer = true;
        exchange.req.socket.destroy();
        return;
      case 'hang':
        return;
      case 'status': {
        if (!(await sleep(reply.delayMs, exchange.signal))) return;
        const responseBody =
          reply.body ??
          errorBody(
            `${name}: scripted status ${reply.status}`,
            reply.status === 429 ? 'rate_limit_error' : reply.status >= 500 ? 'server_error' : 'invalid_request_error',
            null,
          );
        if (typeof responseBody === 'string') sendText(exchange, reply.status, responseBody, reply.headers);
        else sendJson(exchange, reply.status, responseBody, reply.headers);
        return;
      }
      case 'breakMidBody': {
        const answer = jsonAnswer(endpoint, { id: `${name}-${++idCounter}`, model, created, content: `hello from ${name}`, usage: null, body, name });
        const text = Buffer.from(answer.body);
        exchange.res.writeHead(200, { 'content-type': answer.contentType, 'content-length': String(text.length) });
        write(exchange, text.subarray(0, Math.floor(text.length / 2)).toString('latin1'));
        return cut(exchange);
      }
      case 'closeBeforeFirstChunk':
        if (isStream) startSse(exchange);
        else {
          exchange.res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': '256' });
          exchange.res.flushHeaders();
        }
        return cut(exchange);
      case 'stream':
        return streamPieces(
          exchange,
          endpoint,
          model,
          Array.from({ length: reply.chunks }, (_, i) => `tok${i} `.padEnd(reply.chunkBytes ?? 0, '.')),
          {
            firstChunkDelayMs: reply.firstChunkDelayMs,
            chunkDelayMs: reply.chunkDelayMs,
            breakAfter: reply.breakAfter,
            breakMidEvent: reply.breakMidEvent,
            toolCallFirst: reply.toolCallFirst,
            stallAfter: reply.stallAfter,
            usage: reply.usage === undefined ? { prompt_tokens: 7, completion_tokens: reply.chunks } : reply.usage,
          },
        );
      case 'ok':
      case 'slowHeaders': {
        const ok = reply.kind === 'ok' ? reply : { kind: 'ok' as const, delayMs: reply.delayMs };
        if (!(await sleep(ok.delayMs, exchange.signal))) return;
        const content = ok.content ?? `hello from ${name}`;
        const pieces = content.match(/\S+\s*|\s+/g) ?? [''];
        const usage = ok.usage === undefined ? { prompt_tokens: 7, completion_tokens: pieces.length } : ok.usage;
        const headers = { 'x-fake-provider': name, ...ok.headers };
        if (isStream) return streamPieces(exchange, endpoint, model, pieces, { usage, headers });
        const answer = jsonAnswer(endpoint, { id: `${name}-${++idCounter}`, model, created, content, usage, body, name });
        exchange.record.bytesWritten += answer.body.length;
        exchange.res.writeHead(200, { 'content-type': answer.contentType, 'content-length': String(Buffer.byteLength(answer.body)), ...headers });
        exchange.res.end(answer.body);
        return;
      }
    }
  }

  function propsBody(model: string): object {
    return {
      default_generation_settings: {
        id: 0,
        id_task: -1,
        n_ctx: nCtx(model),
        speculative: false,
        is_processing: false,
        params: { n_predict: -1, temperature: 0.8, top_k: 40, top_p: 0.95, stream: true },
      },
      total_slots: 1,
      model_path: `/models/${model}.gguf`,
      chat_template: '{{ messages }}',
      modalities: { vision: false, audio: false },
      build_info: 'b0000-fake',
    };
  }

  /** llama-swap's /upstream/<model>/<rest>: the longest-prefix match of path segments against known models. */
  async function answerUpstream(exchange: Exchange, upstreamPath: string): Promise<void> {
    const segments = upstreamPath.split('/');
    let found: { model: string; rest: string } | undefined;
    for (let i = 0; i < segments.length; i += 1) {
      const candidate = segments.slice(0, i + 1).join('/');
      if (models.includes(candidate)) found = { model: candidate, rest: '/' + segments.slice(i + 1).join('/') };
      if (found) break;
    }
    if (!found) return sendText(exchange, 400, 'model id required in path');
    if (!(await ensureLoaded(found.model, exchange))) return;
    if (found.rest === '/props') return sendJson(exchange, 200, propsBody(found.model));
    if (found.rest === '/health') return sendJson(exchange, 200, { status: 'ok' });
    if (found.rest === '/v1/models') return sendJson(exchange, 200, modelsBody([found.model]));
    return sendText(exchange, 404, 'File Not Found');
  }

  function modelsBody(ids: readonly string[]): object {
    return {
      object: 'list',
      data: ids.map((id) => ({
        id,
        object: 'model',
        created,
        owned_by: type === 'llama-swap' ? 'llama-swap' : name,
        ...(contextSize[id] !== undefined ? { meta: { n_ctx_train: contextSize[id], n_ctx: contextSize[id] } } : {}),
      })),
    };
  }

  async function readBody(req: http.IncomingMessage, record: ReceivedRequest): Promise<void> {
    const parts: Buffer[] = [];
    for await (const part of req) parts.push(part as Buffer);
    if (parts.length === 0) return;
    record.rawBody = Buffer.concat(parts);
    const text = record.rawBody.toString('utf8');
    try {
      record.body = JSON.parse(text) as unknown;
    } catch {
      record.body = text;
    }
  }

  async function handle(exchange: Exchange): Promise<void> {
    const { req, record } = exchange;
    await readBody(req, record);
    const { method, path } = record;
    if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
      return sendJson(exchange, 401, errorBody('Invalid API key', 'authentication_error', 'invalid_api_key'));
    }

    const endpoint = method === 'POST' ? simulatedPaths[path] : undefined;
    if (endpoint) {
      const model =
        endpoint === 'transcriptions' || endpoint === 'translations'
          ? formModel(record.rawBody ?? Buffer.alloc(0), req.headers['content-type'])
          : typeof record.body?.model === 'string'
            ? (record.body.model as string)
            : undefined;
      if (model === undefined) {
        return sendJson(exchange, 400, errorBody("missing or invalid 'model' key", 'invalid_request_error', null));
      }
      if (!models.includes(model)) {
        return sendJson(exchange, 404, errorBody(`The model \`${model}\` does not exist`, 'invalid_request_error', 'model_not_found'));
      }
      const reply = queue.shift() ?? options.pickReply?.(record) ?? fake.defaultReply;
      if (!(await ensureLoaded(model, exchange))) return;
      return answerDispatch(exchange, endpoint, model, reply);
    }
    if (method === 'GET' && path === '/health') return sendText(exchange, 200, 'OK');
    if (method === 'GET' && path === '/v1/models') return sendJson(exchange, 200, modelsBody(models));
    if (type === 'llama-swap') {
      // Field set of llama-swap's listRunningProcessesHandler: only processes in state "ready" are listed.
      if (method === 'GET' && path === '/running') {
        return sendJson(exchange, 200, {
          running: loaded.map((model) => ({
            model,
            state: 'ready',
            cmd: `llama-server --model /models/${model}.gguf`,
            proxy: 'http://127.0.0.1:9999',
            ttl: 0,
            name: '',
            description: '',
          })),
        });
      }
      if (path.startsWith('/upstream/')) {
        let upstreamPath: string;
        try {
          upstreamPath = decodeURIComponent(path.slice('/upstream/'.length));
        } catch {
          return sendText(exchange, 400, 'bad path encoding');
        }
        return answerUpstream(exchange, upstreamPath);
      }
    }
    return sendText(exchange, 404, '404 page not found');
  }

  const server = http.createServer((req, res) => {
    const controller = new AbortController();
    const record: ReceivedRequest = {
      method: req.method ?? 'GET',
      path: new URL(req.url ?? '/', 'http://fake').pathname,
      headers: req.headers,
      body: undefined,
      rawBody: undefined,
      aborted: false,
      receivedAt: Date.now(),
      bytesWritten: 0,
      remotePort: req.socket.remotePort,
    };
    received.push(record);
    const exchange: Exchange = { req, res, record, signal: controller.signal, cutByServer: false };
    res.on('close', () => {
      record.closedAt = Date.now();
      record.aborted = !res.writableFinished && !exchange.cutByServer && !stopping;
      controller.abort();
      for (const listener of closeListeners) listener();
    });
    handle(exchange).catch((err: unknown) => {
      // A bug in the fake must surface in the test that hit it, not vanish.
      process.stderr.write(`fake provider ${name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      exchange.cutByServer = true;
      req.socket.destroy();
    });
  });
  // Tests stop fakes with requests in flight; never keep the process alive for a socket.
  server.on('connection', (socket: Socket) => socket.unref());

  let stopping = false;
  let listening = false;
  let port = options.port ?? 0;

  async function listen(): Promise<void> {
    server.listen(port, options.host ?? '127.0.0.1');
    await once(server, 'listening');
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('fake provider: no TCP address');
    port = address.port;
    listening = true;
    stopping = false;
  }

  const fake: FakeProvider = {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    received,
    defaultReply: { kind: 'ok' },
    script(...replies: Reply[]) {
      queue.push(...replies);
    },
    dispatched() {
      return received.filter((r) => r.method === 'POST' && Object.hasOwn(simulatedPaths, r.path));
    },
    setLoaded(next: string[]) {
      loaded = [...next];
    },
    get swaps() {
      return swaps;
    },
    async stop() {
      if (!listening) return;
      listening = false;
      stopping = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
    start: listen,
    close() {
      return fake.stop();
    },
    waitForClose(index: number, timeoutMs: number) {
      return new Promise<ReceivedRequest>((resolve, reject) => {
        const check = (): void => {
          const record = received[index];
          if (record?.closedAt !== undefined) {
            cleanup();
            resolve(record);
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`fake provider ${name}: request ${index} not closed within ${timeoutMs} ms`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          closeListeners.delete(check);
        };
        closeListeners.add(check);
        check();
      });
    },
  };

  await listen();
  return fake;
}

/**
 * Starts one fake provider per entry (named after its key unless `name` is given).
 * @example const fleet = await startFakeFleet({ a: { type: 'llama-swap' }, b: {} }); fleet.a.url; await fleet.closeAll();
 */
export async function startFakeFleet<K extends string>(
  specs: Record<K, FakeProviderOptions>,
): Promise<Record<K, FakeProvider> & { closeAll(): Promise<void> }> {
  const entries = Object.entries(specs) as [K, FakeProviderOptions][];
  const started = await Promise.allSettled(entries.map(([key, spec]) => startFakeProvider({ name: key, ...spec })));
  const providers = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const closeAll = async (): Promise<void> => {
    await Promise.all(providers.map((provider) => provider.close()));
  };
  const failure = started.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (failure) {
    await closeAll();
    throw failure.reason;
  }
  const fleet = {} as Record<K, FakeProvider>;
  entries.forEach(([key], index) => {
    fleet[key] = providers[index]!;
  });
  return Object.assign(fleet, { closeAll });
}
