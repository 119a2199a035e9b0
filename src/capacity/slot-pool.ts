import type { Config } from '../config/load.js';
import { errorMessage } from '../shared/error-message.js';
import type { Logger } from '../shared/logger.js';
import type { ScopeLimit, SlotMessage, SlotStore } from './slot-store.js';
import type { Turn } from './wait-line.js';

/** Where a request would go: the candidate and its provider. */
export interface SlotTarget {
  /** `provider/model` */
  readonly candidate: string;
  readonly provider: string;
}

/**
 * One slot held for one request. Give it back with {@link release} when the request is over
 * (answer relayed, failed, or the client gone) — on every path: `try { … } finally { slot.release() }`.
 * Releasing twice is harmless, and so is releasing a slot of an unlimited target.
 */
export interface SlotHandle {
  readonly candidate: string;
  /** Gives the slot back. Idempotent; never throws. */
  release(): void;
  readonly released: boolean;
}

/** A slot came free: here, or on another replica (candidate and/or provider, whichever scopes it held). */
export interface FreedSlot {
  readonly candidate: string | undefined;
  readonly provider: string | undefined;
}

/** What the pool reports, for the metrics. */
export interface SlotPoolObserver {
  /** Slots of this candidate in use by requests of this replica. */
  inUse(candidate: string, count: number): void;
}

export interface SlotPoolOptions {
  /** Live config: `providers.<name>.maxInFlight` and `candidateMaxInFlight`. */
  readonly config: () => Config;
  readonly logger: Logger;
  /** Shares the limits with every replica (REDIS_URL); absent, each process counts alone. */
  readonly store?: SlotStore | undefined;
  readonly observer?: SlotPoolObserver | undefined;
  /** Life of a lease without renewal: how long a dead replica's slots stay taken. Default 3 s; renewed every third of it. */
  readonly leaseMs?: number;
  /**
   * How long a freed slot stays leased to this replica for its own next request, so that a
   * replica with steady traffic takes and frees slots without a Redis round trip. Another replica
   * that is refused a slot announces it wants one, and idle slots are given back at once. Default 250 ms.
   */
  readonly lingerMs?: number;
  /** After another replica wanted a slot of a scope, freed slots of that scope go back to Redis at once, for this long. Default 2 s. */
  readonly wantMs?: number;
  /**
   * After a refusal, how long a request waits for the replicas holding the slots to answer the
   * want (one gives back an idle slot, or all say they are busy). Default 25 ms.
   */
  readonly reclaimWaitMs?: number;
  /**
   * A slot given back to Redis because another replica wants it is offered to this replica's own
   * line only this much later, so the replica that asked gets its turn. Default 20 ms.
   */
  readonly handoffMs?: number;
  /**
   * A slot held longer than this is taken back and the leak logged as an error: a request
   * cannot last longer (timeouts.totalMs), so its holder forgot to release it. Default 15 min.
   */
  readonly maxHoldMs?: number;
  /** Bound of the start-up connection to the store. Default 2 s. */
  readonly startTimeoutMs?: number;
  readonly now?: () => number;
}

interface Lease {
  /** Lease id in the store; '' for a slot counted in this process only. */
  readonly id: string;
  readonly candidate: string;
  readonly provider: string;
  readonly scopes: readonly ScopeLimit[];
  readonly scopeNames: readonly string[];
  /** Scope names joined: an idle lease serves a request of the same candidate with the same limits. */
  readonly signature: string;
  state: 'busy' | 'idle' | 'gone';
  /** When it became busy or idle. */
  since: number;
  /** Expired in the store before it was renewed: another replica may hold that slot now. */
  lost: boolean;
  holder: Slot | undefined;
}

class Slot implements SlotHandle {
  released = false;
  readonly #onRelease: (slot: Slot) => void;
  readonly lease: Lease | undefined;

  constructor(
    readonly candidate: string,
    lease: Lease | undefined,
    onRelease: (slot: Slot) => void,
  ) {
    this.lease = lease;
    this.#onRelease = onRelease;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.#onRelease(this);
  }
}

const releaseNothing = () => undefined;

const noLimits: readonly ScopeLimit[] = [];

/**
 * Slots: `maxInFlight` of candidates and providers. {@link tryAcquire} takes a slot in both the
 * candidate's and the provider's scope at once, or in neither.
 *
 * Without a store each process counts its own requests. With one, the limits hold across the
 * cluster: a slot is a lease in Redis (one id in each scope, with an expiry, renewed while held),
 * so a replica that dies gives its slots back within `leaseMs`. To keep Redis off the common
 * path a freed lease lingers, idle, for this replica's next request (`lingerMs`): a replica with
 * steady traffic reuses its leases without a round trip. A replica refused a lease announces a
 * `want` (inside the refusing script); holders give back their idle leases at once (announcing
 * `freed`, which wakes waiters on every replica) or answer `busy`, and for `wantMs` stop lingering
 * in that scope. So the cluster-wide count of leases never exceeds the limit, and a slot never
 * sits idle on one replica while another replica needs it for longer than an announcement takes.
 *
 * Redis unreachable or slow: new slots are counted per process (the limit then holds per
 * replica, not cluster-wide), and shared counting resumes when it answers again.
 */
export class SlotPool {
  readonly #options: SlotPoolOptions;
  readonly #store: SlotStore | undefined;
  readonly #now: () => number;
  readonly #leaseMs: number;
  readonly #lingerMs: number;
  readonly #wantMs: number;
  readonly #reclaimWaitMs: number;
  readonly #handoffMs: number;
  readonly #maxHoldMs: number;
  readonly #scopesByConfig = new WeakMap<Config, Map<string, readonly ScopeLimit[]>>();
  /** Busy slots by scope, whatever their kind: the per-process count, and what is reported. */
  readonly #busy = new Map<string, number>();
  readonly #inUse = new Map<string, number>();
  /** Busy slots, to find those held past maxHoldMs. */
  readonly #active = new Set<Lease>();
  /** Leases in the store held by this replica, busy or idle, by id: renewed together. */
  readonly #held = new Map<string, Lease>();
  /** Idle leases by candidate, most recently freed last. */
  readonly #idle = new Map<string, Lease[]>();
  /** Scopes another replica wanted a slot of, until when. */
  readonly #wanted = new Map<string, number>();
  readonly #reclaims = new Set<{ scopes: ReadonlySet<string>; pending: Set<string>; done: (freed: boolean) => void }>();
  readonly #freedListeners = new Set<(freed: FreedSlot) => void>();
  readonly #onRelease = (slot: Slot) => this.#released(slot);
  #sequence = 0;
  #timer: NodeJS.Timeout | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #started = false;
  #closed = false;

  constructor(options: SlotPoolOptions) {
    this.#options = options;
    this.#store = options.store;
    this.#now = options.now ?? Date.now;
    this.#leaseMs = options.leaseMs ?? 3_000;
    this.#lingerMs = options.lingerMs ?? 250;
    this.#wantMs = options.wantMs ?? 2_000;
    this.#reclaimWaitMs = options.reclaimWaitMs ?? 25;
    this.#handoffMs = options.handoffMs ?? 20;
    this.#maxHoldMs = options.maxHoldMs ?? 15 * 60_000;
  }

  /** Connects the store (bounded; never throws for it: unreachable, slots are counted per process until it answers) and starts renewing. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    this.#timer = setInterval(() => this.#tick(), Math.max(50, Math.min(1_000, Math.floor(this.#leaseMs / 3)))).unref();
    // A lease lingers between lingerMs and 1.25 × lingerMs.
    this.#sweepTimer = setInterval(() => this.#sweepIdle(), Math.max(10, Math.floor(this.#lingerMs / 4))).unref();
    if (!this.#store) return;
    try {
      await this.#store.start(
        { message: (message) => this.#received(message), availability: (up) => this.#availabilityChanged(up) },
        this.#options.startTimeoutMs ?? 2_000,
      );
    } catch (err: unknown) {
      this.#options.logger.warn({ err: errorMessage(err) }, 'slots: redis unreachable at start; maxInFlight is counted per process until it answers');
    }
  }

  /** Calls `listener` whenever a slot may have come free, here or on another replica: the lines wake their heads. */
  onFreed(listener: (freed: FreedSlot) => void): () => void {
    this.#freedListeners.add(listener);
    return () => this.#freedListeners.delete(listener);
  }

  /** True when the candidate or its provider has a `maxInFlight`. */
  isLimited(target: SlotTarget): boolean {
    return this.#scopesOf(target).length > 0;
  }

  /** Slots of a candidate in use by this replica's requests. */
  inUse(candidate: string): number {
    return this.#inUse.get(candidate) ?? 0;
  }

  /**
   * Takes a slot of the target in every scope that limits it, or none: `{ value: slot }`, or
   * `{ retryAt }` (epoch ms when a lease in a full scope expires, when known) when a scope is
   * full. A target without limits always gets a slot (whose release does nothing). Synchronous
   * when the answer is known here (no limit, per-process counting, an idle lease of this
   * replica); otherwise one Redis round trip (a few more when idle leases elsewhere are reclaimed).
   * The caller releases the slot when its request ends, the client gone or not (maxHoldMs takes
   * back a forgotten one). Never rejects: a store failure falls back to per-process counting.
   */
  tryAcquire(target: SlotTarget): Turn<SlotHandle> | Promise<Turn<SlotHandle>> {
    const scopes = this.#scopesOf(target);
    if (scopes.length === 0) return { value: new Slot(target.candidate, undefined, releaseNothing) };
    if (!this.#shared()) return this.#takeLocal(target, scopes);
    const signature = scopes.map(({ scope }) => scope).join('\n');
    const idle = this.#idle.get(target.candidate);
    if (idle) {
      for (let i = idle.length - 1; i >= 0; i--) {
        const lease = idle[i]!;
        if (lease.signature !== signature || lease.lost) continue;
        idle.splice(i, 1);
        if (idle.length === 0) this.#idle.delete(target.candidate);
        return { value: this.#busyFor(lease) };
      }
    }
    return this.#acquireShared(target, scopes);
  }

  #shared(): boolean {
    return this.#store !== undefined && this.#started && !this.#closed && this.#store.available;
  }

  #scopesOf(target: SlotTarget): readonly ScopeLimit[] {
    const config = this.#options.config();
    let cached = this.#scopesByConfig.get(config);
    if (!cached) {
      cached = new Map();
      this.#scopesByConfig.set(config, cached);
    }
    let scopes = cached.get(target.candidate);
    if (!scopes) {
      const list: ScopeLimit[] = [];
      const candidateLimit = config.candidateMaxInFlight[target.candidate];
      if (candidateLimit !== undefined) list.push({ scope: `c:${target.candidate}`, limit: candidateLimit });
      const providerLimit = config.providers[target.provider]?.maxInFlight;
      if (providerLimit !== undefined) list.push({ scope: `p:${target.provider}`, limit: providerLimit });
      scopes = list.length === 0 ? noLimits : list;
      cached.set(target.candidate, scopes);
    }
    return scopes;
  }

  #takeLocal(target: SlotTarget, scopes: readonly ScopeLimit[]): Turn<SlotHandle> {
    for (const { scope, limit } of scopes) if ((this.#busy.get(scope) ?? 0) >= limit) return {};
    return { value: this.#busyFor(this.#lease('', target, scopes)) };
  }

  #lease(id: string, target: SlotTarget, scopes: readonly ScopeLimit[]): Lease {
    const scopeNames = scopes.map(({ scope }) => scope);
    return {
      id,
      candidate: target.candidate,
      provider: target.provider,
      scopes,
      scopeNames,
      signature: scopeNames.join('\n'),
      state: 'idle',
      since: this.#now(),
      lost: false,
      holder: undefined,
    };
  }

  #busyFor(lease: Lease): Slot {
    lease.state = 'busy';
    lease.since = this.#now();
    for (const scope of lease.scopeNames) this.#busy.set(scope, (this.#busy.get(scope) ?? 0) + 1);
    this.#count(lease.candidate, 1);
    this.#active.add(lease);
    const slot = new Slot(lease.candidate, lease, this.#onRelease);
    lease.holder = slot;
    return slot;
  }

  #count(candidate: string, delta: number): void {
    const count = (this.#inUse.get(candidate) ?? 0) + delta;
    if (count === 0) this.#inUse.delete(candidate);
    else this.#inUse.set(candidate, count);
    this.#options.observer?.inUse(candidate, count);
  }

  async #acquireShared(target: SlotTarget, scopes: readonly ScopeLimit[]): Promise<Turn<SlotHandle>> {
    const store = this.#store!;
    const id = `${store.instance}:${++this.#sequence}`;
    try {
      let answer = await store.acquire(id, scopes, this.#leaseMs);
      if (!answer.granted) {
        const scopeNames = new Set(scopes.map(({ scope }) => scope));
        // This replica's own idle leases of other candidates can fill a provider's scope.
        const mine = this.#idleIn(scopeNames);
        const others = new Set([...answer.holders].filter((holder) => holder !== store.instance));
        let retry = false;
        if (mine.length > 0) {
          await Promise.all(mine.map((lease) => this.#giveBack(lease)));
          retry = true;
        } else if (others.size > 0 && this.#reclaimWaitMs > 0) {
          retry = await this.#awaitReplies(scopeNames, others);
        }
        if (retry) answer = await store.acquire(id, scopes, this.#leaseMs);
      }
      if (!answer.granted) return { retryAt: answer.retryInMs === undefined ? undefined : this.#now() + answer.retryInMs };
      const lease = this.#lease(id, target, scopes);
      if (this.#closed) {
        void this.#giveBack(lease);
        return {};
      }
      this.#held.set(id, lease);
      return { value: this.#busyFor(lease) };
    } catch (err: unknown) {
      this.#options.logger.warn({ err: errorMessage(err), candidate: target.candidate }, 'slots: redis lease failed; counting this request per process');
      return this.#takeLocal(target, scopes);
    }
  }

  /** Waits until a holder gives back a slot of these scopes (true), or all say they are busy, or reclaimWaitMs passes (false). */
  #awaitReplies(scopes: ReadonlySet<string>, holders: Set<string>): Promise<boolean> {
    return new Promise((resolve) => {
      const reclaim = {
        scopes,
        pending: holders,
        done: (freed: boolean) => {
          clearTimeout(timer);
          this.#reclaims.delete(reclaim);
          resolve(freed);
        },
      };
      const timer = setTimeout(() => reclaim.done(false), this.#reclaimWaitMs);
      this.#reclaims.add(reclaim);
    });
  }

  #idleIn(scopes: ReadonlySet<string>): Lease[] {
    const found: Lease[] = [];
    for (const leases of this.#idle.values()) {
      for (const lease of leases) if (lease.scopeNames.some((scope) => scopes.has(scope))) found.push(lease);
    }
    return found;
  }

  #released(slot: Slot): void {
    const lease = slot.lease;
    if (!lease || lease.holder !== slot || lease.state !== 'busy') return;
    lease.holder = undefined;
    this.#active.delete(lease);
    for (const scope of lease.scopeNames) {
      const count = (this.#busy.get(scope) ?? 1) - 1;
      if (count <= 0) this.#busy.delete(scope);
      else this.#busy.set(scope, count);
    }
    this.#count(lease.candidate, -1);
    if (lease.id === '') {
      lease.state = 'gone';
      this.#emitFreed(lease.candidate, lease.provider);
      return;
    }
    if (lease.lost || this.#closed || !this.#shared()) {
      void this.#giveBack(lease);
      this.#emitFreed(lease.candidate, lease.provider);
      return;
    }
    if (this.#isWanted(lease.scopeNames)) {
      // Another replica asked for a slot of this scope: it goes back to Redis now, and this
      // replica's own line hears of it a little later, so the replica that asked gets its turn.
      void this.#giveBack(lease);
      setTimeout(() => this.#emitFreed(lease.candidate, lease.provider), this.#handoffMs).unref();
      return;
    }
    lease.state = 'idle';
    lease.since = this.#now();
    const idle = this.#idle.get(lease.candidate);
    if (idle) idle.push(lease);
    else this.#idle.set(lease.candidate, [lease]);
    // A waiter of this replica may take it now, synchronously, from the idle list.
    this.#emitFreed(lease.candidate, lease.provider);
    // Given back by #sweepIdle once it has lingered lingerMs: one timer for all, not one a request.
  }

  #isWanted(scopes: readonly string[]): boolean {
    if (this.#wanted.size === 0) return false;
    const now = this.#now();
    for (const scope of scopes) if ((this.#wanted.get(scope) ?? 0) > now) return true;
    return false;
  }

  /** Gives back the idle leases that lingered lingerMs; each candidate's list is oldest first. */
  #sweepIdle(): void {
    const oldest = this.#now() - this.#lingerMs;
    for (const leases of this.#idle.values()) {
      const expired = leases.findIndex((lease) => lease.since > oldest);
      for (const lease of leases.slice(0, expired === -1 ? leases.length : expired)) void this.#giveBack(lease);
    }
  }

  /** Gives a lease back to the store (announcing it freed) and forgets it. Never rejects. */
  async #giveBack(lease: Lease): Promise<void> {
    if (lease.state === 'idle') {
      const idle = this.#idle.get(lease.candidate);
      const index = idle?.indexOf(lease) ?? -1;
      if (idle && index >= 0) {
        idle.splice(index, 1);
        if (idle.length === 0) this.#idle.delete(lease.candidate);
      }
    }
    lease.state = 'gone';
    this.#held.delete(lease.id);
    if (!this.#store?.available) return;
    try {
      await this.#store.release(lease.id, lease.scopeNames);
    } catch (err: unknown) {
      // It expires by itself within leaseMs.
      this.#options.logger.debug({ err: errorMessage(err), candidate: lease.candidate }, 'slots: release failed; the lease expires by itself');
    }
  }

  #emitFreed(candidate: string | undefined, provider: string | undefined): void {
    for (const listener of this.#freedListeners) {
      try {
        listener({ candidate, provider });
      } catch (err: unknown) {
        this.#options.logger.error({ err: errorMessage(err) }, 'slots: a freed-slot listener threw');
      }
    }
  }

  #received(message: SlotMessage): void {
    switch (message.type) {
      case 'want': {
        const until = this.#now() + this.#wantMs;
        for (const scope of message.scopes) this.#wanted.set(scope, until);
        const scopes = new Set(message.scopes);
        const idle = this.#idleIn(scopes);
        for (const lease of idle) void this.#giveBack(lease);
        if (idle.length > 0 || !this.#store) return;
        const mine = [...this.#active].flatMap((lease) => lease.scopeNames.filter((scope) => scopes.has(scope) && lease.id !== ''));
        if (mine.length > 0) {
          this.#store
            .announceBusy([...new Set(mine)])
            .catch((err: unknown) => this.#options.logger.debug({ err: errorMessage(err) }, 'slots: busy announcement failed'));
        }
        return;
      }
      case 'freed': {
        for (const reclaim of this.#reclaims) if (message.scopes.some((scope) => reclaim.scopes.has(scope))) reclaim.done(true);
        let candidate: string | undefined;
        let provider: string | undefined;
        for (const scope of message.scopes) {
          if (scope.startsWith('c:')) candidate = scope.slice(2);
          else if (scope.startsWith('p:')) provider = scope.slice(2);
        }
        this.#emitFreed(candidate, provider);
        return;
      }
      case 'busy':
        for (const reclaim of this.#reclaims) {
          if (!message.scopes.some((scope) => reclaim.scopes.has(scope))) continue;
          reclaim.pending.delete(message.from);
          if (reclaim.pending.size === 0) reclaim.done(false);
        }
        return;
    }
  }

  #availabilityChanged(available: boolean): void {
    if (available) {
      this.#options.logger.info('slots: redis reachable; maxInFlight is shared by the cluster again');
      return;
    }
    this.#options.logger.warn('slots: redis unreachable or slow; maxInFlight is counted per process until it returns');
    // Idle leases cannot be given back now; they expire by themselves.
    for (const leases of this.#idle.values()) {
      for (const lease of leases) {
        lease.state = 'gone';
        this.#held.delete(lease.id);
      }
    }
    this.#idle.clear();
  }

  /** Renews the leases held, drops those lost, and takes back slots held past maxHoldMs. */
  #tick(): void {
    const now = this.#now();
    for (const lease of this.#active) {
      if (now - lease.since <= this.#maxHoldMs) continue;
      this.#options.logger.error(
        { candidate: lease.candidate, heldMs: now - lease.since },
        'slots: a slot was held past maxHoldMs and is taken back; a request did not release it',
      );
      lease.holder?.release();
    }
    for (const [scope, until] of this.#wanted) if (until <= now) this.#wanted.delete(scope);
    if (!this.#store?.available || this.#held.size === 0) return;
    const leases = new Map<string, readonly string[]>();
    for (const [id, lease] of this.#held) leases.set(id, lease.scopeNames);
    this.#store.renew(leases, this.#leaseMs).then(
      (lost) => {
        for (const id of lost) {
          const lease = this.#held.get(id);
          if (!lease || lease.lost) continue;
          lease.lost = true;
          this.#options.logger.warn({ candidate: lease.candidate }, 'slots: a lease expired before it was renewed; another replica may hold that slot');
          if (lease.state === 'idle') void this.#giveBack(lease);
        }
      },
      (err: unknown) => this.#options.logger.debug({ err: errorMessage(err) }, 'slots: lease renewal failed'),
    );
  }

  /** Stops renewing, gives back every lease held (bounded by the store's timeout) and closes the store. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    clearInterval(this.#sweepTimer);
    for (const reclaim of this.#reclaims) reclaim.done(false);
    const held = [...this.#held.values()];
    await Promise.all(held.map((lease) => this.#giveBack(lease)));
    await this.#store?.close();
  }
}
