import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { attemptOutcomes, dispatchStatuses } from '../shared/dispatch-outcomes.js';
import type { Config } from '../config/load.js';
import { BoundCounter, BoundHistogram } from './bound-metrics.js';

/** LLM latencies run from milliseconds (cached, embeddings) to minutes (long generations, swaps). */
export const llmLatencyBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600];
/** The gateway's own cost per request: microseconds to a few milliseconds. */
export const overheadBuckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];

export const httpRoutes = [
  'chat_completions',
  'completions',
  'responses',
  'messages',
  'count_tokens',
  'embeddings',
  'rerank',
  'infill',
  'completion',
  'audio_speech',
  'images',
  'audio_transcriptions',
  'audio_translations',
  'models',
  'upstream',
  'admin',
  'healthz',
  'readyz',
  'metrics',
  'other',
] as const;
export type HttpRoute = (typeof httpRoutes)[number];

/**
 * What came of a stream broken after its first byte, on a virtual model with resume on:
 * `resumed` on another candidate; `failed`, no candidate could continue it; `not_resumable`, a
 * tool call in progress or more than plain text; `exhausted`, its resumes were spent.
 */
export const resumeOutcomes = ['resumed', 'failed', 'not_resumable', 'exhausted'] as const;
export type ResumeOutcome = (typeof resumeOutcomes)[number];

/** Label value for requests that name no configured virtual model (direct or bare names). */
export const directModelLabel = 'direct';

export const breakerStateValue = { closed: 0, halfOpen: 1, open: 2 } as const;

export const capacityRejectionReasons = ['queue_timeout', 'rejected'] as const;
export type CapacityRejectionReason = (typeof capacityRejectionReasons)[number];

export function createMetricsRegistry(replica: string): Registry {
  const register = new Registry();
  register.setDefaultLabels({ replica });
  collectDefaultMetrics({ register, prefix: 'boo_process_' });
  return register;
}

export type GatewayMetrics = ReturnType<typeof createGatewayMetrics>;

/**
 * Every metric of the gateway process. Label values come from config or fixed sets only; the
 * series of every configured value exist from the start at 0.
 */
export function createGatewayMetrics(register: Registry, config: Config) {
  const registers = [register];
  const slotsInUseReaders = new Set<() => ReadonlyMap<string, number>>();
  const metrics = {
    httpRequests: new BoundCounter({
      name: 'boo_http_requests_total',
      help: 'HTTP requests answered by the gateway, by route and status code',
      labelNames: ['route', 'code'] as const,
      registers,
    }),
    dispatches: new BoundCounter({
      name: 'boo_dispatches_total',
      help: 'Dispatches that reached resolution of a known model, by virtual model and final status',
      labelNames: ['virtual_model', 'status'] as const,
      registers,
    }),
    failovers: new BoundCounter({
      name: 'boo_failovers_total',
      help: 'Dispatches that needed more than one upstream attempt',
      labelNames: ['virtual_model'] as const,
      registers,
    }),
    attempts: new BoundCounter({
      name: 'boo_upstream_attempts_total',
      help: 'Upstream requests sent, by candidate and outcome',
      labelNames: ['candidate', 'provider', 'outcome'] as const,
      registers,
    }),
    ttfb: new BoundHistogram({
      name: 'boo_upstream_ttfb_seconds',
      help: 'Time from sending an upstream request to its first body byte',
      labelNames: ['candidate'] as const,
      buckets: llmLatencyBuckets,
      registers,
    }),
    duration: new BoundHistogram({
      name: 'boo_dispatch_duration_seconds',
      help: 'Whole dispatch, from the request to the last byte sent to the client',
      labelNames: ['virtual_model', 'stream'] as const,
      buckets: llmLatencyBuckets,
      registers,
    }),
    overhead: new BoundHistogram({
      name: 'boo_gateway_overhead_seconds',
      help: "The gateway's own time: before the first upstream call (pre_upstream) and from upstream first byte to client first byte (relay)",
      labelNames: ['phase'] as const,
      buckets: overheadBuckets,
      registers,
    }),
    breakerState: new Gauge({
      name: 'boo_breaker_state',
      help: 'Circuit breaker state per candidate: 0 closed, 1 half-open, 2 open',
      labelNames: ['candidate'] as const,
      registers,
    }),
    breakerTransitions: new Counter({
      name: 'boo_breaker_transitions_total',
      help: 'Circuit breaker state changes per candidate; origin local or remote (another replica)',
      labelNames: ['candidate', 'to', 'origin'] as const,
      registers,
    }),
    providerUp: new Gauge({
      name: 'boo_provider_up',
      help: '1 when the provider passes its health checks',
      labelNames: ['provider'] as const,
      registers,
    }),
    eventsPublished: new Counter({
      name: 'boo_events_published_total',
      help: 'Dispatch events handed to the event sink',
      registers,
    }),
    eventsEnqueued: new Counter({
      name: 'boo_events_enqueued_total',
      help: 'Dispatch events accepted by the queue (or the in-process writer)',
      registers,
    }),
    eventsSpooled: new Counter({
      name: 'boo_events_spooled_total',
      help: 'Dispatch events written to the local spool: the queue was unreachable or, in embedded mode, the writer was full',
      registers,
    }),
    eventsDropped: new Counter({
      name: 'boo_events_dropped_total',
      help: 'Dispatch events lost at a bound (memory buffer or spool size)',
      labelNames: ['reason'] as const,
      registers,
    }),
    spoolBytes: new Gauge({
      name: 'boo_spool_bytes',
      help: 'Size of the event spool waiting for replay',
      registers,
    }),
    spoolFsyncSeconds: new Histogram({
      name: 'boo_spool_fsync_seconds',
      help: 'Time of the one fdatasync of each spool append (group commit: one per flush, not per event)',
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    redisUp: new Gauge({
      name: 'boo_redis_up',
      help: '1 when the gateway reaches Redis (always 0 in embedded mode)',
      registers,
    }),
    embeddedStoreOpen: new Gauge({
      name: 'boo_embedded_store_open',
      help: 'Embedded mode: 1 while the embedded store (PGlite, in a thread of its own) is open; it opens with the first event and closes when idle',
      registers,
    }),
    queueDepth: new Gauge({
      name: 'boo_queue_depth',
      help: 'Requests waiting in the line of a virtual model on this replica (virtualModels.<name>.queue)',
      labelNames: ['virtual_model'] as const,
      registers,
    }),
    queueWait: new BoundHistogram({
      name: 'boo_queue_wait_seconds',
      help: 'Time a request waited in line before a candidate took it',
      labelNames: ['virtual_model'] as const,
      buckets: llmLatencyBuckets,
      registers,
    }),
    capacityRejections: new BoundCounter({
      name: 'boo_capacity_rejections_total',
      help: 'Requests refused 429 capacity_exceeded: the line was full (rejected) or its maxWaitMs passed (queue_timeout)',
      labelNames: ['virtual_model', 'reason'] as const,
      registers,
    }),
    slotsInUse: new Gauge({
      name: 'boo_slots_in_use',
      help: "Requests of this replica holding a slot of the candidate (its or its provider's maxInFlight)",
      labelNames: ['candidate'] as const,
      registers,
      // Read at scrape time: taking and freeing a slot, twice a request, touches no series.
      collect() {
        for (const read of slotsInUseReaders) for (const [candidate, count] of read()) this.labels(candidate).set(count);
      },
    }),
    rateLimitRejections: new BoundCounter({
      name: 'boo_rate_limit_rejections_total',
      help: 'Requests refused 429 rate_limit_exceeded, by the limit that refused them: a key (by name) or a source, requests or tokens',
      labelNames: ['scope', 'name', 'dimension'] as const,
      registers,
    }),
    // Joins breaker state (per candidate) to virtual models in PromQL, for "all candidates open" alerts.
    virtualModelCandidates: new Gauge({
      name: 'boo_virtual_model_candidate_info',
      help: 'Always 1: the candidate is configured for the virtual model',
      labelNames: ['virtual_model', 'candidate'] as const,
      registers,
    }),
    resumes: new BoundCounter({
      name: 'boo_resumes_total',
      help: 'Streams broken after their first byte, by virtual model (with resume on) and what came of it',
      labelNames: ['virtual_model', 'outcome'] as const,
      registers,
    }),
  };

  // The hot path holds status codes and stream flags as numbers and booleans; labels are strings.
  const bound = {
    httpRequestsOf: (route: HttpRoute, code: number) => metrics.httpRequests.labels(route, String(code)),
    dispatchesOf: (virtualModel: string, status: string) => metrics.dispatches.labels(virtualModel, status),
    failoversOf: (virtualModel: string) => metrics.failovers.labels(virtualModel),
    attemptsOf: (candidate: string, provider: string, outcome: string) => metrics.attempts.labels(candidate, provider, outcome),
    ttfbOf: (candidate: string) => metrics.ttfb.labels(candidate),
    durationOf: (virtualModel: string, stream: boolean) => metrics.duration.labels(virtualModel, String(stream)),
    overheadOf: (phase: 'pre_upstream' | 'relay') => metrics.overhead.labels(phase),
    resumesOf: (virtualModel: string, outcome: ResumeOutcome) => metrics.resumes.labels(virtualModel, outcome),
    queueWaitOf: (virtualModel: string) => metrics.queueWait.labels(virtualModel),
    capacityRejectionsOf: (virtualModel: string, reason: CapacityRejectionReason) => metrics.capacityRejections.labels(virtualModel, reason),
    rateLimitRejectionsOf: (scope: 'key' | 'source', name: string, dimension: 'requests' | 'tokens') =>
      metrics.rateLimitRejections.labels(scope, name, dimension),
    readSlotsInUseFrom: (read: () => ReadonlyMap<string, number>) => void slotsInUseReaders.add(read),
  };

  const all = { ...metrics, ...bound };
  initConfigSeries(all, config, undefined);
  return all;
}

/** `provider/model` -> provider, of every candidate of every virtual model. */
function candidatesOf(config: Config): Map<string, string> {
  const candidates = new Map<string, string>();
  for (const virtualModel of Object.values(config.virtualModels)) {
    for (const candidate of virtualModel.candidates) candidates.set(candidate.id, candidate.provider);
  }
  return candidates;
}

/** Every limit of the config that can refuse a request: (scope, name, dimension). */
function rateLimitSeries(config: Config): Array<['key' | 'source', string, 'requests' | 'tokens']> {
  const series: Array<['key' | 'source', string, 'requests' | 'tokens']> = [];
  const add = (scope: 'key' | 'source', name: string, limits: { requestsPerMinute?: number | undefined; tokensPerMinute?: number | undefined }) => {
    if (limits.requestsPerMinute !== undefined) series.push([scope, name, 'requests']);
    if (limits.tokensPerMinute !== undefined) series.push([scope, name, 'tokens']);
  };
  for (const key of config.clientKeys) if (key.name !== undefined && key.limits) add('key', key.name, key.limits);
  for (const [source, limits] of Object.entries(config.limits.sources)) add('source', source, limits);
  return series;
}

/**
 * Creates at 0 the series of every label value the config brings, so dashboards show 0 rather
 * than "no data". On a reload (`previous` given) only the values that are new get series, since
 * resetting a gauge or a histogram would erase what it holds, and the candidate map follows the
 * new config.
 */
export function initConfigSeries(metrics: GatewayMetrics, config: Config, previous: Config | undefined): void {
  const candidates = candidatesOf(config);
  const known = previous ? candidatesOf(previous) : new Map<string, string>();
  const knownProviders = new Set(previous ? Object.keys(previous.providers) : []);
  const knownModels = new Set(previous ? [...Object.keys(previous.virtualModels), directModelLabel] : []);

  for (const provider of Object.keys(config.providers)) if (!knownProviders.has(provider)) metrics.providerUp.labels(provider).set(1);
  if (previous) {
    for (const virtualModel of Object.values(previous.virtualModels)) {
      for (const candidate of virtualModel.candidates) metrics.virtualModelCandidates.remove(virtualModel.name, candidate.id);
    }
  }
  for (const virtualModel of Object.values(config.virtualModels)) {
    for (const candidate of virtualModel.candidates) metrics.virtualModelCandidates.labels(virtualModel.name, candidate.id).set(1);
  }
  for (const virtualModel of [...Object.keys(config.virtualModels), directModelLabel]) {
    if (knownModels.has(virtualModel)) continue;
    for (const status of dispatchStatuses) metrics.dispatches.labels(virtualModel, status).inc(0);
    metrics.failovers.labels(virtualModel).inc(0);
    for (const stream of ['true', 'false']) metrics.duration.zero({ virtual_model: virtualModel, stream });
    if ((config.virtualModels[virtualModel]?.maxResumes ?? 0) > 0) for (const outcome of resumeOutcomes) metrics.resumes.labels(virtualModel, outcome).inc(0);
    if (virtualModel === directModelLabel) continue;
    // Every virtual model, with a line or not: a line added by a reload then has its series already.
    metrics.queueDepth.labels(virtualModel).set(0);
    metrics.queueWait.zero({ virtual_model: virtualModel });
    for (const reason of capacityRejectionReasons) metrics.capacityRejections.labels(virtualModel, reason).inc(0);
  }
  for (const [scope, name, dimension] of rateLimitSeries(config)) metrics.rateLimitRejections.labels(scope, name, dimension).inc(0);
  for (const [candidate, provider] of candidates) {
    if (known.has(candidate)) continue;
    metrics.slotsInUse.labels(candidate).set(0);
    for (const outcome of attemptOutcomes) metrics.attempts.labels(candidate, provider, outcome).inc(0);
    metrics.ttfb.zero({ candidate });
    metrics.breakerState.labels(candidate).set(breakerStateValue.closed);
    for (const to of ['open', 'halfOpen', 'closed']) {
      for (const origin of ['local', 'remote']) metrics.breakerTransitions.labels(candidate, to, origin).inc(0);
    }
  }
  if (previous) return;
  for (const phase of ['pre_upstream', 'relay']) metrics.overhead.zero({ phase });
  for (const route of httpRoutes) metrics.httpRequests.labels(route, '200').inc(0);
  for (const reason of ['buffer_full', 'spool_full', 'spool_corrupt']) metrics.eventsDropped.labels(reason).inc(0);
}

export type DispatchLogMetrics = ReturnType<typeof createDispatchLogMetrics>;

/** Metrics of the batch writer; registered by the worker, and by the gateway in embedded mode. */
export function createDispatchLogMetrics(register: Registry) {
  const registers = [register];
  const metrics = {
    inserted: new Counter({ name: 'boo_events_inserted_total', help: 'Dispatch events written to route_dispatch_log (new rows)', registers }),
    batches: new Counter({
      name: 'boo_dispatch_log_batches_total',
      help: 'Insert batches by result',
      labelNames: ['result'] as const,
      registers,
    }),
    batchSize: new Histogram({
      name: 'boo_dispatch_log_batch_size',
      help: 'Events per insert batch',
      buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000],
      registers,
    }),
    insertSeconds: new Histogram({
      name: 'boo_dispatch_log_insert_seconds',
      help: 'Time of one batch insert statement',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    lag: new Histogram({
      name: 'boo_event_lag_seconds',
      help: 'From the event (created_at) to its row being committed',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900],
      registers,
    }),
    queueJobs: new Gauge({
      name: 'boo_queue_jobs',
      help: 'Jobs in the dispatch event queue by state',
      labelNames: ['state'] as const,
      registers,
    }),
    invalid: new Counter({
      name: 'boo_events_invalid_total',
      help: 'Events rejected by schema validation, or refused by the database for their content (never retried)',
      registers,
    }),
    errors: new Counter({
      name: 'boo_dispatch_log_errors_total',
      help: 'Errors of the dispatch log writer by kind',
      labelNames: ['kind'] as const,
      registers,
    }),
  };
  for (const result of ['ok', 'error']) metrics.batches.labels(result).inc(0);
  for (const state of ['waiting', 'active', 'delayed', 'failed']) metrics.queueJobs.labels(state).set(0);
  for (const kind of ['insert', 'queue', 'connection', 'partitions']) metrics.errors.labels(kind).inc(0);
  return metrics;
}
