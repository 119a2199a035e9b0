import type { CandidateRef, Config, Strategy, VirtualModelConfig } from '../config/load.js';
import { joinCandidateId, splitCandidateId } from '../shared/candidate-id.js';

export interface Resolution {
  /** The configured virtual model, when the request named one. */
  readonly virtualModel: VirtualModelConfig | undefined;
  readonly candidates: readonly CandidateRef[];
  readonly strategy: Strategy;
  readonly preferLoaded: boolean;
}

/** Every model a provider is known to serve: from the config (candidates, `models`) and discovery. */
export function isKnownModel(config: Config, provider: string, model: string, discovered: ReadonlySet<string>): boolean {
  if (!Object.hasOwn(config.providers, provider)) return false;
  if (discovered.has(model) || config.providers[provider]!.models.includes(model)) return true;
  return Object.values(config.virtualModels).some((virtualModel) =>
    virtualModel.candidates.some((candidate) => candidate.provider === provider && candidate.model === model),
  );
}

/**
 * Turns the requested model into candidates: a virtual model -> its candidates; `provider/model`
 * of a known model -> that one; a bare name -> every provider that serves it (configured
 * `models` or discovered). undefined when nothing matches (404 model_not_found).
 */
export function resolveModel(requested: string, config: Config, discoveredModels: (provider: string) => ReadonlySet<string>): Resolution | undefined {
  const virtualModel = Object.hasOwn(config.virtualModels, requested) ? config.virtualModels[requested] : undefined;
  if (virtualModel) {
    return { virtualModel, candidates: virtualModel.candidates, strategy: virtualModel.strategy, preferLoaded: virtualModel.preferLoaded };
  }
  const direct = { virtualModel: undefined, strategy: 'priority', preferLoaded: true } as const;
  const parts = splitCandidateId(requested);
  if (parts && isKnownModel(config, parts.provider, parts.model, discoveredModels(parts.provider))) {
    return { ...direct, candidates: [{ id: requested, provider: parts.provider, model: parts.model, weight: 1 }] };
  }
  const candidates: CandidateRef[] = [];
  for (const provider of Object.keys(config.providers)) {
    const discovered = discoveredModels(provider);
    if (discovered.has(requested) || config.providers[provider]!.models.includes(requested)) {
      candidates.push({ id: joinCandidateId(provider, requested), provider, model: requested, weight: 1 });
    }
  }
  return candidates.length > 0 ? { ...direct, candidates } : undefined;
}
