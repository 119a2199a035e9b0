import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeProvider, type FakeProvider, type ReceivedRequest } from '../../simulator/fake-provider.js';
import { waitFor } from '../support/wait-for.js';
import { entryPoints, startNodeProcess, type RunningProcess } from '../support/processes.js';
import { startThrowawayRedis, type ThrowawayRedis } from '../support/throwaway-redis.js';

const gatewayScript = entryPoints.gateway;
const resetTimeoutMs = 400;
const failing = 'x/m1';

interface Replica {
  readonly name: string;
  readonly process: RunningProcess;
  readonly url: string;
  readonly configPath: string;
}

interface Transition {
  time: number;
  state: string;
  origin: string;
}

/** A failing candidate x and a healthy backup y behind one virtual model, with a hair-trigger breaker. */
function configDocument(x: FakeProvider, y: FakeProvider, reset = resetTimeoutMs): string {
  return JSON.stringify({
    providers: { x: { baseUrl: x.url, type: 'openai' }, y: { baseUrl: y.url, type: 'openai' } },
    virtualModels: { 'auto:chat': { strategy: 'priority', preferLoaded: false, candidates: [failing, 'y/m1'] } },
    breaker: { errorThresholdPercentage: 1, volumeThreshold: 1, rollingCountTimeoutMs: 1_000, resetTimeoutMs: reset },
    healthCheck: { intervalMs: 60_000, timeoutMs: 2_000 },
  });
}

describe('circuit breakers shared by three gateway processes through Redis', () => {
  let redis: ThrowawayRedis;
  let x: FakeProvider;
  let y: FakeProvider;
  const dir = mkdtempSync(join(tmpdir(), 'boo-shared-breakers-'));
  const queue = `boo-test-${randomUUID()}`;
  const replicas = new Map<string, Replica>();
  let sequence = 0;

  async function startReplica(name: string): Promise<Replica> {
    const configPath = join(dir, `${name}.yaml`);
    writeFileSync(configPath, configDocument(x, y));
    const child = startNodeProcess(gatewayScript, {
      PORT: '0',
      HOST: '127.0.0.1',
      BOO_CONFIG: configPath,
      REDIS_URL: redis.url,
      BOO_REPLICA_ID: name,
      BOO_QUEUE: queue,
      BOO_DATA_DIR: join(dir, `data-${name}`),
      LOG_LEVEL: 'info',
    });
    const line = await child.waitForLine(/boo-gateway listening/, 20_000);
    const replica = { name, process: child, url: (JSON.parse(line) as { url: string }).url, configPath };
    replicas.set(name, replica);
    return replica;
  }

  /** One chat request with an x-request-id naming the replica, so the fakes can tell who sent what. */
  async function chat(replica: Replica): Promise<{ status: number; candidate: string; attempts: number }> {
    const response = await request(`${replica.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': `${replica.name}-${++sequence}` },
      body: JSON.stringify({ model: 'auto:chat', messages: [{ role: 'user', content: 'hi' }] }),
    });
    await response.body.text();
    return { status: response.statusCode, candidate: String(response.headers['x-boo-candidate']), attempts: Number(response.headers['x-boo-attempts']) };
  }

  function sentBy(received: ReceivedRequest): string {
    return String(received.headers['x-request-id']).split('-')[0] ?? '';
  }

  /** Breaker transitions of the failing candidate logged by a replica from line `from` on. */
  function transitions(replica: Replica, from = 0): Transition[] {
    const found: Transition[] = [];
    for (const line of replica.process.lines.slice(from)) {
      if (!line.includes('circuit breaker changed state')) continue;
      const entry = JSON.parse(line) as { time: number; candidate: string; state: string; origin: string };
      if (entry.candidate === failing) found.push({ time: entry.time, state: entry.state, origin: entry.origin });
    }
    return found;
  }

  /** Sends requests to each replica in turn until fn() holds: the traffic that carries probes. */
  async function driveUntil(targets: Replica[], done: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await done())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await Promise.all(targets.map((replica) => chat(replica)));
      await sleep(10);
    }
  }

  async function breakerOf(replica: Replica): Promise<{ breaker: string; breakerOrigin: string | null }> {
    const response = await request(`${replica.url}/admin/candidates`);
    const body = (await response.body.json()) as { data: Array<{ id: string; breaker: string; breakerOrigin: string | null }> };
    const entry = body.data.find((candidate) => candidate.id === failing);
    if (!entry) throw new Error(`${failing} missing from /admin/candidates`);
    return entry;
  }

  async function allClosed(targets: Replica[]): Promise<boolean> {
    const states = await Promise.all(targets.map((replica) => breakerOf(replica)));
    return states.every((state) => state.breaker === 'closed');
  }

  /** Lets the failing candidate recover and waits until every replica has closed its breaker. */
  async function recover(targets: Replica[]): Promise<void> {
    x.defaultReply = { kind: 'ok' };
    await driveUntil(targets, () => allClosed(targets), 10_000, 'every breaker to close');
  }

  /** Client requests sent in a loop to each replica until stopped; every status is kept. */
  function traffic(targets: Replica[]): { statuses: number[]; stop: () => Promise<void> } {
    const statuses: number[] = [];
    let running = true;
    const loops = targets.map(async (replica) => {
      while (running) {
        try {
          statuses.push((await chat(replica)).status);
        } catch {
          statuses.push(0);
        }
        await sleep(10);
      }
    });
    return {
      statuses,
      stop: async () => {
        running = false;
        await Promise.all(loops);
      },
    };
  }

  const replica = (name: string): Replica => {
    const found = replicas.get(name);
    if (!found) throw new Error(`no replica ${name}`);
    return found;
  };

  beforeAll(async () => {
    redis = await startThrowawayRedis({ appendOnly: false });
    x = await startFakeProvider({ name: 'x' });
    y = await startFakeProvider({ name: 'y' });
    await Promise.all(['A', 'B', 'C'].map((name) => startReplica(name)));
  });

  afterAll(async () => {
    await Promise.all([...replicas.values()].map((running) => running.process.stop(3_000)));
    await Promise.all([x?.close(), y?.close(), redis?.cleanup()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('opens the breaker on B and C within 100 ms (p99 over 20 trips) of the failing request on A', async () => {
    const [a, b, c] = [replica('A'), replica('B'), replica('C')];
    const propagation: number[] = [];
    let skippedChecks = 0;
    for (let trip = 0; trip < 20; trip += 1) {
      const marks = [b, c].map((other) => other.process.lines.length);
      x.script({ kind: 'status', status: 500 });
      const answer = await chat(a);
      expect(answer).toMatchObject({ status: 200, candidate: 'y/m1', attempts: 2 });
      const failed = x
        .dispatched()
        .filter((received) => sentBy(received) === 'A')
        .at(-1);
      const failedAt = failed?.closedAt ?? failed?.receivedAt ?? Number.NaN;
      const opened = await Promise.all(
        [b, c].map(async (other, index) => {
          let open: Transition | undefined;
          await waitFor(() => (open = transitions(other, marks[index]).find((entry) => entry.state === 'open')) !== undefined, 5_000, `${other.name} to open`);
          expect(open?.origin).toBe('remote');
          return open?.time ?? Number.NaN;
        }),
      );
      propagation.push(Math.max(...opened) - failedAt);
      // Well inside the reset window, B and C skip x: one attempt, served by y.
      if (Date.now() - failedAt < resetTimeoutMs / 2) {
        for (const other of [b, c]) expect(await chat(other)).toMatchObject({ status: 200, candidate: 'y/m1', attempts: 1 });
        skippedChecks += 1;
      }
      await recover([a, b, c]);
    }
    propagation.sort((first, second) => first - second);
    const p99 = propagation[Math.ceil(0.99 * propagation.length) - 1] ?? Number.NaN;
    const p50 = propagation[Math.ceil(0.5 * propagation.length) - 1] ?? Number.NaN;
    process.stdout.write(`breaker propagation over ${propagation.length} trips: p50 ${p50} ms, p99 ${p99} ms, all ${propagation.join(',')}\n`);
    expect(p99).toBeLessThan(100);
    expect(skippedChecks).toBeGreaterThanOrEqual(10);
  }, 60_000);

  it('sends exactly one probe per reset window across the three replicas', async () => {
    const all = ['A', 'B', 'C'].map(replica);
    const [, b, c] = all as [Replica, Replica, Replica];
    const marks = [b, c].map((other) => other.process.lines.length);
    x.defaultReply = { kind: 'status', status: 500 };
    expect(await chat(replica('A'))).toMatchObject({ status: 200, candidate: 'y/m1', attempts: 2 });
    const before = x.dispatched().length;
    // The failing request ended before A tripped: the first window ends at least resetTimeoutMs after it.
    const trip = x.dispatched().at(-1);
    const trippedAt = trip?.closedAt ?? trip?.receivedAt ?? Number.NaN;
    // Traffic starts once B and C know of the trip: a request they sent in the few ms before
    // would reach x as ordinary traffic, not as a probe (propagation has its own test above).
    for (const [index, other] of [b, c].entries()) {
      await waitFor(
        () => transitions(other, marks[index]).some((entry) => entry.state === 'open' && entry.origin === 'remote'),
        2_000,
        `${other.name} to learn the trip on A`,
      );
    }
    const load = traffic(all);
    await sleep(8 * resetTimeoutMs + 200);
    await load.stop();
    const probes = x.dispatched().slice(before);
    const gaps = probes.slice(1).map((probe, index) => probe.receivedAt - (probes[index]?.receivedAt ?? 0));
    process.stdout.write(`probes after the trip: ${probes.map((probe) => `${sentBy(probe)}@+${probe.receivedAt - trippedAt}`).join(' ')}\n`);
    expect(load.statuses.every((status) => status === 200)).toBe(true);
    expect(load.statuses.length).toBeGreaterThan(30);
    // A probe fails, the next window starts after its verdict: never two probes in one window...
    for (const gap of gaps) expect(gap).toBeGreaterThanOrEqual(resetTimeoutMs);
    // ...and one in (nearly) every window of the 3.4 s under traffic.
    expect(probes.length).toBeGreaterThanOrEqual(4);
    expect(probes[0]!.receivedAt - trippedAt).toBeGreaterThanOrEqual(resetTimeoutMs);
    await recover(all);
  }, 30_000);

  it('keeps every client request working while Redis is killed, and shares again once it is back', async () => {
    const all = ['A', 'B', 'C'].map(replica);
    const load = traffic(all);
    await sleep(200);
    await redis.kill();
    for (const running of all) {
      await waitFor(
        async () => ((await (await request(`${running.url}/readyz`)).body.json()) as { redis: string }).redis === 'degraded',
        5_000,
        `${running.name} to report redis degraded`,
      );
    }
    const metrics = await (await request(`${replica('A').url}/metrics`)).body.text();
    expect(metrics).toMatch(/^boo_redis_up\{[^}]*\} 0$/m);
    // Breakers keep working per process while Redis is away: x fails, each replica trips on its own.
    const marksAway = all.map((running) => running.process.lines.length);
    x.defaultReply = { kind: 'status', status: 500 };
    for (const [index, running] of all.entries()) {
      await waitFor(
        () => transitions(running, marksAway[index]).some((entry) => entry.state === 'open' && entry.origin === 'local'),
        5_000,
        `${running.name} to trip on its own`,
      );
    }
    x.defaultReply = { kind: 'ok' };
    await redis.start();
    for (const running of all) {
      await waitFor(
        async () => ((await (await request(`${running.url}/readyz`)).body.json()) as { redis: string }).redis === 'ok',
        10_000,
        `${running.name} to report redis ok`,
      );
    }
    await load.stop();
    expect(load.statuses.filter((status) => status !== 200)).toEqual([]);
    expect(await (await request(`${replica('A').url}/metrics`)).body.text()).toMatch(/^boo_redis_up\{[^}]*\} 1$/m);

    await recover(all);
    const [a, b, c] = all as [Replica, Replica, Replica];
    const marks = [a, c].map((other) => other.process.lines.length);
    x.script({ kind: 'status', status: 500 });
    expect(await chat(b)).toMatchObject({ status: 200, candidate: 'y/m1', attempts: 2 });
    for (const [index, other] of [a, c].entries()) {
      await waitFor(
        () => transitions(other, marks[index]).some((entry) => entry.state === 'open' && entry.origin === 'remote'),
        2_000,
        `${other.name} to learn the trip on B`,
      );
    }
    await recover(all);
  }, 40_000);

  it('lets another replica probe when the probe holder dies mid-probe', async () => {
    const all = ['A', 'B', 'C'].map(replica);
    const [, b, c] = all as [Replica, Replica, Replica];
    const marks = [b, c].map((other) => other.process.lines.length);
    x.defaultReply = { kind: 'status', status: 500 };
    expect(await chat(replica('A'))).toMatchObject({ status: 200, candidate: 'y/m1', attempts: 2 });
    x.defaultReply = { kind: 'hang' };
    // As above: a request B or C sent before they knew of the trip would hang at x as ordinary
    // traffic (for the 120 s first-byte budget), not as a probe.
    for (const [index, other] of [b, c].entries()) {
      await waitFor(
        () => transitions(other, marks[index]).some((entry) => entry.state === 'open' && entry.origin === 'remote'),
        2_000,
        `${other.name} to learn the trip on A`,
      );
    }
    const before = x.dispatched().length;
    let load = traffic(all);
    await waitFor(() => x.dispatched().length > before, 5_000, 'the first probe');
    const firstProbe = x.dispatched()[before]!;
    const holder = replica(sentBy(firstProbe));
    x.defaultReply = { kind: 'ok' };
    holder.process.child.kill('SIGKILL');
    await load.stop();
    replicas.delete(holder.name);
    const survivors = all.filter((running) => running !== holder);
    load = traffic(survivors);
    await waitFor(() => x.dispatched().length > before + 1, 8_000, 'a probe from a survivor');
    await load.stop();
    const secondProbe = x.dispatched()[before + 1]!;
    expect(sentBy(secondProbe)).not.toBe(holder.name);
    await waitFor(() => allClosed(survivors), 5_000, 'the survivors to close the breaker');
    await holder.process.stop(1_000);
  }, 30_000);

  it('has a replica started after a trip skip the candidate from its first request', async () => {
    const [first, second] = [...replicas.values()] as [Replica, Replica];
    // A long reset on the replica that trips keeps the window open while the new replica starts.
    writeFileSync(first.configPath, configDocument(x, y, 20_000));
    const mark = first.process.lines.length;
    first.process.child.kill('SIGHUP');
    await waitFor(() => first.process.lines.slice(mark).some((line) => line.includes('config reloaded')), 5_000, 'the reload');
    x.defaultReply = { kind: 'status', status: 500 };
    expect(await chat(first)).toMatchObject({ status: 200, candidate: 'y/m1', attempts: 2 });
    await waitFor(async () => (await breakerOf(second)).breaker === 'open', 2_000, `${second.name} to open`);

    const late = await startReplica('D');
    const before = x.dispatched().length;
    expect(await chat(late)).toMatchObject({ status: 200, candidate: 'y/m1', attempts: 1 });
    expect(
      x
        .dispatched()
        .slice(before)
        .filter((received) => sentBy(received) === 'D'),
    ).toEqual([]);
    expect(await breakerOf(late)).toEqual(expect.objectContaining({ breaker: 'open', breakerOrigin: 'remote' }));
  }, 30_000);
});
