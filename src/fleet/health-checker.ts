import type { Config, ProviderConfig } from '../config/load.js';
import type { UpstreamPools } from '../dispatch/upstream-pools.js';
import { describeError } from '../dispatch/upstream-attempt.js';
import { upstreamPath } from '../dispatch/dispatch-with-fallback.js';
import type { GatewayMetrics } from '../metrics/registry.js';
import type { Logger } from '../shared/logger.js';
import type { FleetState } from './fleet-state.js';
import { contextSizeFromProps, fetchUpstreamPath } from '../dispatch/upstream-passthrough.js';

/** A cached `props` older than this is read again when its model is loaded. */
const propsMaxAgeMs = 10 * 60_000;

interface ModelList {
  data?: Array<{ id?: unknown; meta?: { n_ctx?: unknown; n_ctx_train?: unknown } }>;
}
interface RunningList {
  running?: Array<{ model?: unknown; state?: unknown }>;
}

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
      pools: UpstreamPools;
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

  private async getJson(provider: ProviderConfig, path: string): Promise<unknown> {
    const { timeoutMs } = this.deps.config().healthCheck;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (provider.apiKey) headers.authorization = `Bearer ${provider.apiKey}`;
    const { statusCode, body } = await this.deps.pools.pool(provider.name).request({
      path: upstreamPath(provider, path),
      method: 'GET',
      headers,
      signal: AbortSignal.timeout(timeoutMs),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    if (statusCode !== 200) {
      await body.dump();
      throw new Error(`GET ${path} answered ${statusCode}`);
    }
    return body.json();
  }

  /**
   * Reads `props` of loaded models (which costs no swap) so that the pass-through can answer
   * from cache later, and so routing learns each candidate's context size.
   */
  private async warmProps(provider: ProviderConfig, loaded: ReadonlySet<string>): Promise<void> {
    const { fleet, pools } = this.deps;
    for (const model of loaded) {
      const candidate = fleet.candidate(`${provider.name}/${model}`);
      if (candidate.props && Date.now() - candidate.props.at < propsMaxAgeMs) continue;
      const answer = await fetchUpstreamPath(pools, provider, model, ['props'], '', AbortSignal.timeout(this.deps.config().healthCheck.timeoutMs));
      if (answer.status !== 200) continue;
      candidate.props = { body: answer.body, contentType: String(answer.headers['content-type'] ?? 'application/json'), at: Date.now() };
      candidate.contextSize = contextSizeFromProps(answer.body) ?? candidate.contextSize;
    }
  }

  private async check(provider: ProviderConfig): Promise<void> {
    const { fleet, metrics, logger } = this.deps;
    const status = fleet.provider(provider.name);
    try {
      const [models, running] = await Promise.all([
        this.getJson(provider, '/v1/models') as Promise<ModelList>,
        provider.type === 'llama-swap' ? (this.getJson(provider, '/running') as Promise<RunningList>) : undefined,
      ]);
      const ids = new Set<string>();
      for (const entry of models.data ?? []) {
        if (typeof entry.id !== 'string') continue;
        ids.add(entry.id);
        const contextSize = entry.meta?.n_ctx ?? entry.meta?.n_ctx_train;
        if (typeof contextSize === 'number' && contextSize > 0) fleet.candidate(`${provider.name}/${entry.id}`).contextSize = contextSize;
      }
      status.models = ids;
      if (running) {
        const loaded = new Set<string>();
        for (const entry of running.running ?? []) {
          if (typeof entry.model === 'string' && entry.state !== 'stopping' && entry.state !== 'stopped') loaded.add(entry.model);
        }
        status.loaded = loaded;
        await this.warmProps(provider, loaded).catch((err: unknown) =>
          logger.debug({ provider: provider.name, err: describeError(err) }, 'reading props of a loaded model failed'),
        );
      }
      if (status.healthy === false) logger.info({ provider: provider.name }, 'provider is back');
      status.healthy = true;
      status.lastError = undefined;
    } catch (err: unknown) {
      const problem = describeError(err);
      if (status.healthy !== false) logger.warn({ provider: provider.name, err: problem }, 'provider failed its health check');
      status.healthy = false;
      status.lastError = problem;
    }
    status.lastCheckAt = Date.now();
    metrics.providerUp.labels(provider.name).set(status.healthy ? 1 : 0);
  }
}
