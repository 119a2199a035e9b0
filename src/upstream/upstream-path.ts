import type { ProviderConfig } from '../config/load.js';

// A provider config object is immutable (a reload builds new ones), so its prefix is parsed once,
// not with a URL parse on every request.
const pathPrefixes = new WeakMap<ProviderConfig, string>();

/** The path of an upstream endpoint under a provider's base URL (which may carry a path prefix). */
export function upstreamPath(provider: ProviderConfig, path: string): string {
  let prefix = pathPrefixes.get(provider);
  if (prefix === undefined) {
    prefix = new URL(provider.baseUrl).pathname.replace(/\/+$/, '');
    pathPrefixes.set(provider, prefix);
  }
  return prefix + path;
}
