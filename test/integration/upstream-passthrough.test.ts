import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startFakeFleet } from '../../simulator/fake-provider.js';
import { rawRequest } from '../support/raw-http.js';
import { fleetConfigDocument, startTestGateway, type TestGateway } from '../support/gateway-harness.js';

describe('GET /upstream/:model/* (llama-swap pass-through)', () => {
  let fleet: Awaited<ReturnType<typeof startFakeFleet<'a' | 'b'>>>;
  let gateway: TestGateway;

  beforeAll(async () => {
    fleet = await startFakeFleet({
      a: { name: 'a', type: 'llama-swap', models: ['m1'], contextSize: { m1: 8192 } },
      b: { name: 'b', type: 'llama-swap', models: ['m2'], loaded: ['m2'], contextSize: { m2: 32768 } },
    });
    gateway = await startTestGateway(
      fleetConfigDocument(
        { a: fleet.a, b: fleet.b },
        { a: 'llama-swap', b: 'llama-swap' },
        {
          virtualModels: { 'auto:chat': { candidates: ['a/m1', 'b/m2'] } },
        },
      ),
    );
  });

  afterAll(async () => {
    await gateway?.close();
    await fleet?.closeAll();
  });

  beforeEach(() => {
    fleet.a.received.length = 0;
    fleet.b.received.length = 0;
  });

  const upstreamCalls = (fake: typeof fleet.a) => fake.received.filter((r) => r.path.startsWith('/upstream/'));
  const props = (model = 'auto:chat') => request(`${gateway.url}/upstream/${model}/props`);

  it('reads props from a candidate whose model is loaded, not from an unloaded first candidate', async () => {
    const swapsBefore = fleet.a.swaps;
    const response = await props();
    expect(response.statusCode).toBe(200);
    expect(response.headers['x-boo-candidate']).toBe('b/m2');
    const body = (await response.body.json()) as { default_generation_settings: { n_ctx: number } };
    expect(body.default_generation_settings.n_ctx).toBe(32768);
    expect(upstreamCalls(fleet.a)).toHaveLength(0);
    expect(fleet.a.swaps).toBe(swapsBefore);
  });

  it('answers from the props cache when no candidate has its model loaded', async () => {
    await (await props()).body.text(); // fills the cache from the loaded candidate
    fleet.b.setLoaded([]);
    fleet.a.received.length = 0;
    fleet.b.received.length = 0;
    const [swapsA, swapsB] = [fleet.a.swaps, fleet.b.swaps];
    try {
      const response = await props();
      expect(response.statusCode).toBe(200);
      expect(response.headers['x-boo-cache']).toBe('hit');
      await response.body.json();
      expect(upstreamCalls(fleet.a)).toHaveLength(0);
      expect(upstreamCalls(fleet.b)).toHaveLength(0);
      expect([fleet.a.swaps, fleet.b.swaps]).toEqual([swapsA, swapsB]);
    } finally {
      fleet.b.setLoaded(['m2']);
    }
  });

  it('asks for a concrete provider/model, encoded or not', async () => {
    for (const path of ['/upstream/b/m2/props', '/upstream/b%2Fm2/props']) {
      const response = await request(`${gateway.url}${path}`);
      expect(response.statusCode).toBe(200);
      expect(response.headers['x-boo-candidate']).toBe('b/m2');
      await response.body.text();
    }
  });

  it('answers 503 when no candidate is reachable', async () => {
    await fleet.a.stop();
    await fleet.b.stop();
    try {
      const response = await request(`${gateway.url}/upstream/auto:chat/slots`);
      expect(response.statusCode).toBe(503);
      expect(await response.body.json()).toMatchObject({ error: { code: 'no_healthy_candidate' } });
    } finally {
      await fleet.a.start();
      await fleet.b.start();
    }
  });

  it.each([
    ['a dot-dot segment', '/upstream/auto:chat/../../admin/candidates'],
    ['an encoded dot-dot segment', '/upstream/auto:chat/%2e%2e/%2E%2E/running'],
    ['an encoded slash in the path', '/upstream/auto:chat/..%2F..%2Frunning'],
    ['a dot-dot model', '/upstream/%2e%2e/props'],
    ['a model that climbs out', '/upstream/b%2F..%2F..%2Frunning/props'],
    ['an empty segment', '/upstream/auto:chat//props'],
    ['a single dot', '/upstream/auto:chat/./props'],
    ['a backslash', '/upstream/auto:chat/..%5C..%5Cprops'],
  ])('rejects %s with 400 and sends nothing upstream', async (_name, path) => {
    const response = await rawRequest(gateway.url, `GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`);
    expect(response.status).toBe(400);
    expect(JSON.parse(response.body)).toMatchObject({ error: { type: 'invalid_request_error' } });
    expect(upstreamCalls(fleet.a)).toHaveLength(0);
    expect(upstreamCalls(fleet.b)).toHaveLength(0);
  });

  it('answers 404 for a host-changing model name', async () => {
    const response = await rawRequest(gateway.url, `GET /upstream/@evil.example/props HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`);
    expect(response.status).toBe(404);
    expect(JSON.parse(response.body)).toMatchObject({ error: { code: 'model_not_found' } });
  });
});
