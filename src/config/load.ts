import { readFileSync } from 'node:fs';
import { hash } from 'node:crypto';
import { BlockList, isIP } from 'node:net';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { configFileSchema, envSchema, type ConfigFile, type Env, type Timeouts } from './schema.js';
import { splitCandidateId } from '../shared/candidate-id.js';

export interface ProviderConfig {
  readonly name: string;
  /** Without a trailing slash and without `/v1`. */
  readonly baseUrl: string;
  readonly type: 'llama-swap' | 'openai';
  readonly apiKey: string | undefined;
  readonly timeouts: Timeouts;
  readonly maxConnections: number;
  readonly models: readonly string[];
  /** How it is asked to continue a chat answer (see `providers.<name>.continuation`). */
  readonly continuation: 'prefill' | 'continue_final_message' | 'none';
  /** Requests in flight to this provider across the cluster; undefined: unbounded. */
  readonly maxInFlight: number | undefined;
}

export interface CandidateRef {
  /** `provider/model` */
  readonly id: string;
  readonly provider: string;
  readonly model: string;
  readonly weight: number;
}

export type Strategy = ConfigFile['virtualModels'][string]['strategy'];

/** The line of a virtual model: how long a request may wait for capacity, and how many may wait at once. */
export type QueueSettings = NonNullable<ConfigFile['virtualModels'][string]['queue']>;

/** Per-minute allowances of a client key or a source; undefined: that dimension is not limited. */
export interface RateLimits {
  readonly requestsPerMinute: number | undefined;
  readonly tokensPerMinute: number | undefined;
}

/** One entry of `auth.apiKeys`. */
export interface ClientKey {
  readonly digest: Buffer;
  /** Undefined for a plain sha256 entry: such a key has no name and no limits. */
  readonly name: string | undefined;
  readonly limits: RateLimits | undefined;
}

export interface VirtualModelConfig {
  readonly name: string;
  readonly strategy: Strategy;
  readonly preferLoaded: boolean;
  readonly candidates: readonly CandidateRef[];
  /** Continuations of a stream broken after its first byte (0: never). */
  readonly maxResumes: number;
  /** Undefined: no line; a request no candidate can take at once fails as before. */
  readonly queue: QueueSettings | undefined;
}

export interface Config {
  readonly path: string;
  readonly providers: Readonly<Record<string, ProviderConfig>>;
  readonly virtualModels: Readonly<Record<string, VirtualModelConfig>>;
  readonly exposeConcreteModels: boolean;
  readonly timeouts: Timeouts;
  readonly breaker: ConfigFile['breaker'];
  readonly healthCheck: ConfigFile['healthCheck'];
  /** sha256 digests of the accepted bearer keys (client and admin keys); empty means auth is off. */
  readonly apiKeyDigests: readonly Buffer[];
  /** sha256 digests of the keys that may read /admin/*. */
  readonly adminKeyDigests: readonly Buffer[];
  /** `auth.apiKeys` in order, with their names and limits; `apiKeyDigests` starts with their digests, in the same order. */
  readonly clientKeys: readonly ClientKey[];
  /**
   * `maxInFlight` of each candidate that has one, by `provider/model`: the limit belongs to the
   * candidate, so it also holds for a direct request to it and in every virtual model listing it.
   */
  readonly candidateMaxInFlight: Readonly<Record<string, number>>;
  /** Peers whose forwarding headers are believed (see `trustedProxies`); undefined when none is. */
  readonly trustedProxies: BlockList | undefined;
  readonly limits: ConfigFile['limits'];
  readonly shutdown: ConfigFile['shutdown'];
  readonly events: ConfigFile['events'];
}

/** Bad config: every problem, each prefixed with the path of the key it concerns. */
export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(source: string, problems: readonly string[]) {
    super(`invalid config ${source}: ${problems.join('; ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out === '' ? String(segment) : `.${String(segment)}`;
  }
  return out === '' ? '(root)' : out;
}

function formatIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => `${formatPath(issue.path)}: ${issue.message}`);
}

/** Validates the process environment (the only place that reads it is the entry point). */
export function loadEnv(env: NodeJS.ProcessEnv): Env {
  const result = envSchema.safeParse(env);
  if (!result.success) throw new ConfigError('environment', formatIssues(result.error));
  return result.data;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Buffer.isBuffer(value) && !(value instanceof BlockList) && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * Cross-references the schema cannot see: each candidate names a configured provider, once.
 * Reads the raw document defensively so its problems are reported alongside the schema's.
 */
function checkCandidates(document: unknown): string[] {
  if (!isRecord(document) || !isRecord(document.virtualModels)) return [];
  const providers = isRecord(document.providers) ? document.providers : {};
  const problems: string[] = [];
  for (const [name, virtualModel] of Object.entries(document.virtualModels)) {
    if (!isRecord(virtualModel) || !Array.isArray(virtualModel.candidates)) continue;
    const seen = new Set<string>();
    virtualModel.candidates.forEach((candidate: unknown, index) => {
      const target = isRecord(candidate) ? candidate.target : candidate;
      if (typeof target !== 'string') return;
      const at = `virtualModels.${name}.candidates[${index}]`;
      const parts = splitCandidateId(target);
      if (!parts) problems.push(`${at}: "${target}" is not "provider/model"`);
      else if (!Object.hasOwn(providers, parts.provider)) problems.push(`${at}: unknown provider "${parts.provider}"`);
      else if (seen.has(target)) problems.push(`${at}: "${target}" is listed twice`);
      seen.add(target);
    });
  }
  return problems;
}

/**
 * Validates a parsed config document and resolves it: provider timeouts merged over the global
 * ones, API keys read from their env vars, candidates split into provider and model.
 * @throws ConfigError naming every invalid key at once.
 */
export function buildConfig(document: unknown, source: string, env: NodeJS.ProcessEnv): Config {
  const result = configFileSchema.safeParse(document ?? {});
  const problems = checkCandidates(document);
  if (!result.success) throw new ConfigError(source, [...formatIssues(result.error), ...problems]);
  if (problems.length > 0) throw new ConfigError(source, problems);
  const file = result.data;

  const providers: Record<string, ProviderConfig> = {};
  for (const [name, provider] of Object.entries(file.providers)) {
    let apiKey: string | undefined;
    if (provider.apiKeyEnv !== undefined) {
      apiKey = env[provider.apiKeyEnv];
      if (!apiKey) problems.push(`providers.${name}.apiKeyEnv: environment variable ${provider.apiKeyEnv} is not set`);
    }
    providers[name] = {
      name,
      baseUrl: provider.baseUrl.replace(/\/+$/, ''),
      type: provider.type,
      apiKey,
      timeouts: {
        connectMs: provider.timeouts?.connectMs ?? file.timeouts.connectMs,
        firstByteMs: provider.timeouts?.firstByteMs ?? file.timeouts.firstByteMs,
        idleMs: provider.timeouts?.idleMs ?? file.timeouts.idleMs,
        totalMs: provider.timeouts?.totalMs ?? file.timeouts.totalMs,
      },
      maxConnections: provider.maxConnections,
      models: provider.models,
      continuation: provider.continuation ?? (provider.type === 'llama-swap' ? 'prefill' : 'none'),
      maxInFlight: provider.maxInFlight,
    };
  }

  const virtualModels: Record<string, VirtualModelConfig> = {};
  const candidateMaxInFlight: Record<string, number> = {};
  const limitSetAt = new Map<string, string>();
  for (const [name, virtualModel] of Object.entries(file.virtualModels)) {
    const candidates = virtualModel.candidates.map((candidate, index) => {
      const target = typeof candidate === 'string' ? candidate : candidate.target;
      const weight = typeof candidate === 'string' ? 1 : candidate.weight;
      if (typeof candidate !== 'string' && candidate.maxInFlight !== undefined) {
        const at = `virtualModels.${name}.candidates[${index}].maxInFlight`;
        const earlier = candidateMaxInFlight[target];
        if (earlier !== undefined && earlier !== candidate.maxInFlight) {
          problems.push(`${at}: ${target} already has maxInFlight ${earlier} at ${limitSetAt.get(target)}; a candidate has one limit`);
        } else {
          candidateMaxInFlight[target] = candidate.maxInFlight;
          limitSetAt.set(target, at);
        }
      }
      // checkCandidates already proved the id splits.
      const { provider, model } = splitCandidateId(target)!;
      return { id: target, provider, model, weight };
    });
    virtualModels[name] = {
      name,
      strategy: virtualModel.strategy,
      preferLoaded: virtualModel.preferLoaded,
      candidates,
      maxResumes: virtualModel.resume.maxResumes,
      queue: virtualModel.queue,
    };
  }
  if (problems.length > 0) throw new ConfigError(source, problems);
  const clientKeys: ClientKey[] = file.auth.apiKeys.map((entry) =>
    typeof entry === 'string'
      ? { digest: digestOfHex(entry), name: undefined, limits: undefined }
      : {
          digest: digestOfHex(entry.sha256),
          name: entry.name,
          limits:
            entry.requestsPerMinute === undefined && entry.tokensPerMinute === undefined
              ? undefined
              : { requestsPerMinute: entry.requestsPerMinute, tokensPerMinute: entry.tokensPerMinute },
        },
  );

  return deepFreeze({
    path: source,
    providers,
    virtualModels,
    exposeConcreteModels: file.exposeConcreteModels,
    timeouts: file.timeouts,
    breaker: file.breaker,
    healthCheck: file.healthCheck,
    apiKeyDigests: [...clientKeys.map((key) => key.digest), ...file.auth.adminKeys.map(digestOfHex)],
    adminKeyDigests: file.auth.adminKeys.map(digestOfHex),
    clientKeys,
    candidateMaxInFlight,
    trustedProxies: file.trustedProxies.length > 0 ? blockListOf(file.trustedProxies) : undefined,
    limits: file.limits,
    shutdown: file.shutdown,
    events: file.events,
  });
}

function digestOfHex(hex: string): Buffer {
  return Buffer.from(hex.toLowerCase(), 'hex');
}

/** The configured addresses and subnets (already validated) as one list to check a peer against. */
function blockListOf(entries: readonly string[]): BlockList {
  const list = new BlockList();
  for (const entry of entries) {
    const [address = '', prefix] = entry.split('/');
    const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (prefix === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(prefix), type);
  }
  return list;
}

/** Reads and validates a YAML config file. @throws ConfigError */
export function loadConfigFile(path: string, env: NodeJS.ProcessEnv): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err: unknown) {
    throw new ConfigError(path, [`cannot read the file (${(err as NodeJS.ErrnoException).code ?? String(err)})`]);
  }
  let document: unknown;
  try {
    document = parseYaml(text);
  } catch (err: unknown) {
    throw new ConfigError(path, [`not valid YAML: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`]);
  }
  return buildConfig(document, path, env);
}

/** sha256 of a bearer key, as configured in `auth.apiKeys`. */
export function digestApiKey(key: string): Buffer {
  // One-shot crypto.hash: a third of createHash().update().digest() per request on the auth path.
  return hash('sha256', key, 'buffer');
}
