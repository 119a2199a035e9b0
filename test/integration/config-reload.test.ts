import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeFleet } from '../../simulator/fake-provider.js';
import { waitFor } from '../support/wait-for.js';
import { entryPoints, startNodeProcess, type RunningProcess } from '../support/processes.js';

describe('config reload of a running gateway process', () => {
  let fleet: Awaited<ReturnType<typeof startFakeFleet<'a' | 'b'>>>;
  let gateway: RunningProcess;
  let url: string;
  const dir = mkdtempSync(join(tmpdir(), 'boo-reload-'));
  const path = join(dir, 'gateway.yaml');

  const writeConfig = (candidates: string[], extra = '') => {
    // Written beside and renamed over, as editors save.
    const next = `${path}.tmp`;
    writeFileSync(
      next,
      `providers:\n  a: { baseUrl: "${fleet.a.url}" }\n  b: { baseUrl: "${fleet.b.url}" }\nvirtualModels:\n  auto:chat:\n    candidates: [${candidates.join(', ')}]\n${extra}`,
    );
    renameSync(next, path);
  };

  const servedBy = async () => {
    const response = await request(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'auto:chat', messages: [] }),
    });
    await response.body.text();
    expect(response.statusCode).toBe(200);
    return response.headers['x-boo-candidate'];
  };

  beforeAll(async () => {
    fleet = await startFakeFleet({ a: { name: 'a' }, b: { name: 'b' } });
    writeConfig(['a/m1', 'b/m1']);
    gateway = startNodeProcess(entryPoints.gateway, { PORT: '0', HOST: '127.0.0.1', BOO_CONFIG: path, BOO_DATA_DIR: dir });
    url = (JSON.parse(await gateway.waitForLine(/boo-gateway listening/, 20_000)) as { url: string }).url;
  });

  afterAll(async () => {
    await gateway?.stop(2_000);
    await fleet?.closeAll();
  });

  it('follows a change of the file', async () => {
    expect(await servedBy()).toBe('a/m1');
    writeConfig(['b/m1', 'a/m1']);
    await waitFor(async () => (await servedBy()) === 'b/m1', 5_000, 'the reload');
  });

  it('keeps the previous config when the new one is invalid, and says why', async () => {
    writeConfig(['b/m1', 'gpu-z/m1']);
    const line = await gateway.waitForLine(/config reload rejected/, 5_000);
    expect(JSON.parse(line)).toMatchObject({ level: 50, reason: expect.stringContaining('candidates[1]: unknown provider "gpu-z"') });
    // Waited for, not read once: under a loaded test run a health check of b can time out and
    // route one request to a; a config that fell back to [a, b] would never answer b here.
    await waitFor(async () => (await servedBy()) === 'b/m1', 5_000, 'the previous config still serving');
  });

  it('reloads on SIGHUP', async () => {
    writeConfig(['a/m1', 'b/m1']);
    gateway.child.kill('SIGHUP');
    await waitFor(async () => (await servedBy()) === 'a/m1', 5_000, 'the reload');
    expect(gateway.lines.some((line) => line.includes('config reloaded'))).toBe(true);
  });
});
