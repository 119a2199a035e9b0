import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config/load.js';
import { startFakeFleet } from '../../simulator/fake-provider.js';
import { fleetConfigDocument, startTestGateway, type TestGateway } from '../support/gateway-harness.js';
import { waitFor } from '../support/wait-for.js';

describe('fleet-aware routing', () => {
  let fleet: { closeAll(): Promise<void> } | undefined;
  let gateway: TestGateway | undefined;

  afterEach(async () => {
    await gateway?.close();
    await fleet?.closeAll();
    gateway = undefined;
    fleet = undefined;
  });

  async function chat(model = 'auto:chat', extra: Record<string, unknown> = {}): Promise<{ status: number; candidate: string | undefined }> {
    const response = await request(`${gateway!.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }], ...extra }),
    });
    await response.body.text();
    return { status: response.statusCode, candidate: response.headers['x-boo-candidate'] as string | undefined };
  }

  async function share(count: number, model = 'auto:chat'): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (let i = 0; i < count; i++) {
      const { status, candidate } = await chat(model);
      expect(status).toBe(200);
      counts.set(candidate!, (counts.get(candidate!) ?? 0) + 1);
    }
    return counts;
  }

  it('splits weighted 1:3 traffic within 5 points of 25 % / 75 % over 400 requests', async () => {
    const f = (fleet = await startFakeFleet({ a: { name: 'a' }, b: { name: 'b' } }));
    gateway = await startTestGateway(
      fleetConfigDocument(
        f,
        {},
        {
          virtualModels: {
            'auto:chat': {
              strategy: 'weighted',
              candidates: [
                { target: 'a/m1', weight: 1 },
                { target: 'b/m1', weight: 3 },
              ],
            },
          },
        },
      ),
    );
    const counts = await share(400);
    expect(Math.abs((counts.get('a/m1') ?? 0) / 400 - 0.25)).toBeLessThanOrEqual(0.05);
    expect(Math.abs((counts.get('b/m1') ?? 0) / 400 - 0.75)).toBeLessThanOrEqual(0.05);
  });

  it('spreads round-robin traffic evenly', async () => {
    const f = (fleet = await startFakeFleet({ a: { name: 'a' }, b: { name: 'b' }, c: { name: 'c' } }));
    gateway = await startTestGateway(
      fleetConfigDocument(f, {}, { virtualModels: { 'auto:chat': { strategy: 'round-robin', candidates: ['a/m1', 'b/m1', 'c/m1'] } } }),
    );
    const counts = await share(90);
    expect([...counts.values()]).toEqual([30, 30, 30]);
  });

  it('moves least-latency traffic to the faster candidate within 50 requests, and back when the slow one recovers', async () => {
    const f = (fleet = await startFakeFleet({ slow: { name: 'slow' }, fast: { name: 'fast' } }));
    f.slow.defaultReply = { kind: 'ok', delayMs: 60 };
    gateway = await startTestGateway(
      fleetConfigDocument(f, {}, { virtualModels: { 'auto:chat': { strategy: 'least-latency', candidates: ['slow/m1', 'fast/m1'] } } }),
    );
    await share(10); // measured both
    const settled = await share(50);
    expect(settled.get('fast/m1') ?? 0).toBeGreaterThanOrEqual(40);

    f.slow.defaultReply = { kind: 'ok' };
    f.fast.defaultReply = { kind: 'ok', delayMs: 60 };
    await share(50); // exploration measures the recovered candidate again
    const recovered = await share(50);
    expect(recovered.get('slow/m1') ?? 0).toBeGreaterThanOrEqual(40);
  });

  it('prefers a loaded second candidate over an unloaded first one, causing no model swap', async () => {
    const f = (fleet = await startFakeFleet({
      a: { name: 'a', type: 'llama-swap', models: ['m1'], loaded: [] },
      b: { name: 'b', type: 'llama-swap', models: ['m2'], loaded: ['m2'] },
    }));
    gateway = await startTestGateway(
      fleetConfigDocument(
        f,
        { a: 'llama-swap', b: 'llama-swap' },
        {
          virtualModels: { 'auto:chat': { preferLoaded: true, candidates: ['a/m1', 'b/m2'] } },
          healthCheck: { intervalMs: 100, timeoutMs: 500 },
        },
      ),
      { healthChecks: true },
    );
    await waitFor(() => gateway!.fleet.isLoaded('b', 'm2') === true, 3_000, 'the first health check');
    const swaps = f.a.swaps + f.b.swaps;
    const { candidate } = await chat();
    expect(candidate).toBe('b/m2');
    expect(f.a.dispatched()).toHaveLength(0);
    expect(f.a.swaps + f.b.swaps).toBe(swaps);
  });

  it('takes a dead provider out of rotation within one health interval, before any client request reaches it, and back after', async () => {
    const f = (fleet = await startFakeFleet({ a: { name: 'a' }, b: { name: 'b' } }));
    const intervalMs = 200;
    gateway = await startTestGateway(
      fleetConfigDocument(
        f,
        {},
        {
          virtualModels: { 'auto:chat': { candidates: ['a/m1', 'b/m1'] } },
          healthCheck: { intervalMs, timeoutMs: 150 },
        },
      ),
      { healthChecks: true },
    );
    await waitFor(() => gateway!.fleet.provider('a').healthy === true, 3_000, 'the first health check');
    expect((await chat()).candidate).toBe('a/m1');
    await f.a.stop();
    const stoppedAt = Date.now();
    await waitFor(() => gateway!.fleet.provider('a').healthy === false, 3_000, 'a to fail its check');
    expect(Date.now() - stoppedAt).toBeLessThanOrEqual(intervalMs + 150 + 100);
    const attemptsBefore = gateway.sink.events.length;
    expect((await chat()).candidate).toBe('b/m1');
    await waitFor(() => gateway!.sink.events.length === attemptsBefore + 1);
    expect(gateway.sink.events.at(-1)!.candidates_tried).toEqual(['b/m1']); // no attempt at the dead host

    await f.a.start();
    await waitFor(() => gateway!.fleet.provider('a').healthy === true, 3_000, 'a to come back');
    expect((await chat()).candidate).toBe('a/m1');
  });

  it('skips a candidate whose provider no longer lists its model, instead of passing its 400 to the client', async () => {
    const f = (fleet = await startFakeFleet({
      a: { name: 'a', type: 'llama-swap', models: ['other-model'] },
      b: { name: 'b', type: 'llama-swap', models: ['m1'] },
    }));
    gateway = await startTestGateway(
      fleetConfigDocument(
        f,
        { a: 'llama-swap', b: 'llama-swap' },
        {
          virtualModels: { 'auto:chat': { candidates: ['a/m1', 'b/m1'] } },
          healthCheck: { intervalMs: 100, timeoutMs: 500 },
        },
      ),
      { healthChecks: true },
    );
    await waitFor(() => gateway!.fleet.provider('a').models.size > 0, 3_000, 'the first health check');
    expect((await chat()).candidate).toBe('b/m1');
    expect(f.a.dispatched()).toHaveLength(0);
  });

  it('skips a small-context candidate for a long prompt and uses it for a short one', async () => {
    const f = (fleet = await startFakeFleet({
      small: { name: 'small', type: 'llama-swap', models: ['m1'], loaded: ['m1'], contextSize: { m1: 2048 } },
      big: { name: 'big', type: 'llama-swap', models: ['m1'], loaded: ['m1'], contextSize: { m1: 32768 } },
    }));
    gateway = await startTestGateway(
      fleetConfigDocument(
        f,
        { small: 'llama-swap', big: 'llama-swap' },
        {
          virtualModels: { 'auto:chat': { candidates: ['small/m1', 'big/m1'] } },
          healthCheck: { intervalMs: 100, timeoutMs: 500 },
        },
      ),
      { healthChecks: true },
    );
    await waitFor(() => gateway!.fleet.candidate('small/m1').contextSize === 2048, 3_000, 'context sizes');
    await waitFor(() => gateway!.fleet.candidate('big/m1').contextSize === 32768, 3_000, 'context sizes');
    expect((await chat()).candidate).toBe('small/m1');
    const longPrompt = 'word '.repeat(4000); // ~ 5,700 tokens estimated
    const response = await request(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'auto:chat', messages: [{ role: 'user', content: longPrompt }] }),
    });
    await response.body.text();
    expect(response.headers['x-boo-candidate']).toBe('big/m1');
    const withMaxTokens = await chat('auto:chat', { max_tokens: 3000 });
    expect(withMaxTokens.candidate).toBe('big/m1');
  });

  it('applies a config reload under continuous traffic with no failed request', async () => {
    const f = (fleet = await startFakeFleet({ a: { name: 'a' }, b: { name: 'b' } }));
    f.a.defaultReply = { kind: 'stream', chunks: 5, chunkDelayMs: 20 };
    const document = (first: string) =>
      fleetConfigDocument(f, {}, { virtualModels: { 'auto:chat': { candidates: first === 'a' ? ['a/m1', 'b/m1'] : ['b/m1', 'a/m1'] } } });
    gateway = await startTestGateway(document('a'));
    const results: Array<{ status: number; candidate: string | undefined }> = [];
    let reloadedAt: number | undefined;
    const traffic = Array.from({ length: 4 }, async () => {
      for (let i = 0; i < 30; i++) {
        results.push(await chat());
        if (results.length === 40 && reloadedAt === undefined) {
          gateway!.reload(buildConfig(document('b'), 'reloaded', {}));
          reloadedAt = Date.now();
        }
      }
    });
    await Promise.all(traffic);
    expect(results.filter((result) => result.status !== 200)).toEqual([]);
    // Routing is judged by the first candidate each request tried (a failover, say after a
    // reset keep-alive socket, may still serve it from the other one), by when it started.
    await waitFor(() => gateway!.sink.events.length === results.length, 2_000, 'every event');
    // created_at has ms resolution: a request started in the reload's millisecond is left out.
    const firstTried = (started: (ms: number) => boolean) =>
      gateway!.sink.events.filter((event) => started(Date.parse(event.created_at))).map((event) => event.candidates_tried[0]);
    const before = firstTried((ms) => ms < reloadedAt!);
    const after = firstTried((ms) => ms > reloadedAt!);
    expect(before.length).toBeGreaterThanOrEqual(30);
    expect(new Set(before)).toEqual(new Set(['a/m1']));
    expect(after.length).toBeGreaterThanOrEqual(60);
    expect(new Set(after)).toEqual(new Set(['b/m1']));
  });
});
