import type { Config, ProviderConfig } from '../config/load.js';
import type { GatewayMetrics } from '../metrics/registry.js';
import type { Logger } from '../shared/logger.js';
import { errorMessage } from '../shared/error-message.js';
import { contextSizeFromProps, type LlamaSwapClient } from '../upstream/llama-swap-client.js';
import type { FleetState } from './fleet-state.js';
import { joinCandidateId } from '../shared/candidate-id.js';

/** A cached `props` older than this is read again when its model is loaded. */
const propsMaxAgeMs = 10 * 60_000;

/**
 * Polls every provider on `healthCheck.intervalMs`: `/v1/models` (liveness and the models it
 * serves) and, on llama-swap, `/running` (what is loaded). A provider whose check fails leaves
 * rotation until a check passes again.
 */
export class HealthChecker {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly deps: {
      config: () => Config;
      client: LlamaSwapClient;
      fleet: FleetState;
      metrics: GatewayMetrics;
      logger: Logger;
    },
  ) {}

  /** Checks at once, then every interval; the interval follows config reloads. */
  start(): void {
    const tick = () => {
      this.running = this.checkAll().finally(() => {
        this.running = undefined;
        if (this.timer !== undefined) this.timer = setTimeout(tick, this.deps.config().healthCheck.intervalMs).unref();
      });
    };
    this.timer = setTimeout(tick, 0).unref();
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  async checkAll(): Promise<void> {
    await Promise.all(Object.values(this.deps.config().providers).map((provider) => this.check(provider)));
  }

  private deadline(): AbortSignal {
    return AbortSignal.timeout(this.deps.config().healthCheck.timeoutMs);
  }

  /**
   * Reads `props` of loaded models (which costs no swap) so that the pass-through can answer
   * from cache later, and so routing learns each candidate's context size.
   */
  private async warmProps(provider: ProviderConfig, loaded: ReadonlySet<string>): Promise<void> {
    const { fleet, client } = this.deps;
    for (const model of loaded) {
      const candidate = fleet.candidate(joinCandidateId(provider.name, model));
      if (candidate.props && Date.now() - candidate.props.at < propsMaxAgeMs) continue;
      const answer = await client.upstream(provider, model, ['props'], '', this.deadline());
      if (answer.status !== 200) continue;
      candidate.props = { body: answer.body, contentType: String(answer.headers['content-type'] ?? 'application/json'), at: Date.now() };
      candidate.contextSize = contextSizeFromProps(answer.body) ?? candidate.contextSize;
    }
  }

  private async check(provider: ProviderConfig): Promise<void> {
    const { fleet, metrics, logger, client } = this.deps;
    const status = fleet.provider(provider.name);
    try {
      const [models, loaded] = await Promise.all([
        client.models(provider, this.deadline()),
        provider.type === 'llama-swap' ? client.running(provider, this.deadline()) : undefined,
      ]);
      const ids = new Set<string>();
      for (const { id, contextSize } of models) {
        ids.add(id);
        if (contextSize !== undefined) fleet.candidate(joinCandidateId(provider.name, id)).contextSize = contextSize;
      }
      status.models = ids;
      if (loaded) {
        status.loaded = loaded;
        await this.warmProps(provider, loaded).catch((err: unknown) =>
          logger.debug({ provider: provider.name, err: errorMessage(err) }, 'reading props of a loaded model failed'),
        );
      }
      if (status.healthy === false) logger.info({ provider: provider.name }, 'provider is back');
      status.healthy = true;
      status.lastError = undefined;
    } catch (err: unknown) {
      const problem = errorMessage(err);
      if (status.healthy !== false) logger.warn({ provider: provider.name, err: problem }, 'provider failed its health check');
      status.healthy = false;
      status.lastError = problem;
    }
    status.lastCheckAt = Date.now();
    metrics.providerUp.labels(provider.name).set(status.healthy ? 1 : 0);
  }
}
