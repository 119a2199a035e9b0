import { EventEmitter } from 'node:events';
import type { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { StubClient, StubDispatcher, type StubRequest } from '../../test/support/stub-dispatcher.js';
import { FirstByteTimeoutError, IdleTimeoutError } from './attempt-clock.js';
import { AttemptFailedError, ClientClosedError, sendAttempt, type AttemptRequest, type CommittableResponse } from './send-attempt.js';

const timeouts = { connectMs: 1_000, firstByteMs: 200, idleMs: 50, totalMs: 10_000 };
const startedAt = 1_700_000_000_000;

/** The client side of a relay: records what is written; `full` makes write() ask for a drain. */
class FakeOut extends EventEmitter {
  readonly written: string[] = [];
  full = false;

  write(chunk: Buffer): boolean {
    this.written.push(chunk.toString());
    return !this.full;
  }

  asWritable(): Writable {
    return this as unknown as Writable;
  }
}

/** One attempt on a stub pool; `upstream` is the request the pool received (when it was dispatched). */
function attempt(overrides: Partial<AttemptRequest> = {}) {
  const pool = new StubDispatcher();
  const client = new StubClient();
  const promise = sendAttempt({
    pool: pool.asDispatcher(),
    path: '/v1/chat/completions',
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: Buffer.from('{"model":"m"}'),
    timeouts,
    clientWriteTimeoutMs: 10_000,
    holdAnswerBytes: 0,
    client,
    now: Date.now,
    ...overrides,
  });
  // Both ends handled here: a failure that a test does not await is not an unhandled rejection.
  const outcome = promise.then(
    (answer) => ({ answer, failure: undefined }),
    (failure: unknown) => ({ answer: undefined, failure: failure as AttemptFailedError }),
  );
  return { outcome, pool, client, upstream: pool.requests[0] as StubRequest };
}

async function failureOf(outcome: Promise<{ answer: CommittableResponse | undefined; failure: AttemptFailedError | undefined }>): Promise<AttemptFailedError> {
  const { answer, failure } = await outcome;
  expect(answer, 'the attempt resolved').toBeUndefined();
  expect(failure).toBeInstanceOf(AttemptFailedError);
  return failure!;
}

async function answerOf(outcome: Promise<{ answer: CommittableResponse | undefined; failure: AttemptFailedError | undefined }>): Promise<CommittableResponse> {
  const { answer, failure } = await outcome;
  expect(failure, 'the attempt failed').toBeUndefined();
  return answer!;
}

const errorWithCode = (message: string, code: string) => Object.assign(new Error(message), { code });

describe('sendAttempt', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: startedAt });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("sends the request with undici's header and body timeouts off, since the attempt clock owns them", () => {
    const { upstream } = attempt();
    expect(upstream.options).toMatchObject({ path: '/v1/chat/completions', method: 'POST', headersTimeout: 0, bodyTimeout: 0 });
    expect(upstream.options.headers).toEqual({ 'content-type': 'application/json' });
    expect(upstream.body).toBe('{"model":"m"}');
  });

  it('resolves at the first body byte with the status, the headers, that chunk and the time it took', async () => {
    const { upstream, outcome } = attempt();
    upstream.start();
    vi.advanceTimersByTime(42);
    upstream.respond(200, { 'content-type': 'application/json' }).data('{"id"');
    const answer = await answerOf(outcome);
    expect(answer).toMatchObject({ status: 200, headers: { 'content-type': 'application/json' }, ttfbMs: 42 });
    expect(answer.firstChunk?.toString()).toBe('{"id"');
  });

  it('resolves an empty body at its end, without a first chunk, and its relay ends at once', async () => {
    const { upstream, outcome } = attempt();
    upstream.start().respond(204).end();
    const answer = await answerOf(outcome);
    expect(answer.status).toBe(204);
    expect(answer.firstChunk).toBeNull();
    const out = new FakeOut();
    await answer.relayRest(out.asWritable(), () => undefined);
    expect(out.written).toEqual([]);
  });

  it('lets a client 4xx through as the answer: it is the client’s, another candidate would say the same', async () => {
    const { upstream, outcome } = attempt();
    upstream.answer(400, '{"error":{}}');
    expect((await answerOf(outcome)).status).toBe(400);
  });

  it.each([
    [500, 'http_5xx', true],
    [503, 'http_5xx', true],
    [404, 'http_retryable', true],
    [408, 'http_retryable', true],
    [409, 'http_retryable', true],
    [429, 'http_retryable', false],
  ] as const)('fails over on a %i as %s, counted against the breaker: %s', async (status, outcome, countsAsBreakerFailure) => {
    const started = attempt();
    // With a body byte, a status let through would resolve at once instead of waiting.
    started.upstream.start().respond(status).data('{}');
    const failure = await failureOf(started.outcome);
    expect(failure).toMatchObject({ outcome, httpStatus: status, countsAsBreakerFailure, retryAfterUntil: undefined });
  });

  it.each([
    ['2', startedAt + 2_000],
    [new Date(startedAt + 90_000).toUTCString(), startedAt + 90_000],
    ['86400', startedAt + 3_600_000],
    ['soon', undefined],
  ])('reads a 429 Retry-After of %s as an absolute time, at most an hour ahead', async (retryAfter, until) => {
    const { upstream, outcome } = attempt();
    upstream.start().respond(429, { 'retry-after': retryAfter });
    expect((await failureOf(outcome)).retryAfterUntil).toBe(until);
  });

  it("reads a failover answer's error body to its end, keeping the connection, then stops the clock and lets go of the client", async () => {
    const { upstream, outcome, client } = attempt();
    upstream.start().respond(503).data('{"error":"overloaded"}').end();
    await failureOf(outcome);
    expect(upstream.controller.calls).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
    expect(client.listening).toBe(0);
  });

  it('aborts a failover answer whose error body runs past 64 KiB instead of reading it all', async () => {
    const { upstream, outcome } = attempt();
    upstream
      .start()
      .respond(502)
      .data(Buffer.alloc(40 * 1024))
      .data(Buffer.alloc(40 * 1024));
    expect((await failureOf(outcome)).outcome).toBe('http_5xx');
    expect(upstream.controller.calls).toEqual(['abort']);
    expect(upstream.controller.reason?.message).toMatch(/too long/);
  });

  it('calls a connect or header timeout of undici a timeout, and any other transport error a connect error', async () => {
    const timedOut = attempt();
    timedOut.upstream.fail(errorWithCode('connect timeout', 'UND_ERR_CONNECT_TIMEOUT'));
    expect(await failureOf(timedOut.outcome)).toMatchObject({ outcome: 'timeout', httpStatus: null, countsAsBreakerFailure: true });

    const refused = attempt();
    const error = errorWithCode('connect ECONNREFUSED 127.0.0.1:1', 'ECONNREFUSED');
    refused.upstream.fail(error);
    const failure = await failureOf(refused.outcome);
    expect(failure).toMatchObject({
      outcome: 'connect_error',
      message: 'ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:1',
      httpStatus: null,
      countsAsBreakerFailure: true,
    });
    expect(failure.cause).toBe(error);
  });

  it('calls a break after the status but before the first byte broken_before_first_byte, with the status', async () => {
    const { upstream, outcome } = attempt();
    upstream.start().respond(200).fail(errorWithCode('socket hang up', 'ECONNRESET'));
    expect(await failureOf(outcome)).toMatchObject({ outcome: 'broken_before_first_byte', httpStatus: 200 });
  });

  it('aborts the upstream request with FirstByteTimeoutError when no body byte comes within firstByteMs', async () => {
    const { upstream, outcome } = attempt();
    upstream.start().respond(200);
    vi.advanceTimersByTime(timeouts.firstByteMs - 1);
    expect(upstream.controller.calls).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(upstream.controller.calls).toEqual(['abort']);
    expect(upstream.controller.reason).toBeInstanceOf(FirstByteTimeoutError);
    expect(await failureOf(outcome)).toMatchObject({ outcome: 'timeout', countsAsBreakerFailure: true });
  });

  it('fails at once as client_closed, without sending anything, when the client has already gone', async () => {
    const client = new StubClient();
    client.leave();
    const { outcome, pool } = attempt({ client });
    expect(await failureOf(outcome)).toMatchObject({ outcome: 'client_closed', countsAsBreakerFailure: false });
    expect(pool.requests).toEqual([]);
  });

  it('aborts the upstream request when the client leaves before the answer, and says nothing against the candidate', async () => {
    const { upstream, outcome, client } = attempt();
    upstream.start();
    client.leave();
    expect(upstream.controller.calls).toEqual(['abort']);
    expect(upstream.controller.reason).toBeInstanceOf(ClientClosedError);
    expect(await failureOf(outcome)).toMatchObject({ outcome: 'client_closed', countsAsBreakerFailure: false });
  });

  it('fails a request still waiting for a connection at once when aborted, and aborts it when the pool starts it', async () => {
    const { upstream, outcome, client } = attempt();
    client.leave();
    expect((await failureOf(outcome)).outcome).toBe('client_closed');
    upstream.start();
    expect(upstream.controller.calls).toEqual(['abort']);
    expect(upstream.controller.reason).toBeInstanceOf(ClientClosedError);
  });

  it('rejects a dispatch that throws as a connect error', async () => {
    const pool = {
      dispatch: () => {
        throw new Error('pool closed');
      },
    };
    const { outcome } = attempt({ pool: pool as unknown as AttemptRequest['pool'] });
    expect(await failureOf(outcome)).toMatchObject({ outcome: 'connect_error', message: 'pool closed' });
  });
});

describe('holding an answer that is not a stream until its end', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: startedAt });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('commits a JSON answer only at its end, with the whole body as its first chunk and the time of its first byte', async () => {
    const { upstream, outcome } = attempt({ holdAnswerBytes: 1024 });
    upstream.start();
    vi.advanceTimersByTime(30);
    upstream.respond(200, { 'content-type': 'application/json' }).data('{"choices":');
    let settled = false;
    void outcome.then(() => (settled = true));
    await Promise.resolve();
    expect(settled).toBe(false);
    vi.advanceTimersByTime(5);
    upstream.data('[]}').end();
    const answer = await answerOf(outcome);
    expect(answer.firstChunk?.toString()).toBe('{"choices":[]}');
    expect(answer.ttfbMs).toBe(30);
  });

  it('fails over (broken_before_end) when a held answer breaks before its end: nothing reached the client', async () => {
    const { upstream, outcome } = attempt({ holdAnswerBytes: 1024 });
    upstream.start().respond(200, { 'content-type': 'application/json' }).data('{"choices":[{"mess');
    upstream.fail(errorWithCode('other side closed', 'UND_ERR_SOCKET'));
    const failure = await failureOf(outcome);
    expect(failure).toMatchObject({ outcome: 'broken_before_end', httpStatus: 200, countsAsBreakerFailure: true });
  });

  it('commits at the bound an answer longer than it, and relays the rest as it comes', async () => {
    const { upstream, outcome } = attempt({ holdAnswerBytes: 8 });
    upstream.start().respond(200, { 'content-type': 'application/json' }).data('12345').data('67890');
    const answer = await answerOf(outcome);
    expect(answer.firstChunk?.toString()).toBe('1234567890');
    const out = new FakeOut();
    const relayed = answer.relayRest(out.asWritable(), () => undefined);
    upstream.data('abc').end();
    await relayed;
    expect(out.written).toEqual(['abc']);
  });

  it('never holds a stream: it commits at its first event', async () => {
    const { upstream, outcome } = attempt({ holdAnswerBytes: 1024 });
    upstream.start().respond(200, { 'content-type': 'text/event-stream' }).data('data: {}\n\n');
    expect((await answerOf(outcome)).firstChunk?.toString()).toBe('data: {}\n\n');
  });
});

describe('relaying a committed answer', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: startedAt });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  async function committed(overrides: Partial<AttemptRequest> = {}) {
    const started = attempt(overrides);
    started.upstream.start().respond(200, { 'content-type': 'text/event-stream' }).data('first');
    return { ...started, answer: await answerOf(started.outcome), out: new FakeOut() };
  }

  it('writes the chunks that came before the relay started, in order, then the rest as it comes, each observed first', async () => {
    const { upstream, answer, out } = await committed();
    upstream.data('b').data('c');
    const observed: string[] = [];
    const relay = answer.relayRest(out.asWritable(), (chunk) => observed.push(`${chunk.toString()}@${out.written.length}`));
    expect(out.written).toEqual(['b', 'c']);
    upstream.data('d').end();
    await relay;
    expect(out.written).toEqual(['b', 'c', 'd']);
    expect(observed).toEqual(['b@0', 'c@1', 'd@2']);
    expect(answer.firstChunk?.toString()).toBe('first');
  });

  it('resolves a relay started after the body ended, once the held chunks are written', async () => {
    const { upstream, answer, out } = await committed();
    upstream.data('rest').end();
    await answer.relayRest(out.asWritable(), () => undefined);
    expect(out.written).toEqual(['rest']);
  });

  it("pauses the upstream while the client's buffer is full and resumes it on drain", async () => {
    const { upstream, answer, out } = await committed();
    const relay = answer.relayRest(out.asWritable(), () => undefined);
    out.full = true;
    upstream.data('x');
    expect(upstream.controller.calls).toEqual(['pause']);
    out.full = false;
    out.emit('drain');
    expect(upstream.controller.calls).toEqual(['pause', 'resume']);
    upstream.end();
    await relay;
  });

  it('does not count a slow reader against the idle budget: a drain re-arms it', async () => {
    const { upstream, answer, out } = await committed();
    const relay = answer.relayRest(out.asWritable(), () => undefined).catch((err: unknown) => err);
    out.full = true;
    upstream.data('x');
    vi.advanceTimersByTime(40);
    out.emit('drain');
    vi.advanceTimersByTime(40);
    expect(upstream.controller.calls).toEqual(['pause', 'resume']);
    vi.advanceTimersByTime(timeouts.idleMs - 40);
    expect(upstream.controller.calls).toEqual(['pause', 'resume', 'abort']);
    expect(await relay).toBeInstanceOf(IdleTimeoutError);
    expect(answer.abortReason()).toBeInstanceOf(IdleTimeoutError);
  });

  it('rejects the relay with the upstream error when the body breaks after the commit, before or after the relay started', async () => {
    const early = await committed();
    const reset = errorWithCode('socket hang up', 'ECONNRESET');
    early.upstream.data('a').fail(reset);
    await expect(early.answer.relayRest(early.out.asWritable(), () => undefined)).rejects.toBe(reset);
    expect(early.out.written).toEqual(['a']);

    const late = await committed();
    const relay = late.answer.relayRest(late.out.asWritable(), () => undefined);
    late.upstream.fail(reset);
    await expect(relay).rejects.toBe(reset);
    expect(late.answer.abortReason()).toBeUndefined();
  });

  it('aborts the upstream when the client leaves during the relay, with ClientClosedError as the reason', async () => {
    const { upstream, answer, out, client } = await committed();
    const relay = answer.relayRest(out.asWritable(), () => undefined);
    client.leave();
    await expect(relay).rejects.toBeInstanceOf(ClientClosedError);
    expect(upstream.controller.calls).toEqual(['abort']);
    expect(answer.abortReason()).toBeInstanceOf(ClientClosedError);
  });

  it('lets go of timers, the client and drain at finish(), after which a leaving client aborts nothing', async () => {
    const { upstream, answer, out, client } = await committed();
    const relay = answer.relayRest(out.asWritable(), () => undefined);
    upstream.end();
    await relay;
    answer.finish();
    expect(vi.getTimerCount()).toBe(0);
    expect(client.listening).toBe(0);
    expect(out.listenerCount('drain')).toBe(0);
    client.leave();
    answer.abort(new Error('late'));
    expect(upstream.controller.calls).toEqual([]);
  });
});
