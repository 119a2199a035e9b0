import { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Readable, Writable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { Timeouts } from '../config/schema.js';
import type { AttemptOutcome } from '../events/dispatch-event.js';
import type { BreakerVerdict } from '../breakers/breaker-registry.js';

/** Statuses that say "another candidate may do better" (SPEC §5); every other 4xx is the client's. */
export function isFailoverStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 409 || status === 429 || status === 404;
}

/** An attempt that failed before its first body byte: the dispatcher fails over. */
export class AttemptFailedError extends Error implements BreakerVerdict {
  readonly outcome: AttemptOutcome;
  readonly httpStatus: number | null;
  readonly countsAsBreakerFailure: boolean;
  /** Epoch ms from an upstream Retry-After, when present. */
  readonly retryAfterUntil: number | undefined;

  constructor(outcome: AttemptOutcome, message: string, options: { httpStatus?: number; retryAfterUntil?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AttemptFailedError';
    this.outcome = outcome;
    this.httpStatus = options.httpStatus ?? null;
    this.retryAfterUntil = options.retryAfterUntil;
    // A 429 is the upstream protecting itself, and a client that left says nothing of the upstream.
    this.countsAsBreakerFailure = outcome !== 'client_closed' && this.httpStatus !== 429;
  }
}

/** An upstream answer that reached its first body byte (or ended cleanly without one). */
export interface CommittableResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** The first body chunk; null for an empty body. */
  readonly firstChunk: Buffer | null;
  /** ms from sending to the first byte. */
  readonly ttfbMs: number;
  /** performance.now() when the first byte arrived. */
  readonly firstByteAt: number;
  /** Why the upstream request was aborted (idle, total, client closed); undefined while it was not. */
  abortReason(): unknown;
  /**
   * Relays the rest of the body into `out` with backpressure (the upstream is paused while `out`
   * is full), passing each chunk to `observe` first and re-arming the idle timer on every chunk
   * and every drain. Resolves at the body's end; rejects when the upstream breaks or is aborted.
   */
  relayRest(out: Writable, observe: (chunk: Buffer) => void): Promise<void>;
  /** Aborts the upstream request; safe to call at any time. */
  abort(reason: Error): void;
  /** Clears the timers; call when the relay ends. */
  finish(): void;
}

/** Tells the attempt that the client went away; the consumer declares it, the HTTP layer implements it. */
export interface ClientConnection {
  /** True once the client closed before its response finished. */
  readonly gone: boolean;
  /** Calls `listener` when the client goes; returns the unsubscribe function. */
  onGone(listener: () => void): () => void;
}

export interface AttemptRequest {
  readonly pool: Dispatcher;
  readonly path: string;
  readonly method: 'GET' | 'POST';
  readonly headers: OutgoingHttpHeaders;
  readonly body: Buffer | undefined;
  readonly timeouts: Timeouts;
  readonly client: ClientConnection;
  readonly now: () => number;
}

/**
 * The abort signal undici gets for one attempt: an EventEmitter, which undici accepts in place
 * of an AbortSignal. An AbortController costs an EventTarget and its listener bookkeeping on
 * every attempt; nothing but undici listens here.
 */
class AttemptAbort extends EventEmitter {
  aborted = false;
  reason: unknown = undefined;

  abort(reason: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.emit('abort');
  }
}

export class IdleTimeoutError extends Error {
  constructor(ms: number) {
    super(`upstream sent nothing for ${ms} ms`);
    this.name = 'IdleTimeoutError';
  }
}

export class TotalTimeoutError extends Error {
  constructor(ms: number) {
    super(`upstream request exceeded ${ms} ms`);
    this.name = 'TotalTimeoutError';
  }
}

class FirstByteTimeoutError extends Error {
  constructor(ms: number) {
    super(`no first byte within ${ms} ms`);
    this.name = 'FirstByteTimeoutError';
  }
}

export class ClientClosedError extends Error {
  constructor() {
    super('client closed the connection');
    this.name = 'ClientClosedError';
  }
}

function parseRetryAfter(value: string | string[] | undefined, now: number): number | undefined {
  if (typeof value !== 'string') return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return now + Math.min(seconds, 3600) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.min(date, now + 3_600_000);
}

/** A one-line description of an error, with its code when it has one. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code ? `${code}: ${error.message}` : error.message;
  }
  return String(error);
}

function classifyTransportError(error: unknown, signal: AttemptAbort): AttemptFailedError {
  const reason: unknown = signal.reason;
  if (signal.aborted && reason instanceof ClientClosedError) return new AttemptFailedError('client_closed', reason.message);
  if (signal.aborted && (reason instanceof FirstByteTimeoutError || reason instanceof TotalTimeoutError)) {
    return new AttemptFailedError('timeout', reason.message);
  }
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new AttemptFailedError('timeout', describeError(error), { cause: error });
  }
  return new AttemptFailedError('connect_error', describeError(error), { cause: error });
}

/**
 * Sends one upstream request and waits for its first body byte: the last moment at which the
 * dispatcher can still fail over. Resolves with the answer ready to relay (a 2xx/3xx, or a 4xx
 * that belongs to the client). Rejects with {@link AttemptFailedError} for every failover trigger
 * of SPEC §5, after releasing the connection.
 */
export async function sendAttempt(request: AttemptRequest): Promise<CommittableResponse> {
  const { timeouts, now } = request;
  if (request.client.gone) throw new AttemptFailedError('client_closed', 'client closed the connection');
  const signal = new AttemptAbort();
  const startedAt = now();
  const unsubscribe = request.client.onGone(() => signal.abort(new ClientClosedError()));
  const clock = new AttemptClock(signal, timeouts);
  const release = () => {
    clock.stop();
    unsubscribe();
  };

  let response: Dispatcher.ResponseData;
  try {
    response = await request.pool.request({
      path: request.path,
      method: request.method,
      headers: request.headers as Record<string, string>,
      body: request.body ?? null,
      signal,
      // Our own timer owns the first byte and idle budgets: undici's would race it.
      headersTimeout: 0,
      bodyTimeout: 0,
    });
  } catch (err: unknown) {
    release();
    throw classifyTransportError(err, signal);
  }

  const { statusCode: status, headers, body } = response;
  if (isFailoverStatus(status)) {
    release();
    body.dump().catch(() => {
      /* the connection is released either way; nothing to report for a discarded error body */
    });
    const retryAfterUntil = status === 429 ? parseRetryAfter(headers['retry-after'], now()) : undefined;
    throw new AttemptFailedError(status >= 500 ? 'http_5xx' : 'http_retryable', `upstream answered ${status}`, {
      httpStatus: status,
      ...(retryAfterUntil === undefined ? {} : { retryAfterUntil }),
    });
  }

  // One error listener for the body's whole life: an 'error' with no listener would crash the process.
  let bodyError: unknown;
  let onBodyError: ((err: unknown) => void) | undefined;
  body.on('error', (err: unknown) => {
    bodyError ??= err;
    onBodyError?.(err);
  });
  let firstChunk: Buffer | null;
  try {
    firstChunk = await readFirstChunk(body, (listener) => (onBodyError = listener));
  } catch (err: unknown) {
    release();
    const failure = classifyTransportError(err, signal);
    if (failure.outcome === 'connect_error') {
      throw new AttemptFailedError('broken_before_first_byte', `upstream body broke before the first byte: ${describeError(err)}`, {
        httpStatus: status,
        cause: err,
      });
    }
    throw failure;
  }

  const firstByteAt = performance.now();
  const ttfbMs = now() - startedAt;
  clock.firstByte(firstByteAt);
  return {
    status,
    headers,
    firstChunk,
    ttfbMs,
    firstByteAt,
    abortReason: () => signal.reason,
    relayRest: (out, observe) =>
      new Promise<void>((resolve, reject) => {
        if (bodyError !== undefined) return reject(bodyError);
        if (body.readableEnded) return resolve();
        const onData = (chunk: Buffer) => {
          clock.activity();
          observe(chunk);
          if (!out.write(chunk)) body.pause();
        };
        const onDrain = () => {
          // The idle timer does not run against a client that is slow to read.
          clock.activity();
          body.resume();
        };
        const settle = (err?: unknown) => {
          body.off('data', onData);
          body.off('end', settle);
          out.off('drain', onDrain);
          onBodyError = undefined;
          if (err === undefined) resolve();
          else reject(err);
        };
        onBodyError = settle;
        body.on('data', onData);
        body.once('end', settle);
        out.on('drain', onDrain);
        if (!out.writableNeedDrain) body.resume();
      }),
    abort: (reason) => signal.abort(reason),
    finish: release,
  };
}

/**
 * The three budgets of an attempt (first byte, idle between chunks, total) on one timer. The
 * timer is armed for the nearest budget that could run out and, when it fires, checks what did
 * run out against the clock and re-arms for the rest. A chunk only records the time: an
 * attempt shorter than its smallest budget (nearly all of them) costs one setTimeout and one
 * clearTimeout, not a timer per budget and a re-arm per chunk.
 */
class AttemptClock {
  private readonly signal: AttemptAbort;
  private readonly timeouts: Timeouts;
  private readonly startedAt = performance.now();
  /** performance.now() of the first byte, then of the last chunk or drain; undefined before the first byte. */
  private lastActivityAt: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(signal: AttemptAbort, timeouts: Timeouts) {
    this.signal = signal;
    this.timeouts = timeouts;
    this.timer = setTimeout(() => this.check(), Math.min(timeouts.firstByteMs, timeouts.idleMs, timeouts.totalMs));
  }

  firstByte(at: number): void {
    this.lastActivityAt = at;
  }

  activity(): void {
    this.lastActivityAt = performance.now();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private check(): void {
    if (this.timer === undefined) return;
    const { firstByteMs, idleMs, totalMs } = this.timeouts;
    const at = performance.now();
    const totalLeft = this.startedAt + totalMs - at;
    const phaseLeft = this.lastActivityAt === undefined ? this.startedAt + firstByteMs - at : this.lastActivityAt + idleMs - at;
    if (totalLeft <= 0) return this.expire(new TotalTimeoutError(totalMs));
    if (phaseLeft <= 0) return this.expire(this.lastActivityAt === undefined ? new FirstByteTimeoutError(firstByteMs) : new IdleTimeoutError(idleMs));
    // Before the first byte the idle budget is not running: the first-byte and total deadlines are.
    this.timer = setTimeout(() => this.check(), Math.ceil(Math.min(totalLeft, phaseLeft)));
  }

  private expire(reason: Error): void {
    this.timer = undefined;
    this.signal.abort(reason);
  }
}

/**
 * The first chunk of a body, leaving the stream paused after it (null when the body ended
 * empty). Event listeners rather than the async iterator: the iterator costs a promise and a
 * microtask per chunk.
 */
function readFirstChunk(body: Readable, onError: (listener: (err: unknown) => void) => void): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const settle = (chunk: Buffer | null, err?: unknown) => {
      body.off('data', onData);
      body.off('end', onEnded);
      onError(() => {});
      if (err !== undefined) reject(err);
      else resolve(chunk);
    };
    const onData = (chunk: Buffer) => {
      body.pause();
      settle(chunk);
    };
    const onEnded = () => settle(null);
    onError((err) => settle(null, err));
    body.on('data', onData);
    body.once('end', onEnded);
  });
}
