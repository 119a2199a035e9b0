import { describe, expect, it } from 'vitest';
import { buildConfig, ConfigError, loadConfigFile } from './load.js';

const valid = {
  providers: {
    'gpu-a': { baseUrl: 'http://10.0.0.5:8080/', type: 'llama-swap', timeouts: { firstByteMs: 180000 } },
    'gpu-b': { baseUrl: 'http://10.0.0.6:8080' },
  },
  virtualModels: { 'auto:chat': { candidates: ['gpu-a/org/qwen:7b', { target: 'gpu-b/llama', weight: 2 }] } },
};

function problemsOf(document: unknown, env: NodeJS.ProcessEnv = {}): readonly string[] {
  try {
    buildConfig(document, 'test.yaml', env);
  } catch (err: unknown) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('buildConfig', () => {
  it('fills defaults, merges provider timeouts over the global ones and splits candidates at the first slash', () => {
    const config = buildConfig(valid, 'test.yaml', {});
    expect(config.providers['gpu-a']).toMatchObject({ baseUrl: 'http://10.0.0.5:8080', timeouts: { firstByteMs: 180000, connectMs: 2000, idleMs: 60000 } });
    expect(config.virtualModels['auto:chat']!.candidates).toEqual([
      { id: 'gpu-a/org/qwen:7b', provider: 'gpu-a', model: 'org/qwen:7b', weight: 1 },
      { id: 'gpu-b/llama', provider: 'gpu-b', model: 'llama', weight: 2 },
    ]);
    expect(config.virtualModels['auto:chat']).toMatchObject({ strategy: 'priority', preferLoaded: true });
    expect(config.breaker).toEqual({ errorThresholdPercentage: 50, volumeThreshold: 3, rollingCountTimeoutMs: 10000, resetTimeoutMs: 15000 });
    expect(Object.isFrozen(config.providers['gpu-a']!.timeouts)).toBe(true);
  });

  it('names every problem with its path', () => {
    const problems = problemsOf({
      providers: { 'gpu-a': { baseUrl: 'not a url', type: 'vllm' } },
      virtualModels: { 'auto:chat': { candidates: ['gpu-a/m', 'gpu-z/m', 'nomodel'] } },
      breaker: { volumeThreshold: 0 },
      unknownKey: 1,
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        'providers.gpu-a.baseUrl: must be an http(s) URL',
        expect.stringMatching(/^providers\.gpu-a\.type: /),
        'virtualModels.auto:chat.candidates[1]: unknown provider "gpu-z"',
        'virtualModels.auto:chat.candidates[2]: "nomodel" is not "provider/model"',
        expect.stringMatching(/^breaker\.volumeThreshold: /),
        expect.stringMatching(/unknownKey/),
      ]),
    );
  });

  it('reads provider keys from the environment and refuses a missing one', () => {
    const document = { providers: { a: { baseUrl: 'http://h:1', apiKeyEnv: 'A_KEY' } } };
    expect(buildConfig(document, 'x', { A_KEY: 'secret' }).providers.a!.apiKey).toBe('secret');
    expect(problemsOf(document)).toEqual(['providers.a.apiKeyEnv: environment variable A_KEY is not set']);
  });

  it('refuses API key entries that are not sha256 digests', () => {
    expect(problemsOf({ providers: {}, auth: { apiKeys: ['plaintext-key'] } })).toEqual(['auth.apiKeys[0]: must be the sha256 of a key, 64 hex digits']);
  });

  it('reads maxInFlight of providers and candidates, and a candidate keeps its limit in every virtual model listing it', () => {
    const config = buildConfig(
      {
        providers: { a: { baseUrl: 'http://h:1', maxInFlight: 4 }, b: { baseUrl: 'http://h:2' } },
        virtualModels: { v: { candidates: [{ target: 'a/m', maxInFlight: 2 }, 'b/m'] }, w: { candidates: ['a/m'] } },
      },
      'x',
      {},
    );
    expect(config.providers.a!.maxInFlight).toBe(4);
    expect(config.providers.b!.maxInFlight).toBeUndefined();
    expect(config.candidateMaxInFlight).toEqual({ 'a/m': 2 });
  });

  it('refuses two different maxInFlight for one candidate, and a limit below 1', () => {
    expect(
      problemsOf({
        providers: { a: { baseUrl: 'http://h:1', maxInFlight: 0 } },
        virtualModels: { v: { candidates: [{ target: 'a/m', maxInFlight: 2 }] }, w: { candidates: [{ target: 'a/m', maxInFlight: 3 }] } },
      }),
    ).toEqual(['providers.a.maxInFlight: must be at least 1']);
    expect(
      problemsOf({
        providers: { a: { baseUrl: 'http://h:1' } },
        virtualModels: { v: { candidates: [{ target: 'a/m', maxInFlight: 2 }] }, w: { candidates: [{ target: 'a/m', maxInFlight: 3 }] } },
      }),
    ).toEqual([
      'virtualModels.w.candidates[0].maxInFlight: a/m already has maxInFlight 2 at virtualModels.v.candidates[0].maxInFlight; a candidate has one limit',
    ]);
  });

  it('fills the defaults of a line and leaves it off when absent', () => {
    const config = buildConfig(
      { providers: { a: { baseUrl: 'http://h:1' } }, virtualModels: { v: { candidates: ['a/m'], queue: { maxWaitMs: 5000 } }, w: { candidates: ['a/m'] } } },
      'x',
      {},
    );
    expect(config.virtualModels.v!.queue).toEqual({ maxWaitMs: 5000, maxQueued: 100 });
    expect(config.virtualModels.w!.queue).toBeUndefined();
    expect(
      problemsOf({ providers: { a: { baseUrl: 'http://h:1' } }, virtualModels: { v: { candidates: ['a/m'], queue: { maxQueued: 0, wait: 1 } } } }),
    ).toEqual(['virtualModels.v.queue.maxQueued: Too small: expected number to be >=1', expect.stringMatching(/^virtualModels\.v\.queue: .*"wait"/)]);
  });

  it('takes plain and named API keys alike, in order, with the limits of the named ones', () => {
    const plain = 'a'.repeat(64);
    const named = 'B'.repeat(64);
    const config = buildConfig(
      { providers: {}, auth: { apiKeys: [plain, { sha256: named, name: 'boochat', requestsPerMinute: 60 }, { sha256: 'c'.repeat(64), name: 'ci' }] } },
      'x',
      {},
    );
    expect(config.clientKeys.map((key) => [key.digest.toString('hex'), key.name, key.limits])).toEqual([
      [plain, undefined, undefined],
      ['b'.repeat(64), 'boochat', { requestsPerMinute: 60, tokensPerMinute: undefined }],
      ['c'.repeat(64), 'ci', undefined],
    ]);
    expect(config.apiKeyDigests.map((digest) => digest.toString('hex'))).toEqual([plain, 'b'.repeat(64), 'c'.repeat(64)]);
  });

  it('refuses key names that repeat or could not be a label, and names the key', () => {
    const key = (n: number) => String(n).repeat(64);
    expect(
      problemsOf({
        providers: {},
        auth: { apiKeys: [{ sha256: key(1), name: 'app' }, { sha256: key(2), name: 'app' }, { sha256: key(3), name: 'bad name' }, 42, { sha256: key(4) }] },
      }),
    ).toEqual([
      expect.stringMatching(/^auth\.apiKeys\[2\]\.name: use 1 to 64 letters/),
      'auth.apiKeys[3]: must be the sha256 of a key (64 hex digits) or { sha256, name, requestsPerMinute?, tokensPerMinute? }',
      'auth.apiKeys[4]: must be the sha256 of a key (64 hex digits) or { sha256, name, requestsPerMinute?, tokensPerMinute? }',
    ]);
    expect(
      problemsOf({
        providers: {},
        auth: {
          apiKeys: [
            { sha256: key(1), name: 'app' },
            { sha256: key(2), name: 'app' },
          ],
        },
      }),
    ).toEqual(['auth.apiKeys[1].name: "app" is already the name of auth.apiKeys[0]']);
  });

  it('reads rate limits per source and refuses one that limits nothing', () => {
    const config = buildConfig({ providers: {}, limits: { sources: { boochat: { requestsPerMinute: 600, tokensPerMinute: 100000 } } } }, 'x', {});
    expect(config.limits.sources).toEqual({ boochat: { requestsPerMinute: 600, tokensPerMinute: 100000 } });
    expect(problemsOf({ providers: {}, limits: { sources: { batch: {}, 'bad source': { requestsPerMinute: 1 } } } })).toEqual([
      'limits.sources.batch: set requestsPerMinute, tokensPerMinute or both',
      expect.stringMatching(/^limits\.sources\.bad source: use 1 to 64 letters/),
    ]);
  });

  it('refuses a candidate listed twice', () => {
    expect(problemsOf({ providers: { a: { baseUrl: 'http://h:1' } }, virtualModels: { v: { candidates: ['a/m', 'a/m'] } } })).toEqual([
      'virtualModels.v.candidates[1]: "a/m" is listed twice',
    ]);
  });

  it('loads the shipped example config', () => {
    const config = loadConfigFile(new URL('../../config/gateway.example.yaml', import.meta.url).pathname, {});
    expect(Object.keys(config.virtualModels)).toContain('auto:chat');
  });

  it('reports unreadable and invalid YAML files', () => {
    expect(() => loadConfigFile('/nonexistent/gateway.yaml', {})).toThrow(/cannot read the file \(ENOENT\)/);
  });
});
