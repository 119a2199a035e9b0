import { Pool } from 'undici';
import type { ProviderConfig } from '../config/load.js';

/** One keep-alive undici pool per provider, rebuilt only when a provider's address or sizing changes. */
export class UpstreamPools {
  private readonly pools = new Map<string, { key: string; pool: Pool }>();

  constructor(providers: Readonly<Record<string, ProviderConfig>>) {
    this.reconfigure(providers);
  }

  private static keyOf(provider: ProviderConfig): string {
    return `${provider.baseUrl}|${provider.maxConnections}|${provider.timeouts.connectMs}`;
  }

  /** Applies a new provider set; pools of removed or changed providers drain and close in the background. */
  reconfigure(providers: Readonly<Record<string, ProviderConfig>>): void {
    for (const [name, entry] of this.pools) {
      const provider = providers[name];
      if (!provider || UpstreamPools.keyOf(provider) !== entry.key) {
        this.pools.delete(name);
        void entry.pool.close();
      }
    }
    for (const provider of Object.values(providers)) {
      if (this.pools.has(provider.name)) continue;
      const pool = new Pool(new URL(provider.baseUrl).origin, {
        connections: provider.maxConnections,
        connect: { timeout: provider.timeouts.connectMs },
        keepAliveTimeout: 30_000,
        keepAliveMaxTimeout: 300_000,
      });
      this.pools.set(provider.name, { key: UpstreamPools.keyOf(provider), pool });
    }
  }

  pool(provider: string): Pool {
    const entry = this.pools.get(provider);
    if (!entry) throw new Error(`no upstream pool for provider "${provider}"`);
    return entry.pool;
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map(({ pool }) => pool.destroy()));
    this.pools.clear();
  }
}
