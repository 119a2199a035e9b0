import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeFleet, type FakeProvider } from '../../simulator/fake-provider.js';
import { maxConcurrency } from '../support/concurrency.js';
import { fleetConfigDocument, startTestGateway, type TestGateway } from '../support/gateway-harness.js';
import { waitFor } from '../support/wait-for.js';

// Capacity in one gateway process (docs/capacity.md): slots per candidate, the line, rate limits
// per key and source. The cluster-wide parts are in issue-19-processes.test.ts.

const sha256 = (key: string) => createHash('sha256').update(key).digest('hex');

describe('issue 19: capacity in one gateway', () => {
  let fleet: Record<'a' | 'b' | 'c', FakeProvider> & { closeAll(): Promise<void> };
  let gateway: TestGateway;

  beforeAll(async () => {
    fleet = await startFakeFleet({ a: { name: 'a' }, b: { name: 'b', models: ['m2'] }, c: { name: 'c', models: ['m3'] } });
    gateway = await startTestGateway(
      fleetConfigDocument(
        fleet,
        {},
        {
          virtualModels: {
            // a/m1 takes 2 at once wherever it is used; the line holds 4.
            'auto:chat': { preferLoaded: false, candidates: [{ target: 'a/m1', maxInFlight: 2 }], queue: { maxWaitMs: 5_000, maxQueued: 4 } },
            'one:line': { preferLoaded: false, candidates: [{ target: 'b/m2', maxInFlight: 1 }], queue: { maxWaitMs: 5_000 } },
            'short:line': { preferLoaded: false, candidates: ['c/m3'], queue: { maxWaitMs: 400 } },
            'both:busy': { preferLoaded: false, candidates: ['a/m1', 'b/m2'], queue: { maxWaitMs: 5_000 } },
            'no:line': { preferLoaded: false, candidates: ['a/m1'] },
          },
          auth: {
            apiKeys: [
              { sha256: sha256('key-app'), name: 'app', requestsPerMinute: 5 },
              { sha256: sha256('key-tokens'), name: 'tokens', tokensPerMinute: 1_000 },
              sha256('key-plain'),
            ],
          },
          limits: { sources: { batch: { requestsPerMinute: 3 } } },
          breaker: { volumeThreshold: 10_000 },
        },
      ),
    );
  });
  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });
  beforeEach(() => {
    for (const fake of [fleet.a, fleet.b, fleet.c]) {
      fake.received.length = 0;
      fake.defaultReply = { kind: 'ok' };
    }
    gateway.sink.events.length = 0;
  });

  function chat(model: string, options: { key?: string; source?: string; content?: string; maxTokens?: number; signal?: AbortSignal } = {}) {
    return request(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${options.key ?? 'key-plain'}`,
        ...(options.source === undefined ? {} : { 'x-boo-source': options.source }),
      },
      body: JSON.stringify({
        model,
        messages: [{ role: 'user', content: options.content ?? 'hi' }],
        ...(options.maxTokens === undefined ? {} : { max_tokens: options.maxTokens }),
      }),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  async function answered(model: string, options: Parameters<typeof chat>[1] = {}) {
    const response = await chat(model, options);
    return { status: response.statusCode, headers: response.headers, body: (await response.body.json()) as { error?: { code: string; message: string } } };
  }

  async function queueDepth(virtualModel: string): Promise<number> {
    const metric = await gateway.register.getSingleMetric('boo_queue_depth')!.get();
    return metric.values.find((value) => value.labels.virtual_model === virtualModel)?.value ?? 0;
  }

  it('never sends a candidate limited to 2 more than 2 requests at once, while 6 clients all get answers', async () => {
    fleet.a.defaultReply = { kind: 'ok', delayMs: 150 };
    const client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'key-plain', maxRetries: 0 });
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) => client.chat.completions.create({ model: 'auto:chat', messages: [{ role: 'user', content: `client ${i}` }] })),
    );
    expect(answers.map((answer) => answer.choices[0]!.message.content)).toEqual(Array(6).fill('hello from a'));
    expect(fleet.a.dispatched()).toHaveLength(6);
    expect(maxConcurrency(fleet.a.dispatched())).toBe(2);
    await waitFor(() => gateway.sink.events.length === 6, 2_000, 'six events');
    const events = gateway.sink.events;
    expect(events.every((event) => event.status === 'dispatched' && event.attempts.length === 1)).toBe(true);
    // Two went at once, the other four waited in line for a slot (about 150 ms per pair).
    const waited = events.filter((event) => event.queued_ms > 0).map((event) => event.queued_ms);
    expect(waited).toHaveLength(4);
    expect(Math.max(...waited)).toBeGreaterThanOrEqual(250);
  });

  it('serves the line first come first served within a source and round-robin across sources', async () => {
    fleet.b.defaultReply = { kind: 'ok', delayMs: 30 };
    // The first request holds the only slot while the others queue up in a known order.
    fleet.b.script({ kind: 'ok', delayMs: 400 });
    const holder = answered('one:line', { content: 'holder' });
    await waitFor(() => fleet.b.dispatched().length === 1, 2_000, 'the holder at b');
    const order = ['a1', 'a2', 'a3', 'b1', 'b2', 'c1'];
    const pending: Promise<unknown>[] = [];
    for (const [index, name] of order.entries()) {
      pending.push(answered('one:line', { content: name, source: `app-${name[0]!}` }));
      await waitFor(async () => (await queueDepth('one:line')) === index + 1, 2_000, `${name} in line`);
    }
    await Promise.all([holder, ...pending]);
    const served = fleet.b.dispatched().map((received) => (received.body as { messages: { content: string }[] }).messages[0]!.content);
    expect(served).toEqual(['holder', 'a1', 'b1', 'c1', 'a2', 'b2', 'a3']);
  });

  it('holds a request while every candidate answers 429 for a second, and serves it when they recover', async () => {
    fleet.a.defaultReply = { kind: 'status', status: 429 };
    fleet.b.defaultReply = { kind: 'status', status: 429, headers: { 'retry-after': '1' } };
    const recovered = setTimeout(() => {
      fleet.a.defaultReply = { kind: 'ok' };
      fleet.b.defaultReply = { kind: 'ok' };
    }, 1_000);
    try {
      const startedAt = Date.now();
      const { status, body } = await answered('both:busy');
      expect(status).toBe(200);
      expect(Date.now() - startedAt).toBeGreaterThanOrEqual(900);
      expect(body).toMatchObject({ choices: [{ message: { content: expect.stringMatching(/^hello from [ab]$/) } }] });
    } finally {
      clearTimeout(recovered);
    }
    await waitFor(() => gateway.sink.events.length === 1, 2_000, 'the event');
    const [event] = gateway.sink.events;
    expect(event).toMatchObject({ status: 'dispatched', virtual_model: 'both:busy' });
    expect(event!.queued_ms).toBeGreaterThanOrEqual(700);
    // The 429s are attempts; a without Retry-After is asked again after a short pause, b only after its second.
    const refusals = event!.attempts.filter((attempt) => attempt.http_status === 429);
    expect(refusals.length).toBeGreaterThanOrEqual(2);
    expect(refusals.filter((attempt) => attempt.candidate === 'b/m2')).toHaveLength(1);
    expect(refusals.length).toBeLessThanOrEqual(8);
  });

  it('refuses with 429 capacity_exceeded and Retry-After after maxWaitMs (queue_timeout)', async () => {
    fleet.c.defaultReply = { kind: 'status', status: 429, headers: { 'retry-after': '5' } };
    const startedAt = Date.now();
    const { status, headers, body } = await answered('short:line');
    expect(status).toBe(429);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(390);
    expect(body.error).toMatchObject({ code: 'capacity_exceeded' });
    expect(Number(headers['retry-after'])).toBeGreaterThanOrEqual(1);
    await waitFor(() => gateway.sink.events.length === 1, 2_000, 'the event');
    expect(gateway.sink.events[0]).toMatchObject({ status: 'queue_timeout', virtual_model: 'short:line' });
    expect(gateway.sink.events[0]!.queued_ms).toBeGreaterThanOrEqual(390);
    // Only the first try reached c: its cooldown outlasts the wait.
    expect(fleet.c.dispatched()).toHaveLength(1);
  });

  it('refuses with 429 capacity_exceeded at once when maxQueued are already waiting (rejected)', async () => {
    fleet.a.defaultReply = { kind: 'ok', delayMs: 400 };
    const holders = [answered('auto:chat'), answered('auto:chat')];
    await waitFor(() => fleet.a.dispatched().length === 2, 2_000, 'two slots taken');
    const waiting = Array.from({ length: 4 }, () => answered('auto:chat'));
    await waitFor(async () => (await queueDepth('auto:chat')) === 4, 2_000, 'a full line');
    const startedAt = Date.now();
    const { status, headers, body } = await answered('auto:chat');
    expect(Date.now() - startedAt).toBeLessThan(200);
    expect(status).toBe(429);
    expect(body.error).toMatchObject({ code: 'capacity_exceeded' });
    expect(Number(headers['retry-after'])).toBeGreaterThanOrEqual(1);
    const settled = await Promise.all([...holders, ...waiting]);
    expect(settled.map((answer) => answer.status)).toEqual(Array(6).fill(200));
    await waitFor(() => gateway.sink.events.length === 7, 3_000, 'seven events');
    expect(gateway.sink.events.filter((event) => event.status === 'rejected')).toHaveLength(1);
  });

  it('refuses at once with 429 capacity_exceeded when every candidate is at its limit and there is no line', async () => {
    fleet.a.defaultReply = { kind: 'ok', delayMs: 300 };
    const holders = [answered('auto:chat'), answered('auto:chat')];
    await waitFor(() => fleet.a.dispatched().length === 2, 2_000, 'two slots taken');
    const { status, headers, body } = await answered('no:line');
    expect(status).toBe(429);
    expect(body.error).toMatchObject({ code: 'capacity_exceeded', message: expect.stringContaining('maxInFlight') });
    expect(headers['retry-after']).toBeDefined();
    await Promise.all(holders);
    await waitFor(() => gateway.sink.events.length === 3, 2_000, 'three events');
    expect(gateway.sink.events.find((event) => event.virtual_model === 'no:line')).toMatchObject({ status: 'rejected', attempts: [] });
  });

  it('takes a waiting request whose client disconnects out of line, and sends it nowhere', async () => {
    fleet.b.defaultReply = { kind: 'ok', delayMs: 500 };
    const holder = answered('one:line');
    await waitFor(() => fleet.b.dispatched().length === 1, 2_000, 'the holder at b');
    const controller = new AbortController();
    const leaving = chat('one:line', { signal: controller.signal }).catch(() => undefined);
    await waitFor(async () => (await queueDepth('one:line')) === 1, 2_000, 'one in line');
    controller.abort();
    await leaving;
    await waitFor(async () => (await queueDepth('one:line')) === 0, 2_000, 'the line empty');
    await holder;
    await sleep(50);
    expect(fleet.b.dispatched()).toHaveLength(1);
    await waitFor(() => gateway.sink.events.length === 2, 2_000, 'two events');
    expect(gateway.sink.events.map((event) => event.status).sort()).toEqual(['client_closed', 'dispatched']);
  });

  it("limits a named key's requests per minute with x-ratelimit-* headers counting down, and records the name", async () => {
    const remaining: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { status, headers } = await answered('no:line', { key: 'key-app' });
      expect(status).toBe(200);
      expect(headers['x-ratelimit-limit-requests']).toBe('5');
      expect(headers['x-ratelimit-reset-requests']).toMatch(/^(\d+m)?\d+(\.\d+)?m?s$/);
      remaining.push(String(headers['x-ratelimit-remaining-requests']));
    }
    expect(remaining).toEqual(['4', '3', '2', '1', '0']);
    const refused = await answered('no:line', { key: 'key-app' });
    expect(refused.status).toBe(429);
    expect(refused.body.error).toMatchObject({ code: 'rate_limit_exceeded', message: expect.stringContaining('"app"') });
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(refused.headers['x-ratelimit-remaining-requests']).toBe('0');
    expect(fleet.a.dispatched()).toHaveLength(5);
    await waitFor(() => gateway.sink.events.length === 6, 2_000, 'six events');
    expect(gateway.sink.events.map((event) => event.key_name)).toEqual(Array(6).fill('app'));
    expect(gateway.sink.events.map((event) => event.status)).toEqual([...Array(5).fill('dispatched'), 'rate_limited']);
    // The key never appears in an event, only its name.
    expect(JSON.stringify(gateway.sink.events)).not.toContain('key-app');

    // The official client reads the refusal as a RateLimitError.
    const client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'key-app', maxRetries: 0 });
    await expect(client.chat.completions.create({ model: 'no:line', messages: [{ role: 'user', content: 'hi' }] })).rejects.toBeInstanceOf(
      OpenAI.RateLimitError,
    );
  });

  it('limits a source across keys, and leaves sources that are not configured alone', async () => {
    for (let i = 0; i < 3; i++) expect((await answered('no:line', { key: i % 2 ? 'key-plain' : 'key-tokens', source: 'batch' })).status).toBe(200);
    const refused = await answered('no:line', { source: 'batch' });
    expect(refused.status).toBe(429);
    expect(refused.body.error!.message).toContain('"batch"');
    for (let i = 0; i < 5; i++) {
      const other = await answered('no:line', { source: 'interactive' });
      expect(other.status).toBe(200);
      expect(other.headers['x-ratelimit-limit-requests']).toBeUndefined();
    }
  });

  it('charges tokens as estimated at admission and corrects them by the usage reported', async () => {
    // Usage says 100 tokens a request: ten requests use the whole 1,000 a minute, whatever was estimated.
    fleet.a.defaultReply = { kind: 'ok', usage: { prompt_tokens: 60, completion_tokens: 40 } };
    const first = await answered('no:line', { key: 'key-tokens', maxTokens: 300 });
    expect(first.status).toBe(200);
    // Estimated at admission: the prompt and max_tokens, about 300 of the 1,000.
    const afterEstimate = Number(first.headers['x-ratelimit-remaining-tokens']);
    expect(afterEstimate).toBeLessThanOrEqual(700);
    const estimate = 1_000 - afterEstimate;
    const second = await answered('no:line', { key: 'key-tokens', maxTokens: 300 });
    // The first was corrected to the 100 it used once its usage was known (uncorrected: 1,000 - 2 estimates).
    const afterCorrection = Number(second.headers['x-ratelimit-remaining-tokens']);
    expect(afterCorrection).toBeGreaterThanOrEqual(1_000 - 100 - estimate);
    expect(afterCorrection).toBeLessThanOrEqual(1_000 - 100 - estimate + 2);
    let served = 2;
    for (;;) {
      const next = await answered('no:line', { key: 'key-tokens', maxTokens: 50 });
      if (next.status !== 200) {
        expect(next.status).toBe(429);
        expect(next.body.error!.message).toContain('tokens per minute');
        break;
      }
      served++;
      expect(served).toBeLessThan(20);
    }
    // About ten requests of 100 tokens fit a minute's 1,000 (a little refill meanwhile).
    expect(served).toBeGreaterThanOrEqual(9);
    expect(served).toBeLessThanOrEqual(11);
  });
});
