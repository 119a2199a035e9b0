import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { InMemoryBreakerServer } from '../../test/support/in-memory-breaker-state-store.js';
import { buildConfig, type Config } from '../config/load.js';
import { FleetState } from '../fleet/fleet-state.js';
import { createLogger } from '../shared/logger.js';
import { BreakerRegistry } from './breaker-registry.js';
import { SharedBreakers } from './shared-breakers.js';

const logger = createLogger('silent');
const candidate = 'p/m';
const resetTimeoutMs = 1_000;
/** SharedBreakers' default for this reset time: resetTimeoutMs within 2..10 s. */
const lockMs = 2_000;
const failure = Object.assign(new Error('upstream 500'), { countsAsBreakerFailure: true });

function configWith(breaker: Partial<Config['breaker']> = {}): Config {
  return buildConfig(
    {
      providers: { p: { baseUrl: 'http://127.0.0.1:1' } },
      virtualModels: { v: { candidates: [candidate] } },
      breaker: { errorThresholdPercentage: 50, volumeThreshold: 1, rollingCountTimeoutMs: 10_000, resetTimeoutMs, ...breaker },
    },
    'shared breakers test',
    {},
  );
}

interface Replica {
  readonly name: string;
  readonly breakers: BreakerRegistry;
  readonly fleet: FleetState;
  readonly store: ReturnType<InMemoryBreakerServer['store']>;
  readonly shared: SharedBreakers;
}

describe('SharedBreakers over an in-memory store', () => {
  let server: InMemoryBreakerServer;
  let config: Config;
  const replicas: Replica[] = [];

  beforeEach(() => {
    vi.useFakeTimers({ now: 1_700_000_000_000 });
    server = new InMemoryBreakerServer();
    config = configWith();
  });
  afterEach(async () => {
    for (const { shared, breakers } of replicas.splice(0)) {
      await shared.close();
      breakers.shutdown();
    }
    vi.useRealTimers();
  });

  /** A replica's registry, fleet and SharedBreakers on its own client of the server; started unless told not to. */
  async function replica(name: string, start = true): Promise<Replica> {
    const breakers = new BreakerRegistry(config.breaker);
    const fleet = new FleetState();
    const store = server.store();
    const shared = new SharedBreakers({ breakers, store, fleet, config: () => config, logger, replica: name, countFlushMs: 20 });
    const created = { name, breakers, fleet, store, shared };
    replicas.push(created);
    if (start) await shared.start();
    return created;
  }

  /** Runs timers due within `ms` and every promise they settle, announcements included. */
  const pass = (ms: number) => vi.advanceTimersByTimeAsync(ms);

  const fail = (r: Replica) => r.breakers.run(candidate, () => Promise.reject(failure)).catch(() => undefined);
  const positions = (...of: Replica[]) => of.map((r) => r.breakers.position(candidate));
  const probing = (of: Replica[]) => of.filter((r) => r.breakers.position(candidate) === 'halfOpen');

  it('opens the breaker of every other replica when one trips, and keeps the trip local on the one that tripped', async () => {
    const [one, two, three] = [await replica('one'), await replica('two'), await replica('three')];
    await fail(one);
    await pass(0);
    expect(positions(one, two, three)).toEqual(['open', 'open', 'open']);
    expect([one, two, three].map((r) => r.breakers.origin(candidate))).toEqual(['local', 'remote', 'remote']);
    expect(server.record(candidate)).toMatchObject({ replica: 'one', until: Date.now() + resetTimeoutMs });
  });

  it('lets exactly one replica probe when the window ends, and its success closes the breaker everywhere', async () => {
    const all = [await replica('one'), await replica('two'), await replica('three')];
    await fail(all[0]!);
    await pass(resetTimeoutMs - 1);
    expect(probing(all)).toEqual([]);
    await pass(1);
    const [holder, ...others] = probing(all);
    expect(others).toEqual([]);
    expect(server.lock(candidate)?.token).toMatch(new RegExp(`^${holder!.name}:`));
    for (const other of all.filter((r) => r !== holder)) {
      await expect(other.breakers.run(candidate, () => Promise.resolve('sent'))).rejects.toSatisfy(BreakerRegistry.isRejection);
    }
    await holder!.breakers.run(candidate, () => Promise.resolve('ok'));
    await pass(0);
    expect(positions(...all)).toEqual(['closed', 'closed', 'closed']);
    expect(server.lock(candidate)).toBeUndefined();
    expect(server.record(candidate)).toBeUndefined();
  });

  it('re-opens everywhere with a fresh window after a failed probe, whose verdict also frees the lock', async () => {
    const all = [await replica('one'), await replica('two'), await replica('three')];
    await fail(all[0]!);
    await pass(resetTimeoutMs);
    const [holder] = probing(all);
    await fail(holder!);
    await pass(0);
    expect(positions(...all)).toEqual(['open', 'open', 'open']);
    expect(server.lock(candidate)).toBeUndefined();
    expect(server.record(candidate)).toMatchObject({ replica: holder!.name, until: Date.now() + resetTimeoutMs });
    await pass(resetTimeoutMs - 1);
    expect(probing(all)).toEqual([]);
    await pass(1);
    expect(probing(all)).toHaveLength(1);
  });

  it('hands the probe to another replica once the lock of a holder that died expires', async () => {
    const all = [await replica('one'), await replica('two'), await replica('three')];
    await fail(all[0]!);
    await pass(resetTimeoutMs);
    const [holder] = probing(all);
    void holder!.breakers.run(candidate, () => new Promise(() => undefined));
    holder!.store.kill();
    const survivors = all.filter((r) => r !== holder);
    await pass(lockMs - 1);
    expect(probing(survivors)).toEqual([]);
    await pass(lockMs + 1);
    expect(probing(survivors)).toHaveLength(1);
  });

  it('gives the probe back after one lock period when no request came to carry it', async () => {
    const all = [await replica('one'), await replica('two')];
    await fail(all[0]!);
    await pass(resetTimeoutMs);
    const [holder] = probing(all);
    const token = server.lock(candidate)?.token;
    // Renewals run every lockMs / 3; the first one past lockMs of idleness gives it back.
    const giveBackAt = Math.ceil((lockMs + 1) / Math.floor(lockMs / 3)) * Math.floor(lockMs / 3);
    await pass(giveBackAt - 1);
    expect(server.lock(candidate)?.token).toBe(token);
    await pass(1);
    expect(server.lock(candidate)).toBeUndefined();
    expect(holder!.breakers.position(candidate)).toBe('open');
  });

  it('lets a replica that has traffic take the probe from a holder that had none, at its next claim', async () => {
    const all = [await replica('one'), await replica('two')];
    await fail(all[0]!);
    await pass(resetTimeoutMs);
    const [idle] = probing(all);
    const busy = all.find((r) => r !== idle)!;
    // The busy replica lost the claim when the window ended; it claims again one lock period later.
    // The idle holder gives the lock back by then and must not take it again first.
    let probedAt: number | undefined;
    for (let waited = 0; waited < 4 * lockMs && probedAt === undefined; waited += 50) {
      await pass(50);
      if (busy.breakers.position(candidate) === 'halfOpen') probedAt = waited;
    }
    expect(probedAt).toBeDefined();
    expect(probedAt!).toBeLessThanOrEqual(2 * lockMs + 100);
  });

  it('gives an unused probe lock back at close(), so the others need not wait for it to expire', async () => {
    const all = [await replica('one'), await replica('two')];
    await fail(all[0]!);
    await pass(resetTimeoutMs);
    const [holder] = probing(all);
    await holder!.shared.close();
    expect(server.lock(candidate)).toBeUndefined();
  });

  it('trips every replica on the cluster-wide failure rate when no replica alone reaches the volume threshold', async () => {
    config = configWith({ volumeThreshold: 4 });
    const [one, two] = [await replica('one'), await replica('two')];
    for (const r of [one, two]) {
      await r.breakers.run(candidate, () => Promise.resolve('ok'));
      await fail(r);
    }
    // 2 failures in 4 fires: 50%, not over it.
    await pass(20);
    expect(positions(one, two)).toEqual(['closed', 'closed']);
    await fail(one);
    await pass(20);
    expect(positions(one, two)).toEqual(['open', 'open']);
    expect([one.breakers.origin(candidate), two.breakers.origin(candidate)]).toEqual(['local', 'remote']);
  });

  it('shares 429 cooldowns, and a replica that starts later reads them and the open breakers from the store', async () => {
    const [one, two] = [await replica('one'), await replica('two')];
    const until = Date.now() + 30_000;
    one.fleet.coolDown(candidate, until);
    await fail(one);
    await pass(0);
    expect(two.fleet.candidate(candidate).coolingDownUntil).toBe(until);
    const late = await replica('late');
    expect(late.fleet.candidate(candidate).coolingDownUntil).toBe(until);
    expect(late.breakers.position(candidate)).toBe('open');
    expect(late.breakers.origin(candidate)).toBe('remote');
  });

  it('without the store, decides alone: a trip stays local, and the replica probes its own breaker when the window ends', async () => {
    server.setUp(false);
    const one = await replica('one', false);
    const two = await replica('two', false);
    const started = Promise.all([one.shared.start(), two.shared.start()]);
    await pass(2_000);
    await started;
    await fail(one);
    await pass(0);
    expect(positions(one, two)).toEqual(['open', 'closed']);
    await pass(resetTimeoutMs);
    expect(positions(one, two)).toEqual(['halfOpen', 'closed']);
    expect(server.commands).toEqual([]);
  });

  it('gives the store a trip made while it was away once it returns, and the others open', async () => {
    const [one, two] = [await replica('one'), await replica('two')];
    server.setUp(false);
    await fail(one);
    await pass(0);
    expect(positions(one, two)).toEqual(['open', 'closed']);
    server.setUp(true);
    await pass(0);
    expect(positions(one, two)).toEqual(['open', 'open']);
    expect(two.breakers.origin(candidate)).toBe('remote');
  });
});
