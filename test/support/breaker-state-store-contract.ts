import { afterEach, describe, expect, it } from 'vitest';
import type { BreakerMessage, BreakerStateStore } from '../../src/breakers/breaker-state-store.js';
import { waitFor } from './wait-for.js';

/** Three started stores on one backend, each with the announcements it received. */
export interface ContractStores {
  readonly stores: readonly [BreakerStateStore, BreakerStateStore, BreakerStateStore];
  readonly received: readonly [BreakerMessage[], BreakerMessage[], BreakerMessage[]];
}

/**
 * What every {@link BreakerStateStore} must do, as SharedBreakers relies on it, run against one
 * implementation: `connect` gives three fresh stores on one backend (not started), `cleanup`
 * removes what a test left there. Real time, short lock lives: the Redis store and the in-memory
 * one used by the unit tests answer the same, so the unit tests stand for what Redis does.
 */
export function describeBreakerStateStoreContract(
  name: string,
  connect: () => [BreakerStateStore, BreakerStateStore, BreakerStateStore],
  cleanup: () => Promise<void> = () => Promise.resolve(),
): void {
  describe(`${name}: the BreakerStateStore contract`, () => {
    let opened: BreakerStateStore[] = [];
    afterEach(async () => {
      for (const store of opened.splice(0)) await store.close();
      await cleanup();
    });

    async function start(): Promise<ContractStores> {
      const stores = connect();
      opened = [...stores];
      const received: [BreakerMessage[], BreakerMessage[], BreakerMessage[]] = [[], [], []];
      await Promise.all(
        stores.map((store, index) => store.start({ message: (message) => received[index]!.push(message), availability: () => undefined }, 2_000)),
      );
      return { stores, received };
    }

    it('grants the probe of a due window to one claimant, until the lock is released or expires', async () => {
      const {
        stores: [one, two],
      } = await start();
      const now = Date.now();
      await one.publishOpen({ candidate: 'p/m', openedAt: now, until: now + 1_000, replica: 'one' }, { graceMs: 5_000 });
      expect(await one.claimProbe('p/m', 'one', now, 5_000)).toEqual({ granted: false, dueAt: now + 1_000 });
      expect(await one.claimProbe('p/m', 'one', now + 1_000, 5_000)).toEqual({ granted: true });
      expect(await two.claimProbe('p/m', 'two', now + 1_000, 5_000)).toEqual({ granted: false, dueAt: undefined });
      expect(await two.renewProbe('p/m', 'two', 5_000)).toBe(false);
      expect(await one.renewProbe('p/m', 'one', 5_000)).toBe(true);
      await two.releaseProbe('p/m', 'two');
      expect((await two.claimProbe('p/m', 'two', now + 1_000, 5_000)).granted).toBe(false);
      await one.releaseProbe('p/m', 'one');
      expect(await two.claimProbe('p/m', 'two', now + 1_000, 150)).toEqual({ granted: true });
      const claimedAt = Date.now();
      await waitFor(async () => (await one.claimProbe('p/m', 'one', now + 1_000, 5_000)).granted, 2_000, 'the lock to expire');
      expect(Date.now() - claimedAt).toBeGreaterThanOrEqual(140);
    });

    it('keeps a claimed window’s record alive past its own expiry while the probe is pending', async () => {
      const {
        stores: [one],
      } = await start();
      const now = Date.now();
      for (const candidate of ['p/m', 'q/m']) await one.publishOpen({ candidate, openedAt: now - 1_000, until: now, replica: 'one' }, { graceMs: 100 });
      expect(await one.claimProbe('p/m', 'one', now, 2_000)).toEqual({ granted: true });
      const openCandidates = async () => (await one.snapshot()).open.map((record) => record.candidate);
      await waitFor(async () => !(await openCandidates()).includes('q/m'), 2_000, 'the unclaimed record to expire');
      expect(await openCandidates()).toEqual(['p/m']);
    });

    it('stores an open record (with a later one kept over an older one), releases the lock of its token, and announces it to the others only', async () => {
      const {
        stores: [one, two, three],
        received,
      } = await start();
      const now = Date.now();
      const record = { candidate: 'p/m', openedAt: now, until: now + 1_000, replica: 'one' };
      expect(await one.claimProbe('p/m', 'held', now, 5_000)).toEqual({ granted: true });
      expect(await one.publishOpen(record, { graceMs: 5_000, releaseToken: 'held' })).toBe(true);
      expect(await two.claimProbe('p/m', 'two', now + 1_000, 5_000)).toEqual({ granted: true });
      expect(await three.publishOpen({ ...record, until: now + 500, replica: 'three' }, { graceMs: 5_000, onlyIfNewer: true })).toBe(false);
      expect((await three.snapshot()).open).toEqual([record]);
      await waitFor(() => received[1].length > 0 && received[2].length > 0, 2_000, 'the announcement');
      expect(received).toEqual([[], [{ type: 'open', ...record }], [{ type: 'open', ...record }]]);
    });

    it('forgets an open record and its counts at a close, releases the lock of its token, and announces the close', async () => {
      const {
        stores: [one, two],
        received,
      } = await start();
      const now = Date.now();
      const window = { bucketMs: 1_000, buckets: 10 };
      await one.publishOpen({ candidate: 'p/m', openedAt: now - 2_000, until: now - 1_000, replica: 'one' }, { graceMs: 5_000 });
      await one.addCounts('p/m', { fires: 5, failures: 5 }, now, window);
      expect(await one.claimProbe('p/m', 'held', now, 5_000)).toEqual({ granted: true });
      await one.publishClose('p/m', 'one', 'held');
      expect((await two.snapshot()).open).toEqual([]);
      expect(await two.addCounts('p/m', { fires: 1, failures: 0 }, now, window)).toEqual({ fires: 1, failures: 0 });
      expect(await two.claimProbe('p/m', 'two', now, 5_000)).toEqual({ granted: true });
      await waitFor(() => received[1].some((message) => message.type === 'close'), 2_000, 'the close');
      expect(received[1].filter((message) => message.type === 'close')).toEqual([{ type: 'close', candidate: 'p/m', replica: 'one' }]);
      expect(received[0]).toEqual([]);
    });

    it('keeps the later of two cooldowns, lists it in the snapshot and announces each', async () => {
      const {
        stores: [one, two],
        received,
      } = await start();
      const until = Date.now() + 5_000;
      await one.publishCooldown('p/m', until, 'one');
      await two.publishCooldown('p/m', until - 1_000, 'two');
      expect((await one.snapshot()).cooldowns).toEqual([{ candidate: 'p/m', until }]);
      await waitFor(() => received[0].length > 0 && received[1].length > 0, 2_000, 'both announcements');
      expect(received[0]).toEqual([{ type: 'cooldown', candidate: 'p/m', until: until - 1_000, replica: 'two' }]);
      expect(received[1]).toEqual([{ type: 'cooldown', candidate: 'p/m', until, replica: 'one' }]);
    });

    it('sums the attempt counts of every replica over the rolling window, dropping the buckets that left it', async () => {
      const {
        stores: [one, two],
      } = await start();
      const window = { bucketMs: 100, buckets: 10 };
      const at = Math.floor(Date.now() / 100) * 100;
      expect(await one.addCounts('p/m', { fires: 3, failures: 1 }, at, window)).toEqual({ fires: 3, failures: 1 });
      expect(await two.addCounts('p/m', { fires: 2, failures: 2 }, at + 500, window)).toEqual({ fires: 5, failures: 3 });
      // Ten buckets later the first one has left the window; the second is still in it.
      expect(await one.addCounts('p/m', { fires: 1, failures: 0 }, at + 1_000, window)).toEqual({ fires: 3, failures: 2 });
    });
  });
}
