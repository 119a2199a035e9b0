import { request } from 'undici';
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { useTwoCandidateGateway } from '../support/gateway-harness.js';
import { waitFor } from '../support/wait-for.js';
import { connect, type Socket } from 'node:net';

describe('streaming through the gateway', () => {
  const t = useTwoCandidateGateway({ firstByteMs: 1_000, idleMs: 300 });

  async function collect(stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>): Promise<string> {
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    return text;
  }

  it('serves the whole stream from the next candidate when the first dies before its first chunk', async () => {
    t.fleet.a.script({ kind: 'closeBeforeFirstChunk' });
    t.fleet.b.script({ kind: 'stream', chunks: 5 });
    const { data: stream, response } = await t.client.chat.completions
      .create({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }], stream: true })
      .withResponse();
    expect(response.headers.get('x-boo-candidate')).toBe('b/m1');
    expect(response.headers.get('content-type')).toContain('text/event-stream');
    expect(await collect(stream)).toBe('tok0 tok1 tok2 tok3 tok4 ');
    await waitFor(() => t.gateway.sink.events.length === 1);
    expect(t.gateway.sink.events[0]).toMatchObject({
      status: 'dispatched',
      stream: true,
      candidates_tried: ['a/m1', 'b/m1'],
      prompt_tokens: 7,
      completion_tokens: 5,
    });
    expect(t.gateway.sink.events[0]!.ttfb_ms).toBeGreaterThanOrEqual(0);
  });

  it('fails over a stream whose first chunk does not come within firstByteMs', async () => {
    t.fleet.a.script({ kind: 'stream', chunks: 3, firstChunkDelayMs: 3_000 });
    t.fleet.b.script({ kind: 'stream', chunks: 2 });
    const stream = await t.client.chat.completions.create({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }], stream: true });
    expect(await collect(stream)).toBe('tok0 tok1 ');
  });

  it('ends a stream that breaks after the commit with an error event, and no content from another candidate', async () => {
    t.fleet.a.script({ kind: 'stream', chunks: 10, breakAfter: 3 });
    const stream = await t.client.chat.completions.create({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }], stream: true });
    let text = '';
    const error = await (async () => {
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    })().catch((err: unknown) => err);
    expect(text).toBe('tok0 tok1 tok2 ');
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect(String((error as Error).message)).toMatch(/a\/m1/);
    expect(t.fleet.b.dispatched()).toHaveLength(0);
    await waitFor(() => t.gateway.sink.events.length === 1);
    expect(t.gateway.sink.events[0]).toMatchObject({ status: 'stream_error', chosen_provider_id: 'a', candidates_tried: ['a/m1'] });
  });

  it('ends a stream that goes idle after the commit with an error event', async () => {
    t.fleet.a.script({ kind: 'stream', chunks: 10, stallAfter: 2 });
    const response = await request(`${t.gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'auto:chat', stream: true, messages: [] }),
    });
    const text = await response.body.text();
    expect(response.statusCode).toBe(200);
    const events = text.split('\n\n').filter(Boolean);
    expect(events.at(-1)).toMatch(
      /^data: \{"error":\{"message":"a\/m1: upstream sent nothing for 300 ms","type":"api_error","param":null,"code":"stream_error"\}\}$/,
    );
    expect(text).not.toContain('[DONE]');
  });

  it('aborts the upstream request within 1 s of the client going away', async () => {
    t.fleet.a.script({ kind: 'stream', chunks: 1_000, chunkDelayMs: 20 });
    const controller = new AbortController();
    const response = await request(`${t.gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'auto:chat', stream: true, messages: [] }),
      signal: controller.signal,
    });
    const iterator = response.body[Symbol.asyncIterator]();
    await iterator.next();
    const abortedAt = Date.now();
    controller.abort();
    const upstream = await t.fleet.a.waitForClose(
      t.fleet.a.received.findIndex((r) => r.method === 'POST'),
      1_000,
    );
    expect(upstream.aborted).toBe(true);
    expect(upstream.closedAt! - abortedAt).toBeLessThan(1_000);
    await waitFor(() => t.gateway.sink.events.length === 1);
    expect(t.gateway.sink.events[0]).toMatchObject({ status: 'client_closed', chosen_provider_id: 'a' });
  });

  it('aborts the upstream request when the client leaves before the first byte', async () => {
    t.fleet.a.script({ kind: 'hang' });
    const controller = new AbortController();
    const pending = request(`${t.gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'auto:chat', stream: true, messages: [] }),
      signal: controller.signal,
    }).catch(() => undefined);
    await waitFor(() => t.fleet.a.dispatched().length === 1);
    controller.abort();
    await pending;
    const upstream = await t.fleet.a.waitForClose(
      t.fleet.a.received.findIndex((r) => r.method === 'POST'),
      1_000,
    );
    expect(upstream.aborted).toBe(true);
    await waitFor(() => t.gateway.sink.events.length === 1);
    expect(t.gateway.sink.events[0]).toMatchObject({ status: 'client_closed', chosen_provider_id: null });
    expect(t.fleet.b.dispatched()).toHaveLength(0);
  });

  it('keeps buffered bytes bounded for a reader that stops reading', async () => {
    // 200,000 chunks of ~170 bytes: about 34 MB if the gateway read on without waiting for the t.client.
    t.fleet.a.script({ kind: 'stream', chunks: 200_000 });
    const serverSockets: Socket[] = [];
    const track = (socket: Socket) => serverSockets.push(socket);
    t.gateway.server.on('connection', track);
    const socket = connect(Number(new URL(t.gateway.url).port), '127.0.0.1');
    const body = JSON.stringify({ model: 'auto:chat', stream: true, messages: [] });
    socket.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
    await new Promise((resolve) => socket.once('data', resolve));
    socket.pause();
    try {
      const upstream = t.fleet.a.received.find((r) => r.method === 'POST')!;
      // Kernel buffers on loopback absorb several MB before the stall reaches the upstream.
      let previous = -1;
      await waitFor(
        async () => {
          const now = upstream.bytesWritten;
          const stalled = now === previous;
          previous = now;
          await new Promise((resolve) => setTimeout(resolve, 200));
          return stalled;
        },
        10_000,
        'the upstream to stall',
      );
      expect(upstream.bytesWritten).toBeLessThan(20_000_000);
      // What the gateway itself holds for this client: bounded by Node's stream high-water marks.
      const held = serverSockets.reduce((sum, serverSocket) => sum + serverSocket.writableLength, 0);
      expect(held).toBeLessThan(256 * 1024);
    } finally {
      t.gateway.server.off('connection', track);
      socket.destroy();
    }
  });
});
