import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentDockerOps, type AgentLike, type RunnerLike } from '../../src/adapters/docker/agent-ops.js';
import type { AddressPlan } from '../../src/backends/types.js';
import { Ipam } from '../../src/ipam/ipam.js';
import { MemoryBackend, MemoryStore } from '../../src/store/memory.js';
import { FakeClock } from '../../src/util/clock.js';

/**
 * docker0 mode (`weft docker-opts`) narrows where this host's containers take addresses to the lower half of
 * the lease, Docker's own IPAM having the upper half (--fixed-cidr). An allocation that read the wide range
 * just before the switch must not keep an address in Docker's half (memory store, fake clock).
 */

const LEASE = '10.9.4.0/24';

function fakeAgent(store: MemoryStore, runner: RunnerLike): AgentLike {
  return { store, hostId: 'me', runners: new Map([['n1', runner]]), failed: new Map(), join: async () => runner };
}

test("an address allocated while docker0 mode began is not kept in Docker's half: the Docker plugin's allocation takes one below it", async () => {
  const store = new MemoryStore({ backend: new MemoryBackend({ clock: new FakeClock() }) });
  let docker0 = false;
  const plan = (): AddressPlan => ({ pool: LEASE, gateway: '10.9.4.1', ...(docker0 ? { last: '10.9.4.127' } : {}) });
  const runner = { name: 'n1', lease: { subnet: LEASE }, gateway: '10.9.4.1', bridge: 'weft0', backend: { mtu: 1450 }, module: {}, get plan() { return plan(); } } as unknown as RunnerLike;
  const ipam = new Ipam(store);
  // the lower half is full but for .100, which a detach frees below
  for (let i = 2; i <= 127; i++) await ipam.allocate({ network: 'n1', subnet: LEASE, owner: `netns:c${i}`, address: `10.9.4.${i}`, host: 'me' });
  await ipam.release({ network: 'n1', subnet: LEASE, owner: 'netns:c100' });
  await ipam.allocate({ network: 'n1', subnet: LEASE, owner: 'netns:hold', address: '10.9.4.100', host: 'me' });
  // `weft docker-opts` switches while the allocation is between reading the records and writing its own
  const cas = store.compareAndSwap.bind(store);
  let switched = false;
  store.compareAndSwap = async (key, rev, value, opts) => {
    if (!switched && key.endsWith('/10.9.4.128')) {
      switched = true;
      docker0 = true;
      await ipam.release({ network: 'n1', subnet: LEASE, owner: 'netns:hold' });
    }
    return cas(key, rev, value, opts);
  };
  const ops = new AgentDockerOps(fakeAgent(store, runner));
  const got = await ops.allocateAddress('n1', { owner: 'docker:n1:x' });
  assert.ok(switched, 'the switch happened during the allocation');
  assert.equal(got, '10.9.4.100/24', "the address is in weft's lower half");
  const held = (await ipam.list({ network: 'n1', subnet: LEASE })).filter((a) => Number(a.address.split('.')[3]) >= 128);
  assert.deepEqual(held, [], "nothing left allocated in Docker's half");
  // a static address in Docker's half is refused once docker0 mode is on
  await assert.rejects(ops.allocateAddress('n1', { owner: 'docker:n1:y', address: '10.9.4.200' }), /requested address 10\.9\.4\.200 is outside this host's range of 10\.9\.4\.0\/24 \(10\.9\.4\.1–10\.9\.4\.127\)/);
  store.close();
});
