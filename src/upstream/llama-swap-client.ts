import type { IncomingHttpHeaders } from 'node:http';
import type { ProviderConfig } from '../config/load.js';
import type { UpstreamPools } from './upstream-pools.js';
import { upstreamPath } from './upstream-path.js';

/** Larger answers to a side request (model lists, `props`, pass-through) are refused, not buffered. */
const maxAnswerBytes = 8 * 1024 * 1024;

/** A whole answer to a GET, read up to {@link maxAnswerBytes}. */
export interface UpstreamAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** A model a provider lists in `/v1/models`, with the context size llama-swap may report. */
export interface ListedModel {
  readonly id: string;
  readonly contextSize: number | undefined;
}

/**
 * The side requests the gateway makes to a provider, outside dispatch: its model list, what
 * llama-swap has loaded, and llama-swap's `/upstream/<model>/…` pass-through (`props`). Every
 * request carries the provider's key and is bounded in time (the caller's signal) and size.
 * Used by the health checker and the pass-through alike, so both see a provider the same way.
 */
export class LlamaSwapClient {
  constructor(private readonly pools: UpstreamPools) {}

  /** `GET /v1/models`: the models it lists. @throws on a transport error, a non-200 or a body that is not JSON. */
  async models(provider: ProviderConfig, signal: AbortSignal): Promise<ListedModel[]> {
    const list = (await this.getJson(provider, '/v1/models', signal)) as { data?: unknown } | null;
    const models: ListedModel[] = [];
    if (!Array.isArray(list?.data)) return models;
    for (const entry of list.data as Array<{ id?: unknown; meta?: { n_ctx?: unknown; n_ctx_train?: unknown } } | null>) {
      if (typeof entry?.id !== 'string') continue;
      const contextSize = entry.meta?.n_ctx ?? entry.meta?.n_ctx_train;
      models.push({ id: entry.id, contextSize: typeof contextSize === 'number' && contextSize > 0 ? contextSize : undefined });
    }
    return models;
  }

  /** llama-swap's `GET /running`: the models loaded or starting (not those stopping or stopped). @throws like {@link models}. */
  async running(provider: ProviderConfig, signal: AbortSignal): Promise<Set<string>> {
    const list = (await this.getJson(provider, '/running', signal)) as { running?: unknown } | null;
    const loaded = new Set<string>();
    if (!Array.isArray(list?.running)) return loaded;
    for (const entry of list.running as Array<{ model?: unknown; state?: unknown } | null>) {
      if (typeof entry?.model === 'string' && entry.state !== 'stopping' && entry.state !== 'stopped') loaded.add(entry.model);
    }
    return loaded;
  }

  /**
   * `GET {baseUrl}/upstream/{model}/{rest}?{query}`, each segment encoded. On llama-swap this
   * loads the model when it is not loaded: callers decide whether that is acceptable.
   */
  upstream(provider: ProviderConfig, model: string, rest: readonly string[], query: string, signal: AbortSignal): Promise<UpstreamAnswer> {
    const path = upstreamPath(provider, `/upstream/${encodeURIComponent(model)}/${rest.map(encodeURIComponent).join('/')}`);
    return this.get(provider, query ? `${path}?${query}` : path, signal);
  }

  private async getJson(provider: ProviderConfig, path: string, signal: AbortSignal): Promise<unknown> {
    const answer = await this.get(provider, upstreamPath(provider, path), signal);
    if (answer.status !== 200) throw new Error(`GET ${path} answered ${answer.status}`);
    try {
      return JSON.parse(answer.body.toString('utf8')) as unknown;
    } catch {
      throw new Error(`GET ${path} answered with a body that is not JSON`);
    }
  }

  private async get(provider: ProviderConfig, path: string, signal: AbortSignal): Promise<UpstreamAnswer> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (provider.apiKey) headers.authorization = `Bearer ${provider.apiKey}`;
    const response = await this.pools.pool(provider.name).request({ path, method: 'GET', headers, signal });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxAnswerBytes) {
        response.body.destroy();
        throw new Error(`GET ${path} answered more than ${maxAnswerBytes} bytes`);
      }
      chunks.push(chunk);
    }
    return { status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks) };
  }
}

/** `n_ctx` from a llama.cpp `props` answer; undefined when the body is not such a document. */
export function contextSizeFromProps(body: Buffer): number | undefined {
  try {
    const props = JSON.parse(body.toString('utf8')) as { n_ctx?: unknown; default_generation_settings?: { n_ctx?: unknown } } | null;
    const size = props?.default_generation_settings?.n_ctx ?? props?.n_ctx;
    return typeof size === 'number' && size > 0 ? size : undefined;
  } catch {
    return undefined;
  }
}
