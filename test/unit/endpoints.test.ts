import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Endpoints, type NetworkDirectory } from '../../src/agent/endpoints.js';
import type { NetworkRunner } from '../../src/agent/network-runner.js';
import { registerEndpointDriver } from '../../src/backends/endpoints/registry.js';
import type { EndpointDriver, EndpointRef, JoinSpec } from '../../src/backends/endpoints/types.js';
import type { AddressPlan } from '../../src/backends/types.js';
import { Ipam } from '../../src/ipam/ipam.js';
import { networkKeys } from '../../src/store/layout.js';
import { MemoryStore } from '../../src/store/memory.js';
import { WeftError } from '../../src/util/errors.js';

/**
 * Endpoints (src/agent/endpoints.ts) on the in-memory store with a fake endpoint driver: no kernel, no root.
 * Attach is idempotent and serialised per container (other containers run alongside), a failed join
 * undoes its address, and readdress moves every container into the new pool after a lease change.
 */

/** A driver that keeps "interfaces" in a set; join can be held open by a gate to interleave calls. */
class FakeDriver implements EndpointDriver {
  readonly name: string;
  readonly present = new Map<string, JoinSpec>();
  readonly joins: JoinSpec[] = [];
  readonly leaves: EndpointRef[] = [];
  inFlight = new Map<string, number>();
  maxPerContainer = 0;
  maxOverall = 0;
  gate?: Promise<void>;
  failNext?: Error;

  constructor(name: string) {
    this.name = name;
  }

  async join(s: JoinSpec): Promise<{ mac: string }> {
    this.joins.push(s);
    const n = (this.inFlight.get(s.hostIf) ?? 0) + 1;
    this.inFlight.set(s.hostIf, n);
    this.maxPerContainer = Math.max(this.maxPerContainer, n);
    this.maxOverall = Math.max(this.maxOverall, [...this.inFlight.values()].reduce((a, b) => a + b, 0));
    try {
      await (this.gate ?? new Promise((r) => setTimeout(r, 5)));
      if (this.failNext) {
        const e = this.failNext;
        this.failNext = undefined;
        throw e;
      }
      this.present.set(s.hostIf, s);
      return { mac: s.mac };
    } finally {
      this.inFlight.set(s.hostIf, this.inFlight.get(s.hostIf)! - 1);
    }
  }
  async prepare(): Promise<never> {
    throw new Error('not used');
  }
  async leave(ep: EndpointRef): Promise<boolean> {
    this.leaves.push(ep);
    return this.present.delete(ep.hostIf);
  }
  async exists(ep: EndpointRef): Promise<boolean> {
    return this.present.has(ep.hostIf);
  }
}

let seq = 0;
function setup(plan: AddressPlan = { pool: '10.9.1.0/24', gateway: '10.9.1.1' }) {
  const driver = new FakeDriver(`fake-unit-${++seq}`);
  registerEndpointDriver(driver);
  const store = new MemoryStore();
  const net = {
    name: 'n1',
    plan,
    module: { endpointDriver: driver.name },
    backend: { mtu: 1450 },
    bridge: 'weft0',
    config: { Network: '10.9.0.0/16', Backend: { Type: 'vxlan' } },
  };
  const dir: NetworkDirectory = { get: () => net as unknown as NetworkRunner, all: () => [net as unknown as NetworkRunner] };
  // containers are named namespaces that need not exist: a resolver after the built-in one (which finds none)
  const eps = new Endpoints(store, 'h1', dir, [async (c) => ({ netns: { name: c }, key: `netns:${c}` })]);
  const ipam = new Ipam(store);
  const records = async () => (await store.list(networkKeys(store, 'n1').endpointsPrefix('h1'))).map((e) => JSON.parse(e.value) as { container: string; address: string; ifname: string; hostIf: string });
  const addresses = async (pool = net.plan.pool) => (await ipam.list({ network: 'n1', subnet: pool })).map((a) => `${a.owner} ${a.address}`);
  return { driver, store, net, eps, records, addresses };
}

const C1 = 'weft-unit-no-such-ns-c1';
const C2 = 'weft-unit-no-such-ns-c2';

test('attach is idempotent: the same endpoint again, one interface, one record, one address', async () => {
  const { driver, eps, records, addresses } = setup();
  const a = await eps.attach({ container: C1 });
  assert.equal(a.address, '10.9.1.2/24');
  assert.equal(a.gateway, '10.9.1.1');
  assert.equal(a.ifname, 'eth0');
  const b = await eps.attach({ container: C1 });
  assert.deepEqual(b, a);
  // asking for the address it has is the same attach; another address is refused
  assert.deepEqual(await eps.attach({ container: C1, address: '10.9.1.2' }), a);
  await assert.rejects(eps.attach({ container: C1, address: '10.9.1.9' }), (e: unknown) => e instanceof WeftError && /already attached to n1 with 10\.9\.1\.2\/24; detach it first/.test(e.message));
  assert.equal(driver.joins.length, 1);
  assert.equal((await records()).length, 1);
  assert.deepEqual(await addresses(), [`netns:${C1} 10.9.1.2`]);
});

test('concurrent attaches of one container are serialised: one join, every call gets the same endpoint', async () => {
  const { driver, eps, records, addresses } = setup();
  const all = await Promise.all(Array.from({ length: 6 }, () => eps.attach({ container: C1 })));
  for (const e of all) assert.deepEqual(e, all[0], 'one endpoint');
  assert.equal(driver.joins.length, 1, 'one interface made');
  assert.equal(driver.maxPerContainer, 1);
  assert.equal(driver.leaves.length, 0, 'no call tore down another call\'s work');
  assert.equal((await records()).length, 1);
  assert.deepEqual(await addresses(), [`netns:${C1} 10.9.1.2`]);
});

test('the lock is per container: two containers attach at the same time, with distinct addresses', async () => {
  const { driver, eps, addresses } = setup();
  let open!: () => void;
  driver.gate = new Promise<void>((r) => (open = r));
  const both = Promise.all([eps.attach({ container: C1 }), eps.attach({ container: C2 })]);
  // both joins get under way while the gate is shut: neither waits for the other
  for (let i = 0; i < 100 && driver.joins.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(driver.joins.length, 2, 'both joins started before either finished');
  open();
  const [a, b] = await both;
  assert.equal(driver.maxOverall, 2);
  assert.notEqual(a.address, b.address);
  assert.equal((await addresses()).length, 2);
});

test('a record whose interface is gone: attach re-creates it with the same address', async () => {
  const { driver, eps, records } = setup();
  const a = await eps.attach({ container: C1 });
  driver.present.clear(); // deleted by hand, or lost in a crash
  const b = await eps.attach({ container: C1 });
  assert.equal(b.address, a.address);
  assert.equal(driver.joins.length, 2);
  assert.ok(driver.present.has(a.hostIf));
  assert.equal((await records()).length, 1);
});

test('a failed join leaves nothing: no record, the address released', async () => {
  const { driver, eps, records, addresses } = setup();
  driver.failNext = new Error('kernel says no');
  await assert.rejects(eps.attach({ container: C1 }), /kernel says no/);
  assert.deepEqual(await records(), []);
  assert.deepEqual(await addresses(), []);
  // and the next attach works
  assert.equal((await eps.attach({ container: C1 })).address, '10.9.1.2/24');
});

test('readdress after a lease change: every container leaves the old subnet and gets an address in the new one', async () => {
  const { driver, store, net, eps, records, addresses } = setup();
  const a = await eps.attach({ container: C1 });
  const b = await eps.attach({ container: C2, ifname: 'ethwe0' });
  // a record whose owner is no namespace weft can reach again (Docker's): removed, not re-made
  await store.put(networkKeys(store, 'n1').endpoint('h1', 'dockerep0001'), JSON.stringify({ id: 'dockerep0001', container: 'dc', network: 'n1', hostId: 'h1', ifname: 'eth0', hostIf: 'vwdead0001', address: '10.9.1.50/24', mac: '', owner: 'docker:0123456789ab' }));
  const oldPool = net.plan.pool;
  net.plan = { pool: '10.9.7.0/24', gateway: '10.9.7.1' }; // the renewal returned another subnet
  await eps.readdress(net as unknown as NetworkRunner, oldPool);

  const now = (await records()).sort((x, y) => x.container.localeCompare(y.container));
  assert.deepEqual(now.map((r) => [r.container, r.address, r.ifname]), [
    [C1, '10.9.7.2/24', 'eth0'],
    [C2, '10.9.7.3/24', 'ethwe0'],
  ]);
  assert.deepEqual(await addresses(oldPool), [], 'the old pool holds nothing');
  assert.deepEqual((await addresses()).sort(), [`netns:${C1} 10.9.7.2`, `netns:${C2} 10.9.7.3`]);
  // the old interfaces were left, new ones made with the new gateway
  assert.deepEqual(driver.leaves.map((l) => l.hostIf).sort(), [a.hostIf, b.hostIf, 'vwdead0001'].sort());
  assert.deepEqual(driver.joins.slice(2).map((j) => [j.address, j.gateway]).sort(), [['10.9.7.2/24', '10.9.7.1'], ['10.9.7.3/24', '10.9.7.1']]);
  // and attach now answers the new address
  assert.equal((await eps.attach({ container: C1 })).address, '10.9.7.2/24');
});

test('detach removes interface, address and record; a second detach says it is not attached', async () => {
  const { driver, eps, records, addresses } = setup();
  const a = await eps.attach({ container: C1 });
  const out = await eps.detach({ container: C1 });
  assert.deepEqual(out.map((e) => e.address), [a.address]);
  assert.equal(driver.present.size, 0);
  assert.deepEqual(await records(), []);
  assert.deepEqual(await addresses(), []);
  await assert.rejects(eps.detach({ container: C1 }), /is not attached on this host/);
});
