import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import type { NetworkStatus } from '../../src/agent/types.js';
import { readEndpointRecords } from '../../src/doctor/endpoints.js';
import { judge } from '../../src/doctor/judge.js';
import type { DoctorFacts, Finding } from '../../src/doctor/types.js';
import { Ipam } from '../../src/ipam/ipam.js';
import { networkKeys } from '../../src/store/layout.js';
import { MemoryStore } from '../../src/store/memory.js';

/**
 * Doctor compares this host's endpoint records and IPAM records with the interfaces present (issue 8 item
 * 7: "doctor reports any difference"), on facts recorded on test-bed host h1 (2 hosts, l2, 1 container
 * each) by gatherFacts, then one difference at a time; and the gathering half on the in-memory store.
 */

const FACTS = JSON.parse(readFileSync(new URL('../../../test/fixtures/doctor-facts-l2.json', import.meta.url), 'utf8')) as DoctorFacts;
const facts = () => structuredClone(FACTS);
const failing = (f: DoctorFacts): Finding[] => judge(f).filter((x) => !x.ok);
const net = (f: DoctorFacts) => f.endpointRecords!.networks[0]!;
const PORT = 'vwe5a345b2';
const vethOn = (ifname: string, master?: string) => ({ ifname, ifindex: 99, mtu: 1450, address: '02:00:00:00:00:09', flags: ['BROADCAST', 'UP', 'LOWER_UP'], ...(master ? { master } : {}), linkinfo: { info_kind: 'veth' }, addr_info: [] });

test('the recorded host: records, interfaces and addresses agree (one ok finding)', () => {
  const f = facts();
  assert.deepEqual(net(f).records.map((r) => [r.container, r.address, r.hostIf]), [['wt-h1-c1', '10.77.0.2/16', PORT]]);
  assert.deepEqual(failing(f), []);
  const e = judge(f).find((x) => x.check === 'endpoints');
  assert.equal(e?.message, '1 endpoint record, their interfaces and 1 allocated address agree');
});

test('a record with no interface: an error naming the container, its address and the missing port', () => {
  const f = facts();
  f.links = f.links.filter((l) => l.ifname !== PORT);
  const bad = failing(f);
  assert.equal(bad.length, 1, bad.map((b) => b.message).join('\n'));
  assert.equal(bad[0]!.check, `endpoint:e2e:${PORT}`);
  assert.equal(bad[0]!.severity, 'error');
  assert.equal(bad[0]!.message, `container wt-h1-c1 (10.77.0.2/16) of e2e has an endpoint record but no interface ${PORT} on this host: it is cut off, and its address stays taken`);
  assert.match(bad[0]!.fix!, /weft attach wt-h1-c1 --network e2e/);
});

test('a record whose port is off the bridge: an error with the fix', () => {
  const f = facts();
  delete f.links.find((l) => l.ifname === PORT)!.master;
  const bad = failing(f);
  assert.deepEqual(bad.map((b) => [b.check, b.message, b.fix]), [[`endpoint:e2e:${PORT}`, `container wt-h1-c1 (10.77.0.2/16) of e2e: its port ${PORT} is on no bridge, not on weft0: it is cut off`, `ip link set ${PORT} master weft0`]]);
});

test('a weft port with no record: a warning naming it (on the bridge, or on no bridge); ports on foreign bridges are not weft\'s', () => {
  const f = facts();
  f.links.push(vethOn('vw0123abcd', 'weft0'), vethOn('vw99887766'), vethOn('vwfeedbeef', 'docker0'));
  const bad = failing(f);
  assert.deepEqual(
    bad.map((b) => [b.check, b.severity, b.message]),
    [
      ['port:vw0123abcd', 'warn', 'interface vw0123abcd on weft0 is a weft container port but no endpoint record names it: leaked by an interrupted attach or detach'],
      ['port:vw99887766', 'warn', 'interface vw99887766 is a weft container port but no endpoint record names it: leaked by an interrupted attach or detach'],
    ],
  );
  assert.equal(bad[0]!.fix, 'ip link del vw0123abcd   (the agent also removes it at its next reconcile)');
});

test('an IPAM address with no endpoint: a warning naming address and owner; Docker/CNI addresses and held addresses are not', () => {
  const f = facts();
  net(f).addresses.push({ address: '10.77.0.9', owner: 'netns:gone' }, { address: '10.77.0.10', owner: 'docker:0123456789ab:aabbccddeeff' }, { address: '10.77.0.2', owner: 'pid:4242' });
  const bad = failing(f);
  assert.deepEqual(bad.map((b) => [b.check, b.severity, b.message]), [['ipam:e2e:10.77.0.9', 'warn', 'address 10.77.0.9 of e2e is allocated to netns:gone but no endpoint record has it: leaked (no container on this host uses it)']]);
});

test('every kind of difference at once: each is named', () => {
  const f = facts();
  f.links = f.links.filter((l) => l.ifname !== PORT);
  f.links.push(vethOn('vw0123abcd', 'weft0'));
  net(f).addresses.push({ address: '10.77.0.9', owner: 'pid:77' });
  assert.deepEqual(failing(f).map((b) => b.check).sort(), [`endpoint:e2e:${PORT}`, 'ipam:e2e:10.77.0.9', 'port:vw0123abcd']);
  assert.ok(!judge(f).some((x) => x.check === 'endpoints' && x.ok));
});

test('endpoint records unreadable: a warning; no store or no agent: no endpoint findings', () => {
  const f = facts();
  f.endpointRecords = { error: 'cannot read this host\'s endpoint records: boom', networks: [] };
  assert.deepEqual(failing(f).map((b) => [b.check, b.message]), [['endpoints', "endpoint records not compared with the kernel: cannot read this host's endpoint records: boom"]]);
  const g = facts();
  delete g.endpointRecords;
  assert.ok(!judge(g).some((x) => x.check === 'endpoints' || x.check.startsWith('port:')));
});

test('gathering (in-memory store): only this host\'s records, and in a shared pool only this host\'s addresses', async () => {
  const store = new MemoryStore();
  const ipam = new Ipam(store);
  const l2: NetworkStatus = { name: 'a', subnet: '10.9.3.0/24', backend: 'l2', bridge: 'weft0', mtu: 1450, peers: [] };
  const vx: NetworkStatus = { name: 'b', subnet: '10.8.3.0/24', backend: 'vxlan', bridge: 'weft1', mtu: 1450, peers: [] };
  await ipam.allocate({ network: 'a', subnet: '10.9.0.0/16', owner: 'netns:x', host: 'h1' });
  await ipam.allocate({ network: 'a', subnet: '10.9.0.0/16', owner: 'netns:x', host: 'h2' });
  await ipam.allocate({ network: 'b', subnet: '10.8.3.0/24', owner: 'netns:y' }); // a record from before hosts were recorded
  const rec = (network: string, host: string, id: string, address: string) =>
    store.put(networkKeys(store, network).endpoint(host, id), JSON.stringify({ id, container: id, network, hostId: host, ifname: 'eth0', hostIf: `vw${id}`, address, mac: '', owner: `netns:${id}` }));
  await rec('a', 'h1', 'aaaa0001', '10.9.0.2/16');
  await rec('a', 'h2', 'aaaa0002', '10.9.0.3/16');
  await rec('b', 'h1', 'bbbb0001', '10.8.3.2/24');
  await store.put(networkKeys(store, 'b').endpoint('h1', 'junk'), 'not json');
  const stored = [
    { name: 'a', cidr: '10.9.0.0/16', backend: { Type: 'l2' }, leases: [] },
    { name: 'b', cidr: '10.8.0.0/16', backend: { Type: 'vxlan' }, leases: [] },
  ];
  const got = await readEndpointRecords(store, 'h1', '192.168.1.1', [l2, vx], stored);
  assert.deepEqual(got, [
    { network: 'a', pool: '10.9.0.0/16', records: [{ container: 'aaaa0001', address: '10.9.0.2/16', hostIf: 'vwaaaa0001', ifname: 'eth0', owner: 'netns:aaaa0001' }], addresses: [{ address: '10.9.0.2', owner: 'netns:x' }] },
    { network: 'b', pool: '10.8.3.0/24', records: [{ container: 'bbbb0001', address: '10.8.3.2/24', hostIf: 'vwbbbb0001', ifname: 'eth0', owner: 'netns:bbbb0001' }], addresses: [{ address: '10.8.3.2', owner: 'netns:y' }] },
  ]);
});
