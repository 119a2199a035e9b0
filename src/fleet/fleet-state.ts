import { EventEmitter } from 'node:events';

/** A 429 Retry-After cooldown: learnt here (`local`) or from another replica (`remote`). */
export type CoolDown = { candidate: string; until: number; origin: 'local' | 'remote' };

/** What health checks and dispatches have learned about one provider. */
export interface ProviderStatus {
  /** undefined until the first check answers. */
  healthy: boolean | undefined;
  /** Models the provider lists in /v1/models. */
  models: ReadonlySet<string>;
  /** llama-swap: models loaded or starting, from /running; undefined for other providers or before the first check. */
  loaded: ReadonlySet<string> | undefined;
  lastCheckAt: number | undefined;
  lastError: string | undefined;
}

/** What dispatches have learned about one candidate (`provider/model`). */
export interface CandidateStatus {
  latencyEwmaMs: number | undefined;
  contextSize: number | undefined;
  /** Epoch ms until which a 429 Retry-After keeps the candidate out of rotation. */
  coolingDownUntil: number;
  lastError: string | undefined;
  /** Last llama.cpp `props` answer, served when no candidate has its model loaded. */
  props: { body: Buffer; contentType: string; at: number } | undefined;
}

// Weight of the newest time-to-first-byte sample: high, so that a host that recovers (or slows
// down) is seen as such within a few requests.
const latencySmoothing = 0.5;

/**
 * The gateway's knowledge of its fleet: health, served and loaded models, latency, cooldowns.
 * Plain in-memory state, written by the health checker and the dispatcher, read by routing.
 * Emits `coolDown` when a cooldown is set or extended, so it can be shared with other replicas.
 */
export class FleetState extends EventEmitter<{ coolDown: [CoolDown] }> {
  private readonly providers = new Map<string, ProviderStatus>();
  private readonly candidates = new Map<string, CandidateStatus>();
  private readonly now: () => number;

  constructor(now: () => number = Date.now) {
    super();
    this.now = now;
  }

  provider(name: string): ProviderStatus {
    let status = this.providers.get(name);
    if (!status) {
      status = { healthy: undefined, models: new Set(), loaded: undefined, lastCheckAt: undefined, lastError: undefined };
      this.providers.set(name, status);
    }
    return status;
  }

  candidate(id: string): CandidateStatus {
    let status = this.candidates.get(id);
    if (!status) {
      status = { latencyEwmaMs: undefined, contextSize: undefined, coolingDownUntil: 0, lastError: undefined, props: undefined };
      this.candidates.set(id, status);
    }
    return status;
  }

  isHealthy(provider: string): boolean {
    return this.providers.get(provider)?.healthy !== false;
  }

  /**
   * False only when the provider's last /v1/models answer omits the model. llama-swap answers a
   * model it does not know with a 400, which would reach the client instead of failing over.
   */
  mayServe(provider: string, model: string): boolean {
    const status = this.providers.get(provider);
    return status?.healthy !== true || status.models.size === 0 || status.models.has(model);
  }

  isLoaded(provider: string, model: string): boolean | undefined {
    return this.providers.get(provider)?.loaded?.has(model);
  }

  isCoolingDown(candidateId: string): boolean {
    return (this.candidates.get(candidateId)?.coolingDownUntil ?? 0) > this.now();
  }

  coolDown(candidateId: string, untilMs: number, origin: CoolDown['origin'] = 'local'): void {
    const status = this.candidate(candidateId);
    if (untilMs <= status.coolingDownUntil) return;
    status.coolingDownUntil = untilMs;
    this.emit('coolDown', { candidate: candidateId, until: untilMs, origin });
  }

  recordLatency(candidateId: string, ms: number): void {
    const status = this.candidate(candidateId);
    status.latencyEwmaMs = status.latencyEwmaMs === undefined ? ms : status.latencyEwmaMs + latencySmoothing * (ms - status.latencyEwmaMs);
  }

  /** Providers whose /v1/models lists the model, in the order given. */
  providersServing(model: string, providerNames: Iterable<string>): string[] {
    const serving: string[] = [];
    for (const name of providerNames) if (this.providers.get(name)?.models.has(model)) serving.push(name);
    return serving;
  }

  /** A model reported loaded means the provider swapped to it: the others are no longer loaded. */
  markLoaded(provider: string, model: string): void {
    const status = this.provider(provider);
    if (status.loaded !== undefined) status.loaded = new Set([model]);
  }
}
