import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { entryPoints, startNodeProcess, type RunningProcess } from '../support/processes.js';

const gatewayScript = entryPoints.gateway;

describe('npm start (the built gateway process)', () => {
  const started: RunningProcess[] = [];
  afterAll(async () => {
    await Promise.all(started.map((process) => process.stop(2_000)));
  });

  it('serves the shipped example config with no Redis and no database, and stops cleanly on SIGTERM', { timeout: 90_000 }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'boo-quick-start-'));
    const gateway = startNodeProcess(gatewayScript, { PORT: '0', HOST: '127.0.0.1', BOO_DATA_DIR: dataDir });
    started.push(gateway);
    const line = await gateway.waitForLine(/boo-gateway listening/, 20_000);
    const { url } = JSON.parse(line) as { url: string };
    expect((await request(`${url}/healthz`)).statusCode).toBe(200);
    const ready = await request(`${url}/readyz`);
    expect(ready.statusCode).toBe(200);
    expect(await ready.body.json()).toMatchObject({ status: 'ready', redis: 'embedded', database: 'embedded' });
    const models = (await (await request(`${url}/v1/models`)).body.json()) as { data: Array<{ id: string }> };
    expect(models.data.map((model) => model.id)).toContain('auto:chat');
    // The example fleet is not running here: the answer is a clean 503, not a hang or a crash.
    const chat = await request(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect([502, 503]).toContain(chat.statusCode);
    expect(await chat.body.json()).toMatchObject({ error: { code: expect.stringMatching(/no_healthy_candidate|all_candidates_failed/) } });
    // Shutdown flushes the dispatched event, so it waits for the embedded store to finish opening.
    expect(await gateway.stop(40_000)).toBe(0);
  });

  it('exits 1 with a one-line reason naming the bad key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'boo-bad-config-'));
    const path = join(dir, 'gateway.yaml');
    writeFileSync(path, 'providers:\n  gpu-a: { baseUrl: "http://127.0.0.1:1" }\nvirtualModels:\n  auto:chat:\n    candidates: [gpu-a/m, gpu-z/m]\n');
    const gateway = startNodeProcess(gatewayScript, { PORT: '0', BOO_CONFIG: path });
    started.push(gateway);
    const code = await new Promise<number | null>((resolve) => gateway.child.once('exit', resolve));
    expect(code).toBe(1);
    expect(gateway.lines.filter(Boolean)).toEqual([`boo-gateway: invalid config ${path}: virtualModels.auto:chat.candidates[1]: unknown provider "gpu-z"`]);
  });
});
