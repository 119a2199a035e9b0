import OpenAI from 'openai';
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeFleet, type FakeProvider } from '../../simulator/fake-provider.js';
import { fleetConfigDocument, startTestGateway, type TestGateway } from '../support/gateway-harness.js';
import { waitFor } from '../support/wait-for.js';

// A stream that breaks (or goes idle) after its first byte continues on the next candidate, in
// the same client stream; a JSON answer that breaks before its end fails over.

describe('issue 18: resume a broken stream on the next candidate', () => {
  let fleet: Record<'a' | 'b' | 'c', FakeProvider> & { closeAll(): Promise<void> };
  let gateway: TestGateway;
  let client: OpenAI;

  beforeAll(async () => {
    // llama-swap hosts continue a final assistant message (prefill); c is a vLLM-like host that needs the flag.
    fleet = await startFakeFleet({
      a: { name: 'a', type: 'llama-swap' },
      b: { name: 'b', type: 'llama-swap', models: ['m2'] },
      c: { name: 'c', models: ['m3'] },
    });
    gateway = await startTestGateway(
      fleetConfigDocument(
        fleet,
        { a: 'llama-swap', b: 'llama-swap' },
        {
          providers: {
            a: { baseUrl: fleet.a.url, type: 'llama-swap' },
            b: { baseUrl: fleet.b.url, type: 'llama-swap' },
            c: { baseUrl: fleet.c.url, continuation: 'continue_final_message' },
          },
          virtualModels: {
            'auto:chat': { preferLoaded: false, candidates: ['a/m1', 'b/m2', 'c/m3'], resume: { maxResumes: 2 } },
            'no:resume': { preferLoaded: false, candidates: ['a/m1', 'b/m2'] },
          },
          timeouts: { idleMs: 300 },
          breaker: { volumeThreshold: 10_000 },
        },
      ),
    );
    client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });
  beforeEach(() => {
    for (const fake of [fleet.a, fleet.b, fleet.c]) {
      fake.received.length = 0;
      fake.defaultReply = { kind: 'stream', chunks: 4 };
    }
    gateway.sink.events.length = 0;
  });

  const messages = [{ role: 'user' as const, content: 'count' }];

  async function event() {
    await waitFor(() => gateway.sink.events.length === 1, 2_000, 'the dispatch event');
    return gateway.sink.events[0]!;
  }

  /** The raw SSE text of a chat stream through the gateway. */
  async function rawStream(model: string) {
    const response = await request(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages, stream: true }),
    });
    return response.body.text();
  }

  it('reads, through the SDK, a stream broken after 3 chunks as one answer: 3 chunks of a, then b continuing from them', async () => {
    fleet.a.script({ kind: 'stream', chunks: 10, breakAfter: 3 });
    const stream = await client.chat.completions.create({ model: 'auto:chat', messages, stream: true });
    let text = '';
    const ids = new Set<string>();
    let roles = 0;
    for await (const chunk of stream) {
      ids.add(chunk.id);
      if (chunk.choices[0]?.delta?.role) roles++;
      text += chunk.choices[0]?.delta?.content ?? '';
    }
    expect(text).toBe('tok0 tok1 tok2 tok0 tok1 tok2 tok3 ');
    expect(ids.size).toBe(1);
    expect(roles).toBe(1);
    // b got exactly what the client had read, as a final assistant message to continue.
    expect(fleet.b.dispatched()[0]!.body).toEqual({ model: 'm2', messages: [...messages, { role: 'assistant', content: 'tok0 tok1 tok2 ' }], stream: true });
    expect(await event()).toMatchObject({ status: 'dispatched', resumes: 1, candidates_tried: ['a/m1', 'b/m2'], chosen_provider_id: 'b' });
    expect(gateway.sink.events[0]!.attempts.map((attempt) => attempt.outcome)).toEqual(['ok', 'resumed']);
  });

  it('resumes a stream that went silent past idleMs', async () => {
    fleet.a.script({ kind: 'stream', chunks: 10, stallAfter: 2 });
    const stream = await client.chat.completions.create({ model: 'auto:chat', messages, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    expect(text).toBe('tok0 tok1 tok0 tok1 tok2 tok3 ');
    expect(await event()).toMatchObject({ status: 'dispatched', resumes: 1 });
  });

  it('writes one [DONE], no error event and no second role chunk', async () => {
    fleet.a.script({ kind: 'stream', chunks: 10, breakAfter: 2 });
    const text = await rawStream('auto:chat');
    expect(text.match(/\[DONE\]/g)).toHaveLength(1);
    expect(text).not.toContain('"error"');
    expect(text.match(/"role"/g)).toHaveLength(1);
  });

  it('asks a vLLM-like host to continue the final message with continue_final_message', async () => {
    fleet.a.script({ kind: 'stream', chunks: 10, breakAfter: 2 });
    fleet.b.script({ kind: 'status', status: 503 });
    const text = await rawStream('auto:chat');
    expect(text.match(/\[DONE\]/g)).toHaveLength(1);
    expect(fleet.c.dispatched()[0]!.body).toMatchObject({
      model: 'm3',
      messages: [...messages, { role: 'assistant', content: 'tok0 tok1 ' }],
      continue_final_message: true,
      add_generation_prompt: false,
    });
    expect((await event()).attempts.map((attempt) => [attempt.candidate, attempt.outcome])).toEqual([
      ['a/m1', 'ok'],
      ['b/m2', 'http_5xx'],
      ['c/m3', 'resumed'],
    ]);
  });

  it('resumes completions with the prompt extended and max_tokens reduced', async () => {
    fleet.a.script({ kind: 'stream', chunks: 10, breakAfter: 3 });
    const stream = await client.completions.create({ model: 'auto:chat', prompt: 'Count: ', max_tokens: 50, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    expect(text).toBe('tok0 tok1 tok2 tok0 tok1 tok2 tok3 ');
    expect(fleet.b.dispatched()[0]!.body).toMatchObject({ model: 'm2', prompt: 'Count: tok0 tok1 tok2 ', max_tokens: 47 });
  });

  it.each([
    ['a tool call in progress', 'auto:chat', { kind: 'stream' as const, chunks: 10, breakAfter: 3, toolCallFirst: true }],
    ['resume off', 'no:resume', { kind: 'stream' as const, chunks: 10, breakAfter: 3 }],
  ])('ends the stream with the error event as before when there is %s', async (_name, model, reply) => {
    fleet.a.script(reply);
    const stream = await client.chat.completions.create({ model, messages, stream: true });
    await expect(
      (async () => {
        for await (const chunk of stream) void chunk;
      })(),
    ).rejects.toThrow(/a\/m1/);
    expect(fleet.b.dispatched()).toEqual([]);
    expect(await event()).toMatchObject({ status: 'stream_error', resumes: 0 });
  });

  it('ends with the error event when no candidate is left to continue', async () => {
    fleet.a.script({ kind: 'stream', chunks: 10, breakAfter: 2 });
    fleet.b.script({ kind: 'status', status: 503 });
    fleet.c.script({ kind: 'reset' });
    const text = await rawStream('auto:chat');
    expect(text.trimEnd().split('\n\n').at(-1)).toMatch(/^data: \{"error":\{.*"code":"stream_error"/);
    expect(text).not.toContain('[DONE]');
    expect(await event()).toMatchObject({ status: 'stream_error', resumes: 0 });
  });

  it('resumes at most maxResumes times', async () => {
    fleet.a.script({ kind: 'stream', chunks: 10, breakAfter: 1 });
    fleet.b.script({ kind: 'stream', chunks: 10, breakAfter: 1 });
    fleet.c.script({ kind: 'stream', chunks: 10, breakAfter: 1 });
    const text = await rawStream('auto:chat');
    expect(text).toContain('"code":"stream_error"');
    expect(await event()).toMatchObject({ status: 'stream_error', resumes: 2 });
  });

  it('fails a JSON answer broken mid-body over to the next candidate, the client seeing one clean answer', async () => {
    fleet.a.script({ kind: 'breakMidBody' });
    fleet.b.defaultReply = { kind: 'ok' };
    const completion = await client.chat.completions.create({ model: 'no:resume', messages });
    expect(completion.choices[0]?.message.content).toBe('hello from b');
    expect((await event()).attempts.map((attempt) => attempt.outcome)).toEqual(['broken_before_end', 'ok']);
  });

  it('keeps the gap the client sees between the last chunk of a and the first of b small (50 resumes)', async () => {
    const gaps: number[] = [];
    for (let i = 0; i < 50; i++) {
      fleet.a.script({ kind: 'stream', chunks: 10, breakAfter: 3 });
      const stream = await client.chat.completions.create({ model: 'auto:chat', messages, stream: true });
      let contentChunks = 0;
      let lastOfA = 0;
      for await (const chunk of stream) {
        if (!chunk.choices[0]?.delta?.content) continue;
        contentChunks++;
        if (contentChunks === 3) lastOfA = performance.now();
        if (contentChunks === 4) gaps.push(performance.now() - lastOfA);
      }
    }
    gaps.sort((x, y) => x - y);
    const p50 = gaps[Math.floor(gaps.length * 0.5)]!;
    const p99 = gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * 0.99))]!;
    console.log(`issue-18: resume gap over ${gaps.length} resumes: p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`);
    expect(gaps).toHaveLength(50);
    expect(p50).toBeLessThan(50);
  });
});
