/**
 * The words a dispatch is recorded in: the status of a dispatch and the outcome of each attempt.
 * Columns of `route_dispatch_log` and label values of the metrics, so a fixed set each; every
 * layer that records or counts a dispatch speaks them.
 */
export const dispatchStatuses = [
  'dispatched',
  'client_error',
  'stream_error',
  'client_closed',
  'failed',
  'no_candidates',
  // Refused for capacity (docs/capacity.md): over a key's or source's rate limit, the line full, or too long in line.
  'rate_limited',
  'rejected',
  'queue_timeout',
] as const;
export type DispatchStatus = (typeof dispatchStatuses)[number];

export const attemptOutcomes = [
  'ok',
  'client_error',
  'connect_error',
  'timeout',
  'http_5xx',
  'http_retryable',
  'broken_before_first_byte',
  'broken_before_end',
  'client_closed',
  'resumed',
] as const;
export type AttemptOutcome = (typeof attemptOutcomes)[number];
