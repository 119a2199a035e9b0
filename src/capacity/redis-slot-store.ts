import type { Logger } from '../shared/logger.js';
import { errorMessage } from '../shared/error-message.js';
import type { CapacityRedis } from './capacity-redis.js';
import type { LeaseAnswer, ScopeLimit, SlotMessage, SlotStore, SlotStoreListener } from './slot-store.js';
import { holderOf } from './slot-store.js';

function isSlotMessage(value: unknown): value is SlotMessage {
  if (typeof value !== 'object' || value === null) return false;
  const message = value as Record<string, unknown>;
  return (
    (message.type === 'want' || message.type === 'freed' || message.type === 'busy') &&
    typeof message.from === 'string' &&
    Array.isArray(message.scopes) &&
    message.scopes.every((scope) => typeof scope === 'string')
  );
}

/**
 * {@link SlotStore} on Redis. Keys: `<prefix>slots:<scope>`, a sorted set of lease ids scored by
 * their expiry on Redis' own clock (so the replicas' clocks need not agree); announcements on the
 * channel `<prefix>slots`. Each operation is one script (`commands/*-slot*.lua`), one round trip.
 */
export class RedisSlotStore implements SlotStore {
  readonly #redis: CapacityRedis;
  readonly #logger: Logger;
  readonly #channel: string;
  #listener: SlotStoreListener | undefined;

  constructor(redis: CapacityRedis, logger: Logger) {
    this.#redis = redis;
    this.#logger = logger;
    this.#channel = redis.channel('slots', {
      message: (text) => this.#deliver(text),
      availability: (available) => this.#listener?.availability(available),
    });
  }

  get instance(): string {
    return this.#redis.instance;
  }

  get available(): boolean {
    return this.#redis.available;
  }

  async start(listener: SlotStoreListener, timeoutMs: number): Promise<void> {
    this.#listener = listener;
    await this.#redis.start(timeoutMs);
  }

  #key(scope: string): string {
    return `${this.#redis.prefix}slots:${scope}`;
  }

  #announce(type: SlotMessage['type'], scopes: readonly string[]): string {
    return JSON.stringify({ type, from: this.#redis.instance, scopes });
  }

  #deliver(text: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err: unknown) {
      this.#logger.warn({ err: errorMessage(err) }, 'slot store: ignored a malformed announcement');
      return;
    }
    if (!isSlotMessage(parsed)) {
      this.#logger.warn('slot store: ignored an announcement of unknown shape');
      return;
    }
    if (parsed.from !== this.#redis.instance) this.#listener?.message(parsed);
  }

  async acquire(lease: string, scopes: readonly ScopeLimit[], lifeMs: number): Promise<LeaseAnswer> {
    const keys = scopes.map(({ scope }) => this.#key(scope));
    const want = this.#announce(
      'want',
      scopes.map(({ scope }) => scope),
    );
    const limits = scopes.map(({ limit }) => limit);
    const reply = (await this.#redis.run(() =>
      this.#redis.commands.acquireSlot(keys.length, ...keys, lease, Math.round(lifeMs), this.#channel, want, ...limits),
    )) as Array<number | string>;
    if (Number(reply[0]) === 1) return { granted: true };
    const retryInMs = Number(reply[1]);
    const holders = new Set<string>();
    for (let i = 2; i < reply.length; i++) holders.add(holderOf(String(reply[i])));
    return { granted: false, retryInMs: Number.isFinite(retryInMs) && retryInMs > 0 ? retryInMs : undefined, holders };
  }

  async renew(leases: ReadonlyMap<string, readonly string[]>, lifeMs: number): Promise<string[]> {
    const byScope = new Map<string, string[]>();
    for (const [lease, scopes] of leases) {
      for (const scope of scopes) {
        const ids = byScope.get(scope);
        if (ids) ids.push(lease);
        else byScope.set(scope, [lease]);
      }
    }
    if (byScope.size === 0) return [];
    const keys: string[] = [];
    const args: Array<string | number> = [Math.round(lifeMs)];
    for (const [scope, ids] of byScope) {
      keys.push(this.#key(scope));
      args.push(ids.length, ...ids);
    }
    const lost = (await this.#redis.run(() => this.#redis.commands.renewSlots(keys.length, ...keys, ...args))) as string[];
    return lost.map(String);
  }

  async release(lease: string, scopes: readonly string[]): Promise<void> {
    const keys = scopes.map((scope) => this.#key(scope));
    await this.#redis.run(() => this.#redis.commands.releaseSlot(keys.length, ...keys, lease, this.#channel, this.#announce('freed', scopes)));
  }

  async announceBusy(scopes: readonly string[]): Promise<void> {
    await this.#redis.run(() => this.#redis.commands.publish(this.#channel, this.#announce('busy', scopes)));
  }

  /** Stops delivering; the connections are their owner's to close (they serve the rate limits too). */
  close(): Promise<void> {
    this.#listener = undefined;
    return Promise.resolve();
  }
}
