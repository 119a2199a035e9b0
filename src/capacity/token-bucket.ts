/**
 * Token-bucket arithmetic of a per-minute limit, the same here as in `commands/*-rate.lua`: a
 * bucket holds up to `limit` and refills continuously at `limit` per minute, so a limit is never
 * exceeded over any minute-long window by more than one bucketful, and a quiet key gets its whole
 * minute back. A level may be negative: usage reported above its estimate is a debt that refills.
 */
export const minuteMs = 60_000;

/** The level of a bucket `elapsedMs` after it was `level`. */
export function refilled(level: number, elapsedMs: number, limit: number): number {
  return Math.min(limit, level + (Math.max(0, elapsedMs) * limit) / minuteMs);
}

/** Milliseconds until a bucket at `level` holds `needed`; Infinity when it never can (more than the limit). */
export function msUntil(level: number, needed: number, limit: number): number {
  if (needed > limit) return Infinity;
  return level >= needed ? 0 : Math.ceil(((needed - level) * minuteMs) / limit);
}

/** Milliseconds until a bucket at `level` is full again: OpenAI's `x-ratelimit-reset-*`. */
export function msUntilFull(level: number, limit: number): number {
  return msUntil(level, limit, limit);
}

/** A bucket counted in this process alone (no Redis, or Redis away). */
export class LocalBucket {
  #level: number;
  #at: number;

  constructor(
    readonly limit: number,
    now: number,
  ) {
    this.#level = limit;
    this.#at = now;
  }

  level(now: number): number {
    this.#level = refilled(this.#level, now - this.#at, this.limit);
    this.#at = now;
    return this.#level;
  }

  /** Adds `amount` (negative: takes), down to at most one bucketful of debt. */
  add(amount: number, now: number): void {
    this.#level = Math.max(-this.limit, Math.min(this.limit, this.level(now) + amount));
  }
}
