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
