import fc from 'fast-check';
import { connect } from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeFleet } from '../../simulator/fake-provider.js';
import { rawPost, rawRequest } from '../support/raw-http.js';
import { fleetConfigDocument, startTestGateway, type TestGateway } from '../support/gateway-harness.js';

function isOpenAIError(body: string): boolean {
  try {
    const parsed = JSON.parse(body) as { error?: Record<string, unknown> };
    return typeof parsed.error?.message === 'string' && typeof parsed.error.type === 'string' && 'param' in parsed.error && 'code' in parsed.error;
  } catch {
    return false;
  }
}

describe('hostile input (SPEC §9)', () => {
  let fleet: Awaited<ReturnType<typeof startFakeFleet<'a'>>>;
  let gateway: TestGateway;

  beforeAll(async () => {
    fleet = await startFakeFleet({ a: { name: 'a' } });
    gateway = await startTestGateway(
      fleetConfigDocument(
        { a: fleet.a },
        {},
        {
          virtualModels: { 'auto:chat': { candidates: ['a/m1'] } },
          limits: { maxBodyBytes: 65_536, headersTimeoutMs: 500 },
        },
      ),
    );
  });

  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });

  it('answers CR/LF smuggled into X-Boo-Source with an OpenAI-shaped 400 and sends nothing upstream', async () => {
    const before = fleet.a.dispatched().length;
    const body = JSON.stringify({ model: 'auto:chat', messages: [] });
    const response = await rawRequest(gateway.url, rawPost('/v1/chat/completions', body, ['x-boo-source: a\rinjected: yes']));
    expect(response.status).toBe(400);
    expect(isOpenAIError(response.body)).toBe(true);
    expect(fleet.a.dispatched().length).toBe(before);
  });

  it('answers headers larger than the limit with an OpenAI-shaped 431', async () => {
    const response = await rawRequest(gateway.url, rawPost('/v1/chat/completions', '{}', [`x-big: ${'x'.repeat(64 * 1024)}`]));
    expect(response.status).toBe(431);
    expect(isOpenAIError(response.body)).toBe(true);
  });

  it('cuts off a client that sends its headers too slowly', async () => {
    const socket = connect(Number(new URL(gateway.url).port), '127.0.0.1');
    const startedAt = Date.now();
    const answer = new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (chunk) => (text += chunk.toString()));
      socket.on('close', () => resolve(text));
      socket.on('error', () => undefined);
    });
    socket.write('POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n');
    const drip = setInterval(() => socket.writable && socket.write('x-slow: 1\r\n'), 100);
    const text = await answer;
    clearInterval(drip);
    expect(Date.now() - startedAt).toBeLessThan(3_000);
    expect(text).toMatch(/^HTTP\/1\.1 408/);
    expect(isOpenAIError(text.slice(text.indexOf('\r\n\r\n') + 4))).toBe(true);
  });

  it('answers a body that is not JSON at all with an OpenAI-shaped 400', async () => {
    const response = await rawRequest(gateway.url, rawPost('/v1/chat/completions', '\u0000\u0001binary'));
    expect(response.status).toBe(400);
    expect(isOpenAIError(response.body)).toBe(true);
  });

  it('answers a declared length over the limit with 413 before reading the body', async () => {
    const response = await rawRequest(
      gateway.url,
      'POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 999999999\r\n\r\n{"model":',
    );
    expect(response.status).toBe(413);
    expect(isOpenAIError(response.body)).toBe(true);
  });

  it('answers a chunked body that grows past the limit with 413 and closes the connection', async () => {
    const chunk = 'x'.repeat(16_384);
    const chunks = Array.from({ length: 8 }, () => `${chunk.length.toString(16)}\r\n${chunk}\r\n`).join('');
    const response = await rawRequest(
      gateway.url,
      `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n${chunks}`,
    );
    expect(response.status).toBe(413);
    expect(isOpenAIError(response.body)).toBe(true);
  });

  it('rejects a model name that tries to reach another upstream path or host', async () => {
    for (const model of ['../../admin', '//evil.example/x', 'a/../../m1', 'a/m1?x=1', 'a/m1#frag']) {
      const response = await request(`${gateway.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [] }),
      });
      expect(response.statusCode, model).toBe(404);
      expect(isOpenAIError(await response.body.text())).toBe(true);
    }
  });

  it('answers random bodies and headers on the dispatch endpoints with a 2xx or an OpenAI-shaped 4xx, and stays up', async () => {
    const jsonValue = fc.jsonValue({ maxDepth: 3 });
    const body = fc.oneof(
      fc.string({ maxLength: 200 }),
      jsonValue.map((value) => JSON.stringify(value)),
      fc
        .record(
          {
            model: fc.oneof(fc.constantFrom('auto:chat', 'a/m1', 'm1', '', '..'), fc.string({ maxLength: 40 }), jsonValue),
            stream: fc.oneof(fc.boolean(), jsonValue),
            messages: fc.oneof(fc.array(fc.record({ role: fc.string(), content: fc.string() }), { maxLength: 3 }), jsonValue),
            max_tokens: fc.oneof(fc.integer(), jsonValue),
          },
          { requiredKeys: [] },
        )
        .map((value) => JSON.stringify(value)),
    );
    const headerValue = fc.string({ maxLength: 60 }).map((value) => value.replace(/[^\x20-\x7e]/g, ''));
    const headers = fc.dictionary(
      fc.constantFrom('x-boo-source', 'x-request-id', 'content-type', 'accept', 'authorization', 'x-anything', 'accept-encoding'),
      headerValue,
      { maxKeys: 4 },
    );
    const endpoint = fc.constantFrom('/v1/chat/completions', '/v1/completions', '/v1/embeddings');
    await fc.assert(
      fc.asyncProperty(endpoint, body, headers, async (path, payload, extra) => {
        const response = await request(`${gateway.url}${path}`, { method: 'POST', headers: extra, body: payload });
        const text = await response.body.text();
        if (response.statusCode >= 200 && response.statusCode < 300) return true;
        return response.statusCode >= 400 && response.statusCode < 500 && isOpenAIError(text);
      }),
      { numRuns: 300 },
    );
    expect((await request(`${gateway.url}/healthz`)).statusCode).toBe(200);
  });
});
