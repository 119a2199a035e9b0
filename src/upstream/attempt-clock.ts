import type { Timeouts } from '../config/schema.js';

export class IdleTimeoutError extends Error {
  constructor(ms: number) {
    super(`upstream sent nothing for ${ms} ms`);
    this.name = 'IdleTimeoutError';
  }
}

export class TotalTimeoutError extends Error {
  constructor(ms: number) {
    super(`upstream request exceeded ${ms} ms`);
    this.name = 'TotalTimeoutError';
  }
}

export class FirstByteTimeoutError extends Error {
  constructor(ms: number) {
    super(`no first byte within ${ms} ms`);
    this.name = 'FirstByteTimeoutError';
  }
}

/**
 * The three budgets of an attempt (first byte, idle between chunks, total) on one timer. The
 * timer is armed for the nearest budget that could run out and, when it fires, checks what did
 * run out against the clock and re-arms for the rest. A chunk only records the time: an
 * attempt shorter than its smallest budget (nearly all of them) costs one setTimeout and one
 * clearTimeout, not a timer per budget and a re-arm per chunk.
 */
export class AttemptClock {
  private readonly onExpire: (reason: Error) => void;
  private readonly timeouts: Timeouts;
  private readonly startedAt = performance.now();
  /** performance.now() of the first byte, then of the last chunk or drain; undefined before the first byte. */
  private lastActivityAt: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(onExpire: (reason: Error) => void, timeouts: Timeouts) {
    this.onExpire = onExpire;
    this.timeouts = timeouts;
    this.timer = setTimeout(() => this.check(), Math.min(timeouts.firstByteMs, timeouts.idleMs, timeouts.totalMs));
  }

  firstByte(at: number): void {
    this.lastActivityAt = at;
  }

  activity(): void {
    this.lastActivityAt = performance.now();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private check(): void {
    if (this.timer === undefined) return;
    const { firstByteMs, idleMs, totalMs } = this.timeouts;
    const at = performance.now();
    const totalLeft = this.startedAt + totalMs - at;
    const phaseLeft = this.lastActivityAt === undefined ? this.startedAt + firstByteMs - at : this.lastActivityAt + idleMs - at;
    if (totalLeft <= 0) return this.expire(new TotalTimeoutError(totalMs));
    if (phaseLeft <= 0) return this.expire(this.lastActivityAt === undefined ? new FirstByteTimeoutError(firstByteMs) : new IdleTimeoutError(idleMs));
    // Before the first byte the idle budget is not running: the first-byte and total deadlines are.
    this.timer = setTimeout(() => this.check(), Math.ceil(Math.min(totalLeft, phaseLeft)));
  }

  private expire(reason: Error): void {
    this.timer = undefined;
    this.onExpire(reason);
  }
}
