import type { Config } from '../config/load.js';
import { GatewayError, InvalidRequestError, ModelNotFoundError, NoHealthyCandidateError } from '../errors.js';
import type { FleetState } from '../fleet/fleet-state.js';
import type { Resolution } from '../routing/resolve-model.js';
import type { RoutePlanner } from '../routing/route-planner.js';
import type { CandidateView } from '../routing/select-targets.js';
import { errorMessage } from '../shared/error-message.js';
import type { Logger } from '../shared/logger.js';
import { contextSizeFromProps, type LlamaSwapClient, type UpstreamAnswer } from '../upstream/llama-swap-client.js';

const passthroughTimeoutMs = 5_000;

export interface PassthroughAnswer extends UpstreamAnswer {
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
      client: LlamaSwapClient;
      planner: RoutePlanner;
      logger: Logger;
    },
  ) {}

  /** Finds the model among the leading segments (a `provider/model` id may span several). */
  private resolvePath(model: string, rest: readonly string[]): { resolution: Resolution; rest: readonly string[] } {
    for (let taken = 0; taken < rest.length; taken++) {
      const name = [model, ...rest.slice(0, taken)].join('/');
      try {
        return { resolution: this.deps.planner.resolve(name), rest: rest.slice(taken) };
      } catch (err: unknown) {
        if (!(err instanceof ModelNotFoundError)) throw err;
      }
    }
    throw new ModelNotFoundError(model);
  }

  /** Asks each llama-swap host what is loaded; returns the providers that did not answer. */
  private async refreshLoaded(targets: readonly CandidateView[], signal: AbortSignal): Promise<Set<string>> {
    const { config, fleet, client } = this.deps;
    const unreachable = new Set<string>();
    const providers = new Set(targets.map((target) => target.provider));
    await Promise.all(
      [...providers].map(async (name) => {
        const provider = config().providers[name];
        if (provider?.type !== 'llama-swap') return;
        try {
          fleet.provider(name).loaded = await client.running(provider, AbortSignal.any([signal, AbortSignal.timeout(config().healthCheck.timeoutMs)]));
        } catch (err: unknown) {
          unreachable.add(name);
          this.deps.logger.debug({ provider: name, err: errorMessage(err) }, 'GET /running failed');
        }
      }),
    );
    return unreachable;
  }

  async fetch(model: string, restSegments: readonly string[], query: string, signal: AbortSignal): Promise<PassthroughAnswer> {
    // A model id may hold `/` (an encoded `provider/model`); each of its parts must be safe too.
    for (const segment of [...model.split('/'), ...restSegments]) {
      if (!isSafePathSegment(segment))
        throw new InvalidRequestError('the upstream path has an empty, "." or ".." segment, or a separator', 'path', 'invalid_path');
    }
    if (restSegments.length === 0) throw new InvalidRequestError('an upstream path is needed after the model', 'path', 'invalid_path');
    const { config, fleet, client, planner } = this.deps;
    const { resolution, rest } = this.resolvePath(model, restSegments);
    const { targets } = planner.plan(resolution, 0);
    if (targets.length === 0) throw new NoHealthyCandidateError(model);

    const unreachable = await this.refreshLoaded(targets, signal);
    const reachable = targets.filter((target) => !unreachable.has(target.provider));
    const swapsModel = (target: CandidateView) => config().providers[target.provider]?.type === 'llama-swap' && !fleet.isLoaded(target.provider, target.model);
    const isProps = rest.length === 1 && rest[0] === 'props';

    const ask = async (target: CandidateView): Promise<PassthroughAnswer | undefined> => {
      const provider = config().providers[target.provider];
      if (!provider) return undefined;
      try {
        const answer = await client.upstream(provider, target.model, rest, query, AbortSignal.any([signal, AbortSignal.timeout(passthroughTimeoutMs)]));
        if (answer.status < 200 || answer.status >= 300) return undefined;
        if (isProps) {
          fleet.candidate(target.id).props = { body: answer.body, contentType: String(answer.headers['content-type'] ?? 'application/json'), at: Date.now() };
          const contextSize = contextSizeFromProps(answer.body);
          if (contextSize !== undefined) fleet.candidate(target.id).contextSize = contextSize;
        }
        if (provider.type === 'llama-swap') fleet.markLoaded(provider.name, target.model);
        return { ...answer, candidate: target.id, cached: false };
      } catch (err: unknown) {
        this.deps.logger.debug({ candidate: target.id, err: errorMessage(err) }, 'upstream pass-through attempt failed');
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
