import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { neighDevices } from '../../src/doctor/gather.js';
import { judge } from '../../src/doctor/judge.js';
import type { DoctorFacts } from '../../src/doctor/types.js';

/**
 * Doctor on an l2 network: which devices gatherFacts reads neighbours/FDB of (each network's backend
 * module names them, l2's is wl2.<VNI>), and the judging of facts recorded on test-bed host h1 (2 hosts,
 * l2, 1 container each) by gatherFacts.
 */

const load = (name: string) => JSON.parse(readFileSync(new URL(`../../../test/fixtures/${name}`, import.meta.url), 'utf8')) as DoctorFacts;
const L2 = load('doctor-facts-l2.json');
const VXLAN = load('doctor-facts-vxlan.json');
const l2 = () => structuredClone(L2);
const PEER_IP = L2.agent.status!.networks[0]!.peers[0]!.publicIp;

test('gather reads the FDB of the devices the backend modules name: l2 wl2.1, vxlan weft.1', () => {
  assert.deepEqual(neighDevices(l2()), ['wl2.1']);
  assert.deepEqual(neighDevices(structuredClone(VXLAN)), ['weft.1']);
  // from the store's config alone (the agent's status names no device) …
  const f = l2();
  delete f.agent.status!.networks[0]!.status;
  assert.deepEqual(neighDevices(f), ['wl2.1']);
  // … and from the agent's status alone (no store here): the module's default device
  delete f.store;
  assert.deepEqual(neighDevices(f), ['wl2.1']);
  // a device the host does not have is not read; gre (no VXLAN device) names none
  const g = l2();
  g.links = g.links.filter((l) => l.ifname !== 'wl2.1');
  assert.deepEqual(neighDevices(g), []);
  const gre = l2();
  gre.store!.networks[0]!.backend = { ...gre.store!.networks[0]!.backend, Encap: 'gre' };
  delete gre.agent.status!.networks[0]!.status;
  assert.deepEqual(neighDevices(gre), []);
});

test('the recorded l2 host is healthy: the flood entry for the peer is found on wl2.1', () => {
  const out = judge(l2());
  assert.deepEqual(out.filter((x) => !x.ok), []);
  assert.ok(out.some((x) => x.check === `peer:e2e:${PEER_IP}` && x.ok && /flood entry in place/.test(x.message)), out.map((x) => x.message).join('\n'));
  assert.ok(out.some((x) => x.check === 'l2:wl2.1' && x.ok));
});

test('l2 with the flood entry gone: one error naming the peer and the fix', () => {
  const f = l2();
  f.fdb['wl2.1'] = f.fdb['wl2.1']!.filter((e) => e.mac !== '00:00:00:00:00:00');
  const bad = judge(f).filter((x) => !x.ok);
  assert.equal(bad.length, 1, bad.map((b) => b.message).join('\n'));
  assert.equal(bad[0]!.severity, 'error');
  assert.match(bad[0]!.message, new RegExp(`no flood entry for peer h2 \\(${PEER_IP.replace(/\./g, '\\.')}\\) on wl2\\.1`));
  assert.equal(bad[0]!.fix, `bridge fdb append 00:00:00:00:00:00 dev wl2.1 dst ${PEER_IP} self permanent`);
});

test('l2: the bridge carries the network\'s gateway (its first address, with the network\'s prefix), not a per-lease one', () => {
  const f = l2();
  const br = f.links.find((l) => l.ifname === 'weft0')!;
  assert.ok(br.addr_info?.some((a) => `${a.local}/${a.prefixlen}` === '10.77.0.1/16'));
  br.addr_info = [];
  const bad = judge(f).filter((x) => !x.ok);
  assert.deepEqual(bad.map((b) => b.message), ['bridge weft0 lacks the gateway address 10.77.0.1/16: containers of e2e have no way out']);
});
