import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { BreakerRegistry } from '../breakers/breaker-registry.js';
import type { Config } from '../config/load.js';
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
import type { RequestBody } from './request-body.js';
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
    const { metrics, breakers, fleet, pools } = this.deps;
    const config = this.deps.config();
    const resolution = this.deps.planner.resolve(request.model);
    const label = resolution.virtualModel?.name ?? directModelLabel;
    const { targets, panic } = this.deps.planner.plan(resolution, request.requiredContext);
    const createdAt = isoNow();
    const attempts: Attempt[] = [];
    if (targets.length === 0) {
      this.publish(request, createdAt, resolution, label, attempts, 'no_candidates', 'no healthy candidate');
      throw new NoHealthyCandidateError(request.model);
    }
    if (panic) request.logger.warn({ model: label }, 'every candidate is open or cooling down; trying them anyway');

    const baseHeaders = upstreamRequestHeaders(request.headers, request.requestId, request.forwarded, request.contentType);
    let lastProblem = 'no candidate could be tried';
    metrics.overheadOf('pre_upstream').observe((performance.now() - request.receivedAt) / 1000);

    for (const target of targets) {
      if (request.client.gone) break;
      const provider = config.providers[target.provider];
      if (!provider) continue;
      const headers = provider.apiKey ? { ...baseHeaders, authorization: `Bearer ${provider.apiKey}` } : baseHeaders;
      const body = request.body.withModel(target.model);
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
        if (failure.outcome === 'client_closed') break;
        if (failure.retryAfterUntil !== undefined) fleet.coolDown(target.id, failure.retryAfterUntil);
        lastProblem = `${target.id}: ${failure.message}`;
        fleet.candidate(target.id).lastError = failure.message;
        request.logger.info({ candidate: target.id, outcome: failure.outcome, status: failure.httpStatus }, 'upstream attempt failed');
        continue;
      }
      const outcome = answer.status >= 400 ? 'client_error' : 'ok';
      attempts.push({ candidate: target.id, outcome, http_status: answer.status, ms: answer.ttfbMs });
      metrics.attemptsOf(target.id, target.provider, outcome).inc();
      metrics.ttfbOf(target.id).observe(answer.ttfbMs / 1000);
      fleet.recordLatency(target.id, answer.ttfbMs);
      if (provider.type === 'llama-swap' && outcome === 'ok') fleet.markLoaded(provider.name, target.model);
      const relayed = await this.relay(request, res, answer, target, attempts.length);
      const status = outcome === 'client_error' && relayed.status === 'dispatched' ? 'client_error' : relayed.status;
      this.publish(request, createdAt, resolution, label, attempts, status, relayed.error, {
        provider: target.provider,
        model: target.model,
        ttfbMs: answer.ttfbMs,
        usage: relayed.usage,
      });
      return;
    }

    if (request.client.gone) {
      this.publish(request, createdAt, resolution, label, attempts, 'client_closed', 'client closed the connection before an answer');
      return;
    }
    this.publish(request, createdAt, resolution, label, attempts, 'failed', lastProblem);
    throw new AllCandidatesFailedError(request.model, attempts);
  }

  /** Writes the committed answer to the client with backpressure; never throws. */
  private async relay(
    request: DispatchRequest,
    res: ServerResponse,
    answer: CommittableResponse,
    target: CandidateView,
    attemptCount: number,
  ): Promise<{ status: DispatchStatus; error: string | null; usage: Usage }> {
    const upstreamIsStream = String(answer.headers['content-type'] ?? '').startsWith('text/event-stream');
    const usage = new UsageReader(upstreamIsStream, request.endpoint.usage);
    const headers = downstreamResponseHeaders(answer.headers);
    headers['x-request-id'] = request.requestId;
    headers['x-boo-candidate'] = target.id;
    headers['x-boo-attempts'] = String(attemptCount);
    let status: DispatchStatus = 'dispatched';
    let error: string | null = null;
    let last = answer.firstChunk ?? undefined;
    let previous: Buffer | undefined;
    try {
      res.writeHead(answer.status, headers);
      // A stream's head goes out at once, but with its first chunk when there is one: one write
      // and one segment to the client instead of two (the chunk is already here: nothing waits).
      if (upstreamIsStream && !answer.firstChunk) res.flushHeaders();
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
      const reason = answer.abortReason();
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
        if (upstreamIsStream && !res.destroyed) {
          // The client learns which candidate failed and how, not the transport's own words.
          const told = reason instanceof Error ? `${target.id}: ${reason.message}` : `${target.id} broke off its answer`;
          res.end(sseEventBoundary(last, previous) + streamErrorEvent(request.endpoint, told));
        } else {
          // A JSON answer cut short cannot be repaired: a broken connection tells the client so.
          res.destroy();
        }
      }
      answer.abort(new Error(error));
    } finally {
      answer.finish();
    }
    return { status, error, usage: usage.read() };
  }

  /**
   * Counts the dispatch and hands its event to the sink (which counts it as published). The
   * event is one object literal in the table's column order, built once: no spread of defaults
   * and overrides, no copy of the attempts (the dispatch is over; nothing appends to them).
   */
  private publish(
    request: DispatchRequest,
    createdAt: string,
    resolution: Resolution,
    label: string,
    attempts: Attempt[],
    status: DispatchStatus,
    error: string | null,
    served?: Served,
  ): void {
    const { metrics, sink } = this.deps;
    const durationMs = Math.round(performance.now() - request.receivedAt);
    metrics.dispatchesOf(label, status).inc();
    if (attempts.length > 1) metrics.failoversOf(label).inc();
    metrics.durationOf(label, request.stream).observe(durationMs / 1000);
    const candidatesTried = new Array<string>(attempts.length);
    for (let i = 0; i < attempts.length; i++) candidatesTried[i] = attempts[i]!.candidate;
    sink.publish({
      id: randomUuid(),
      created_at: createdAt,
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
    });
  }
}

/** What the event records of the candidate that served. */
interface Served {
  readonly provider: string;
  readonly model: string;
  readonly ttfbMs: number;
  readonly usage: Usage;
}
