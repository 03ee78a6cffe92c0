import assert from 'node:assert/strict';
import { test } from 'node:test';
import { COUNTS_REFRESH_MS, HEALTH_INTERVAL_MS, HealthProbe, PEER_PROBE_AGE_MS, PING_SPACING_MS, PINGS_PER_ROUND } from '../../src/agent/health.js';
import type { NetworkRunner } from '../../src/agent/network-runner.js';
import { memoryCluster, quiet } from '../helpers/lease-fakes.js';

// Issue 15: the probe pinged every peer every round (a process each: ~500 a second for 50 hosts).
test('health probe: at most PINGS_PER_ROUND pings per round, never-probed peers first, none again while fresh', async () => {
  const { admin: store } = memoryCluster();
  const peers = ['10.9.0.1', '10.9.0.2', '10.9.0.3', '10.9.0.4', '10.9.0.5'].map((publicIp, i) => ({ subnet: `10.5.${i + 1}.0/24`, publicIp }));
  const runner = { name: 'n1', peers, plan: { pool: '10.5.0.0/24' } } as unknown as NetworkRunner;
  const pinged: string[][] = [];
  let round: string[] = [];
  const probe = new HealthProbe(
    store,
    'h0',
    () => [runner],
    quiet,
    60_000,
    async (ip) => {
      round.push(ip);
      return true;
    },
    0,
  );
  const rounds = Math.ceil(peers.length / PINGS_PER_ROUND) + 1;
  for (let i = 0; i < rounds; i++) {
    round = [];
    await probe.probe();
    pinged.push(round.sort());
  }
  assert.ok(PINGS_PER_ROUND < peers.length);
  for (const r of pinged) assert.ok(r.length <= PINGS_PER_ROUND, `at most ${PINGS_PER_ROUND} pings per round, got ${r.length}`);
  // every peer probed exactly once over the rounds, then left alone while its probe is fresh
  assert.deepEqual(pinged.flat().sort(), peers.map((p) => p.publicIp).sort());
  assert.deepEqual(pinged[rounds - 1], []);
  assert.equal(probe.snap.reachable.size, peers.length);
  for (const p of peers) assert.equal(probe.snap.reachable.get(p.publicIp)?.ok, true);
  await store.close();
});

// Issue 15: an idle agent's pings (a process each, one every 5 s) were half its CPU.
test('health probe: no ping round sooner than pingSpacingMs after the last one', async () => {
  const { admin: store } = memoryCluster();
  const peers = ['10.9.0.1', '10.9.0.2', '10.9.0.3'].map((publicIp, i) => ({ subnet: `10.5.${i + 1}.0/24`, publicIp }));
  const runner = { name: 'n1', peers, plan: { pool: '10.5.0.0/24' } } as unknown as NetworkRunner;
  const pinged: string[] = [];
  const probe = new HealthProbe(store, 'h0', () => [runner], quiet, 60_000, async (ip) => {
    pinged.push(ip);
    return true;
  });
  assert.ok(PING_SPACING_MS >= 10_000);
  // rounds back to back (well within the spacing): only the first pings
  for (let i = 0; i < 4; i++) await probe.probe();
  assert.equal(pinged.length, 1);
  // the store half of every round still runs
  assert.equal(probe.snap.store.healthy, true);
  await store.close();
});

// Issue 15: the timer's round listed endpoints and IPAM records every 5 s; an idle agent's biggest own cost.
test('health probe: the timer rounds check the store and re-count only every countsRefreshMs; a change counts at once', async () => {
  const { admin: store } = memoryCluster();
  const runner = { name: 'n1', peers: [], plan: { pool: '10.5.0.0/24' } } as unknown as NetworkRunner;
  let reads = 0;
  const counting = new Proxy(store, {
    get(t, k, r) {
      const v = Reflect.get(t, k, r);
      if (k === 'list' && typeof v === 'function') return (...a: unknown[]) => (reads++, v.apply(t, a));
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
  const probe = new HealthProbe(counting, 'h0', () => [runner], quiet, 60_000, async () => true, 0, 3_600_000);
  await probe.probe(false);
  assert.equal(probe.countRounds, 1, 'a network not counted yet is counted');
  assert.deepEqual(probe.snap.networks.get('n1'), { endpoints: 0, ipamUsed: 0, ipamSize: 253 });
  const listed = reads;
  for (let i = 0; i < 3; i++) await probe.probe(false);
  assert.equal(probe.countRounds, 1, 'timer rounds within the refresh time do not count');
  assert.equal(reads, listed, 'and list nothing');
  assert.equal(probe.snap.store.healthy, true, 'but they check the store');
  await probe.probe(); // a change on this host (attach, detach, reconcile)
  assert.equal(probe.countRounds, 2);
  await store.close();
});

test('health probe: idle wake-ups: a peer probed again after 15 minutes at the earliest, counts every minute, store every 15 s', () => {
  assert.ok(PEER_PROBE_AGE_MS >= 15 * 60_000);
  assert.ok(COUNTS_REFRESH_MS >= 60_000);
  assert.ok(HEALTH_INTERVAL_MS >= 15_000, 'the timer round wakes an idle agent at most every 15 s');
});
