import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { gzipSync } from 'node:zlib';
import { createParser } from 'eventsource-parser';
import fc from 'fast-check';
import OpenAI from 'openai';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/load.js';
import { startFakeFleet, type FakeProvider } from '../../simulator/fake-provider.js';
import { topLevelMembers } from '../support/json-members.js';
import { rawRequest } from '../support/raw-http.js';
import { fleetConfigDocument, startTestGateway, type TestGateway } from '../support/gateway-harness.js';
import { waitFor } from '../support/wait-for.js';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

type Fleet<K extends string> = Record<K, FakeProvider> & { closeAll(): Promise<void> };

async function post(gateway: TestGateway, body: string | Buffer, headers: Record<string, string> = {}, path = '/v1/chat/completions') {
  const response = await request(`${gateway.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  const text = await response.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.statusCode, headers: response.headers, text, json: json as { error?: { code?: string; message?: string } } | undefined };
}

async function metricValue(gateway: TestGateway, name: string, labels: Record<string, string>): Promise<number> {
  const metric = await gateway.register.getSingleMetric(name)?.get();
  const value = metric?.values.find((sample) => Object.entries(labels).every(([key, wanted]) => sample.labels[key] === wanted));
  return value?.value ?? 0;
}

describe('issue 14: one body, one meaning', () => {
  let fleet: Fleet<'a'>;
  let gateway: TestGateway;

  beforeAll(async () => {
    fleet = await startFakeFleet({ a: { name: 'a', models: ['m1', 'hidden'] } });
    gateway = await startTestGateway(
      fleetConfigDocument({ a: fleet.a }, {}, { virtualModels: { 'auto:chat': { candidates: ['a/m1'] } }, limits: { maxBodyBytes: 1 << 20 } }),
    );
  });
  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });

  it.each([
    ['two model keys', '{"model":"hidden","model":"auto:chat","messages":[]}'],
    ['an escaped second spelling', '{"mod\\u0065l":"secret","model":"auto:chat","messages":[]}'],
    ['a second key in capitals', '{"MODEL":"hidden","model":"a/m1","messages":[]}'],
    ['two keys naming a concrete model', '{"model":"a/hidden","model":"a/m1"}'],
  ])('refuses %s with 400 duplicate_model_key and sends nothing upstream', async (_name, body) => {
    const before = fleet.a.dispatched().length;
    const answer = await post(gateway, body);
    expect(answer.status).toBe(400);
    expect(answer.json?.error?.code).toBe('duplicate_model_key');
    expect(fleet.a.dispatched().length).toBe(before);
  });

  it("gives the upstream exactly one model, the candidate's, for any body JSON.parse accepts (seeded fuzz)", async () => {
    const seed = Number(process.env.BOO_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
    // Printed so that a failure can be replayed: BOO_FUZZ_SEED=<seed> npx vitest run <this file>
    console.log(`issue-14 hostile-body fuzz seed: ${seed}`);
    const modelKey = fc.constantFrom('model', 'mod\\u0065l', 'Model', 'MODEL');
    const modelValue = fc.constantFrom('"auto:chat"', '"a/m1"', '"m1"', '"hidden"', '"auto:ch\\u0061t"', '1', 'null');
    const filler = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }).map((value) => JSON.stringify(value)),
      fc.integer({ min: 60, max: 90 }).map((depth) => `${'['.repeat(depth)}${']'.repeat(depth)}`),
      fc.constantFrom('1e400', '-0', '123456789012345678901234567890', '"\\ud800"', '"\\u0000"', '[[],[[]],{}]'),
    );
    const member = fc.oneof(
      fc.tuple(modelKey, modelValue).map(([key, value]) => `"${key}":${value}`),
      fc.tuple(fc.constantFrom('messages', 'stream', 'max_tokens', 'x', 'tools'), filler).map(([key, value]) => `"${key}":${value}`),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(member, { minLength: 1, maxLength: 5 }), async (members) => {
        const body = `{${members.join(',')}}`;
        JSON.parse(body);
        const before = fleet.a.dispatched().length;
        const answer = await post(gateway, body);
        expect(answer.status).toBeLessThan(500);
        if (answer.status !== 200) {
          expect(answer.json?.error?.code).toEqual(expect.any(String));
          expect(fleet.a.dispatched().length).toBe(before);
          return;
        }
        const sent = fleet.a.dispatched().at(-1)!.rawBody!.toString('utf8');
        const models = topLevelMembers(sent).filter(([key]) => key.toLowerCase() === 'model');
        expect(models).toEqual([['model', 'm1']]);
      }),
      { seed, numRuns: 150 },
    );
  });
});

describe('issue 14: what clients learn of the inside', () => {
  let fleet: Fleet<'a' | 'b'>;
  let gateway: TestGateway;

  beforeAll(async () => {
    fleet = await startFakeFleet({ a: { name: 'a', contextSize: { m1: 8192 } }, b: { name: 'b' } });
    gateway = await startTestGateway(
      fleetConfigDocument(
        fleet,
        {},
        {
          virtualModels: { 'auto:chat': { candidates: ['a/m1', 'b/m1'] }, 'only:a': { candidates: ['a/m1'] } },
          breaker: { volumeThreshold: 3, errorThresholdPercentage: 50, resetTimeoutMs: 60_000 },
        },
      ),
    );
  });
  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });
  afterEach(() => {
    fleet.a.defaultReply = { kind: 'ok' };
    fleet.b.defaultReply = { kind: 'ok' };
    gateway.sink.events.length = 0;
  });

  it('answers 503 no_healthy_candidate, records one no_candidates row and counts it, when every provider is down and context sizes are known', async () => {
    await gateway.healthChecker.checkAll();
    expect(gateway.fleet.candidate('a/m1').contextSize).toBe(8192);
    await fleet.a.stop();
    await gateway.healthChecker.checkAll();
    const before = await metricValue(gateway, 'boo_dispatches_total', { virtual_model: 'only:a', status: 'no_candidates' });
    const answer = await post(gateway, JSON.stringify({ model: 'only:a', messages: [{ role: 'user', content: 'hi' }], max_tokens: 10 }));
    expect(answer.status).toBe(503);
    expect(answer.json?.error?.code).toBe('no_healthy_candidate');
    expect(gateway.sink.events.map((event) => event.status)).toEqual(['no_candidates']);
    expect(await metricValue(gateway, 'boo_dispatches_total', { virtual_model: 'only:a', status: 'no_candidates' })).toBe(before + 1);
    await fleet.a.start();
    await gateway.healthChecker.checkAll();
  });

  it('names candidates, never addresses, ports or transport errors, when every candidate failed; the details go to the dispatch log', async () => {
    await fleet.a.stop();
    fleet.b.defaultReply = { kind: 'status', status: 503, body: 'upstream 10.0.0.7:8081 overloaded' };
    const answer = await post(gateway, JSON.stringify({ model: 'auto:chat', messages: [] })).finally(() => fleet.a.start());
    expect(answer.status).toBe(502);
    expect(answer.json?.error?.code).toBe('all_candidates_failed');
    const message = answer.json?.error?.message ?? '';
    expect(message).toContain('a/m1');
    expect(message).toContain('b/m1');
    expect(message).not.toMatch(/127\.0\.0\.1|10\.0\.0\.7|ECONNREFUSED|:\d{4,5}\b|overloaded/);
    const [event] = gateway.sink.events;
    expect(event?.status).toBe('failed');
    expect(event?.error).toMatch(/b\/m1/);
  });

  it('fails over from an upstream 401/403, never relays its text, and counts it against the breaker', async () => {
    fleet.a.defaultReply = {
      kind: 'status',
      status: 401,
      body: { error: { message: 'Incorrect API key provided: sk-UPST***1111', type: 'invalid_request_error', code: 'invalid_api_key' } },
    };
    const answer = await post(gateway, JSON.stringify({ model: 'auto:chat', messages: [] }));
    expect(answer.status).toBe(200);
    expect(answer.headers['x-boo-candidate']).toBe('b/m1');
    expect(answer.text).not.toContain('sk-UPST');
    expect(gateway.sink.events[0]?.attempts.map((attempt) => [attempt.candidate, attempt.http_status])).toEqual([
      ['a/m1', 401],
      ['b/m1', 200],
    ]);

    fleet.a.defaultReply = { kind: 'status', status: 403, body: 'Forbidden: key sk-UPST***1111' };
    const alone = await post(gateway, JSON.stringify({ model: 'only:a', messages: [] }));
    expect(alone.status).toBe(502);
    expect(alone.text).not.toContain('sk-UPST');
    for (let i = 0; i < 3 && gateway.breakers.position('a/m1') === 'closed'; i++) await post(gateway, JSON.stringify({ model: 'only:a', messages: [] }));
    expect(gateway.breakers.position('a/m1')).toBe('open');
    gateway.breakers.close('a/m1', 'local');
  });
});

describe('issue 14: request headers', () => {
  let fleet: Fleet<'a'>;
  let gateway: TestGateway;

  beforeAll(async () => {
    fleet = await startFakeFleet({ a: { name: 'a' } });
    gateway = await startTestGateway(fleetConfigDocument(fleet, {}, { virtualModels: { 'auto:chat': { candidates: ['a/m1'] } } }));
  });
  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });

  it('answers a gzip-encoded body with 415 and sends nothing upstream', async () => {
    const before = fleet.a.dispatched().length;
    const answer = await post(gateway, gzipSync(JSON.stringify({ model: 'auto:chat', messages: [] })), { 'content-encoding': 'gzip' });
    expect(answer.status).toBe(415);
    expect(answer.json?.error?.code).toBe('unsupported_content_encoding');
    expect(fleet.a.dispatched().length).toBe(before);
  });

  it('serves an identity-encoded body and never forwards Content-Encoding', async () => {
    const answer = await post(gateway, JSON.stringify({ model: 'auto:chat', messages: [] }), { 'content-encoding': 'identity' });
    expect(answer.status).toBe(200);
    expect(fleet.a.dispatched().at(-1)?.headers['content-encoding']).toBeUndefined();
  });

  it("drops Cookie and the client's X-Forwarded-*, Forwarded and X-Real-IP, and sets X-Forwarded-For and -Proto itself", async () => {
    const answer = await post(gateway, JSON.stringify({ model: 'auto:chat', messages: [] }), {
      cookie: 'session=secret',
      'x-api-key': 'sk-client-secret',
      'x-forwarded-for': '6.6.6.6',
      'x-forwarded-proto': 'https',
      'x-forwarded-host': 'evil.example',
      forwarded: 'for=6.6.6.6',
      'x-real-ip': '6.6.6.6',
    });
    expect(answer.status).toBe(200);
    const headers = fleet.a.dispatched().at(-1)!.headers;
    expect(headers.cookie).toBeUndefined();
    expect(headers['x-api-key']).toBeUndefined();
    expect(headers['x-forwarded-host']).toBeUndefined();
    expect(headers.forwarded).toBeUndefined();
    expect(headers['x-real-ip']).toBeUndefined();
    expect(headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(headers['x-forwarded-proto']).toBe('http');
  });

  it('extends the X-Forwarded-For of a trusted proxy with its address', async () => {
    const trusting = await startTestGateway(
      fleetConfigDocument(fleet, {}, { virtualModels: { 'auto:chat': { candidates: ['a/m1'] } }, trustedProxies: ['127.0.0.0/8'] }),
    );
    try {
      await post(trusting, JSON.stringify({ model: 'auto:chat', messages: [] }), { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https' });
      const headers = fleet.a.dispatched().at(-1)!.headers;
      expect(headers['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1');
      expect(headers['x-forwarded-proto']).toBe('https');
    } finally {
      await trusting.close();
    }
  });

  it('answers a request without Host in the OpenAI shape', async () => {
    const body = JSON.stringify({ model: 'auto:chat', messages: [] });
    const raw = `POST /v1/chat/completions HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const answer = await rawRequest(gateway.url, raw);
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toMatchObject({ error: { code: 'missing_host', type: 'invalid_request_error' } });
  });
});

describe('issue 14: the admin role', () => {
  let fleet: Fleet<'a'>;
  let gateway: TestGateway;
  const clientKey = 'sk-client';
  const adminKey = 'sk-admin';

  beforeAll(async () => {
    fleet = await startFakeFleet({ a: { name: 'a' } });
    gateway = await startTestGateway(
      fleetConfigDocument(
        fleet,
        {},
        { virtualModels: { 'auto:chat': { candidates: ['a/m1'] } }, auth: { apiKeys: [sha256(clientKey)], adminKeys: [sha256(adminKey)] } },
      ),
    );
  });
  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });

  const admin = async (key?: string) => {
    const response = await request(`${gateway.url}/admin/candidates`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
    return { status: response.statusCode, body: (await response.body.json()) as { error?: { code?: string } } };
  };

  it('answers /admin/* 401 without a key, 403 to a client key, and 200 to an admin key', async () => {
    expect((await admin()).status).toBe(401);
    const client = await admin(clientKey);
    expect(client.status).toBe(403);
    expect(client.body.error?.code).toBe('permission_denied');
    expect((await admin(adminKey)).status).toBe(200);
  });

  it('accepts an admin key where a client key is accepted', async () => {
    const answer = await post(gateway, JSON.stringify({ model: 'auto:chat', messages: [] }), { authorization: `Bearer ${adminKey}` });
    expect(answer.status).toBe(200);
  });
});

describe('issue 14: configuration', () => {
  it('refuses a baseUrl with credentials, naming the key', () => {
    expect(() => buildConfig({ providers: { a: { baseUrl: 'http://user:pass@10.0.0.5:8080' } } }, 'test', {})).toThrow(ConfigError);
    expect(() => buildConfig({ providers: { a: { baseUrl: 'http://user:pass@10.0.0.5:8080' } } }, 'test', {})).toThrow(
      /providers\.a\.baseUrl: must not carry user:password@/,
    );
  });

  it('refuses a trusted proxy that is not an address or a subnet', () => {
    expect(() => buildConfig({ providers: {}, trustedProxies: ['10.0.0.0/33'] }, 'test', {})).toThrow(/trustedProxies\[0\]/);
  });
});

describe('issue 14: streams', () => {
  let fleet: Fleet<'a'>;
  let gateway: TestGateway;

  beforeAll(async () => {
    fleet = await startFakeFleet({ a: { name: 'a' } });
    gateway = await startTestGateway(
      fleetConfigDocument(
        fleet,
        {},
        {
          virtualModels: { 'auto:chat': { candidates: ['a/m1'] } },
          timeouts: { idleMs: 300 },
          limits: { clientWriteTimeoutMs: 1_500 },
        },
      ),
    );
  });
  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });
  afterEach(() => {
    gateway.sink.events.length = 0;
  });

  it('ends a stream that broke mid-event with an error event an SSE parser reads as an event of its own', async () => {
    fleet.a.script({ kind: 'stream', chunks: 3, breakAfter: 2, breakMidEvent: true });
    const response = await request(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'auto:chat', messages: [], stream: true }),
    });
    const events: string[] = [];
    const parser = createParser({ onEvent: (event) => events.push(event.data) });
    parser.feed(await response.body.text());
    expect(JSON.parse(events.at(-1)!)).toMatchObject({ error: { code: 'stream_error', message: expect.stringContaining('a/m1') } });
    await waitFor(() => gateway.sink.events.length === 1);
    expect(gateway.sink.events[0]?.status).toBe('stream_error');
  });

  it('makes the official SDK raise an error, never end cleanly, when a stream broke mid-event', async () => {
    fleet.a.script({ kind: 'stream', chunks: 3, breakAfter: 2, breakMidEvent: true });
    const client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const stream = await client.chat.completions.create({ model: 'auto:chat', messages: [], stream: true });
    await expect(
      (async () => {
        for await (const chunk of stream) void chunk;
      })(),
    ).rejects.toThrow();
  });

  /**
   * A raw client that reads the head, stops reading (so the gateway must hold the upstream
   * paused once the socket buffers fill), and starts again when `resume()` is called. Resolves
   * with everything it read once the connection ends.
   */
  function slowReader(): { resume(): void; text: Promise<string> } {
    const body = JSON.stringify({ model: 'auto:chat', messages: [], stream: true });
    const { port } = new URL(gateway.url);
    const socket = connect({ port: Number(port), host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    let paused = false;
    const text = new Promise<string>((resolve) => {
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        if (!paused) {
          paused = true;
          socket.pause();
        }
      });
      socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
      socket.on('error', () => undefined);
    });
    socket.write(
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    );
    return { resume: () => socket.resume(), text };
  }

  it('does not hold a client that stops reading for longer than idleMs against the upstream', async () => {
    fleet.a.script({ kind: 'stream', chunks: 4_000, chunkBytes: 16 * 1024 });
    const reader = slowReader();
    await new Promise((resolve) => setTimeout(resolve, 900));
    reader.resume();
    expect(await reader.text).toContain('data: [DONE]');
    await waitFor(() => gateway.sink.events.length === 1);
    expect(gateway.sink.events[0]?.status).toBe('dispatched');
    expect(gateway.breakers.position('a/m1')).toBe('closed');
  });

  it('gives up on a client that reads nothing for clientWriteTimeoutMs: client_closed, not a stream error', async () => {
    fleet.a.script({ kind: 'stream', chunks: 4_000, chunkBytes: 16 * 1024 });
    const startedAt = Date.now();
    const reader = slowReader();
    await waitFor(() => gateway.sink.events.length === 1, 10_000);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(1_400);
    expect(gateway.sink.events[0]).toMatchObject({ status: 'client_closed', error: 'client read nothing for 1500 ms' });
    reader.resume();
    // The connection was cut: the answer never reaches its end.
    expect(await reader.text).not.toContain('data: [DONE]');
    expect(gateway.breakers.position('a/m1')).toBe('closed');
  });
});

describe('issue 14: the llama-swap pass-through behind a provider key', () => {
  let fleet: Fleet<'a'>;
  let gateway: TestGateway;

  beforeAll(async () => {
    fleet = await startFakeFleet({ a: { name: 'a', type: 'llama-swap', loaded: ['m1'], apiKey: 'sk-provider' } });
    gateway = await startTestGateway(
      fleetConfigDocument(
        fleet,
        { a: 'llama-swap' },
        {
          providers: { a: { baseUrl: fleet.a.url, type: 'llama-swap', apiKeyEnv: 'PROVIDER_KEY' } },
          virtualModels: { 'auto:chat': { candidates: ['a/m1'] } },
        },
      ),
      { env: { PROVIDER_KEY: 'sk-provider' } },
    );
  });
  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });

  it('asks /running with the provider key, and reads props from the loaded model', async () => {
    const response = await request(`${gateway.url}/upstream/auto:chat/props`);
    expect(response.statusCode).toBe(200);
    expect(response.headers['x-boo-cache']).toBe('miss');
    await response.body.json();
    const running = fleet.a.received.filter((received) => received.path === '/running');
    expect(running.length).toBeGreaterThan(0);
    for (const asked of running) expect(asked.headers.authorization).toBe('Bearer sk-provider');
    expect(fleet.a.swaps).toBe(0);
  });
});
