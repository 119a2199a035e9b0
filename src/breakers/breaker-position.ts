/** A candidate's breaker as routing sees it: `halfOpen` lets one probe through. */
export type BreakerPosition = 'closed' | 'halfOpen' | 'open';
