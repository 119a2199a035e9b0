import { Capacity } from '../capacity/capacity.js';
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { Writable } from 'node:stream';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { StubClient, StubDispatcher, type StubScript } from '../../test/support/stub-dispatcher.js';
import { BreakerRegistry } from '../breakers/breaker-registry.js';
import { buildConfig } from '../config/load.js';
import { AllCandidatesFailedError, ModelNotFoundError, NoHealthyCandidateError } from '../errors.js';
import type { DispatchEvent } from '../events/dispatch-event.js';
import type { EventSink } from '../events/event-sink.js';
import { FleetState } from '../fleet/fleet-state.js';
import { createGatewayMetrics } from '../metrics/registry.js';
import { RoutePlanner } from '../routing/route-planner.js';
import { createLogger } from '../shared/logger.js';
import type { UpstreamPools } from '../upstream/upstream-pools.js';
import { Failover, type DispatchRequest } from './failover.js';
import { RequestBody } from './request-body.js';
import { endpointAt } from '../protocols/endpoints.js';

const logger = createLogger('silent');

/** The client side of a response: what the gateway wrote, as a ServerResponse would take it. */
class RecordingResponse extends Writable {
  statusCode = 0;
  headers: OutgoingHttpHeaders = {};
  readonly chunks: Buffer[] = [];

  writeHead(status: number, headers: OutgoingHttpHeaders): this {
    this.statusCode = status;
    this.headers = headers;
    return this;
  }

  flushHeaders(): void {}

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.chunks.push(chunk);
    done();
  }

  get body(): string {
    return Buffer.concat(this.chunks).toString();
  }

  asResponse(): ServerResponse {
    return this as unknown as ServerResponse;
  }
}

const json = { 'content-type': 'application/json' };
const refused = Object.assign(new Error('connect ECONNREFUSED 10.0.0.2:8080'), { code: 'ECONNREFUSED' });
const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });

const ok =
  (body = '{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4}}'): StubScript =>
  (request) =>
    request.answer(200, body, json);
const status =
  (code: number, headers: Record<string, string> = {}): StubScript =>
  (request) =>
    request.answer(code, '{"error":{"message":"no"}}', { ...json, ...headers });
const refuse: StubScript = (request) => request.fail(refused);
const hang: StubScript = (request) => request.start();

/**
 * A Failover over three providers whose pools are stub dispatchers, with a real breaker
 * registry, fleet state, route planner and metrics, and a sink that keeps the events.
 */
const registries: BreakerRegistry[] = [];

function setUp(candidates = ['a/m1', 'b/m2', 'c/m3']) {
  const config = buildConfig(
    {
      providers: {
        a: { baseUrl: 'http://a.test:8080/prefix' },
        b: { baseUrl: 'http://b.test:8080', apiKeyEnv: 'B_KEY' },
        c: { baseUrl: 'http://c.test:8080' },
      },
      virtualModels: { 'auto:chat': { strategy: 'priority', preferLoaded: false, candidates } },
    },
    'failover test',
    { B_KEY: 'secret' },
  );
  const fleet = new FleetState();
  const breakers = new BreakerRegistry(config.breaker);
  registries.push(breakers);
  const planner = new RoutePlanner({ config: () => config, fleet, breakers, random: () => 0 });
  const upstreams = { a: new StubDispatcher(), b: new StubDispatcher(), c: new StubDispatcher() };
  const pools = {
    pool: (provider: string) => upstreams[provider as keyof typeof upstreams].asDispatcher(),
  } as unknown as UpstreamPools;
  const register = new Registry();
  const metrics = createGatewayMetrics(register, config);
  const events: DispatchEvent[] = [];
  const sink: EventSink = { publish: (event) => events.push(event), health: () => ({ redis: 'ok', database: 'ok' }), close: () => Promise.resolve() };
  const capacity = new Capacity({ config: () => config, logger });
  const failover = new Failover({ config: () => config, planner, fleet, breakers, pools, metrics, sink, replica: 'unit', capacity });

  let sequence = 0;
  /** Serves one request; resolves with the response and the error serve threw, if any. */
  const serve = async (overrides: Partial<DispatchRequest> = {}) => {
    const model = overrides.model ?? 'auto:chat';
    const raw = Buffer.from(JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }));
    const request: DispatchRequest = {
      endpoint: endpointAt('/v1/chat/completions')!,
      model,
      stream: false,
      contentType: 'application/json',
      body: new RequestBody(raw, model, [raw.indexOf(`"${model}"`), raw.indexOf(`"${model}"`) + model.length + 2]),
      headers: { 'content-type': 'application/json', authorization: 'Bearer client-key' },
      requestId: `req-${++sequence}`,
      source: 'unit',
      receivedAt: performance.now(),
      client: new StubClient(),
      forwarded: { forwardedFor: '192.0.2.1', forwardedProto: 'http' },
      logger,
      requiredContext: 0,
      keyName: undefined,
      ...overrides,
    };
    const res = new RecordingResponse();
    const error = await failover.serve(request, res.asResponse()).then(
      () => undefined,
      (err: unknown) => err,
    );
    return { res, error, request };
  };

  const counter = async (name: string, labels: Record<string, string> = {}) => {
    const metric = await register.getSingleMetric(name)?.get();
    return (metric?.values ?? [])
      .filter((sample) => Object.entries(labels).every(([key, value]) => sample.labels[key] === value))
      .reduce((sum, sample) => sum + sample.value, 0);
  };
  return { failover, fleet, breakers, upstreams, events, serve, counter };
}

const attemptsOf = (event: DispatchEvent | undefined) => event?.attempts.map(({ candidate, outcome, http_status }) => ({ candidate, outcome, http_status }));

describe('Failover.serve', () => {
  afterEach(() => {
    for (const breakers of registries.splice(0)) breakers.shutdown();
  });

  it('relays the first candidate’s answer and publishes one dispatched event with what happened', async () => {
    const t = setUp();
    t.upstreams.a.script(ok());
    const { res, error } = await t.serve();
    expect(error).toBeUndefined();
    expect(res.statusCode).toBe(200);
    expect(res.body).toBe('{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4}}');
    expect(res.headers).toMatchObject({ 'x-request-id': 'req-1', 'x-boo-candidate': 'a/m1', 'x-boo-attempts': '1' });
    expect(t.upstreams.b.requests).toEqual([]);
    expect(t.events).toHaveLength(1);
    expect(t.events[0]).toMatchObject({
      request_id: 'req-1',
      requested_model: 'auto:chat',
      virtual_model: 'auto:chat',
      status: 'dispatched',
      chosen_provider_id: 'a',
      chosen_model: 'm1',
      candidates_tried: ['a/m1'],
      error: null,
      stream: false,
      source: 'unit',
      prompt_tokens: 3,
      completion_tokens: 4,
      replica: 'unit',
    });
    expect(attemptsOf(t.events[0])).toEqual([{ candidate: 'a/m1', outcome: 'ok', http_status: 200 }]);
  });

  it('sends each candidate its own model, path and key, never the client’s key', async () => {
    const t = setUp();
    t.upstreams.a.script(status(503));
    t.upstreams.b.script(ok());
    await t.serve();
    const [toA] = t.upstreams.a.requests;
    const [toB] = t.upstreams.b.requests;
    expect(toA?.options.path).toBe('/prefix/v1/chat/completions');
    expect(JSON.parse(toA!.body)).toMatchObject({ model: 'm1' });
    expect(toA?.options.headers).not.toHaveProperty('authorization');
    expect(toB?.options.path).toBe('/v1/chat/completions');
    expect(JSON.parse(toB!.body)).toMatchObject({ model: 'm2' });
    expect(toB?.options.headers).toMatchObject({ authorization: 'Bearer secret', 'x-request-id': 'req-1' });
  });

  it('fails over on a 5xx and on a refused connection, in order, recording every attempt', async () => {
    const t = setUp();
    t.upstreams.a.script(status(502));
    t.upstreams.b.script(refuse);
    t.upstreams.c.script(ok());
    const { res } = await t.serve();
    expect(res.headers).toMatchObject({ 'x-boo-candidate': 'c/m3', 'x-boo-attempts': '3' });
    expect(attemptsOf(t.events[0])).toEqual([
      { candidate: 'a/m1', outcome: 'http_5xx', http_status: 502 },
      { candidate: 'b/m2', outcome: 'connect_error', http_status: null },
      { candidate: 'c/m3', outcome: 'ok', http_status: 200 },
    ]);
    expect(t.events[0]).toMatchObject({ status: 'dispatched', chosen_provider_id: 'c', candidates_tried: ['a/m1', 'b/m2', 'c/m3'] });
    expect(await t.counter('boo_failovers_total', { virtual_model: 'auto:chat' })).toBe(1);
    expect(t.fleet.candidate('b/m2').lastError).toMatch(/ECONNREFUSED/);
  });

  it('keeps a candidate that answered 429 with Retry-After out of rotation until then', async () => {
    const t = setUp();
    t.upstreams.a.script(status(429, { 'retry-after': '30' }));
    t.upstreams.b.script(ok(), ok());
    const before = Date.now();
    await t.serve();
    expect(t.fleet.candidate('a/m1').coolingDownUntil).toBeGreaterThanOrEqual(before + 30_000);
    expect(t.fleet.isCoolingDown('a/m1')).toBe(true);
    await t.serve();
    expect(t.upstreams.a.requests).toHaveLength(1);
    expect(t.upstreams.b.requests).toHaveLength(2);
  });

  it('relays a client 4xx as the answer, without failing over, as a client_error dispatch', async () => {
    const t = setUp();
    t.upstreams.a.script(status(400));
    const { res, error } = await t.serve();
    expect(error).toBeUndefined();
    expect(res.statusCode).toBe(400);
    expect(t.upstreams.b.requests).toEqual([]);
    expect(t.events[0]).toMatchObject({ status: 'client_error', chosen_provider_id: 'a' });
    expect(attemptsOf(t.events[0])).toEqual([{ candidate: 'a/m1', outcome: 'client_error', http_status: 400 }]);
  });

  it('throws AllCandidatesFailedError naming each candidate and what it answered, having written nothing, and publishes failed with the last problem', async () => {
    const t = setUp(['a/m1', 'b/m2']);
    t.upstreams.a.script(status(500));
    t.upstreams.b.script(status(503));
    const { res, error } = await t.serve();
    expect(error).toBeInstanceOf(AllCandidatesFailedError);
    expect((error as AllCandidatesFailedError).message).toBe('every candidate for "auto:chat" failed: a/m1 (500), b/m2 (503)');
    expect(res.statusCode).toBe(0);
    expect(res.chunks).toEqual([]);
    expect(t.events).toHaveLength(1);
    expect(t.events[0]).toMatchObject({ status: 'failed', chosen_provider_id: null, error: 'b/m2: upstream answered 503', candidates_tried: ['a/m1', 'b/m2'] });
  });

  it('throws NoHealthyCandidateError without sending anything when no provider is healthy, and publishes no_candidates', async () => {
    const t = setUp();
    for (const provider of ['a', 'b', 'c']) t.fleet.provider(provider).healthy = false;
    const { error } = await t.serve();
    expect(error).toBeInstanceOf(NoHealthyCandidateError);
    expect(Object.values(t.upstreams).flatMap((upstream) => upstream.requests)).toEqual([]);
    expect(t.events).toHaveLength(1);
    expect(t.events[0]).toMatchObject({ status: 'no_candidates', attempts: [], candidates_tried: [] });
  });

  it('throws ModelNotFoundError for a model nothing serves, and publishes nothing', async () => {
    const t = setUp();
    const { error } = await t.serve({ model: 'no-such-model' });
    expect(error).toBeInstanceOf(ModelNotFoundError);
    expect(t.events).toEqual([]);
  });

  it('skips, without an attempt, a candidate whose probe another request is sending', async () => {
    const t = setUp();
    t.breakers.coordinateProbes();
    t.breakers.open('a/m1');
    t.breakers.permitProbe('a/m1');
    t.upstreams.a.script(hang);
    t.upstreams.b.script(ok());
    const probeClient = new StubClient();
    const probe = t.serve({ client: probeClient });
    await new Promise((resolve) => setImmediate(resolve));
    expect(t.breakers.isProbing('a/m1')).toBe(true);
    await t.serve({ requestId: 'while-probing' });
    const skipped = t.events.find((event) => event.request_id === 'while-probing');
    expect(attemptsOf(skipped)).toEqual([{ candidate: 'b/m2', outcome: 'ok', http_status: 200 }]);
    expect(t.upstreams.a.requests).toHaveLength(1);
    probeClient.leave();
    await probe;
  });

  it('tries the candidates anyway when every breaker is open, and a success changes no breaker (only a probe does)', async () => {
    const t = setUp(['a/m1', 'b/m2']);
    t.breakers.open('a/m1', 'local');
    t.breakers.open('b/m2', 'local');
    t.upstreams.a.script(ok());
    const { res } = await t.serve();
    expect(res.statusCode).toBe(200);
    expect(t.breakers.position('a/m1')).toBe('open');
    expect(t.breakers.position('b/m2')).toBe('open');
  });

  it('stops at a client that left during an attempt: no next candidate, no error thrown, a client_closed dispatch', async () => {
    const t = setUp();
    t.upstreams.a.script(hang);
    const client = new StubClient();
    const served = t.serve({ client });
    await new Promise((resolve) => setImmediate(resolve));
    client.leave();
    const { error } = await served;
    expect(error).toBeUndefined();
    expect(t.upstreams.a.requests[0]?.controller.calls).toEqual(['abort']);
    expect(t.upstreams.b.requests).toEqual([]);
    expect(t.events[0]).toMatchObject({ status: 'client_closed' });
    expect(attemptsOf(t.events[0])).toEqual([{ candidate: 'a/m1', outcome: 'client_closed', http_status: null }]);
    // A client that leaves says nothing about the candidate: /admin/candidates shows no error for it.
    expect(t.fleet.candidate('a/m1').lastError).toBeUndefined();
  });

  it('ends a stream that breaks after its first byte with an SSE error event, without failing over', async () => {
    const t = setUp();
    t.upstreams.a.script((request) => request.start().respond(200, { 'content-type': 'text/event-stream' }).data('data: {"choices":[]}\n\n').fail(reset));
    const { res, error } = await t.serve({ stream: true });
    expect(error).toBeUndefined();
    expect(res.writableEnded).toBe(true);
    const last = res.body.trimEnd().split('\n\n').at(-1) ?? '';
    expect(JSON.parse(last.replace(/^data: /, ''))).toMatchObject({ error: { type: 'api_error', code: 'stream_error' } });
    expect(t.upstreams.b.requests).toEqual([]);
    expect(t.events[0]).toMatchObject({ status: 'stream_error', error: expect.stringMatching(/upstream broke after the first byte/) });
  });

  it('fails over from a JSON answer cut short before its end: it was held, nothing reached the client', async () => {
    const t = setUp();
    t.upstreams.a.script((request) =>
      request
        .start()
        .respond(200, { ...json, 'content-length': '100' })
        .data('{"id":')
        .fail(reset),
    );
    t.upstreams.b.script(ok());
    const { res } = await t.serve();
    expect(res.statusCode).toBe(200);
    expect(t.events[0]).toMatchObject({ status: 'dispatched', chosen_provider_id: 'b', candidates_tried: ['a/m1', 'b/m2'] });
    expect(t.events[0]!.attempts[0]).toMatchObject({ outcome: 'broken_before_end', http_status: 200 });
  });
});
