import type { ReceivedRequest } from '../../simulator/fake-provider.js';

/**
 * The most requests a fake had open at once, from when each arrived to when its exchange ended.
 * At the same millisecond an end counts before a start: a slot is freed before the next request
 * that takes it can arrive.
 */
export function maxConcurrency(requests: readonly ReceivedRequest[]): number {
  const edges: [number, number][] = [];
  for (const request of requests) {
    edges.push([request.receivedAt, 1]);
    edges.push([request.closedAt ?? Number.POSITIVE_INFINITY, -1]);
  }
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let most = 0;
  for (const [, change] of edges) {
    open += change;
    most = Math.max(most, open);
  }
  return most;
}
