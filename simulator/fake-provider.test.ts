import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { startFakeFleet, startFakeProvider, type FakeProvider } from './fake-provider.js';

const chat = (model: string, stream = false): string => JSON.stringify({ model, stream, messages: [{ role: 'user', content: 'hi' }] });

async function post(fake: FakeProvider, body: string, path = '/v1/chat/completions', signal?: AbortSignal) {
  return request(`${fake.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    ...(signal ? { signal } : {}),
  });
}

function parseSse(text: string): EventSourceMessage[] {
  const events: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (event) => events.push(event) });
  parser.feed(text);
  return events;
}

describe('fake provider', () => {
  let fake: FakeProvider;
  beforeAll(async () => {
    fake = await startFakeProvider({ name: 'a', models: ['m1', 'm2'] });
  });
  afterAll(() => fake.close());

  it('answers scripted replies in order, then the default reply', async () => {
    fake.script({ kind: 'status', status: 429, headers: { 'retry-after': '2' } }, { kind: 'ok', content: 'one two' });
    const first = await post(fake, chat('m1'));
    expect(first.statusCode).toBe(429);
    expect(first.headers['retry-after']).toBe('2');
    expect(((await first.body.json()) as { error: { type: string } }).error.type).toBe('rate_limit_error');
    const second = await post(fake, chat('m1'));
    const body = (await second.body.json()) as { choices: { message: { content: string } }[]; usage: unknown };
    expect(body.choices[0]?.message.content).toBe('one two');
    expect(body.usage).toEqual({ prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 });
    const third = await post(fake, chat('m2'));
    expect(((await third.body.json()) as { model: string; object: string }).object).toBe('chat.completion');
    expect(
      fake
        .dispatched()
        .slice(-3)
        .map((r) => r.body.model),
    ).toEqual(['m1', 'm1', 'm2']);
  });

  it('rejects an unknown model with an OpenAI 404 without using the script', async () => {
    fake.script({ kind: 'status', status: 500 });
    const res = await post(fake, chat('nope'));
    expect(res.statusCode).toBe(404);
    expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe('model_not_found');
    expect((await post(fake, chat('m1'))).statusCode).toBe(500);
  });

  it('streams SSE that eventsource-parser reads, with usage and [DONE]', async () => {
    fake.script({ kind: 'stream', chunks: 3, chunkDelayMs: 5 });
    const res = await post(fake, chat('m1', true));
    expect(res.headers['content-type']).toBe('text/event-stream');
    const events = parseSse(await res.body.text());
    expect(events.at(-1)?.data).toBe('[DONE]');
    type Chunk = { choices: [{ delta: { content?: string }; finish_reason: string | null }]; usage?: unknown };
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data) as Chunk);
    expect(chunks.map((c) => c.choices[0].delta.content ?? null)).toEqual(['tok0 ', 'tok1 ', 'tok2 ', null]);
    expect(chunks[3]?.choices[0].finish_reason).toBe('stop');
    expect(chunks[3]?.usage).toMatchObject({ prompt_tokens: 7, completion_tokens: 3 });
  });

  it('breaks a stream after breakAfter chunks and closes before the first chunk', async () => {
    fake.script({ kind: 'stream', chunks: 5, breakAfter: 2 }, { kind: 'closeBeforeFirstChunk' });
    const broken = await post(fake, chat('m1', true));
    let text = '';
    await expect(
      (async () => {
        for await (const part of broken.body) text += String(part);
      })(),
    ).rejects.toThrow();
    expect(parseSse(text).map((e) => JSON.parse(e.data).choices[0].delta.content)).toEqual(['tok0 ', 'tok1 ']);

    const empty = await post(fake, chat('m1', true));
    expect(empty.statusCode).toBe(200);
    await expect(empty.body.text()).rejects.toThrow();
    const last = fake.received.at(-1)!;
    expect(last.bytesWritten).toBe(0);
    expect(last.aborted).toBe(false);
  });

  it('resets the connection', async () => {
    fake.script({ kind: 'reset' });
    await expect(post(fake, chat('m1'))).rejects.toThrow(/other side closed|ECONNRESET|socket/i);
  });

  it('records a client abort of a hung request', async () => {
    fake.script({ kind: 'hang' });
    const controller = new AbortController();
    const pending = post(fake, chat('m1'), '/v1/chat/completions', controller.signal);
    const deadline = Date.now() + 2_000;
    while (fake.received.at(-1)?.body?.messages === undefined || fake.received.at(-1)?.closedAt !== undefined) {
      if (Date.now() > deadline) throw new Error('hung request never arrived');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const index = fake.received.length - 1;
    controller.abort();
    await expect(pending).rejects.toThrow();
    const record = await fake.waitForClose(index, 2_000);
    expect(record.aborted).toBe(true);
    expect(record.closedAt).toBeGreaterThanOrEqual(record.receivedAt);
  });

  it('refuses connections after stop() and serves again on the same port after start()', async () => {
    const other = await startFakeProvider();
    const { port } = other;
    other.script({ kind: 'hang' });
    const hung = post(other, chat('m1'));
    const deadline = Date.now() + 2_000;
    while (other.received.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    await other.stop();
    await expect(hung).rejects.toThrow();
    await expect(request(`${other.url}/health`)).rejects.toThrow(/ECONNREFUSED/);
    await other.start();
    expect(other.port).toBe(port);
    const res = await request(`${other.url}/health`);
    expect(await res.body.text()).toBe('OK');
    await other.close();
  });
});

describe('fake llama-swap', () => {
  it('lists running models like llama-swap and counts swaps, including /upstream props', async () => {
    const fleet = await startFakeFleet({
      swap: { type: 'llama-swap', models: ['a', 'org/b:q4'], loaded: ['a'], contextSize: { 'org/b:q4': 8192 } },
    });
    try {
      const fake = fleet.swap;
      const running = async () => ((await (await request(`${fake.url}/running`)).body.json()) as { running: { model: string; state: string }[] }).running;
      expect(await running()).toMatchObject([{ model: 'a', state: 'ready' }]);
      expect((await post(fake, chat('a'))).statusCode).toBe(200);
      expect(fake.swaps).toBe(0);

      const props = await request(`${fake.url}/upstream/${encodeURIComponent('org/b:q4')}/props`);
      const body = (await props.body.json()) as { default_generation_settings: { n_ctx: number } };
      expect(body.default_generation_settings.n_ctx).toBe(8192);
      expect(fake.swaps).toBe(1);
      expect(await running()).toMatchObject([{ model: 'org/b:q4' }]);

      await (await post(fake, chat('a'))).body.text();
      expect(fake.swaps).toBe(2);
      fake.setLoaded(['a', 'org/b:q4']);
      await (await post(fake, chat('org/b:q4'))).body.text();
      expect(fake.swaps).toBe(2);

      const models = (await (await request(`${fake.url}/v1/models`)).body.json()) as { data: { id: string; meta?: unknown }[] };
      expect(models.data.map((m) => m.id)).toEqual(['a', 'org/b:q4']);
      expect(models.data[1]?.meta).toEqual({ n_ctx_train: 8192, n_ctx: 8192 });
    } finally {
      await fleet.closeAll();
    }
  });
});

describe('fake provider backpressure', () => {
  it('stops writing while the client does not read, and resumes when it does', async () => {
    const fake = await startFakeProvider();
    try {
      fake.script({ kind: 'stream', chunks: 60_000 });
      const res = await post(fake, chat('m1', true));
      const record = fake.dispatched()[0]!;
      let previous = -1;
      const deadline = Date.now() + 3_000;
      // Paused: bytesWritten stops growing long before the ~12 MB stream is written.
      while (record.bytesWritten !== previous) {
        if (Date.now() > deadline) throw new Error('the stream never paused');
        previous = record.bytesWritten;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(record.closedAt).toBeUndefined();
      const paused = record.bytesWritten;
      let received = 0;
      for await (const part of res.body) received += (part as Buffer).length;
      expect(received).toBe(record.bytesWritten);
      expect(received).toBeGreaterThan(paused);
      expect(paused).toBeLessThan(received / 2);
    } finally {
      await fake.close();
    }
  });
});
