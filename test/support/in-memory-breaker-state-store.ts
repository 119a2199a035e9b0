import type {
  BreakerMessage,
  BreakerStateStore,
  BreakerStoreListener,
  OpenBreakerRecord,
  ProbeClaim,
  WindowCounts,
} from '../../src/breakers/breaker-state-store.js';

interface Expiring {
  /** Date.now() at which the entry is gone, as a key with PEXPIRE would be. */
  expiresAt: number;
}

/**
 * What a Redis holds for the breaker stores of several replicas, in memory: open records, probe
 * locks, cooldowns and attempt counts that expire on the clock (`Date.now()`, so fake timers
 * move it), and one announcement channel. Each replica gets its own client with {@link store},
 * as each gateway process has its own connections. It follows the scripts in
 * src/breakers/commands/ step for step, so SharedBreakers can be tested without Redis.
 */
export class InMemoryBreakerServer {
  #up = true;
  readonly #open = new Map<string, OpenBreakerRecord & Expiring>();
  readonly #locks = new Map<string, { token: string } & Expiring>();
  readonly #cooldowns = new Map<string, { until: number } & Expiring>();
  readonly #counts = new Map<string, { buckets: Map<number, { fires: number; failures: number }> } & Expiring>();
  readonly #clients = new Set<InMemoryBreakerStateStore>();
  /** Names of the commands that reached the server, in order. */
  readonly commands: string[] = [];

  get up(): boolean {
    return this.#up;
  }

  /** Stops or resumes answering, as a Redis that goes away and comes back; every client reports it. */
  setUp(up: boolean): void {
    this.#up = up;
    for (const client of this.#clients) client.report();
  }

  /** A new client: one replica's connections. */
  store(): InMemoryBreakerStateStore {
    return new InMemoryBreakerStateStore(this);
  }

  /** The probe lock of a candidate while it lives. */
  lock(candidate: string): { token: string; expiresAt: number } | undefined {
    return live(this.#locks, candidate);
  }

  /** The open record of a candidate while it lives. */
  record(candidate: string): (OpenBreakerRecord & Expiring) | undefined {
    return live(this.#open, candidate);
  }

  attach(client: InMemoryBreakerStateStore): void {
    this.#clients.add(client);
  }

  detach(client: InMemoryBreakerStateStore): void {
    this.#clients.delete(client);
  }

  run<T>(client: InMemoryBreakerStateStore, name: string, command: () => T): Promise<T> {
    // A round trip: the answer comes on a later microtask, never in the caller's own step.
    return Promise.resolve().then(() => {
      if (!client.available) throw new Error(`breaker store unavailable (${name})`);
      this.commands.push(name);
      return command();
    });
  }

  /** Delivers to every other subscribed client, later, as pub/sub does. */
  publish(from: InMemoryBreakerStateStore, message: BreakerMessage): void {
    for (const client of this.#clients) {
      if (client !== from) queueMicrotask(() => client.deliver(message));
    }
  }

  openBreaker(record: OpenBreakerRecord, graceMs: number, releaseToken: string | undefined, onlyIfNewer: boolean): boolean {
    const now = Date.now();
    const current = live(this.#open, record.candidate);
    if (onlyIfNewer && current && current.until >= record.until) return false;
    this.#open.set(record.candidate, { ...record, expiresAt: now + Math.max(1, Math.round(record.until - now + graceMs)) });
    this.#release(record.candidate, releaseToken);
    return true;
  }

  closeBreaker(candidate: string, releaseToken: string | undefined): void {
    this.#open.delete(candidate);
    this.#counts.delete(candidate);
    this.#release(candidate, releaseToken);
  }

  storeCooldown(candidate: string, until: number): void {
    const current = live(this.#cooldowns, candidate);
    if (!current || current.until < until) this.#cooldowns.set(candidate, { until, expiresAt: Date.now() + Math.max(1, Math.round(until - Date.now())) });
  }

  claimProbe(candidate: string, token: string, now: number, ttlMs: number): ProbeClaim {
    const record = live(this.#open, candidate);
    if (record && record.until > now) return { granted: false, dueAt: record.until };
    if (live(this.#locks, candidate)) return { granted: false, dueAt: undefined };
    this.#locks.set(candidate, { token, expiresAt: Date.now() + ttlMs });
    this.#keepRecord(candidate, 2 * ttlMs);
    return { granted: true };
  }

  renewProbe(candidate: string, token: string, ttlMs: number): boolean {
    const lock = live(this.#locks, candidate);
    if (lock?.token !== token) return false;
    lock.expiresAt = Date.now() + ttlMs;
    this.#keepRecord(candidate, 2 * ttlMs);
    return true;
  }

  releaseProbe(candidate: string, token: string): void {
    this.#release(candidate, token);
  }

  addCounts(candidate: string, counts: WindowCounts, now: number, window: { bucketMs: number; buckets: number }): WindowCounts {
    const bucket = Math.floor(now / window.bucketMs);
    const entry = live(this.#counts, candidate) ?? { buckets: new Map<number, { fires: number; failures: number }>(), expiresAt: 0 };
    const sums = entry.buckets.get(bucket) ?? { fires: 0, failures: 0 };
    sums.fires += counts.fires;
    sums.failures += counts.failures;
    entry.buckets.set(bucket, sums);
    entry.expiresAt = Date.now() + window.bucketMs * window.buckets;
    this.#counts.set(candidate, entry);
    const totals = { fires: 0, failures: 0 };
    for (const [at, { fires, failures }] of entry.buckets) {
      if (at < bucket - window.buckets + 1) {
        entry.buckets.delete(at);
        continue;
      }
      totals.fires += fires;
      totals.failures += failures;
    }
    return totals;
  }

  snapshot(): { open: OpenBreakerRecord[]; cooldowns: Array<{ candidate: string; until: number }> } {
    const open: OpenBreakerRecord[] = [];
    for (const candidate of this.#open.keys()) {
      const record = live(this.#open, candidate);
      if (record) open.push({ candidate: record.candidate, openedAt: record.openedAt, until: record.until, replica: record.replica });
    }
    const cooldowns: Array<{ candidate: string; until: number }> = [];
    for (const candidate of this.#cooldowns.keys()) {
      const cooldown = live(this.#cooldowns, candidate);
      if (cooldown) cooldowns.push({ candidate, until: cooldown.until });
    }
    return { open, cooldowns };
  }

  #release(candidate: string, token: string | undefined): void {
    if (token !== undefined && live(this.#locks, candidate)?.token === token) this.#locks.delete(candidate);
  }

  /** The record outlives its reset time while a probe is pending (as the claim and renew scripts do). */
  #keepRecord(candidate: string, ms: number): void {
    const record = live(this.#open, candidate);
    if (record && record.expiresAt - Date.now() < ms) record.expiresAt = Date.now() + ms;
  }
}

function live<T extends Expiring>(entries: Map<string, T>, key: string): T | undefined {
  const entry = entries.get(key);
  if (entry && entry.expiresAt <= Date.now()) {
    entries.delete(key);
    return undefined;
  }
  return entry;
}

/**
 * One replica's client of an {@link InMemoryBreakerServer}, with the timing contract of
 * {@link BreakerStateStore}: every command answers on a later microtask, or rejects at once
 * while the server is down or the client {@link kill}ed; announcements reach every other
 * started client, never the sender; availability changes are reported as they happen.
 */
export class InMemoryBreakerStateStore implements BreakerStateStore {
  readonly #server: InMemoryBreakerServer;
  #listener: BreakerStoreListener | undefined;
  #started = false;
  #killed = false;
  #closed = false;
  #reported = false;
  readonly #waiting = new Set<() => void>();

  constructor(server: InMemoryBreakerServer) {
    this.#server = server;
  }

  get available(): boolean {
    return this.#started && !this.#closed && !this.#killed && this.#server.up;
  }

  start(listener: BreakerStoreListener, timeoutMs: number): Promise<void> {
    this.#listener = listener;
    this.#started = true;
    this.#server.attach(this);
    this.report();
    if (this.available) return Promise.resolve();
    // Like the Redis store, it keeps waiting for the server after giving up on the start.
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(ready);
        reject(new Error(`breaker store not reachable within ${timeoutMs} ms`));
      }, timeoutMs);
      const ready = () => {
        clearTimeout(timer);
        resolve();
      };
      this.#waiting.add(ready);
    });
  }

  /** The process holding this client died: it answers nothing and hears nothing from now on. */
  kill(): void {
    this.#killed = true;
    this.#server.detach(this);
  }

  report(): void {
    const available = this.available;
    if (available === this.#reported) return;
    this.#reported = available;
    this.#listener?.availability(available);
    if (available) {
      for (const ready of this.#waiting) ready();
      this.#waiting.clear();
    }
  }

  deliver(message: BreakerMessage): void {
    if (this.available) this.#listener?.message(message);
  }

  snapshot(): Promise<{ open: OpenBreakerRecord[]; cooldowns: Array<{ candidate: string; until: number }> }> {
    return this.#server.run(this, 'snapshot', () => this.#server.snapshot());
  }

  publishOpen(record: OpenBreakerRecord, options: { graceMs: number; releaseToken?: string; onlyIfNewer?: boolean }): Promise<boolean> {
    return this.#server.run(this, 'publishOpen', () => {
      const stored = this.#server.openBreaker(record, options.graceMs, options.releaseToken, options.onlyIfNewer ?? false);
      if (stored) this.#server.publish(this, { type: 'open', ...record });
      return stored;
    });
  }

  publishClose(candidate: string, replica: string, releaseToken?: string): Promise<void> {
    return this.#server.run(this, 'publishClose', () => {
      this.#server.closeBreaker(candidate, releaseToken);
      this.#server.publish(this, { type: 'close', candidate, replica });
    });
  }

  publishCooldown(candidate: string, until: number, replica: string): Promise<void> {
    return this.#server.run(this, 'publishCooldown', () => {
      this.#server.storeCooldown(candidate, until);
      this.#server.publish(this, { type: 'cooldown', candidate, until, replica });
    });
  }

  claimProbe(candidate: string, token: string, now: number, ttlMs: number): Promise<ProbeClaim> {
    return this.#server.run(this, 'claimProbe', () => this.#server.claimProbe(candidate, token, now, ttlMs));
  }

  renewProbe(candidate: string, token: string, ttlMs: number): Promise<boolean> {
    return this.#server.run(this, 'renewProbe', () => this.#server.renewProbe(candidate, token, ttlMs));
  }

  releaseProbe(candidate: string, token: string): Promise<void> {
    return this.#server.run(this, 'releaseProbe', () => this.#server.releaseProbe(candidate, token));
  }

  addCounts(candidate: string, counts: WindowCounts, now: number, window: { bucketMs: number; buckets: number }): Promise<WindowCounts> {
    return this.#server.run(this, 'addCounts', () => this.#server.addCounts(candidate, counts, now, window));
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    this.#listener = undefined;
    this.#server.detach(this);
    return Promise.resolve();
  }
}
