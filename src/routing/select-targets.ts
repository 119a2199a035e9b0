import type { BreakerPosition } from '../breakers/breaker-position.js';
import type { Strategy } from '../config/load.js';

/** What routing knows of one candidate at the moment of a request. Plain data. */
export interface CandidateView {
  readonly id: string;
  readonly provider: string;
  readonly model: string;
  readonly weight: number;
  readonly breaker: BreakerPosition;
  /** The provider passes its health checks (true while unknown). */
  readonly healthy: boolean;
  /** Kept out of rotation by an upstream 429 Retry-After. */
  readonly coolingDown: boolean;
  /** llama-swap: the model is loaded or loading; undefined when not known. */
  readonly loaded: boolean | undefined;
  /** EWMA of time to first byte, ms; undefined before the first measurement. */
  readonly latencyMs: number | undefined;
  /** Context window in tokens, when known. */
  readonly contextSize: number | undefined;
}

export interface SelectionPolicy {
  readonly strategy: Strategy;
  readonly preferLoaded: boolean;
  /** Monotonic per virtual model; drives round-robin. */
  readonly sequence: number;
  /** Uniform in [0, 1); injected so tests are deterministic. */
  readonly random: () => number;
  /** Estimated prompt tokens plus max_tokens; undefined skips the context fit. */
  readonly requiredContext?: number | undefined;
  /** Probability that least-latency puts a random other candidate first, so it is measured again. */
  readonly exploration?: number;
}

export interface Selection {
  /** Candidates to try, in order. */
  readonly targets: readonly CandidateView[];
  /** True when every eligible candidate was excluded by a breaker or a cooldown and they are tried anyway. */
  readonly panic: boolean;
}

function orderByStrategy(candidates: CandidateView[], policy: SelectionPolicy): CandidateView[] {
  switch (policy.strategy) {
    case 'priority':
      return candidates;
    case 'round-robin': {
      const offset = policy.sequence % candidates.length;
      return [...candidates.slice(offset), ...candidates.slice(0, offset)];
    }
    case 'weighted': {
      // Weighted sampling without replacement: the first pick follows the weights, and so does
      // each failover after it.
      const pool = [...candidates];
      const ordered: CandidateView[] = [];
      while (pool.length > 0) {
        const total = pool.reduce((sum, candidate) => sum + candidate.weight, 0);
        let point = policy.random() * total;
        let index = pool.findIndex((candidate) => (point -= candidate.weight) < 0);
        if (index < 0) index = pool.length - 1;
        ordered.push(...pool.splice(index, 1));
      }
      return ordered;
    }
    case 'least-latency': {
      // Unmeasured candidates sort first so that a new or recovered one gets measured.
      const ordered = [...candidates].sort((a, b) => (a.latencyMs ?? -1) - (b.latencyMs ?? -1));
      const exploration = policy.exploration ?? 0.1;
      if (ordered.length > 1 && policy.random() < exploration) {
        const index = 1 + Math.floor(policy.random() * (ordered.length - 1));
        ordered.unshift(...ordered.splice(index, 1));
      }
      return ordered;
    }
  }
}

function fitContext(candidates: CandidateView[], required: number | undefined): CandidateView[] {
  if (required === undefined || candidates.length === 0) return candidates;
  const fitting = candidates.filter((candidate) => candidate.contextSize === undefined || candidate.contextSize >= required);
  if (fitting.length > 0) return fitting;
  // Nothing is big enough: the largest window is the best chance, better than refusing.
  const largest = candidates.reduce((best, candidate) => ((candidate.contextSize ?? 0) > (best.contextSize ?? 0) ? candidate : best));
  return [largest];
}

/**
 * Orders the candidates of one request: unhealthy providers out; open breakers and cooldowns out
 * unless that leaves nothing (then they are tried anyway: one burst must not take a whole
 * virtual model down, as Envoy's panic threshold); the strategy's order; loaded models first.
 */
export function selectTargets(candidates: readonly CandidateView[], policy: SelectionPolicy): Selection {
  const healthy = fitContext(
    candidates.filter((candidate) => candidate.healthy),
    policy.requiredContext,
  );
  if (healthy.length === 0) return { targets: [], panic: false };
  const available = healthy.filter((candidate) => candidate.breaker !== 'open' && !candidate.coolingDown);
  const panic = available.length === 0;
  let ordered = orderByStrategy(panic ? healthy : available, policy);
  if (policy.preferLoaded) {
    ordered = [...ordered.filter((candidate) => candidate.loaded === true), ...ordered.filter((candidate) => candidate.loaded !== true)];
  }
  return { targets: ordered, panic };
}
