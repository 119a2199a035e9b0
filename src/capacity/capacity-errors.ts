import { GatewayError } from '../errors.js';

/** How a capacity refusal is recorded: the `status` of its dispatch event. */
export type CapacityRefusal = 'queue_timeout' | 'rejected' | 'rate_limited';

/**
 * No candidate could take the request within the line's `maxWaitMs` (`queue_timeout`), or the
 * line was full when it came (`rejected`): 429 `capacity_exceeded`. `headers` holds the
 * `retry-after` the answer must carry.
 */
export class CapacityExceededError extends GatewayError {
  readonly refusal: 'queue_timeout' | 'rejected';
  /** Time spent in line before the refusal (0 for `rejected`). */
  readonly queuedMs: number;
  readonly retryAfterSeconds: number;

  /** `lineless`: refused at once because every candidate is at its limit and the virtual model has no line to wait in. */
  constructor(model: string, refusal: 'queue_timeout' | 'rejected', options: { queuedMs: number; retryAfterSeconds: number; lineless?: boolean }) {
    const message = options.lineless
      ? `every candidate for "${model}" is at its maxInFlight; retry later`
      : refusal === 'rejected'
        ? `every candidate for "${model}" is busy and the line is full; retry later`
        : `every candidate for "${model}" stayed busy for ${options.queuedMs} ms; retry later`;
    super(message, { code: 'capacity_exceeded', status: 429, openaiType: 'rate_limit_error', headers: { 'retry-after': String(options.retryAfterSeconds) } });
    this.refusal = refusal;
    this.queuedMs = options.queuedMs;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

/** Which limit refused a request. */
export interface LimitedBy {
  readonly scope: 'key' | 'source';
  /** The key's name or the source. */
  readonly name: string;
  readonly dimension: 'requests' | 'tokens';
}

/**
 * A key or a source is over its requests or tokens per minute: 429 `rate_limit_exceeded`.
 * `headers` holds `retry-after` and the six `x-ratelimit-*` headers the answer must carry.
 */
export class RateLimitedError extends GatewayError {
  readonly limitedBy: LimitedBy;
  readonly retryAfterSeconds: number;

  constructor(limitedBy: LimitedBy, options: { retryAfterSeconds: number; headers: Readonly<Record<string, string>> }) {
    const who = limitedBy.scope === 'key' ? `the key "${limitedBy.name}"` : `the source "${limitedBy.name}"`;
    super(`${who} is over its ${limitedBy.dimension} per minute; retry in ${options.retryAfterSeconds} s`, {
      code: 'rate_limit_exceeded',
      status: 429,
      openaiType: 'rate_limit_error',
      headers: { ...options.headers, 'retry-after': String(options.retryAfterSeconds) },
    });
    this.limitedBy = limitedBy;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}
