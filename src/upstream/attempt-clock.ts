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

/** The client did not read what was relayed to it for this long: its fault, not the upstream's. */
export class ClientWriteTimeoutError extends Error {
  constructor(ms: number) {
    super(`client read nothing for ${ms} ms`);
    this.name = 'ClientWriteTimeoutError';
  }
}

/**
 * The budgets of an attempt (first byte, idle between chunks, total, and the client's own time
 * to read) on one timer. The timer is armed for the nearest budget that could run out and, when
 * it fires, checks what did run out against the clock and re-arms for the rest. A chunk only
 * records the time: an attempt shorter than its smallest budget (nearly all of them) costs one
 * setTimeout and one clearTimeout, not a timer per budget and a re-arm per chunk.
 *
 * While the relay holds the upstream paused because the client is not reading, the upstream's
 * idle budget stands still (its silence is ours) and the client's write budget runs instead.
 */
export class AttemptClock {
  private readonly onExpire: (reason: Error) => void;
  private readonly timeouts: Timeouts;
  private readonly clientWriteMs: number;
  private readonly startedAt = performance.now();
  /** performance.now() of the first byte, then of the last chunk or drain; undefined before the first byte. */
  private lastActivityAt: number | undefined;
  /** performance.now() when the client stopped taking what was relayed; undefined while it reads. */
  private pausedAt: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerDueAt: number;

  constructor(onExpire: (reason: Error) => void, timeouts: Timeouts, clientWriteMs: number) {
    this.onExpire = onExpire;
    this.timeouts = timeouts;
    this.clientWriteMs = clientWriteMs;
    const delay = Math.min(timeouts.firstByteMs, timeouts.idleMs, timeouts.totalMs);
    this.timerDueAt = this.startedAt + delay;
    this.timer = setTimeout(() => this.check(), delay);
  }

  firstByte(at: number): void {
    this.lastActivityAt = at;
  }

  /** A chunk arrived, or the client drained what it was sent. */
  activity(): void {
    const at = performance.now();
    this.lastActivityAt = at;
    if (this.pausedAt === undefined) return;
    // A drain after a stall (rare): the timer may be armed for the write budget, later than the idle one now due.
    this.pausedAt = undefined;
    if (this.timer !== undefined && at + this.timeouts.idleMs < this.timerDueAt) this.arm(this.timeouts.idleMs);
  }

  /** The client's buffer is full: the upstream is held paused until it drains. */
  clientStalled(): void {
    if (this.pausedAt !== undefined || this.timer === undefined) return;
    const at = performance.now();
    this.pausedAt = at;
    if (at + this.clientWriteMs < this.timerDueAt) this.arm(this.clientWriteMs);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(delay: number): void {
    clearTimeout(this.timer);
    this.timerDueAt = performance.now() + delay;
    this.timer = setTimeout(() => this.check(), Math.ceil(delay));
  }

  private check(): void {
    if (this.timer === undefined) return;
    const { firstByteMs, idleMs, totalMs } = this.timeouts;
    const at = performance.now();
    const totalLeft = this.startedAt + totalMs - at;
    if (totalLeft <= 0) return this.expire(new TotalTimeoutError(totalMs));
    let phaseLeft: number;
    if (this.pausedAt !== undefined) {
      phaseLeft = this.pausedAt + this.clientWriteMs - at;
      if (phaseLeft <= 0) return this.expire(new ClientWriteTimeoutError(this.clientWriteMs));
    } else {
      // Before the first byte the idle budget is not running: the first-byte and total deadlines are.
      phaseLeft = this.lastActivityAt === undefined ? this.startedAt + firstByteMs - at : this.lastActivityAt + idleMs - at;
      if (phaseLeft <= 0) return this.expire(this.lastActivityAt === undefined ? new FirstByteTimeoutError(firstByteMs) : new IdleTimeoutError(idleMs));
    }
    this.arm(Math.min(totalLeft, phaseLeft));
  }

  private expire(reason: Error): void {
    this.timer = undefined;
    this.onExpire(reason);
  }
}
