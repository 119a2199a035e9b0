import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Dispatcher } from 'undici';
import type { Timeouts } from '../config/schema.js';
import type { AttemptOutcome } from '../shared/dispatch-outcomes.js';
import { errorMessage } from '../shared/error-message.js';
import { FirstByteTimeoutError, TotalTimeoutError, AttemptClock } from './attempt-clock.js';

/**
 * Statuses that say "another candidate may do better"; every other 4xx is the client's. A 401
 * or 403 is the provider refusing the gateway's own key (the client's key never goes upstream):
 * a provider fault, never relayed, lest its text (a masked provider key) reach the client.
 */
export function isFailoverStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 409 || status === 429 || status === 404 || status === 401 || status === 403;
}

/** An attempt that failed before its first body byte: the dispatcher fails over. */
export class AttemptFailedError extends Error {
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

/**
 * Where a committed answer is relayed: the client's response, or something standing between
 * (a stream relayed event by event). `write` returns false while the client's buffer is full,
 * and `drain` says when it is not any more.
 */
export interface RelayTarget {
  write(chunk: Buffer): boolean;
  on(event: 'drain', listener: () => void): unknown;
  off(event: 'drain', listener: () => void): unknown;
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
  relayRest(out: RelayTarget, observe: (chunk: Buffer) => void): Promise<void>;
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
  /** Aborted when the client goes: what a slot or a place in line is tied to. */
  readonly clientSignal: AbortSignal;
}

export interface AttemptRequest {
  readonly pool: Dispatcher;
  readonly path: string;
  readonly method: 'GET' | 'POST';
  readonly headers: OutgoingHttpHeaders;
  readonly body: Buffer | undefined;
  readonly timeouts: Timeouts;
  /** How long the client may leave relayed bytes unread before the exchange is given up as its fault. */
  readonly clientWriteTimeoutMs: number;
  /**
   * An answer that is not a stream is held until its end, up to this many bytes, before the
   * commit: one that breaks before its end then fails over like one that broke before its first
   * byte. A longer one commits at this size and is relayed as it comes. 0: commit at the first byte.
   */
  readonly holdAnswerBytes: number;
  readonly client: ClientConnection;
  readonly now: () => number;
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

function classifyTransportError(error: unknown, reason: unknown): AttemptFailedError {
  if (reason instanceof ClientClosedError) return new AttemptFailedError('client_closed', reason.message);
  if (reason instanceof FirstByteTimeoutError || reason instanceof TotalTimeoutError) return new AttemptFailedError('timeout', reason.message);
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new AttemptFailedError('timeout', errorMessage(error), { cause: error });
  }
  return new AttemptFailedError('connect_error', errorMessage(error), { cause: error });
}

/** An error answer read to its end keeps its keep-alive connection; a longer one is not worth reading. */
const discardLimitBytes = 64 * 1024;

/**
 * Sends one upstream request and waits for its first body byte: the last moment at which the
 * dispatcher can still fail over. Resolves with the answer ready to relay (a 2xx/3xx, or a 4xx
 * that belongs to the client). Rejects with {@link AttemptFailedError} for every failover trigger
 * of SPEC §5.
 */
export function sendAttempt(request: AttemptRequest): Promise<CommittableResponse> {
  if (request.client.gone) return Promise.reject(new AttemptFailedError('client_closed', 'client closed the connection'));
  return new Promise((resolve, reject) => {
    const exchange = new UpstreamExchange(request, resolve, reject);
    try {
      request.pool.dispatch(
        {
          path: request.path,
          method: request.method,
          headers: request.headers as Record<string, string>,
          body: request.body ?? null,
          // Our own clock owns the first-byte and idle budgets: undici's would race it.
          headersTimeout: 0,
          bodyTimeout: 0,
        },
        exchange,
      );
    } catch (err: unknown) {
      exchange.onResponseError(undefined, err as Error);
    }
  });
}

/**
 * One upstream request as an undici dispatch handler: undici calls it straight from its parser,
 * with no response stream in between. A `Readable` per response (what `pool.request` hands out)
 * costs its construction, buffering, events and end-of-stream bookkeeping on every request,
 * and the relay needs none of it: a chunk goes to the client as it arrives, and backpressure is
 * the controller's pause and resume.
 *
 * Phases: `headers` (waiting for the status), `firstByte` (a relayable status, waiting for the
 * first body byte or the end), `committed` (resolved; chunks wait in `pending` until
 * {@link relayRest} gives them a destination), `discarding` (a failover status: rejected, the
 * error body read to its end so that the connection is kept), `done`.
 */
class UpstreamExchange implements Dispatcher.DispatchHandler, CommittableResponse {
  status = 0;
  headers: IncomingHttpHeaders = {};
  firstChunk: Buffer | null = null;
  ttfbMs = 0;
  firstByteAt = 0;

  private phase: 'headers' | 'firstByte' | 'committed' | 'discarding' | 'done' = 'headers';
  /** A whole answer being held before the commit (see `holdAnswerBytes`); undefined when not holding. */
  private held: Buffer[] | undefined;
  private heldBytes = 0;
  private controller: Dispatcher.DispatchController | undefined;
  private reason: Error | undefined;
  private readonly clock: AttemptClock;
  private readonly startedAt: number;
  private readonly unsubscribe: () => void;
  private discarded = 0;
  /** Committed, before the relay starts: chunks that arrived, and how the body ended (true, or its error). */
  private pending: Buffer[] | undefined;
  private ending: true | Error | undefined;
  private relay: { out: RelayTarget; observe: (chunk: Buffer) => void; resolve: () => void; reject: (err: unknown) => void } | undefined;

  constructor(
    private readonly request: AttemptRequest,
    private readonly resolveAttempt: (answer: CommittableResponse) => void,
    private readonly rejectAttempt: (failure: AttemptFailedError) => void,
  ) {
    this.startedAt = request.now();
    this.clock = new AttemptClock((reason) => this.abort(reason), request.timeouts, request.clientWriteTimeoutMs);
    this.unsubscribe = request.client.onGone(() => this.abort(new ClientClosedError()));
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.reason) controller.abort(this.reason);
  }

  onResponseStart(_controller: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    if (this.phase !== 'headers') return;
    this.status = status;
    this.headers = headers;
    if (!isFailoverStatus(status)) {
      this.phase = 'firstByte';
      if (this.request.holdAnswerBytes > 0 && !String(headers['content-type'] ?? '').startsWith('text/event-stream')) this.held = [];
      return;
    }
    this.phase = 'discarding';
    const retryAfterUntil = status === 429 ? parseRetryAfter(headers['retry-after'], this.request.now()) : undefined;
    this.rejectAttempt(
      new AttemptFailedError(status >= 500 ? 'http_5xx' : 'http_retryable', `upstream answered ${status}`, {
        httpStatus: status,
        ...(retryAfterUntil === undefined ? {} : { retryAfterUntil }),
      }),
    );
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    switch (this.phase) {
      case 'firstByte':
        if (this.held === undefined) return this.commit(chunk);
        if (this.heldBytes === 0) this.firstByteArrived();
        else this.clock.activity();
        this.held.push(chunk);
        this.heldBytes += chunk.length;
        // Too long to hold: committed here, the rest relayed as it comes.
        if (this.heldBytes > this.request.holdAnswerBytes) this.commit(this.takeHeld());
        return;
      case 'committed':
        this.clock.activity();
        if (this.relay) this.forward(chunk);
        else (this.pending ??= []).push(chunk);
        return;
      case 'discarding':
        this.discarded += chunk.length;
        if (this.discarded > discardLimitBytes) controller.abort(new Error('error body too long to read for keep-alive'));
        return;
      default:
    }
  }

  onResponseEnd(): void {
    switch (this.phase) {
      case 'firstByte':
        this.commit(this.held && this.heldBytes > 0 ? this.takeHeld() : null);
        this.end(true);
        return;
      case 'committed':
        this.end(true);
        return;
      case 'discarding':
        this.finish();
        return;
      default:
    }
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, error: Error): void {
    const phase = this.phase;
    if (phase === 'done') return;
    if (phase === 'committed') return this.end(error);
    this.finish();
    if (phase === 'headers') return this.rejectAttempt(classifyTransportError(error, this.reason));
    if (phase === 'firstByte') {
      const failure = classifyTransportError(error, this.reason);
      if (failure.outcome !== 'connect_error') return this.rejectAttempt(failure);
      const broken =
        this.heldBytes > 0
          ? (['broken_before_end', `after ${this.heldBytes} bytes`] as const)
          : (['broken_before_first_byte', 'before the first byte'] as const);
      this.held = undefined;
      this.rejectAttempt(
        new AttemptFailedError(broken[0], `upstream body broke ${broken[1]}: ${errorMessage(error)}`, { httpStatus: this.status, cause: error }),
      );
    }
  }

  abortReason(): unknown {
    return this.reason;
  }

  abort(reason: Error): void {
    if (this.reason || this.phase === 'done') return;
    this.reason = reason;
    if (this.controller) this.controller.abort(reason);
    // Still queued in the pool: undici aborts it when it gets a connection, the attempt fails now.
    else this.onResponseError(undefined, reason);
  }

  relayRest(out: RelayTarget, observe: (chunk: Buffer) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      this.relay = { out, observe, resolve, reject };
      const pending = this.pending;
      this.pending = undefined;
      if (pending) for (const chunk of pending) this.forward(chunk);
      if (this.ending !== undefined) return this.settleRelay();
      out.on('drain', this.onDrain);
    });
  }

  finish(): void {
    if (this.phase === 'done') return;
    this.phase = 'done';
    this.clock.stop();
    this.unsubscribe();
    this.relay?.out.off('drain', this.onDrain);
  }

  private commit(firstChunk: Buffer | null): void {
    this.phase = 'committed';
    this.firstChunk = firstChunk;
    if (this.heldBytes === 0) this.firstByteArrived();
    this.resolveAttempt(this);
  }

  /** The first body byte arrived: time to first byte, and the idle budget starts. */
  private firstByteArrived(): void {
    this.firstByteAt = performance.now();
    this.ttfbMs = this.request.now() - this.startedAt;
    this.clock.firstByte(this.firstByteAt);
  }

  private takeHeld(): Buffer {
    const held = this.held!;
    this.held = undefined;
    return held.length === 1 ? held[0]! : Buffer.concat(held, this.heldBytes);
  }

  private forward(chunk: Buffer): void {
    const { out, observe } = this.relay!;
    observe(chunk);
    if (!out.write(chunk)) {
      this.controller?.pause();
      this.clock.clientStalled();
    }
  }

  // The idle budget does not run against a client that is slow to read.
  private readonly onDrain = () => {
    this.clock.activity();
    this.controller?.resume();
  };

  private end(how: true | Error): void {
    this.ending ??= how;
    if (this.relay) this.settleRelay();
  }

  private settleRelay(): void {
    const { out, resolve, reject } = this.relay!;
    out.off('drain', this.onDrain);
    if (this.ending === true) resolve();
    else reject(this.ending);
  }
}
