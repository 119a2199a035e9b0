import type { IncomingHttpHeaders } from 'node:http';
import type { Config, ProviderConfig } from '../config/load.js';
import { GatewayError, InvalidRequestError, ModelNotFoundError, NoHealthyCandidateError } from '../errors.js';
import type { FleetState } from '../fleet/fleet-state.js';
import type { Resolution } from '../routing/resolve-model.js';
import type { CandidateView } from '../routing/select-targets.js';
import type { Logger } from '../shared/logger.js';
import { upstreamPath, type DispatchWithFallback } from './dispatch-with-fallback.js';
import { describeError } from './upstream-attempt.js';
import type { UpstreamPools } from './upstream-pools.js';

const passthroughTimeoutMs = 5_000;
const maxPassthroughBytes = 8 * 1024 * 1024;

export interface PassthroughAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  readonly candidate: string;
  /** True when the answer is a cached `props`, given so as not to make llama-swap swap models. */
  readonly cached: boolean;
}

/**
 * A path segment that is safe to put into an upstream URL: not empty, not `.` or `..` (which
 * `encodeURIComponent` leaves as they are), no separators, no control characters.
 */
export function isSafePathSegment(segment: string): boolean {
  return segment !== '' && segment !== '.' && segment !== '..' && !/[/\\\u0000-\u001f\u007f]/.test(segment);
}

/** GET `{baseUrl}/upstream/{model}/{rest}` with a bounded time and body. */
export async function fetchUpstreamPath(
  pools: UpstreamPools,
  provider: ProviderConfig,
  model: string,
  rest: readonly string[],
  query: string,
  signal: AbortSignal,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  const path = upstreamPath(provider, `/upstream/${encodeURIComponent(model)}/${rest.map(encodeURIComponent).join('/')}`);
  const headers: Record<string, string> = { accept: 'application/json' };
  if (provider.apiKey) headers.authorization = `Bearer ${provider.apiKey}`;
  const response = await pools.pool(provider.name).request({
    path: query ? `${path}?${query}` : path,
    method: 'GET',
    headers,
    signal: AbortSignal.any([signal, AbortSignal.timeout(passthroughTimeoutMs)]),
    headersTimeout: passthroughTimeoutMs,
    bodyTimeout: passthroughTimeoutMs,
  });
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response.body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxPassthroughBytes) {
      response.body.destroy();
      throw new Error(`answer larger than ${maxPassthroughBytes} bytes`);
    }
    chunks.push(chunk);
  }
  return { status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks) };
}

/** `n_ctx` from a llama.cpp `props` answer. */
export function contextSizeFromProps(body: Buffer): number | undefined {
  try {
    const props = JSON.parse(body.toString('utf8')) as { n_ctx?: unknown; default_generation_settings?: { n_ctx?: unknown } };
    const size = props.default_generation_settings?.n_ctx ?? props.n_ctx;
    return typeof size === 'number' && size > 0 ? size : undefined;
  } catch {
    return undefined; // not a llama.cpp props document
  }
}

/**
 * `GET /upstream/:model/*`, the llama-swap pass-through BooChat reads `props` through. On
 * llama-swap any such request loads the model and evicts others, so candidates with the model
 * loaded go first, a cached `props` answers when none is loaded, and only then is an unloaded
 * candidate asked.
 */
export class UpstreamPassthrough {
  constructor(
    private readonly deps: {
      config: () => Config;
      fleet: FleetState;
      pools: UpstreamPools;
      dispatcher: DispatchWithFallback;
      logger: Logger;
    },
  ) {}

  /** Finds the model among the leading segments (a `provider/model` id may span several). */
  private resolvePath(model: string, rest: readonly string[]): { resolution: Resolution; rest: readonly string[] } {
    for (let taken = 0; taken < rest.length; taken++) {
      const name = [model, ...rest.slice(0, taken)].join('/');
      try {
        return { resolution: this.deps.dispatcher.resolve(name), rest: rest.slice(taken) };
      } catch (err: unknown) {
        if (!(err instanceof ModelNotFoundError)) throw err;
      }
    }
    throw new ModelNotFoundError(model);
  }

  private async refreshLoaded(targets: readonly CandidateView[], signal: AbortSignal): Promise<Set<string>> {
    const { config, fleet, pools } = this.deps;
    const unreachable = new Set<string>();
    const providers = new Set(targets.map((target) => target.provider));
    await Promise.all(
      [...providers].map(async (name) => {
        const provider = config().providers[name];
        if (provider?.type !== 'llama-swap') return;
        try {
          const { statusCode, body } = await pools.pool(name).request({
            path: upstreamPath(provider, '/running'),
            method: 'GET',
            signal: AbortSignal.any([signal, AbortSignal.timeout(config().healthCheck.timeoutMs)]),
          });
          if (statusCode !== 200) {
            await body.dump();
            throw new Error(`GET /running answered ${statusCode}`);
          }
          const running = (await body.json()) as { running?: Array<{ model?: unknown; state?: unknown }> };
          fleet.provider(name).loaded = new Set(
            (running.running ?? [])
              .filter((entry) => entry.state !== 'stopping' && entry.state !== 'stopped')
              .map((entry) => entry.model)
              .filter((model): model is string => typeof model === 'string'),
          );
        } catch (err: unknown) {
          unreachable.add(name);
          this.deps.logger.debug({ provider: name, err: describeError(err) }, 'GET /running failed');
        }
      }),
    );
    return unreachable;
  }

  async fetch(model: string, restSegments: readonly string[], query: string, signal: AbortSignal): Promise<PassthroughAnswer> {
    // A model id may hold `/` (an encoded `provider/model`); each of its parts must be safe too.
    for (const segment of [...model.split('/'), ...restSegments]) {
      if (!isSafePathSegment(segment)) throw new InvalidRequestError('the upstream path has an empty, "." or ".." segment, or a separator', 'path', 'invalid_path');
    }
    if (restSegments.length === 0) throw new InvalidRequestError('an upstream path is needed after the model', 'path', 'invalid_path');
    const { config, fleet, pools, dispatcher } = this.deps;
    const { resolution, rest } = this.resolvePath(model, restSegments);
    const { targets } = dispatcher.plan(resolution, 0);
    if (targets.length === 0) throw new NoHealthyCandidateError(model);

    const unreachable = await this.refreshLoaded(targets, signal);
    const reachable = targets.filter((target) => !unreachable.has(target.provider));
    const swapsModel = (target: CandidateView) =>
      config().providers[target.provider]?.type === 'llama-swap' && !fleet.isLoaded(target.provider, target.model);
    const isProps = rest.length === 1 && rest[0] === 'props';

    const ask = async (target: CandidateView): Promise<PassthroughAnswer | undefined> => {
      const provider = config().providers[target.provider];
      if (!provider) return undefined;
      try {
        const answer = await fetchUpstreamPath(pools, provider, target.model, rest, query, signal);
        if (answer.status < 200 || answer.status >= 300) return undefined;
        if (isProps) {
          fleet.candidate(target.id).props = { body: answer.body, contentType: String(answer.headers['content-type'] ?? 'application/json'), at: Date.now() };
          const contextSize = contextSizeFromProps(answer.body);
          if (contextSize !== undefined) fleet.candidate(target.id).contextSize = contextSize;
        }
        if (provider.type === 'llama-swap') fleet.markLoaded(provider.name, target.model);
        return { ...answer, candidate: target.id, cached: false };
      } catch (err: unknown) {
        this.deps.logger.debug({ candidate: target.id, err: describeError(err) }, 'upstream pass-through attempt failed');
        return undefined;
      }
    };

    for (const target of reachable.filter((candidate) => !swapsModel(candidate))) {
      const answer = await ask(target);
      if (answer) return answer;
    }
    if (isProps) {
      for (const target of reachable) {
        const props = fleet.candidate(target.id).props;
        if (props) return { status: 200, headers: { 'content-type': props.contentType }, body: props.body, candidate: target.id, cached: true };
      }
    }
    for (const target of reachable.filter(swapsModel)) {
      const answer = await ask(target);
      if (answer) return answer;
    }
    throw new GatewayError(`no candidate of "${model}" answered ${rest.join('/')}`, {
      code: 'no_healthy_candidate',
      status: 503,
      openaiType: 'service_unavailable_error',
    });
  }
}
