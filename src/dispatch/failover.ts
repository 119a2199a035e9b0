import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { BreakerRegistry } from '../breakers/breaker-registry.js';
import type { Capacity } from '../capacity/capacity.js';
import { CapacityExceededError } from '../capacity/capacity-errors.js';
import type { RateTicket } from '../capacity/rate-limiter.js';
import type { SlotHandle } from '../capacity/slot-pool.js';
import type { WaitLine } from '../capacity/wait-line.js';
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
  /** Estimated prompt tokens plus max_tokens, for context fit (used when a candidate's context size is known) and token rate limits. */
  readonly requiredContext: number;
  /** The name of the client's key (`auth.apiKeys[].name`): its rate limits, and `key_name` on the event. */
  readonly keyName: string | undefined;
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
  /** Slots, lines and rate limits (docs/capacity.md). */
  readonly capacity: Capacity;
}

/**
 * How long a candidate that answered 429 without `Retry-After` is left alone by a request
 * waiting in line: llama-swap's concurrency limit says nothing of when a slot frees, and asking
 * again at once would only hammer it.
 */
const busyBackoffMs = 250;

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
   * (model not found, over a rate limit, no candidate, no capacity, all failed); the error
   * middleware answers it.
   */
  async serve(request: DispatchRequest, res: ServerResponse): Promise<void> {
    const resolution = this.deps.planner.resolve(request.model);
    const label = resolution.virtualModel?.name ?? directModelLabel;
    const dispatch: Dispatch = {
      request,
      createdAt: isoNow(),
      resolution,
      label,
      attempts: [],
      lastProblem: 'no candidate could be tried',
      resumes: 0,
      ticket: undefined,
      slot: undefined,
      busy: false,
      passedOver: false,
      retryAt: undefined,
      backoff: undefined,
      failed: undefined,
      lineEnteredAt: undefined,
      queuedMs: 0,
    };
    let admission = this.deps.capacity.limiter.admit({ keyName: request.keyName, source: request.source }, request.requiredContext);
    if (admission instanceof Promise) admission = await admission;
    if (!admission.allowed) {
      this.publish(dispatch, 'rate_limited', admission.error.message);
      throw admission.error;
    }
    dispatch.ticket = admission.ticket;
    // On every answer from here on, relayed or an error: setHeader merges into either's writeHead.
    if (admission.headers) for (const name in admission.headers) res.setHeader(name, admission.headers[name]!);
    try {
      await this.route(dispatch, res);
    } finally {
      dispatch.slot?.release();
    }
  }

  private async route(dispatch: Dispatch, res: ServerResponse): Promise<void> {
    const { metrics, capacity } = this.deps;
    const { request, resolution, label } = dispatch;
    const { targets, panic } = this.deps.planner.plan(resolution, request.requiredContext);
    if (targets.length === 0) {
      this.publish(dispatch, 'no_candidates', 'no healthy candidate');
      throw new NoHealthyCandidateError(request.model);
    }
    const line = resolution.virtualModel ? capacity.line(label) : undefined;
    // With a line, candidates cooling down after a 429 are a reason to wait, not to try them anyway;
    // and a newcomer to a line that is not empty waits behind it rather than trying first.
    const waitAtOnce = line !== undefined && (line.size > 0 || (panic && targets.every((target) => target.coolingDown)));
    if (panic && !waitAtOnce) request.logger.warn({ model: label }, 'every candidate is open or cooling down; trying them anyway');
    metrics.overheadOf('pre_upstream').observe((performance.now() - request.receivedAt) / 1000);

    const bodyFor = (target: CandidateView) => request.body.withModel(target.model);
    let found = waitAtOnce ? undefined : await this.attemptInOrder(dispatch, targets, 0, bodyFor, panic, 'ok');
    let mayWait = waitAtOnce;
    while (found === undefined && !request.client.gone) {
      if (line === undefined) {
        if (!dispatch.passedOver) break;
        // No line to wait in, and a candidate that did not fail was at its limit.
        metrics.capacityRejectionsOf(label, 'rejected').inc();
        const error = new CapacityExceededError(request.model, 'rejected', {
          queuedMs: 0,
          retryAfterSeconds: Math.max(1, Math.ceil(((dispatch.retryAt ?? Date.now() + 1_000) - Date.now()) / 1_000)),
          lineless: true,
        });
        this.publish(dispatch, 'rejected', error.message);
        throw error;
      }
      if (!mayWait && !dispatch.busy) break;
      mayWait = false;
      const turn = await this.waitInLine(dispatch, line);
      if (turn === undefined) return;
      found = await this.attemptInOrder(dispatch, [turn.target], 0, bodyFor, false, 'ok', turn.slot);
      if (found === undefined && !dispatch.busy && !request.client.gone) {
        // The candidate the line gave failed for good: any other that is not busy gets its turn.
        found = await this.attemptInOrder(dispatch, this.notFailed(dispatch), 0, bodyFor, false, 'ok');
      }
    }
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
   * Waits in the virtual model's line (docs/capacity.md) until a candidate has a slot and is not
   * cooling down, planned afresh on each try (breakers and cooldowns change meanwhile). The time
   * in line counts from the first entry, however often the request comes back. Undefined when
   * the client left; throws (after publishing) a capacity refusal or a shutdown.
   */
  private async waitInLine(dispatch: Dispatch, line: WaitLine<SlotHandle>): Promise<{ slot: SlotHandle; target: CandidateView } | undefined> {
    const { planner, fleet, capacity } = this.deps;
    const { request, resolution } = dispatch;
    const signal = request.client.clientSignal;
    dispatch.lineEnteredAt ??= Date.now();
    let chosen: CandidateView | undefined;
    try {
      const waited = await line.wait({
        source: request.source ?? '',
        signal,
        enteredAt: dispatch.lineEnteredAt,
        dispose: (slot) => slot.release(),
        attempt: async () => {
          const now = Date.now();
          const { targets } = planner.plan(resolution, request.requiredContext);
          let retryAt: number | undefined;
          let open = 0;
          for (const target of targets) {
            if (dispatch.failed?.has(target.id) || target.breaker === 'open') {
              open++;
              continue;
            }
            const until = Math.max(fleet.candidate(target.id).coolingDownUntil, dispatch.backoff?.get(target.id) ?? 0);
            if (until > now) {
              retryAt = Math.min(retryAt ?? until, until);
              continue;
            }
            let turn = capacity.slots.tryAcquire({ candidate: target.id, provider: target.provider });
            if (turn instanceof Promise) turn = await turn;
            if (turn.value) {
              chosen = target;
              return turn;
            }
            if (turn.retryAt !== undefined) retryAt = Math.min(retryAt ?? turn.retryAt, turn.retryAt);
          }
          // Nothing left to wait for: every candidate failed or its breaker is open.
          if (open === targets.length) throw new AllCandidatesFailedError(request.model, dispatch.attempts);
          return { retryAt };
        },
      });
      dispatch.queuedMs = waited.queuedMs;
      return { slot: waited.value, target: chosen! };
    } catch (err: unknown) {
      dispatch.queuedMs = Date.now() - dispatch.lineEnteredAt;
      if (request.client.gone) {
        this.publish(dispatch, 'client_closed', 'client closed the connection while waiting in line');
        return undefined;
      }
      if (err instanceof CapacityExceededError) {
        dispatch.queuedMs = err.queuedMs;
        this.publish(dispatch, err.refusal, err.message);
      } else {
        this.publish(dispatch, 'failed', err instanceof AllCandidatesFailedError ? dispatch.lastProblem : errorMessage(err));
      }
      throw err;
    }
  }

  /** The planned candidates that have not failed this request for good, in a fresh order. */
  private notFailed(dispatch: Dispatch): CandidateView[] {
    const { targets } = this.deps.planner.plan(dispatch.resolution, dispatch.request.requiredContext);
    return targets.filter((target) => !dispatch.failed?.has(target.id));
  }

  /**
   * Sends the request to the targets from index `from` on, in order, until one answers: the last
   * moment at which another can still be tried. Each attempt is recorded (`outcome` names the
   * one that answers: `ok`, or `resumed` for a continuation). `bodyFor` gives what a target is
   * sent; undefined skips it. Each target is sent only with a slot (docs/capacity.md): one at its
   * `maxInFlight` is passed over, not attempted, as one that answers 429 marks the pass `busy`;
   * `given` is a slot already taken for the first target (the line's). The answering target's
   * slot is the dispatch's until the relay ends. Undefined when none answered or the client left.
   */
  private async attemptInOrder(
    dispatch: Dispatch,
    targets: readonly CandidateView[],
    from: number,
    bodyFor: (target: CandidateView, provider: ProviderConfig) => Buffer | undefined,
    panic: boolean,
    outcomeOfAnswer: 'ok' | 'resumed',
    given?: SlotHandle,
  ): Promise<Found | undefined> {
    const { metrics, breakers, fleet, pools, capacity } = this.deps;
    const config = this.deps.config();
    const { request, attempts } = dispatch;
    const baseHeaders = upstreamRequestHeaders(request.headers, request.requestId, request.forwarded, request.contentType);
    dispatch.busy = false;
    dispatch.passedOver = false;
    dispatch.retryAt = undefined;
    for (let index = from; index < targets.length; index++) {
      const target = targets[index]!;
      let slot = index === from ? given : undefined;
      if (request.client.gone) {
        slot?.release();
        return undefined;
      }
      const provider = config.providers[target.provider];
      const body = provider ? bodyFor(target, provider) : undefined;
      if (provider === undefined || body === undefined) {
        slot?.release();
        continue;
      }
      const slotTarget = { candidate: target.id, provider: target.provider };
      if (slot === undefined && capacity.slots.isLimited(slotTarget)) {
        let turn = capacity.slots.tryAcquire(slotTarget);
        if (turn instanceof Promise) turn = await turn;
        if (turn.value === undefined) {
          dispatch.busy = true;
          dispatch.passedOver = true;
          if (turn.retryAt !== undefined) dispatch.retryAt = Math.min(dispatch.retryAt ?? turn.retryAt, turn.retryAt);
          continue;
        }
        slot = turn.value;
      }
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
        // The upstream holds no work for a failed attempt: its slot is free for the next request.
        slot?.release();
        if (BreakerRegistry.isRejection(err)) continue; // refused by the breaker: nothing was sent
        const failure = err instanceof AttemptFailedError ? err : new AttemptFailedError('connect_error', errorMessage(err), { cause: err });
        attempts.push({ candidate: target.id, outcome: failure.outcome, http_status: failure.httpStatus, ms: Math.round(performance.now() - sentAt) });
        metrics.attemptsOf(target.id, target.provider, failure.outcome).inc();
        if (failure.outcome === 'client_closed') return undefined;
        if (failure.retryAfterUntil !== undefined) fleet.coolDown(target.id, failure.retryAfterUntil);
        if (failure.httpStatus === 429) {
          dispatch.busy = true;
          (dispatch.backoff ??= new Map()).set(target.id, failure.retryAfterUntil ?? Date.now() + busyBackoffMs);
        } else {
          (dispatch.failed ??= new Set()).add(target.id);
        }
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
      dispatch.slot = slot;
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
      // The broken candidate holds no work for this request any more.
      dispatch.slot?.release();
      dispatch.slot = undefined;
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
      queued_ms: dispatch.queuedMs,
      key_name: request.keyName ?? null,
    });
    if (dispatch.ticket) {
      const usage = served?.usage;
      // No upstream served: nothing was spent. Usage not reported: the estimate stands.
      dispatch.ticket.settle(
        usage === undefined ? 0 : usage.promptTokens !== null && usage.completionTokens !== null ? usage.promptTokens + usage.completionTokens : undefined,
      );
    }
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
  /** Corrects the tokens the rate limits charged once usage is known. */
  ticket: RateTicket | undefined;
  /** The slot of the candidate answering, held until its relay ends. */
  slot: SlotHandle | undefined;
  /** The last pass over the candidates met one at its limit or answering 429: waiting may help. */
  busy: boolean;
  /** The last pass over the candidates passed one over for its limit. */
  passedOver: boolean;
  /** When a slot of a candidate at its limit is expected to free (epoch ms), when known. */
  retryAt: number | undefined;
  /** Candidates that answered 429, not to be asked again before (epoch ms). */
  backoff: Map<string, number> | undefined;
  /** Candidates that failed this request otherwise: waiting in line will not help them. */
  failed: Set<string> | undefined;
  /** When it first entered its virtual model's line (epoch ms). */
  lineEnteredAt: number | undefined;
  queuedMs: number;
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
