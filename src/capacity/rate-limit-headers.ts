import { msUntilFull } from './token-bucket.js';

/** One dimension of a limit as a client is told it. */
export interface LimitView {
  readonly limit: number;
  /** What is left now; shown as a whole number, at least 0. */
  readonly remaining: number;
}

/**
 * A duration as OpenAI writes `x-ratelimit-reset-*` (Go's notation): `20ms`, `1s`, `1.5s`,
 * `6m0s`, `1h0m0s`. Whole milliseconds; below a second in ms, above it in seconds with up to three
 * decimals.
 */
export function formatResetDuration(ms: number): string {
  const total = Math.max(0, Math.ceil(ms));
  if (total < 1_000) return `${total}ms`;
  const hours = Math.floor(total / 3_600_000);
  const minutes = Math.floor((total % 3_600_000) / 60_000);
  const seconds = (total % 60_000) / 1_000;
  const secondsText = `${Number.isInteger(seconds) ? seconds : Number(seconds.toFixed(3))}s`;
  if (hours > 0) return `${hours}h${minutes}m${secondsText}`;
  if (minutes > 0) return `${minutes}m${secondsText}`;
  return secondsText;
}

/**
 * OpenAI's rate-limit headers for the dimensions that are limited: `x-ratelimit-limit-requests`,
 * `-remaining-requests`, `-reset-requests` (time until the bucket is full again) and the three
 * `-tokens` ones.
 */
export function rateLimitHeaders(requests: LimitView | undefined, tokens: LimitView | undefined): Record<string, string> {
  const headers: Record<string, string> = {};
  if (requests) {
    headers['x-ratelimit-limit-requests'] = String(requests.limit);
    headers['x-ratelimit-remaining-requests'] = String(Math.max(0, Math.floor(requests.remaining)));
    headers['x-ratelimit-reset-requests'] = formatResetDuration(msUntilFull(requests.remaining, requests.limit));
  }
  if (tokens) {
    headers['x-ratelimit-limit-tokens'] = String(tokens.limit);
    headers['x-ratelimit-remaining-tokens'] = String(Math.max(0, Math.floor(tokens.remaining)));
    headers['x-ratelimit-reset-tokens'] = formatResetDuration(msUntilFull(tokens.remaining, tokens.limit));
  }
  return headers;
}
