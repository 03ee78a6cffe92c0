/**
 * LeaseManager and watchLeases on the in-memory store with a fake clock: TTLs, grace periods and renewals
 * run in simulated time, so these need no server and no sleeps. Store-specific cases (real concurrency,
 * refresh on sqlite/etcd, flannel's JSON on a real etcd) are in test/lease-manager.test.ts and
 * test/lease-flannel-e2e.test.ts.
 */
import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Ipam } from '../../src/ipam/ipam.js';
import { hostRecordToJson, leaseToJson } from '../../src/lease/codec.js';
import { listLeases, watchLeases, type LeaseChange } from '../../src/lease/leases.js';
import { LeaseManager, type LeaseManagerOptions } from '../../src/lease/manager.js';
import { removeNetwork } from '../../src/lease/remove-network.js';
import type { Lease } from '../../src/lease/types.js';
import { networkKeys } from '../../src/store/layout.js';
import type { MemoryStore } from '../../src/store/memory.js';
import type { WatchEvent } from '../../src/store/types.js';
import { captureLog, makeNetwork, memoryCluster, pump, quiet } from '../helpers/lease-fakes.js';

const HOUR = 3600_000;

function setup() {
  const c = memoryCluster();
  const mgr = (store: MemoryStore, net: string, hostId: string, opts: Partial<LeaseManagerOptions> = {}) =>
    new LeaseManager(store, net, { hostId, log: quiet, clock: c.clock, ...opts });
  const keyOf = (net: string, subnet: string) => networkKeys(c.admin, net).subnet(subnet);
  return { ...c, mgr, keyOf };
}

const vx = (i: number) => ({ VNI: 1, VtepMAC: `02:00:00:00:00:${i.toString(16).padStart(2, '0')}` });

describe('LeaseManager (memory store, fake clock)', () => {
  test('20 concurrent acquirers on separate store handles get 20 distinct subnets', async () => {
    const { clock, admin, open, mgr } = setup();
    const net = await makeNetwork(admin, 24);
    const leases = await pump(
      clock,
      Promise.all(Array.from({ length: 20 }, (_, i) => mgr(open(), net, `host-${i}`).acquire({ publicIp: `192.168.1.${i + 1}`, backendData: vx(i) }))),
    );
    assert.equal(new Set(leases.map((l) => l.subnet)).size, 20);
    const listed = await listLeases(admin, net);
    assert.equal(listed.length, 20);
    for (const l of leases) assert.equal(listed.find((x) => x.subnet === l.subnet)?.hostId, l.hostId);
  });

  test('a restarting host gets its lease back: live, after its TTL (in grace), and after the grace period', async () => {
    const { clock, admin, open, mgr, keyOf } = setup();
    const net = await makeNetwork(admin, 50);
    const req = { publicIp: '192.168.2.1', backendData: vx(1) };
    const first = await mgr(open(), net, 'stable', { ttlSeconds: 60, graceSeconds: 600 }).acquire(req);
    assert.equal((await mgr(open(), net, 'stable').acquire(req)).subnet, first.subnet, 'live');
    assert.equal((await listLeases(admin, net)).length, 1);
    const short = mgr(open(), net, 'stable', { ttlSeconds: 60, graceSeconds: 600 });
    await short.acquire(req);
    await clock.advance(61_000); // past the TTL: the key stays for the grace period
    assert.ok(await admin.get(keyOf(net, first.subnet)), 'the key is kept during the grace period');
    assert.equal((await mgr(open(), net, 'stable', { ttlSeconds: 60, graceSeconds: 600 }).acquire(req)).subnet, first.subnet, 'in grace');
    await clock.advance(661_000);
    assert.equal(await admin.get(keyOf(net, first.subnet)), undefined, 'gone after ttl + grace');
    const back = await mgr(open(), net, 'stable').acquire({ publicIp: '192.168.2.9' });
    assert.equal(back.subnet, first.subnet, 'the record names it and nobody took it');
    assert.equal(back.publicIp, '192.168.2.9');
  });

  test('an agent restart (new store handle, same host id) gets the same lease and the same IPs', async () => {
    const { admin, open, mgr } = setup();
    const net = await makeNetwork(admin, 30);
    const boot = async () => {
      const store = open();
      const lease = await mgr(store, net, 'restarter').acquire({ publicIp: '192.168.8.1', backendData: vx(8) });
      const ipam = new Ipam(store);
      const ips = [];
      for (const owner of ['ctr-a', 'ctr-b', 'ctr-c']) ips.push((await ipam.allocate({ network: net, subnet: lease.subnet, owner })).cidr);
      return { store, lease, ips };
    };
    const first = await boot();
    await first.store.close();
    const second = await boot();
    assert.equal(second.lease.subnet, first.lease.subnet);
    assert.deepEqual(second.ips, first.ips);
    assert.equal(new Set(first.ips).size, 3);
  });

  test('start() renews with Store.refresh: the lease outlives many TTLs with no write and no watch event', async () => {
    const { clock, admin, open, mgr, keyOf } = setup();
    const net = await makeNetwork(admin, 4);
    const m = mgr(open(), net, 'renewer', { ttlSeconds: 30, graceSeconds: 10 });
    const lease = await m.acquire({ publicIp: '192.168.3.1' });
    const before = await admin.get(keyOf(net, lease.subnet));
    const events: WatchEvent[] = [];
    const w = admin.watch(networkKeys(admin, net).root, (ev) => events.push(ev));
    m.start();
    await clock.advance(10 * 60_000); // 20 TTLs
    await m.stop();
    w.close();
    const after = await admin.get(keyOf(net, lease.subnet));
    assert.ok(after, 'still live');
    assert.equal(after.revision, before!.revision, 'renewals did not rewrite the key');
    assert.equal(after.value, before!.value, 'the flannel value is unchanged');
    assert.deepEqual(events.map((e) => e.type), ['resync'], 'renewals woke no watcher');
    assert.ok(await admin.get(networkKeys(admin, net).host('renewer')), 'host record kept alive too');
    await m.release();
    assert.equal(await admin.get(keyOf(net, lease.subnet)), undefined);
    assert.equal(await admin.get(networkKeys(admin, net).host('renewer')), undefined);
  });

  test('renew falls back to a full acquire when the key changed under it', async () => {
    const { admin, open, mgr, keyOf } = setup();
    const net = await makeNetwork(admin, 4);
    const m = mgr(open(), net, 'r2');
    const lease = await m.acquire({ publicIp: '192.168.3.2' });
    await admin.delete(keyOf(net, lease.subnet)); // e.g. an operator deleted it
    const renewed = await m.renew();
    assert.equal(renewed.subnet, lease.subnet, 'taken back from the record');
    assert.ok(await admin.get(keyOf(net, lease.subnet)));
  });

  test('the grace period is visible to every client: the key stays, a flannel-like create fails, weft hosts are refused', async () => {
    const { clock, admin, open, mgr, keyOf } = setup();
    const net = await makeNetwork(admin, 1);
    const a = await mgr(open(), net, 'host-a', { ttlSeconds: 60, graceSeconds: 3600 }).acquire({ publicIp: '192.168.4.1' });
    await clock.advance(2 * 60_000); // host-a is gone, its TTL ran out
    assert.equal(await admin.compareAndSwap(keyOf(net, a.subnet), 0, leaseToJson({ publicIp: '192.168.4.99', backendType: 'vxlan', backendData: {} })), undefined);
    await assert.rejects(mgr(open(), net, 'host-b').acquire({ publicIp: '192.168.4.2' }), (err: Error) => {
      assert.match(err.message, new RegExp(`network "${net}" .* is full: all 1 /24 subnet are taken`));
      assert.match(err.message, /grace period: 10\.\d+\.0\.0\/24 by 192\.168\.4\.1 \(host-a\)/);
      return true;
    });
    await clock.advance(HOUR);
    const b = await mgr(open(), net, 'host-b').acquire({ publicIp: '192.168.4.2' });
    assert.equal(b.subnet, a.subnet, 'free after the grace period');
    // `weft reset` on the long-gone host-a must not free what host-b holds now
    await mgr(open(), net, 'host-a').release();
    assert.deepEqual((await listLeases(admin, net)).map((l) => [l.hostId, l.subnet]), [['host-b', a.subnet]]);
  });

  test('issue 9: a returning host never overwrites a live lease a flannel-like client wrote on its old subnet', async () => {
    const { clock, admin, open, mgr, keyOf } = setup();
    const net = await makeNetwork(admin, 2);
    const w = await mgr(open(), net, 'w', { ttlSeconds: 6, graceSeconds: 0.001 }).acquire({ publicIp: '192.168.9.1' });
    await clock.advance(7_000);
    assert.equal(await admin.get(keyOf(net, w.subnet)), undefined);
    const flannelValue = '{"PublicIP":"192.168.9.50","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:0b:0c:0d:0e:0f"}}';
    assert.ok(await admin.compareAndSwap(keyOf(net, w.subnet), 0, flannelValue, { ttlSeconds: 3600 }));
    const cap = captureLog();
    const again = await mgr(open(), net, 'w', { log: cap.log }).acquire({ publicIp: '192.168.9.1' });
    assert.notEqual(again.subnet, w.subnet);
    assert.equal((await admin.get(keyOf(net, w.subnet)))?.value, flannelValue, 'the other host keeps its lease');
    const warn = cap.lines().find((l) => l.level === 40);
    assert.match(warn?.msg ?? '', /not provably this host's \(it names PublicIP 192\.168\.9\.50, this host is 192\.168\.9\.1\)/);
  });

  test('provably ours needs the same PublicIP and backend identity: another VtepMAC on our IP is not overwritten', async () => {
    const { admin, open, mgr, keyOf } = setup();
    const net = await makeNetwork(admin, 3);
    const a = await mgr(open(), net, 'a').acquire({ publicIp: '192.168.10.1', backendData: vx(1) });
    // another host id on the same address with another VTEP: no record of its own names a's subnet
    const other = await mgr(open(), net, 'b').acquire({ publicIp: '192.168.10.1', backendData: vx(2) });
    assert.notEqual(other.subnet, a.subnet);
    assert.match((await admin.get(keyOf(net, a.subnet)))!.value, /02:00:00:00:00:01/);
    const same = await mgr(open(), net, 'b').acquire({ publicIp: '192.168.10.1', backendData: vx(2) });
    assert.equal(same.subnet, other.subnet, 'its own lease (same IP and MAC) is reused');
  });

  test('a rebooted host (same host id and PublicIP, new VtepMAC) keeps its subnet; a new PublicIP does not', async () => {
    const { admin, open, mgr, keyOf } = setup();
    const net = await makeNetwork(admin, 3);
    const a = await mgr(open(), net, 'a').acquire({ publicIp: '192.168.10.1', backendData: vx(1) });
    const rebooted = await mgr(open(), net, 'a').acquire({ publicIp: '192.168.10.1', backendData: vx(9) });
    assert.equal(rebooted.subnet, a.subnet);
    assert.match((await admin.get(keyOf(net, a.subnet)))!.value, /02:00:00:00:00:09/, 'published with the new VtepMAC');
    const moved = await mgr(open(), net, 'a', { log: quiet }).acquire({ publicIp: '192.168.10.77', backendData: vx(9) });
    assert.notEqual(moved.subnet, a.subnet, 'another PublicIP never takes a live lease');
  });

  test('a host moving from flanneld (host-gw, no weft record) reuses the live lease with its PublicIP', async () => {
    const { admin, open, mgr, keyOf } = setup();
    const net = await makeNetwork(admin, 8, { Backend: { Type: 'host-gw' } });
    const subnet = `${(await admin.get(networkKeys(admin, net).config))!.value.match(/"Network":"(10\.\d+)/)![1]}.5.0/24`;
    await admin.put(keyOf(net, subnet), '{"PublicIP":"192.168.11.5","BackendType":"host-gw","BackendData":{}}', { ttlSeconds: 3600 });
    const l = await mgr(open(), net, 'moved').acquire({ publicIp: '192.168.11.5' });
    assert.equal(l.subnet, subnet);
  });

  test('a returning host whose subnet another weft host took gets a new one and says so loudly', async () => {
    const { clock, admin, open, mgr } = setup();
    const net = await makeNetwork(admin, 2);
    const a = await mgr(open(), net, 'host-a', { ttlSeconds: 60, graceSeconds: 1 }).acquire({ publicIp: '192.168.5.1' });
    const c = mgr(open(), net, 'host-c');
    const cLease = await c.acquire({ publicIp: '192.168.5.3' });
    await clock.advance(2 * 60_000);
    const b = await mgr(open(), net, 'host-b').acquire({ publicIp: '192.168.5.2' });
    assert.equal(b.subnet, a.subnet, "b gets the only free subnet: a's");
    await c.release();
    const cap = captureLog();
    const a2 = await mgr(open(), net, 'host-a', { log: cap.log }).acquire({ publicIp: '192.168.5.1' });
    assert.equal(a2.subnet, cLease.subnet);
    assert.match(cap.lines().find((l) => l.level === 40)?.msg ?? '', new RegExp(`SUBNET CHANGED.*${a.subnet.replace(/\./g, '\\.')}`));
    const byHost = Object.fromEntries((await listLeases(admin, net)).map((l) => [l.hostId, l.subnet]));
    assert.deepEqual(byHost, { 'host-a': cLease.subnet, 'host-b': a.subnet });
  });

  test('exhaustion names the network, its size and the holders', async () => {
    const { admin, open, mgr } = setup();
    const net = await makeNetwork(admin, 2);
    await mgr(open(), net, 'h1').acquire({ publicIp: '192.168.6.1' });
    await mgr(open(), net, 'h2').acquire({ publicIp: '192.168.6.2' });
    await assert.rejects(mgr(open(), net, 'h3').acquire({ publicIp: '192.168.6.3' }), (err: Error) => {
      assert.match(err.message, new RegExp(`^network "${net}" \\(10\\.\\d+\\.0\\.0/16\\) is full: all 2 /24 subnets are taken`));
      assert.ok(err.message.includes('(h1)') && err.message.includes('(h2)'), err.message);
      return true;
    });
  });

  test("without SubnetMin the first lease is never the network's first subnet (flannel's default)", async () => {
    const { clock, admin, open, mgr } = setup();
    const { createNetwork } = await import('../../src/config/registry.js');
    await createNetwork(admin, 'small', { Network: '10.250.0.0/22', SubnetLen: 24, Backend: { Type: 'host-gw' } });
    const got = await pump(clock, Promise.all([1, 2, 3].map((i) => mgr(open(), 'small', `s${i}`).acquire({ publicIp: `192.168.12.${i}` }))));
    assert.deepEqual(got.map((l) => l.subnet).sort(), ['10.250.1.0/24', '10.250.2.0/24', '10.250.3.0/24']);
    await assert.rejects(mgr(open(), 'small', 's4').acquire({ publicIp: '192.168.12.4' }), /all 3 \/24 subnets are taken/);
  });

  test('host records expire hostRecordSeconds after lease and grace; a gone host\'s endpoint records are removed', async () => {
    const { clock, admin, open, mgr } = setup();
    const net = await makeNetwork(admin, 4);
    const keys = networkKeys(admin, net);
    await mgr(open(), net, 'gone', { ttlSeconds: 60, graceSeconds: 60, hostRecordSeconds: 600 }).acquire({ publicIp: '192.168.13.1' });
    await admin.put(keys.endpoint('gone', 'ep1'), '{}');
    await clock.advance(700_000);
    assert.ok(await admin.get(keys.host('gone')), 'kept for hostRecordSeconds');
    await clock.advance(30_000);
    assert.equal(await admin.get(keys.host('gone')), undefined, 'expired after ttl + grace + hostRecordSeconds');
    await admin.put(keys.endpoint('alive', 'ep2'), '{}');
    await mgr(open(), net, 'alive').acquire({ publicIp: '192.168.13.2' });
    assert.deepEqual((await admin.list(`${keys.root}endpoints/`)).map((e) => e.key), [keys.endpoint('alive', 'ep2')]);
  });

  test('dual-stack lease keys: read exactly, shown as peers, their IPv4 subnet never leased under the plain key', async () => {
    const { admin, open, mgr } = setup();
    const net = await makeNetwork(admin, 1);
    const n = /10\.(\d+)\./.exec((await admin.get(networkKeys(admin, net).config))!.value)![1];
    const key = `${networkKeys(admin, net).subnetsPrefix}10.${n}.0.0-24&fd57:0:0:17::-64`;
    await admin.put(key, `{"PublicIP":"192.168.14.7","PublicIPv6":"fd00::7","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:07"}}`, { ttlSeconds: 3600 });
    await assert.rejects(mgr(open(), net, 'v4only').acquire({ publicIp: '192.168.14.1' }), /is full/);
    const seen: Lease[][] = [];
    const w = watchLeases(admin, net, (all) => seen.push(all));
    await new Promise((r) => setImmediate(r));
    w.close();
    assert.deepEqual(seen.at(-1), [
      { network: net, subnet: `10.${n}.0.0/24`, subnetV6: 'fd57:0:0:17::/64', publicIp: '192.168.14.7', publicIpV6: 'fd00::7', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:07' }, expiresAt: (await admin.get(key))!.expiresAt },
    ]);
  });
  test('network rm while a holder renews: the lease is not taken again (the config goes first)', async () => {
    const { clock, admin, open, mgr } = setup();
    const net = await makeNetwork(admin, 8);
    const holder = mgr(open(), net, 'busy');
    await holder.acquire({ publicIp: '192.168.9.1', backendData: vx(9) });
    // The holder renews at the worst moments: after each key `network rm` deletes. A renewal that finds its
    // lease gone acquires again, which must fail once the network's config is gone — had the leases gone
    // first, it would take a subnet of a network being removed, and the agent would then keep that network
    // for good (its lease outlives the config).
    const renewals: unknown[] = [];
    const racing = new Proxy(admin, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (prop !== 'delete' || typeof v !== 'function') return typeof v === 'function' ? v.bind(target) : v;
        return async (...args: unknown[]) => {
          const r = await (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          renewals.push(await holder.renew().catch((e: Error) => e));
          return r;
        };
      },
    });
    await pump(clock, removeNetwork(racing, net, { force: true }));
    assert.ok(renewals.length >= 2, 'renewed after each delete');
    assert.ok(renewals.at(-1) instanceof Error, 'the last renewal (lease and config gone) failed');
    assert.deepEqual(await listLeases(admin, net).catch(() => []), [], 'no lease left');
    assert.deepEqual((await admin.list('')).map((e) => e.key).filter((k) => k.includes(net)), [], 'nothing of the network left');
  });
});

describe('watchLeases (memory store)', () => {
  test('full sorted set on every change, with the change; snapshots never change after the call', async () => {
    const { admin, open, mgr } = setup();
    const net = await makeNetwork(admin, 8);
    const calls: Array<{ all: Lease[]; copy: string; change: LeaseChange }> = [];
    const w = mgr(open(), net, 'watcher').watchLeases((all, change) => calls.push({ all, copy: JSON.stringify(all), change }));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(calls.map((c) => c.change.type), ['resync'], 'one call once both prefixes are read');
    assert.deepEqual(calls.at(-1)!.all, []);
    const m = mgr(open(), net, 'w1');
    const l = await m.acquire({ publicIp: '192.168.7.1', backendData: { VtepMAC: 'x' } });
    const m2 = mgr(open(), net, 'w2');
    const l2 = await m2.acquire({ publicIp: '192.168.7.2' });
    await new Promise((r) => setImmediate(r));
    const last = calls.at(-1)!;
    assert.deepEqual(last.all.map((x) => x.subnet), [l.subnet, l2.subnet].sort((a, b) => Number(a.split('.')[2]) - Number(b.split('.')[2])));
    assert.equal(last.all.find((x) => x.subnet === l.subnet)?.hostId, 'w1', 'host id from the record');
    await m.release();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(calls.at(-1)!.all.map((x) => x.hostId), ['w2']);
    const change = calls.at(-1)!.change;
    assert.ok(change.type === 'delete' && change.lease.subnet === l.subnet && change.lease.hostId === 'w1', JSON.stringify(change));
    for (const c of calls) assert.equal(JSON.stringify(c.all), c.copy, 'an emitted array was changed afterwards');
    w.close();
  });

  test('a lease of another BackendType is skipped, with the reason logged once', async () => {
    const { admin, open, mgr, keyOf } = setup();
    const net = await makeNetwork(admin, 8);
    const m = mgr(open(), net, 'me');
    const mine = await m.acquire({ publicIp: '192.168.15.1' });
    const cap = captureLog();
    const other = mine.subnet.replace(/\.(\d+)\.0\//, (_, x) => `.${(Number(x) + 1) % 8}.0/`);
    await admin.put(keyOf(net, other), '{"PublicIP":"192.168.15.9","BackendType":"udp","BackendData":{}}');
    const seen: Lease[][] = [];
    const w = new LeaseManager(open(), net, { hostId: 'me', log: cap.log }).watchLeases((all) => seen.push(all));
    await new Promise((r) => setImmediate(r));
    assert.equal(seen.at(-1)!.length, 2, 'before acquire the network\'s type is not known: nothing is filtered');
    w.close();
    // after acquire the manager knows the network's backend type
    const m2 = new LeaseManager(open(), net, { hostId: 'me', log: cap.log, clock: m.clock });
    await m2.acquire({ publicIp: '192.168.15.1' });
    const seen2: Lease[][] = [];
    const w2 = m2.watchLeases((all) => seen2.push(all));
    await new Promise((r) => setImmediate(r));
    await admin.put(keyOf(net, other), '{"PublicIP":"192.168.15.9","BackendType":"udp","BackendData":{"x":1}}');
    await new Promise((r) => setImmediate(r));
    w2.close();
    assert.deepEqual(seen2.at(-1)!.map((l) => l.subnet), [mine.subnet]);
    const skips = cap.lines().filter((l) => /skipping lease .* BackendType "udp" is not the network's "vxlan"/.test(l.msg));
    assert.equal(skips.length, 1, JSON.stringify(cap.lines()));
  });

  test('a host record arriving after its lease relabels the lease with the holder', async () => {
    const { admin, keyOf } = setup();
    const net = await makeNetwork(admin, 4);
    const keys = networkKeys(admin, net);
    const seen: Lease[][] = [];
    const w = watchLeases(admin, net, (all) => seen.push(all));
    const subnet = `${/10\.(\d+)\./.exec((await admin.get(keys.config))!.value)![0]}1.0/24`;
    await admin.put(keyOf(net, subnet), leaseToJson({ publicIp: '192.168.16.1', backendType: 'vxlan', backendData: {} }));
    await new Promise((r) => setImmediate(r));
    assert.equal(seen.at(-1)![0]!.hostId, undefined);
    await admin.put(keys.host('late'), hostRecordToJson({ hostId: 'late', subnet, publicIp: '192.168.16.1', expiresAt: Date.now() }));
    await new Promise((r) => setImmediate(r));
    assert.equal(seen.at(-1)![0]!.hostId, 'late');
    w.close();
  });
});
