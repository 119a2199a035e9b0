import { APIError } from 'openai';
import { describe, expect, it } from 'vitest';
import type { Reply } from '../../simulator/fake-provider.js';
import { useTwoCandidateGateway } from '../support/gateway-harness.js';
import { waitFor } from '../support/wait-for.js';

describe('POST /v1/chat/completions failover (SPEC §5)', () => {
  const t = useTwoCandidateGateway({ firstByteMs: 400 });

  const triggers: Array<[string, Reply]> = [
    ['a connection reset', { kind: 'reset' }],
    ['no first byte before firstByteMs', { kind: 'hang' }],
    ['headers later than firstByteMs', { kind: 'slowHeaders', delayMs: 1_500 }],
    ['500', { kind: 'status', status: 500 }],
    ['502', { kind: 'status', status: 502 }],
    ['503', { kind: 'status', status: 503 }],
    ['408', { kind: 'status', status: 408 }],
    ['409', { kind: 'status', status: 409 }],
    ['429', { kind: 'status', status: 429 }],
    ['404', { kind: 'status', status: 404 }],
    ["401 (the provider refused the gateway's key)", { kind: 'status', status: 401 }],
    ['403', { kind: 'status', status: 403 }],
    ['a 200 whose body breaks before the first byte', { kind: 'closeBeforeFirstChunk' }],
  ];

  it.each(triggers)('fails over on %s', async (_name, reply) => {
    t.fleet.a.script(reply);
    const { data, response } = await t.client.chat.completions.create({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }] }).withResponse();
    expect(data.choices[0]?.message.content).toContain('hello from b');
    expect(response.headers.get('x-boo-candidate')).toBe('b/m1');
    expect(response.headers.get('x-boo-attempts')).toBe('2');
    expect(t.fleet.b.dispatched()).toHaveLength(1);
    await waitFor(() => t.gateway.sink.events.length === 1, 2_000, 'the dispatch event');
    const [event] = t.gateway.sink.events;
    expect(event).toMatchObject({ status: 'dispatched', candidates_tried: ['a/m1', 'b/m1'], chosen_provider_id: 'b', chosen_model: 'm1' });
    expect(event!.attempts[0]!.outcome).not.toBe('ok');
  });

  it('reads a failover answer to its end and keeps its connection, but not a long one', async () => {
    const ask = () => t.client.chat.completions.create({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }] });
    await ask();
    t.fleet.a.script({ kind: 'status', status: 503, body: 'busy, try later' });
    await ask();
    await ask();
    const [first, refused, next] = t.fleet.a.dispatched();
    expect(refused!.remotePort).toBe(first!.remotePort);
    expect(next!.remotePort).toBe(first!.remotePort);

    // An error body past what is worth reading for keep-alive: the connection is dropped instead.
    t.fleet.a.script({ kind: 'status', status: 503, body: 'x'.repeat(256 * 1024) });
    const { response } = await ask().withResponse();
    expect(response.headers.get('x-boo-candidate')).toBe('b/m1');
    await ask();
    const [, , , long, after] = t.fleet.a.dispatched();
    expect(long!.remotePort).toBe(first!.remotePort);
    expect(after!.remotePort).not.toBe(first!.remotePort);
  });

  it('fails over when the provider refuses connections', async () => {
    await t.fleet.a.stop();
    try {
      const { response } = await t.client.chat.completions.create({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }] }).withResponse();
      expect(response.headers.get('x-boo-candidate')).toBe('b/m1');
      await waitFor(() => t.gateway.sink.events.length === 1);
      expect(t.gateway.sink.events[0]!.attempts[0]).toMatchObject({ candidate: 'a/m1', outcome: 'connect_error', http_status: null });
    } finally {
      await t.fleet.a.start();
    }
  });

  const nonTriggers = [400, 413, 422];
  it.each(nonTriggers)('passes an upstream %i back to the client without failing over', async (status) => {
    t.fleet.a.script({ kind: 'status', status, body: { error: { message: `upstream says ${status}`, type: 'invalid_request_error', code: 'x' } } });
    const error = await t.client.chat.completions.create({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }] }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(APIError);
    expect((error as APIError).status).toBe(status);
    expect((error as APIError).message).toContain(`upstream says ${status}`);
    expect((error as APIError).headers?.get('x-boo-candidate')).toBe('a/m1');
    expect(t.fleet.b.dispatched()).toHaveLength(0);
    await waitFor(() => t.gateway.sink.events.length === 1);
    expect(t.gateway.sink.events[0]).toMatchObject({ status: 'client_error', candidates_tried: ['a/m1'], chosen_provider_id: 'a' });
  });

  it('answers 502 all_candidates_failed when every candidate fails, and records it', async () => {
    t.fleet.a.script({ kind: 'status', status: 500 });
    t.fleet.b.script({ kind: 'reset' });
    const error = (await t.client.chat.completions
      .create({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }] })
      .catch((err: unknown) => err)) as APIError;
    expect(error.status).toBe(502);
    expect(error.code).toBe('all_candidates_failed');
    expect(error.type).toBe('api_error');
    await waitFor(() => t.gateway.sink.events.length === 1);
    expect(t.gateway.sink.events[0]).toMatchObject({ status: 'failed', candidates_tried: ['a/m1', 'b/m1'], chosen_provider_id: null });
  });

  it('keeps a candidate that answered 429 with Retry-After out of rotation for that long', async () => {
    t.fleet.a.script({ kind: 'status', status: 429, headers: { 'retry-after': '1' } });
    await t.client.chat.completions.create({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }] });
    await t.client.chat.completions.create({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }] });
    expect(t.fleet.a.dispatched()).toHaveLength(1);
    expect(t.fleet.b.dispatched()).toHaveLength(2);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const { response } = await t.client.chat.completions.create({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }] }).withResponse();
    expect(response.headers.get('x-boo-candidate')).toBe('a/m1');
  });

  it('serves /v1/completions and /v1/embeddings through the same failover path', async () => {
    t.fleet.a.script({ kind: 'status', status: 503 }, { kind: 'status', status: 503 });
    const completion = await t.client.completions.create({ model: 'auto:chat', prompt: 'hi' }).withResponse();
    expect(completion.response.headers.get('x-boo-candidate')).toBe('b/m1');
    const embedding = await t.client.embeddings.create({ model: 'auto:chat', input: ['a', 'b'] }).withResponse();
    expect(embedding.response.headers.get('x-boo-candidate')).toBe('b/m1');
    expect(embedding.data.data).toHaveLength(2);
  });
});
