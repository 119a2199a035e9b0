import { createHash } from 'node:crypto';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI, { toFile } from 'openai';
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeFleet, type FakeProvider, type Reply } from '../../simulator/fake-provider.js';
import { fleetConfigDocument, startTestGateway, type TestGateway } from '../support/gateway-harness.js';
import { waitFor } from '../support/wait-for.js';

// Every endpoint llama-swap routes by model, through the official clients where there is one:
// served through a virtual model, failed over from a first candidate that fails, the body sent
// on untouched but for `model`, a broken stream raised as an error, one row with the endpoint,
// status and tokens.

const clientKey = 'sk-client';
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

describe('issue 17: the whole model surface', () => {
  let fleet: Record<'a' | 'b', FakeProvider> & { closeAll(): Promise<void> };
  let gateway: TestGateway;
  let openai: OpenAI;
  let anthropic: Anthropic;

  beforeAll(async () => {
    // a serves m1, b serves m2: what each received shows the rewrite of `model` and nothing else.
    fleet = await startFakeFleet({ a: { name: 'a', models: ['m1'] }, b: { name: 'b', models: ['m2'] } });
    gateway = await startTestGateway(
      fleetConfigDocument(
        fleet,
        {},
        {
          virtualModels: { 'auto:x': { candidates: ['a/m1', 'b/m2'] } },
          breaker: { volumeThreshold: 10_000 },
          auth: { apiKeys: [sha256(clientKey)] },
        },
      ),
    );
    openai = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: clientKey, maxRetries: 0 });
    anthropic = new Anthropic({ baseURL: gateway.url, apiKey: clientKey, maxRetries: 0 });
  });
  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });
  beforeEach(() => {
    for (const fake of [fleet.a, fleet.b]) {
      fake.received.length = 0;
      fake.defaultReply = { kind: 'ok' };
    }
    gateway.sink.events.length = 0;
  });

  /** The one event of the last request, once published. */
  async function lastEvent() {
    await waitFor(() => gateway.sink.events.length === 1, 2_000, 'the dispatch event');
    return gateway.sink.events[0]!;
  }

  /** a failed with `first` and b served: the bodies they got differ only in `model` (m1 against m2). */
  function expectSameBodyButModel(first: Reply) {
    const [sentToA] = fleet.a.dispatched();
    const [sentToB] = fleet.b.dispatched();
    expect(first.kind).toBe('status');
    expect(sentToA?.rawBody).toBeDefined();
    expect(sentToB?.rawBody).toBeDefined();
    const rewritten = sentToA!.rawBody!.toString('latin1').replace(/"m1"|\r\n\r\nm1\r\n/, (match) => match.replace('m1', 'm2'));
    expect(sentToB!.rawBody!.toString('latin1')).toBe(rewritten);
    expect(sentToA!.rawBody!.toString('latin1')).not.toContain('auto:x');
  }

  const failing: Reply = { kind: 'status', status: 503 };

  describe('OpenAI Responses API', () => {
    it('serves responses.create through a virtual model and fails over, the body intact but model', async () => {
      fleet.a.script(failing);
      const response = await openai.responses.create({ model: 'auto:x', input: [{ role: 'user', content: 'say hi' }], instructions: 'be brief' });
      expect(response.output_text).toBe('hello from b');
      expectSameBodyButModel(failing);
      const sent = fleet.b.dispatched()[0]!.body as Record<string, unknown>;
      expect(sent).toEqual({ model: 'm2', input: [{ role: 'user', content: 'say hi' }], instructions: 'be brief' });
      expect(await lastEvent()).toMatchObject({
        endpoint: '/v1/responses',
        status: 'dispatched',
        candidates_tried: ['a/m1', 'b/m2'],
        prompt_tokens: 7,
        completion_tokens: 3,
      });
    });

    it('streams responses.create, with the usage of response.completed recorded', async () => {
      const stream = await openai.responses.create({ model: 'auto:x', input: 'hi', stream: true });
      let text = '';
      for await (const event of stream) if (event.type === 'response.output_text.delta') text += event.delta;
      expect(text).toBe('hello from a');
      expect(await lastEvent()).toMatchObject({ endpoint: '/v1/responses', status: 'dispatched', stream: true, prompt_tokens: 7, completion_tokens: 3 });
    });

    it('raises in the SDK, never a clean end, when the stream breaks after some events', async () => {
      fleet.a.script({ kind: 'stream', chunks: 6, breakAfter: 3 });
      const stream = await openai.responses.create({ model: 'auto:x', input: 'hi', stream: true });
      let deltas = 0;
      await expect(
        (async () => {
          for await (const event of stream) if (event.type === 'response.output_text.delta') deltas++;
        })(),
      ).rejects.toThrow(/a\/m1/);
      expect(deltas).toBe(3);
      expect(await lastEvent()).toMatchObject({ endpoint: '/v1/responses', status: 'stream_error' });
    });

    it('makes responses.stream() reject when the stream breaks', async () => {
      fleet.a.script({ kind: 'stream', chunks: 6, breakAfter: 2 });
      await expect(openai.responses.stream({ model: 'auto:x', input: 'hi' }).finalResponse()).rejects.toThrow();
    });
  });

  describe('Anthropic Messages API', () => {
    it('serves messages.create and fails over, the body intact but model', async () => {
      fleet.a.script(failing);
      const message = await anthropic.messages.create({ model: 'auto:x', max_tokens: 64, system: 'be brief', messages: [{ role: 'user', content: 'hi' }] });
      expect(message.content).toEqual([{ type: 'text', text: 'hello from b' }]);
      expectSameBodyButModel(failing);
      expect(fleet.b.dispatched()[0]!.headers['x-api-key']).toBeUndefined();
      expect(await lastEvent()).toMatchObject({ endpoint: '/v1/messages', status: 'dispatched', prompt_tokens: 7, completion_tokens: 3 });
    });

    it('streams messages.stream, input tokens from message_start and output tokens from message_delta', async () => {
      const stream = anthropic.messages.stream({ model: 'auto:x', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] });
      const message = await stream.finalMessage();
      expect(message.content).toEqual([{ type: 'text', text: 'hello from a' }]);
      expect(await lastEvent()).toMatchObject({ endpoint: '/v1/messages', status: 'dispatched', stream: true, prompt_tokens: 7, completion_tokens: 3 });
    });

    it('raises an APIError in the SDK when the stream breaks after some events', async () => {
      fleet.a.script({ kind: 'stream', chunks: 6, breakAfter: 3 });
      const stream = anthropic.messages.stream({ model: 'auto:x', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] });
      const error = await stream.finalMessage().catch((err: unknown) => err);
      expect(error).toBeInstanceOf(Anthropic.APIError);
      expect(String((error as Error).message)).toMatch(/a\/m1/);
      expect(await lastEvent()).toMatchObject({ endpoint: '/v1/messages', status: 'stream_error' });
    });

    it('serves messages.countTokens', async () => {
      fleet.a.script(failing);
      const counted = await anthropic.messages.countTokens({ model: 'auto:x', messages: [{ role: 'user', content: 'hi' }] });
      expect(counted.input_tokens).toBe(7);
      expectSameBodyButModel(failing);
      expect(await lastEvent()).toMatchObject({ endpoint: '/v1/messages/count_tokens', status: 'dispatched', prompt_tokens: 7 });
    });

    it('accepts the key as x-api-key (as Anthropic clients send it), and never forwards it', async () => {
      const response = await request(`${gateway.url}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': clientKey, 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model: 'auto:x', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] }),
      });
      expect(response.statusCode).toBe(200);
      await response.body.json();
      const sent = fleet.a.dispatched()[0]!.headers;
      expect(sent['x-api-key']).toBeUndefined();
      expect(sent.authorization).toBeUndefined();
      expect(sent['anthropic-version']).toBe('2023-06-01');
      const wrong = await request(`${gateway.url}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': 'sk-wrong' },
        body: JSON.stringify({ model: 'auto:x', max_tokens: 8, messages: [] }),
      });
      expect(wrong.statusCode).toBe(401);
      expect(await wrong.body.json()).toEqual({ type: 'error', error: { type: 'authentication_error', message: expect.any(String) } });
    });

    it('answers errors in the Anthropic shape', async () => {
      const unauthorised = new Anthropic({ baseURL: gateway.url, apiKey: 'sk-wrong', maxRetries: 0 });
      const denied = await unauthorised.messages
        .create({ model: 'auto:x', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] })
        .catch((err: unknown) => err);
      expect(denied).toBeInstanceOf(Anthropic.AuthenticationError);
      const response = await request(`${gateway.url}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': clientKey },
        body: JSON.stringify({ model: 'no-such-model', max_tokens: 8, messages: [] }),
      });
      expect(response.statusCode).toBe(404);
      expect(await response.body.json()).toEqual({ type: 'error', error: { type: 'not_found_error', message: expect.stringContaining('no-such-model') } });
    });
  });

  describe('OpenAI audio, images and embeddings', () => {
    it('sends a transcription upload again to the next candidate with only the model field rewritten', async () => {
      fleet.a.script(failing);
      const audio = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 256));
      const transcription = await openai.audio.transcriptions.create({ file: await toFile(audio, 'clip.wav', { type: 'audio/wav' }), model: 'auto:x' });
      expect(transcription.text).toBe('hello from b');
      expectSameBodyButModel(failing);
      expect(fleet.b.dispatched()[0]!.rawBody!.includes(audio)).toBe(true);
      expect(await lastEvent()).toMatchObject({ endpoint: '/v1/audio/transcriptions', status: 'dispatched', prompt_tokens: null });
    });

    it('relays speech as the upstream sent it, bytes and type', async () => {
      fleet.a.script(failing);
      const speech = await openai.audio.speech.create({ model: 'auto:x', voice: 'alloy', input: 'hello' });
      expect(speech.headers.get('content-type')).toBe('audio/mpeg');
      expect(Buffer.from(await speech.arrayBuffer()).toString('latin1')).toBe('ID3\u0004\u0000\u0000b:hello from b');
      expectSameBodyButModel(failing);
      expect(await lastEvent()).toMatchObject({ endpoint: '/v1/audio/speech', status: 'dispatched' });
    });

    it('serves images.generate', async () => {
      fleet.a.script(failing);
      const image = await openai.images.generate({ model: 'auto:x', prompt: 'a boo' });
      expect(Buffer.from(image.data?.[0]?.b64_json ?? '', 'base64').toString()).toBe('b:hello from b');
      expectSameBodyButModel(failing);
      expect(await lastEvent()).toMatchObject({ endpoint: '/v1/images/generations', status: 'dispatched' });
    });

    it('serves embeddings.create', async () => {
      fleet.a.script(failing);
      const embedding = await openai.embeddings.create({ model: 'auto:x', input: ['one', 'two'] });
      expect(embedding.data).toHaveLength(2);
      expectSameBodyButModel(failing);
      expect(await lastEvent()).toMatchObject({ endpoint: '/v1/embeddings', status: 'dispatched', prompt_tokens: 7 });
    });
  });

  describe('llama.cpp native endpoints, rerank and translations', () => {
    const post = async (path: string, body: unknown) => {
      const response = await request(`${gateway.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${clientKey}` },
        body: JSON.stringify(body),
      });
      return { status: response.statusCode, text: await response.body.text() };
    };

    it.each(['/rerank', '/v1/rerank', '/v1/reranking', '/reranking'])('serves %s with failover', async (path) => {
      fleet.a.script(failing);
      const answer = await post(path, { model: 'auto:x', query: 'q', documents: ['x', 'y', 'z'] });
      expect(answer.status).toBe(200);
      expect((JSON.parse(answer.text) as { results: unknown[] }).results).toHaveLength(3);
      expectSameBodyButModel(failing);
      expect(fleet.b.dispatched()[0]!.path).toBe(path);
      expect(await lastEvent()).toMatchObject({ endpoint: path, status: 'dispatched', prompt_tokens: 7 });
    });

    it.each(['/completion', '/infill'])('serves %s, tokens_evaluated and tokens_predicted recorded', async (path) => {
      fleet.a.script(failing);
      const answer = await post(path, { model: 'auto:x', prompt: 'int main', n_predict: 16 });
      expect(JSON.parse(answer.text)).toMatchObject({ content: 'hello from b', stop: true });
      expectSameBodyButModel(failing);
      expect(await lastEvent()).toMatchObject({ endpoint: path, status: 'dispatched', prompt_tokens: 7, completion_tokens: 3 });
    });

    it('streams /completion and ends a broken one with an error event', async () => {
      const whole = await post('/completion', { model: 'auto:x', prompt: 'x', stream: true });
      expect(whole.text).toContain('"stop":true');
      expect((await lastEvent()).completion_tokens).toBe(3);
      gateway.sink.events.length = 0;
      fleet.a.script({ kind: 'stream', chunks: 6, breakAfter: 2 });
      const broken = await post('/completion', { model: 'auto:x', prompt: 'x', stream: true });
      expect(broken.text.trimEnd().split('\n\n').at(-1)).toMatch(/^data: \{"error":\{.*"code":"stream_error"/);
      expect(await lastEvent()).toMatchObject({ endpoint: '/completion', status: 'stream_error' });
    });

    it('serves translations (multipart) with failover', async () => {
      fleet.a.script(failing);
      const translation = await openai.audio.translations.create({ file: await toFile(Buffer.from('RIFF....WAVE'), 'a.wav'), model: 'auto:x' });
      expect(translation.text).toBe('hello from b');
      expectSameBodyButModel(failing);
      expect(await lastEvent()).toMatchObject({ endpoint: '/v1/audio/translations', status: 'dispatched' });
    });
  });

  describe('forms the gateway refuses', () => {
    const postForm = (body: string, boundary = 'xyz') =>
      request(`${gateway.url}/v1/audio/transcriptions`, {
        method: 'POST',
        headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, authorization: `Bearer ${clientKey}` },
        body,
      });
    const part = (name: string, value: string) => `--xyz\r\ncontent-disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;

    it('refuses a form with two model fields (any case) and sends nothing upstream', async () => {
      const response = await postForm(`${part('model', 'auto:x')}${part('Model', 'hidden')}--xyz--\r\n`);
      expect(response.statusCode).toBe(400);
      expect(((await response.body.json()) as { error: { code: string } }).error.code).toBe('duplicate_model_key');
      expect(fleet.a.dispatched()).toEqual([]);
    });

    it('refuses a form without a model field, and a body that is no form', async () => {
      const missing = await postForm(`${part('file', 'x')}--xyz--\r\n`);
      expect(missing.statusCode).toBe(400);
      await missing.body.text();
      const notForm = await request(`${gateway.url}/v1/audio/transcriptions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${clientKey}` },
        body: '{"model":"auto:x"}',
      });
      expect(notForm.statusCode).toBe(400);
      expect(((await notForm.body.json()) as { error: { code: string } }).error.code).toBe('invalid_multipart');
    });
  });
});
