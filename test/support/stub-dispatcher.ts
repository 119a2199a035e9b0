import type { IncomingHttpHeaders } from 'node:http';
import type { Dispatcher } from 'undici';
import type { ClientConnection } from '../../src/upstream/send-attempt.js';

/**
 * The controller undici hands a dispatch handler, recording what the handler asks of it. As
 * undici's HTTP/1 client does, `abort` ends the request at once with `onResponseError(reason)`
 * unless the request already ended.
 */
export class StubController implements Dispatcher.DispatchController {
  paused = false;
  aborted = false;
  reason: Error | null = null;
  /** Every pause, resume and abort, in order. */
  readonly calls: Array<'pause' | 'resume' | 'abort'> = [];
  readonly #onAbort: (reason: Error) => void;

  constructor(onAbort: (reason: Error) => void) {
    this.#onAbort = onAbort;
  }

  pause(): void {
    this.calls.push('pause');
    this.paused = true;
  }

  resume(): void {
    this.calls.push('resume');
    this.paused = false;
  }

  abort(reason: Error): void {
    if (this.aborted) return;
    this.calls.push('abort');
    this.aborted = true;
    this.reason = reason;
    this.#onAbort(reason);
  }
}

/** One dispatched request: the options it was sent with, and the calls undici would make on its handler. */
export class StubRequest {
  readonly controller: StubController;
  /** True once the response ended or failed: undici calls nothing on the handler after that. */
  ended = false;

  constructor(
    readonly options: Dispatcher.DispatchOptions,
    readonly handler: Dispatcher.DispatchHandler,
  ) {
    this.controller = new StubController((reason) => this.fail(reason));
  }

  /** The request body as text. */
  get body(): string {
    const body = this.options.body;
    return Buffer.isBuffer(body) ? body.toString() : String(body ?? '');
  }

  /** A connection was found and the request sent. */
  start(): this {
    this.handler.onRequestStart?.(this.controller, {});
    return this;
  }

  respond(status: number, headers: IncomingHttpHeaders = {}): this {
    this.handler.onResponseStart?.(this.controller, status, headers);
    return this;
  }

  data(chunk: string | Buffer): this {
    this.handler.onResponseData?.(this.controller, Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
    return this;
  }

  end(): this {
    if (this.ended) return this;
    this.ended = true;
    this.handler.onResponseEnd?.(this.controller, {});
    return this;
  }

  /** The connection failed or broke; also what an abort ends in. */
  fail(error: Error): this {
    if (this.ended) return this;
    this.ended = true;
    this.handler.onResponseError?.(this.controller, error);
    return this;
  }

  /** start, respond, one body chunk (when non-empty), end. */
  answer(status: number, body = '', headers: IncomingHttpHeaders = {}): this {
    this.start().respond(status, { 'content-length': String(Buffer.byteLength(body)), ...headers });
    if (body !== '') this.data(body);
    return this.end();
  }
}

/** What a stub dispatcher does with a request it receives; it may drive it at once or later. */
export type StubScript = (request: StubRequest) => void;

/**
 * A `Dispatcher` whose `dispatch(options, handler)` records the request and runs the next
 * scripted answer on it (or `fallback`), so a test drives the handler itself, as undici's own
 * handler tests do. Scripts run on a later macrotask, as answers from a socket would.
 */
export class StubDispatcher {
  readonly requests: StubRequest[] = [];
  readonly #scripts: StubScript[] = [];
  readonly #fallback: StubScript | undefined;

  constructor(fallback?: StubScript) {
    this.#fallback = fallback;
  }

  /** Answers for the next requests, in order. */
  script(...scripts: StubScript[]): this {
    this.#scripts.push(...scripts);
    return this;
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const request = new StubRequest(options, handler);
    this.requests.push(request);
    const script = this.#scripts.shift() ?? this.#fallback;
    if (script) setImmediate(() => script(request));
    return true;
  }

  asDispatcher(): Dispatcher {
    return this as unknown as Dispatcher;
  }
}

/** A client connection the test can close. */
export class StubClient implements ClientConnection {
  gone = false;
  readonly #listeners = new Set<() => void>();
  readonly #controller = new AbortController();

  get clientSignal(): AbortSignal {
    return this.#controller.signal;
  }

  onGone(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** How many listeners are subscribed: an attempt that finished has unsubscribed. */
  get listening(): number {
    return this.#listeners.size;
  }

  leave(): void {
    this.gone = true;
    this.#controller.abort();
    for (const listener of [...this.#listeners]) listener();
  }
}
