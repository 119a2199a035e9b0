import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { BreakerRegistry } from '../breakers/breaker-registry.js';
import type { Config, ProviderConfig } from '../config/load.js';
import { AllCandidatesFailedError, NoHealthyCandidateError } from '../errors.js';
import type { Endpoint } from '../protocols/endpoints.js';
import { streamErrorEvent } from '../protocols/error-bodies.js';
import type { Attempt, DispatchStatus } from '../events/dispatch-event.js';
import type { EventSink } from '../events/event-sink.js';
import type { FleetState } from '../fleet/fleet-state.js';
import { directModelLabel, type GatewayMetrics } from '../metrics/registry.js';
import type { Resolution } from '../routing/resolve-model.js';
import type { RoutePlanner } from '../routing/route-planner.js';
import type { CandidateView } from '../routing/select-targets.js';
import { errorMessage } from '../shared/error-message.js';
import { isoNow } from '../shared/iso-now.js';
import type { Logger } from '../shared/logger.js';
import { randomUuid } from '../shared/random-uuid.js';
import { downstreamResponseHeaders, upstreamRequestHeaders, type ForwardedClient } from '../upstream/forward-headers.js';
import { ClientWriteTimeoutError } from '../upstream/attempt-clock.js';
import { AttemptFailedError, ClientClosedError, sendAttempt, type ClientConnection, type CommittableResponse } from '../upstream/send-attempt.js';
import type { UpstreamPools } from '../upstream/upstream-pools.js';
import { upstreamPath } from '../upstream/upstream-path.js';
import { continuationBody } from './continuation.js';
import type { RequestBody } from './request-body.js';
import { ResumableStream } from './resumable-stream.js';
import { UsageReader, type Usage } from './usage-reader.js';

/** A parsed dispatch request, as the route hands it over. */
export interface DispatchRequest {
  readonly client: ClientConnection;
  /** Who the client is, as upstreams are told (`X-Forwarded-For`, `X-Forwarded-Proto`). */
  readonly forwarded: ForwardedClient;
  /** The endpoint served, and the few things of its protocol dispatch needs. */
  readonly endpoint: Endpoint;
  readonly model: string;
  readonly stream: boolean;
  /** The client's body (JSON or a form); only `model` is rewritten per candidate. */
  readonly body: RequestBody;
  /** As the upstream is told: `application/json`, or the client's form type with its boundary. */
  readonly contentType: string;
  readonly headers: IncomingHttpHeaders;
  readonly requestId: string;
  /** X-Boo-Source, cleaned of control characters for the record. */
  readonly source: string | null;
  /** performance.now() when the request arrived. */
  readonly receivedAt: number;
  readonly logger: Logger;
  /** Estimated prompt tokens plus max_tokens, for context fit (used when a candidate's context size is known). */
  readonly requiredContext: number;
}

export interface FailoverDeps {
  readonly config: () => Config;
  readonly planner: RoutePlanner;
  readonly fleet: FleetState;
  readonly breakers: BreakerRegistry;
  readonly pools: UpstreamPools;
  readonly metrics: GatewayMetrics;
  readonly sink: EventSink;
  readonly replica: string;
}

const lineFeed = 0x0a;
const carriageReturn = 0x0d;

/**
 * What must be written before an event of ours so that it stands alone, after a relayed stream
 * whose last bytes are `last` (and `previous` before it): nothing after a blank line, a line
 * end after a complete line, two in the middle of a line. An event of ours written into half an
 * upstream event would merge with it, and the client's SSE parser could read neither.
 */
export function sseEventBoundary(last: Buffer | undefined, previous: Buffer | undefined): string {
  /** The byte `back` places before the end of the stream; a line feed before its start. */
  const byteBack = (back: number): number => {
    if (last === undefined) return lineFeed;
    if (back < last.length) return last[last.length - 1 - back]!;
    return previous?.[previous.length - 1 - (back - last.length)] ?? lineFeed;
  };
  const isLineEnd = (byte: number) => byte === lineFeed || byte === carriageReturn;
  const end = byteBack(0);
  if (!isLineEnd(end)) return '\n\n';
  // `\r\n` is one line end: look at what stands before it.
  const before = end === lineFeed && byteBack(1) === carriageReturn ? byteBack(2) : byteBack(1);
  if (isLineEnd(before)) return '';
  // A line feed after a lone `\r` would pair with it into one line end.
  return end === carriageReturn ? '\n\n' : '\n';
}

/**
 * Resolves a request to candidates and walks them until one answers, relaying that answer to the
 * client. Failover is possible until the first body byte reaches the client (SPEC §5); after it,
 * a break ends the stream with an SSE error event. Every dispatch that resolved a known model
 * produces exactly one event.
 */
export class Failover {
  private readonly deps: FailoverDeps;

  constructor(deps: FailoverDeps) {
    this.deps = deps;
  }

  /**
   * Serves one request into `res`. Throws a GatewayError only before anything was written
   * (model not found, no candidate, all failed); the error middleware answers it.
   */
  async serve(request: DispatchRequest, res: ServerResponse): Promise<void> {
    const { metrics } = this.deps;
    const resolution = this.deps.planner.resolve(request.model);
    const label = resolution.virtualModel?.name ?? directModelLabel;
    const { targets, panic } = this.deps.planner.plan(resolution, request.requiredContext);
    const dispatch: Dispatch = { request, createdAt: isoNow(), resolution, label, attempts: [], lastProblem: 'no candidate could be tried', resumes: 0 };
    if (targets.length === 0) {
      this.publish(dispatch, 'no_candidates', 'no healthy candidate');
      throw new NoHealthyCandidateError(request.model);
    }
    if (panic) request.logger.warn({ model: label }, 'every candidate is open or cooling down; trying them anyway');
    metrics.overheadOf('pre_upstream').observe((performance.now() - request.receivedAt) / 1000);

    const found = await this.attemptInOrder(dispatch, targets, 0, (target) => request.body.withModel(target.model), panic, 'ok');
    if (found === undefined) {
      if (request.client.gone) {
        this.publish(dispatch, 'client_closed', 'client closed the connection before an answer');
        return;
      }
      this.publish(dispatch, 'failed', dispatch.lastProblem);
      throw new AllCandidatesFailedError(request.model, dispatch.attempts);
    }
    const { answer, target } = found;
    const upstreamIsStream = String(answer.headers['content-type'] ?? '').startsWith('text/event-stream');
    this.writeHead(request, res, answer, target, dispatch.attempts.length, upstreamIsStream);
    const relayed = this.resumable(request, resolution, answer, upstreamIsStream)
      ? await this.relayResumable(dispatch, res, found, targets)
      : await this.relay(request, res, answer, target, upstreamIsStream);
    const status = answer.status >= 400 && relayed.status === 'dispatched' ? 'client_error' : relayed.status;
    this.publish(dispatch, status, relayed.error, {
      provider: relayed.servedBy.provider,
      model: relayed.servedBy.model,
      ttfbMs: answer.ttfbMs,
      usage: relayed.usage,
    });
  }

  /**
   * Sends the request to the targets from index `from` on, in order, until one answers: the last
   * moment at which another can still be tried. Each attempt is recorded (`outcome` names the
   * one that answers: `ok`, or `resumed` for a continuation). `bodyFor` gives what a target is
   * sent; undefined skips it. Undefined when none answered or the client left.
   */
  private async attemptInOrder(
    dispatch: Dispatch,
    targets: readonly CandidateView[],
    from: number,
    bodyFor: (target: CandidateView, provider: ProviderConfig) => Buffer | undefined,
    panic: boolean,
    outcomeOfAnswer: 'ok' | 'resumed',
  ): Promise<Found | undefined> {
    const { metrics, breakers, fleet, pools } = this.deps;
    const config = this.deps.config();
    const { request, attempts } = dispatch;
    const baseHeaders = upstreamRequestHeaders(request.headers, request.requestId, request.forwarded, request.contentType);
    for (let index = from; index < targets.length; index++) {
      const target = targets[index]!;
      if (request.client.gone) return undefined;
      const provider = config.providers[target.provider];
      if (!provider) continue;
      const body = bodyFor(target, provider);
      if (body === undefined) continue;
      const headers = provider.apiKey ? { ...baseHeaders, authorization: `Bearer ${provider.apiKey}` } : baseHeaders;
      const sentAt = performance.now();
      let answer: CommittableResponse;
      try {
        answer = await breakers.run(
          target.id,
          () =>
            sendAttempt({
              pool: pools.pool(provider.name),
              path: upstreamPath(provider, request.endpoint.path),
              method: 'POST',
              headers,
              body,
              timeouts: provider.timeouts,
              clientWriteTimeoutMs: config.limits.clientWriteTimeoutMs,
              holdAnswerBytes: config.limits.holdAnswerBytes,
              client: request.client,
              now: Date.now,
            }),
          panic,
        );
      } catch (err: unknown) {
        if (BreakerRegistry.isRejection(err)) continue; // refused by the breaker: nothing was sent
        const failure = err instanceof AttemptFailedError ? err : new AttemptFailedError('connect_error', errorMessage(err), { cause: err });
        attempts.push({ candidate: target.id, outcome: failure.outcome, http_status: failure.httpStatus, ms: Math.round(performance.now() - sentAt) });
        metrics.attemptsOf(target.id, target.provider, failure.outcome).inc();
        if (failure.outcome === 'client_closed') return undefined;
        if (failure.retryAfterUntil !== undefined) fleet.coolDown(target.id, failure.retryAfterUntil);
        dispatch.lastProblem = `${target.id}: ${failure.message}`;
        fleet.candidate(target.id).lastError = failure.message;
        request.logger.info({ candidate: target.id, outcome: failure.outcome, status: failure.httpStatus }, 'upstream attempt failed');
        continue;
      }
      const outcome = answer.status >= 400 ? 'client_error' : outcomeOfAnswer;
      attempts.push({ candidate: target.id, outcome, http_status: answer.status, ms: answer.ttfbMs });
      metrics.attemptsOf(target.id, target.provider, outcome).inc();
      metrics.ttfbOf(target.id).observe(answer.ttfbMs / 1000);
      fleet.recordLatency(target.id, answer.ttfbMs);
      if (provider.type === 'llama-swap' && outcome !== 'client_error') fleet.markLoaded(provider.name, target.model);
      return { answer, target, index };
    }
    return undefined;
  }

  /** The status line and headers of the committed answer, sent with its first chunk when it has one. */
  private writeHead(
    request: DispatchRequest,
    res: ServerResponse,
    answer: CommittableResponse,
    target: CandidateView,
    attemptCount: number,
    upstreamIsStream: boolean,
  ): void {
    const headers = downstreamResponseHeaders(answer.headers);
    headers['x-request-id'] = request.requestId;
    headers['x-boo-candidate'] = target.id;
    headers['x-boo-attempts'] = String(attemptCount);
    res.writeHead(answer.status, headers);
    // A stream's head goes out at once, but with its first chunk when there is one: one write
    // and one segment to the client instead of two (the chunk is already here: nothing waits).
    if (upstreamIsStream && !answer.firstChunk) res.flushHeaders();
  }

  /** Writes the committed answer to the client with backpressure; never throws. */
  private async relay(
    request: DispatchRequest,
    res: ServerResponse,
    answer: CommittableResponse,
    target: CandidateView,
    upstreamIsStream: boolean,
  ): Promise<Relayed> {
    const usage = new UsageReader(upstreamIsStream, request.endpoint.usage);
    let last = answer.firstChunk ?? undefined;
    let previous: Buffer | undefined;
    let status: DispatchStatus = 'dispatched';
    let error: string | null = null;
    try {
      if (answer.firstChunk) {
        usage.push(answer.firstChunk);
        // A JSON answer that arrived whole goes out with its head in one write, not two.
        if (!upstreamIsStream && Number(answer.headers['content-length']) === answer.firstChunk.length) res.end(answer.firstChunk);
        else res.write(answer.firstChunk);
        this.deps.metrics.overheadOf('relay').observe((performance.now() - answer.firstByteAt) / 1000);
      }
      await answer.relayRest(res, (chunk) => {
        usage.push(chunk);
        previous = last;
        last = chunk;
      });
      if (!res.writableEnded) res.end();
    } catch (err: unknown) {
      ({ status, error } = this.brokenOff(request, res, answer, target, err));
      if (status === 'stream_error') {
        if (upstreamIsStream && !res.destroyed) res.end(sseEventBoundary(last, previous) + streamErrorEvent(request.endpoint, this.toldOf(answer, target)));
        // A JSON answer cut short cannot be repaired: a broken connection tells the client so.
        else res.destroy();
      }
    } finally {
      answer.finish();
    }
    return { status, error, usage: usage.read(), servedBy: target };
  }

  /** Resume is on for the virtual model, and this is a chat or completions stream that is answering. */
  private resumable(request: DispatchRequest, resolution: Resolution, answer: CommittableResponse, upstreamIsStream: boolean): boolean {
    const route = request.endpoint.route;
    return (
      (resolution.virtualModel?.maxResumes ?? 0) > 0 &&
      request.stream &&
      upstreamIsStream &&
      answer.status < 300 &&
      (route === 'chat_completions' || route === 'completions')
    );
  }

  /**
   * Relays a stream that may be resumed (docs/architecture.md, "Resuming a broken stream"): when
   * it breaks or goes idle after the commit, with plain text so far and resumes left, the next
   * candidates are asked to continue from the text delivered, and the first that answers is
   * relayed into the same client stream. Otherwise it ends as any broken stream does.
   */
  private async relayResumable(dispatch: Dispatch, res: ServerResponse, first: Found, targets: readonly CandidateView[]): Promise<Relayed> {
    const { request, resolution, label } = dispatch;
    const { metrics } = this.deps;
    const kind = request.endpoint.route === 'chat_completions' ? 'chat' : 'completions';
    const stream = new ResumableStream(res, kind);
    const maxResumes = resolution.virtualModel?.maxResumes ?? 0;
    let current = first;
    for (;;) {
      const { answer, target } = current;
      const usage = new UsageReader(true, request.endpoint.usage);
      let broke: { status: DispatchStatus; error: string | null } | undefined;
      try {
        if (answer.firstChunk) {
          usage.push(answer.firstChunk);
          stream.write(answer.firstChunk);
        }
        await answer.relayRest(stream, (chunk) => usage.push(chunk));
      } catch (err: unknown) {
        broke = this.brokenOff(request, res, answer, target, err);
      } finally {
        answer.finish();
      }
      if (broke === undefined) {
        if (!res.writableEnded) res.end();
        return { status: 'dispatched', error: null, usage: usage.read(), servedBy: target };
      }
      if (broke.status !== 'stream_error') return { ...broke, usage: usage.read(), servedBy: target };
      if (dispatch.resumes >= maxResumes || !stream.resumable) {
        metrics.resumesOf(label, stream.resumable ? 'exhausted' : 'not_resumable').inc();
        return this.endBroken(request, res, stream, answer, target, broke, usage);
      }
      stream.continueHere();
      const delivered = { text: stream.deliveredText(), events: stream.deliveredEvents };
      const next = await this.attemptInOrder(
        dispatch,
        targets,
        current.index + 1,
        (candidate, provider) => continuationBody(request.body.raw, kind, provider, candidate.model, delivered),
        false,
        'resumed',
      );
      if (next === undefined) {
        metrics.resumesOf(label, 'failed').inc();
        return this.endBroken(request, res, stream, answer, target, broke, usage);
      }
      dispatch.resumes++;
      metrics.resumesOf(label, 'resumed').inc();
      request.logger.info({ from: target.id, to: next.target.id, delivered: delivered.text.length }, 'stream resumed on another candidate');
      current = next;
    }
  }

  /** Ends a stream that could not be resumed as any broken stream ends: with the endpoint's error event. */
  private endBroken(
    request: DispatchRequest,
    res: ServerResponse,
    stream: ResumableStream,
    answer: CommittableResponse,
    target: CandidateView,
    broke: { status: DispatchStatus; error: string | null },
    usage: UsageReader,
  ): Relayed {
    stream.continueHere();
    // The stream relays whole events only: nothing unfinished stands before the error event.
    if (!res.destroyed) res.end(streamErrorEvent(request.endpoint, this.toldOf(answer, target)));
    return { ...broke, usage: usage.read(), servedBy: target };
  }

  /** What happened when a relay threw: the client left or stopped reading, or the upstream broke off. Aborts the upstream. */
  private brokenOff(
    request: DispatchRequest,
    res: ServerResponse,
    answer: CommittableResponse,
    target: CandidateView,
    err: unknown,
  ): { status: DispatchStatus; error: string } {
    const reason = answer.abortReason();
    let status: DispatchStatus;
    let error: string;
    if (request.client.gone || reason instanceof ClientClosedError) {
      status = 'client_closed';
      error = 'client closed the connection during the answer';
    } else if (reason instanceof ClientWriteTimeoutError) {
      // The client is there but does not read: nothing more can reach it.
      status = 'client_closed';
      error = reason.message;
      res.destroy();
    } else {
      status = 'stream_error';
      error = reason instanceof Error ? reason.message : `upstream broke after the first byte: ${errorMessage(err)}`;
      request.logger.warn({ candidate: target.id, err: error }, 'upstream failed after the commit');
    }
    answer.abort(new Error(error));
    return { status, error };
  }

  /** The client learns which candidate failed and how, not the transport's own words. */
  private toldOf(answer: CommittableResponse, target: CandidateView): string {
    const reason = answer.abortReason();
    return reason instanceof Error ? `${target.id}: ${reason.message}` : `${target.id} broke off its answer`;
  }

  /**
   * Counts the dispatch and hands its event to the sink (which counts it as published). The
   * event is one object literal in the table's column order, built once: no spread of defaults
   * and overrides, no copy of the attempts (the dispatch is over; nothing appends to them).
   */
  private publish(dispatch: Dispatch, status: DispatchStatus, error: string | null, served?: Served): void {
    const { metrics, sink } = this.deps;
    const { request, attempts, label, resolution } = dispatch;
    const durationMs = Math.round(performance.now() - request.receivedAt);
    metrics.dispatchesOf(label, status).inc();
    if (attempts.length > 1) metrics.failoversOf(label).inc();
    metrics.durationOf(label, request.stream).observe(durationMs / 1000);
    const candidatesTried = new Array<string>(attempts.length);
    for (let i = 0; i < attempts.length; i++) candidatesTried[i] = attempts[i]!.candidate;
    sink.publish({
      id: randomUuid(),
      created_at: dispatch.createdAt,
      request_id: request.requestId,
      requested_model: request.model,
      virtual_model: resolution.virtualModel?.name ?? null,
      chosen_provider_id: served?.provider ?? null,
      chosen_model: served?.model ?? null,
      candidates_tried: candidatesTried,
      attempts,
      status,
      source: request.source,
      error,
      duration_ms: durationMs,
      ttfb_ms: served?.ttfbMs ?? null,
      stream: request.stream,
      prompt_tokens: served?.usage.promptTokens ?? null,
      completion_tokens: served?.usage.completionTokens ?? null,
      replica: this.deps.replica,
      endpoint: request.endpoint.path,
      resumes: dispatch.resumes,
    });
  }
}

/** One dispatch as it goes: what its event will record. */
interface Dispatch {
  readonly request: DispatchRequest;
  readonly createdAt: string;
  readonly resolution: Resolution;
  /** The metrics label of its virtual model. */
  readonly label: string;
  readonly attempts: Attempt[];
  lastProblem: string;
  resumes: number;
}

/** A target that answered, and its place in the order. */
interface Found {
  readonly answer: CommittableResponse;
  readonly target: CandidateView;
  readonly index: number;
}

/** How a relay ended, and who served its last part. */
interface Relayed {
  readonly status: DispatchStatus;
  readonly error: string | null;
  readonly usage: Usage;
  readonly servedBy: CandidateView;
}

/** What the event records of the candidate that served. */
interface Served {
  readonly provider: string;
  readonly model: string;
  readonly ttfbMs: number;
  readonly usage: Usage;
}
