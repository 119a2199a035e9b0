import { createHash } from 'node:crypto';
import { request } from 'undici';
import OpenAI from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeFleet } from '../../simulator/fake-provider.js';
import { rawPost, rawRequest } from '../support/raw-http.js';
import { fleetConfigDocument, startTestGateway, type TestGateway } from '../support/gateway-harness.js';
import { waitFor } from '../support/wait-for.js';

const clientKey = 'sk-client-secret';
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

function expectOpenAIError(body: unknown, code: string): void {
  expect(body).toEqual({
    error: { message: expect.any(String), type: expect.any(String), param: expect.toSatisfy((p: unknown) => p === null || typeof p === 'string'), code },
  });
}

describe('headers, auth and error shapes', () => {
  let fleet: Awaited<ReturnType<typeof startFakeFleet<'a' | 'b'>>>;
  let gateway: TestGateway;

  beforeAll(async () => {
    fleet = await startFakeFleet({ a: { name: 'a' }, b: { name: 'b' } });
    gateway = await startTestGateway(
      fleetConfigDocument(
        { a: fleet.a, b: fleet.b },
        {},
        {
          providers: {
            a: { baseUrl: fleet.a.url, apiKeyEnv: 'PROVIDER_A_KEY' },
            b: { baseUrl: fleet.b.url },
          },
          virtualModels: { 'auto:chat': { candidates: ['a/m1', 'b/m1'] }, 'only:b': { candidates: ['b/m1'] } },
          auth: { apiKeys: [sha256(clientKey)] },
          limits: { maxBodyBytes: 4096 },
        },
      ),
      { env: { PROVIDER_A_KEY: 'sk-provider-a' } },
    );
  });

  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });

  beforeEach(() => {
    fleet.a.received.length = 0;
    fleet.b.received.length = 0;
    gateway.sink.events.length = 0;
  });

  const post = (body: unknown, headers: Record<string, string> = {}) =>
    request(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${clientKey}`, ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });

  it('forwards X-Boo-Source and end-to-end headers, injects the provider key, strips the client key and hop-by-hop headers', async () => {
    // Sent raw: HTTP clients refuse to send hop-by-hop headers of their own choosing.
    const response = await rawRequest(
      gateway.url,
      rawPost('/v1/chat/completions', JSON.stringify({ model: 'auto:chat', messages: [] }), [
        `authorization: Bearer ${clientKey}`,
        'x-boo-source: boochat/web',
        'x-request-id: req-123',
        'x-custom: kept',
        'connection: close, x-drop-me',
        'x-drop-me: listed in Connection',
        'keep-alive: timeout=5',
        'proxy-authorization: Basic Zm9v',
        'te: trailers',
      ]),
    );
    expect(response.status).toBe(200);
    expect(response.headers['x-request-id']).toBe('req-123');
    expect(response.headers['x-boo-candidate']).toBe('a/m1');
    expect(response.headers['x-boo-attempts']).toBe('1');
    expect(response.headers['x-fake-provider']).toBe('a'); // upstream end-to-end headers come back
    const upstream = fleet.a.dispatched()[0]!;
    expect(upstream.headers['x-boo-source']).toBe('boochat/web');
    expect(upstream.headers['x-request-id']).toBe('req-123');
    expect(upstream.headers['x-custom']).toBe('kept');
    expect(upstream.headers.authorization).toBe('Bearer sk-provider-a');
    expect(upstream.headers['x-drop-me']).toBeUndefined();
    expect(upstream.headers['keep-alive']).toBeUndefined();
    expect(upstream.headers['proxy-authorization']).toBeUndefined();
    expect(upstream.headers.te).toBeUndefined();
    expect(upstream.body).toMatchObject({ model: 'm1', messages: [] });
    await waitFor(() => gateway.sink.events.length === 1);
    expect(gateway.sink.events[0]).toMatchObject({ source: 'boochat/web', request_id: 'req-123' });
  });

  it("dates its own answers and does not relay the upstream's Server", async () => {
    fleet.a.script({ kind: 'ok', headers: { date: 'Mon, 01 Jan 2001 00:00:00 GMT', server: 'llama.cpp', 'x-upstream-kept': 'yes' } });
    const response = await post({ model: 'auto:chat', messages: [] });
    await response.body.text();
    expect(response.statusCode).toBe(200);
    expect(response.headers['x-upstream-kept']).toBe('yes');
    expect(response.headers.server).toBeUndefined();
    expect(Math.abs(Date.parse(String(response.headers.date)) - Date.now())).toBeLessThan(5_000);
  });

  it('serves the dispatch paths as Express would route them: any case, one trailing slash', async () => {
    for (const path of ['/V1/Chat/Completions', '/v1/chat/completions/']) {
      const response = await request(`${gateway.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${clientKey}` },
        body: JSON.stringify({ model: 'only:b', messages: [] }),
      });
      await response.body.text();
      expect(response.statusCode, path).toBe(200);
      expect(fleet.b.dispatched().at(-1)!.path).toBe('/v1/chat/completions');
    }
  });

  it('never forwards the client key to a provider without apiKeyEnv', async () => {
    const response = await post({ model: 'only:b', messages: [] });
    await response.body.text();
    expect(fleet.b.dispatched()[0]!.headers.authorization).toBeUndefined();
  });

  it('generates a request id when the client sends none or an unusable one', async () => {
    const response = await post({ model: 'auto:chat', messages: [] }, { 'x-request-id': 'has spaces and "quotes"' });
    await response.body.text();
    expect(response.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('works as a base URL for the official OpenAI client', async () => {
    const client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: clientKey, maxRetries: 0 });
    const models = await client.models.list();
    expect(models.data.map((model) => model.id)).toEqual(expect.arrayContaining(['auto:chat', 'only:b', 'a/m1', 'b/m1']));
    expect(models.data[0]).toMatchObject({ object: 'model', owned_by: 'boo-gateway' });
    const bad = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
    const error = await bad.models.list().catch((err: unknown) => err);
    expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
  });

  const errorCases: Array<[string, () => Promise<Awaited<ReturnType<typeof request>>>, number, string]> = [
    ['no key', () => request(`${gateway.url}/v1/chat/completions`, { method: 'POST', body: '{}' }), 401, 'invalid_api_key'],
    ['a wrong key', () => post({ model: 'auto:chat' }, { authorization: 'Bearer nope' }), 401, 'invalid_api_key'],
    ['malformed JSON', () => post('{"model":'), 400, 'invalid_json'],
    ['a JSON array', () => post('[1,2]'), 400, 'invalid_body'],
    ['a missing model', () => post({ messages: [] }), 400, 'missing_model'],
    ['a model of the wrong type', () => post({ model: 42 }), 400, 'missing_model'],
    ['stream of the wrong type', () => post({ model: 'auto:chat', stream: 'yes' }), 400, 'invalid_type'],
    ['messages of the wrong type', () => post({ model: 'auto:chat', messages: 'hi' }), 400, 'invalid_type'],
    ['max_tokens of the wrong type', () => post({ model: 'auto:chat', max_tokens: 'many' }), 400, 'invalid_type'],
    ['an unknown model', () => post({ model: 'nope' }), 404, 'model_not_found'],
    ['an unknown provider/model', () => post({ model: 'a/unknown-model' }), 404, 'model_not_found'],
    ['a body over maxBodyBytes', () => post({ model: 'auto:chat', pad: 'x'.repeat(5000) }), 413, 'body_too_large'],
    ['an unknown route', () => request(`${gateway.url}/v1/nothing`, { headers: { authorization: `Bearer ${clientKey}` } }), 404, 'not_found'],
    [
      'a malformed percent-encoding',
      () => request(`${gateway.url}/upstream/%E0%A4%A/props`, { headers: { authorization: `Bearer ${clientKey}` } }),
      400,
      'invalid_request',
    ],
  ];

  it.each(errorCases)('answers %s in the OpenAI error shape', async (_name, send, status, code) => {
    const response = await send();
    expect(response.statusCode).toBe(status);
    expect(response.headers['content-type']).toContain('application/json');
    expect(response.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expectOpenAIError(await response.body.json(), code);
    expect(fleet.a.dispatched()).toHaveLength(0);
    expect(gateway.sink.events).toHaveLength(0); // rejected before resolution: no row
  });

  it('answers 503 no_healthy_candidate when every provider fails its health checks, and records it', async () => {
    gateway.fleet.provider('a').healthy = false;
    gateway.fleet.provider('b').healthy = false;
    try {
      const response = await post({ model: 'auto:chat' });
      expect(response.statusCode).toBe(503);
      expect(response.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
      expectOpenAIError(await response.body.json(), 'no_healthy_candidate');
      await waitFor(() => gateway.sink.events.length === 1);
      expect(gateway.sink.events[0]).toMatchObject({ status: 'no_candidates', candidates_tried: [] });
    } finally {
      gateway.fleet.provider('a').healthy = true;
      gateway.fleet.provider('b').healthy = true;
    }
  });

  it('serves /healthz, /readyz and /metrics without auth', async () => {
    expect((await request(`${gateway.url}/healthz`)).statusCode).toBe(200);
    const ready = await request(`${gateway.url}/readyz`);
    expect(await ready.body.json()).toEqual({ status: 'ready', redis: 'embedded', database: 'embedded' });
    const metrics = await request(`${gateway.url}/metrics`);
    const text = await metrics.body.text();
    expect(text).toContain('boo_dispatches_total{virtual_model="auto:chat",status="dispatched",replica="test"}');
    expect(text).toContain('boo_upstream_attempts_total{candidate="a/m1",provider="a",outcome="ok",replica="test"}');
  });

  it('keeps the client key out of logs and events', async () => {
    const lines: string[] = [];
    const { createLogger } = await import('../../src/shared/logger.js');
    const logger = createLogger('debug', { write: (line: string) => void lines.push(line) });
    const logged = await startTestGateway(
      fleetConfigDocument({ a: fleet.a }, {}, { virtualModels: { 'auto:chat': { candidates: ['a/m1'] } }, auth: { apiKeys: [sha256(clientKey)] } }),
      { logger },
    );
    try {
      fleet.a.script({ kind: 'status', status: 500 });
      // HTTP's parser refuses C0 controls in header values but lets C1 bytes through (obs-text):
      // 0x9b is a terminal's CSI, as dangerous in a log viewer as ESC [.
      await rawRequest(
        logged.url,
        Buffer.from(
          rawPost('/v1/chat/completions', JSON.stringify({ model: 'auto:chat', messages: [{ role: 'user', content: 'my secret prompt' }] }), [
            `authorization: Bearer ${clientKey}`,
            'x-boo-source: evil\u009b31m',
          ]),
          'latin1',
        ),
      );
      await waitFor(() => logged.sink.events.length === 1);
      const everything = lines.join('\n') + JSON.stringify(logged.sink.events);
      expect(lines.length).toBeGreaterThan(0);
      expect(everything).not.toContain(clientKey);
      expect(everything).not.toContain('my secret prompt');
      expect(logged.sink.events[0]!.source).toBe('evil31m');
    } finally {
      await logged.close();
    }
  });
});
