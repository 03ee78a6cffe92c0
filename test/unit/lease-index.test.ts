import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { leaseIndex } from '../../src/lease/index-cache.js';
import { LeaseManager } from '../../src/lease/manager.js';
import type { MemoryStore } from '../../src/store/memory.js';
import type { Store, WatchEvent } from '../../src/store/types.js';
import { makeNetwork, memoryCluster, pump, quiet } from '../helpers/lease-fakes.js';

/** A store handle whose watches deliver their first resync and then nothing: a lease index that never catches up. */
function staleWatches(store: MemoryStore): Store {
  return new Proxy(store, {
    get(target, prop, receiver) {
      if (prop === 'watch') {
        return (prefix: string, onEvent: (ev: WatchEvent) => void) =>
          target.watch(prefix, (ev) => {
            if (ev.type === 'resync') onEvent(ev);
          });
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

// Issue 15: acquire finds a free subnet in a watch-fed index instead of listing every lease. The index is a
// hint: with one that never sees a write, every host still gets its own subnet (compare-and-swap decides)
// and a full network is still reported as full (the listing decides).
test('lease index: a stale index never puts two hosts on one subnet, and a full network is still refused', async () => {
  const { clock, admin } = memoryCluster();
  const net = await makeNetwork(admin, 6);
  const store = staleWatches(admin);
  // the index's first read happens before any lease exists: it believes every subnet stays free
  const idx = leaseIndex(store, net);
  const done = idx.use();
  await idx.whenReady(1000);
  assert.equal(idx.ready, true);
  const mgr = (i: number) => new LeaseManager(store, net, { hostId: `h${i}`, log: quiet, clock });
  const leases = [];
  for (let i = 0; i < 6; i++) leases.push(await pump(clock, mgr(i).acquire({ publicIp: `192.168.9.${i + 1}` })));
  assert.equal(new Set(leases.map((l) => l.subnet)).size, 6, 'six hosts, six subnets');
  assert.equal(idx.taken(leases[0]!.subnet), false, 'the index really is stale');
  await assert.rejects(pump(clock, mgr(6).acquire({ publicIp: '192.168.9.7' })), /is full: all 6 \/24 subnets are taken/);
  // a host that comes back gets its own subnet again (its record: the listing path)
  const again = await pump(clock, mgr(2).acquire({ publicIp: '192.168.9.3' }));
  assert.equal(again.subnet, leases[2]!.subnet);
  done();
  idx.close();
});

test('lease index: follows puts and deletes of lease keys', async () => {
  const { clock, admin } = memoryCluster();
  const net = await makeNetwork(admin, 4);
  const idx = leaseIndex(admin, net);
  const done = idx.use();
  await idx.whenReady(1000);
  const m = new LeaseManager(admin, net, { hostId: 'ha', log: quiet, clock });
  const l = await pump(clock, m.acquire({ publicIp: '192.168.8.1' }));
  await new Promise((r) => setImmediate(r));
  assert.equal(idx.taken(l.subnet), true);
  assert.deepEqual(idx.subnetsNaming('192.168.8.1'), [l.subnet]);
  await m.release();
  await new Promise((r) => setImmediate(r));
  assert.equal(idx.taken(l.subnet), false);
  assert.deepEqual(idx.subnetsNaming('192.168.8.1'), []);
  done();
  idx.close();
});
