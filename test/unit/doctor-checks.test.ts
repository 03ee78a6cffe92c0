import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { judge } from '../../src/doctor/judge.js';
import type { DoctorFacts, Finding, PathFact } from '../../src/doctor/types.js';

/** The cross-host doctor checks (src/doctor/checks.ts) on recorded facts, one broken thing at a time. */

const FACTS = JSON.parse(readFileSync(new URL('../../../test/fixtures/doctor-facts-vxlan.json', import.meta.url), 'utf8')) as DoctorFacts;
const PEER = '10.77.243.0/24';
const failing = (f: DoctorFacts) => judge(f).filter((x) => !x.ok);
function only(f: DoctorFacts): Finding {
  const bad = failing(f);
  assert.equal(bad.length, 1, `expected one failing finding, got:\n${bad.map((b) => b.message).join('\n')}`);
  return bad[0]!;
}
/** The fixture with the agent's newer status fields (TTL, device) and healthy probes of the peer path. */
function vx(): DoctorFacts {
  const f = structuredClone(FACTS);
  const n = f.agent.status!.networks[0]!;
  n.leaseTtlSeconds = 60;
  n.status = { healthy: true, device: 'weft.1' };
  f.store!.networks[0]!.leases.forEach((l) => (l.expiresAt = f.now + 50_000));
  f.paths = [{ network: 'e2e', backend: 'vxlan', subnet: PEER, hostId: 'h2', publicIp: '192.168.132.12', target: '10.77.243.1', mtu: 1450, underlay: true, small: true, big: true }];
  return f;
}
const path = (f: DoctorFacts): PathFact => f.paths![0]!;

test('the fixture with the new facts is healthy, and the new checks ran', () => {
  const out = judge(vx());
  assert.deepEqual(out.filter((x) => !x.ok), []);
  for (const c of ['store', 'docker-overlap', 'lease-conflict:e2e', 'extra:e2e', `path:e2e:${PEER}`]) assert.ok(out.some((x) => x.check === c && x.ok), `${c} ran`);
});

test('path MTU below the network MTU; peer gone on the underlay; overlay broken', () => {
  const f = vx();
  path(f).big = false;
  const m = only(f);
  assert.equal(m.check, `pmtu:e2e:${PEER}`);
  assert.equal(m.message, "path MTU to peer h2 (192.168.132.12) is below the network's MTU 1450: a 1450-byte packet with DF set does not cross (small ones do), so large packets are dropped");

  const g = vx();
  Object.assign(path(g), { underlay: false, small: false, big: false });
  assert.equal(only(g).message, 'peer h2 (192.168.132.12) does not answer on the underlay: this host cannot reach it at all (host down, cable, firewall)');

  const h = vx();
  Object.assign(path(h), { small: false, big: false });
  assert.match(only(h).message, /^peer h2 \(192\.168\.132\.12\) answers on the underlay, but its gateway 10\.77\.243\.1 does not answer across the vxlan path/);
});

test('leases: own renewal late, a peer not renewing, overlap, PublicIP not its holder', () => {
  const f = vx();
  f.store!.networks[0]!.leases[0]!.expiresAt = f.now + 12_000;
  const own = only(f);
  assert.equal(own.severity, 'warn');
  assert.equal(own.message, 'lease 10.77.172.0/24 of network e2e expires in 12s although it is renewed every 20s: renewals are failing');

  const g = vx();
  g.store!.networks[0]!.leases[1]!.expiresAt = g.now + 3_000;
  assert.equal(only(g).message, "peer h2 (192.168.132.12)'s lease 10.77.243.0/24 expires in 3s: its agent is not renewing it (down or cut off from the store)");

  const h = vx();
  h.store!.networks[0]!.leases.push({ network: 'e2e', subnet: '10.77.172.0/23', publicIp: '192.168.132.13', hostId: 'h3', backendType: 'vxlan', backendData: {}, expiresAt: h.now + 50_000 });
  const o = failing(h).find((x) => x.check.startsWith('lease-conflict:'));
  assert.equal(o?.message, 'leases 10.77.172.0/24 (h1) and 10.77.172.0/23 (h3) of network e2e overlap: two hosts on one subnet');

  const i = vx();
  i.store!.networks[0]!.leases[1]!.publicIp = '192.168.132.11';
  const c = failing(i).find((x) => x.check.startsWith('lease-conflict:'));
  assert.equal(c?.message, "lease 10.77.243.0/24 of network e2e is held by host h2 but its PublicIP 192.168.132.11 is this host's: peers send 10.77.243.0/24 here");

  const j = vx();
  j.store!.networks[0]!.leases[0]!.publicIp = '192.168.132.99';
  assert.ok(failing(j).some((x) => x.message === 'lease 10.77.172.0/24 of network e2e names this host (h1) but PublicIP 192.168.132.99, not 192.168.132.11: peers send its traffic elsewhere'));
});

test('kernel entries no lease explains: route, neighbour, fdb', () => {
  const f = vx();
  f.routes.push({ dst: '10.77.99.0/24', dev: 'weft.1' });
  f.neigh['weft.1']!.push({ dst: '10.77.99.0', lladdr: '02:00:00:00:00:99', state: ['PERMANENT'] });
  f.fdb['weft.1']!.push({ mac: '02:00:00:00:00:99', dst: '192.168.132.99', flags: ['self'], state: 'permanent' });
  const bad = failing(f);
  assert.deepEqual(
    bad.map((b) => [b.check, b.severity]),
    [
      ['extra:e2e:route:10.77.99.0/24', 'warn'],
      ['extra:e2e:neigh:10.77.99.0', 'warn'],
      ['extra:e2e:fdb:02:00:00:00:00:99', 'warn'],
    ],
  );
  assert.equal(bad[0]!.message, 'route to 10.77.99.0/24 dev weft.1 is inside network e2e (10.77.0.0/16) but no lease in the store has that subnet: stale, it blackholes that subnet when another host leases it');
  assert.equal(bad[0]!.fix, 'ip route del 10.77.99.0/24 dev weft.1');
});

test("Docker's bridge on a weft network; the store and the agent's view of it", () => {
  const f = vx();
  f.links.push({ ifname: 'docker0', ifindex: 99, mtu: 1500, flags: ['UP'], addr_info: [{ family: 'inet', local: '10.77.0.1', prefixlen: 16 }] } as DoctorFacts['links'][number]);
  const d = only(f);
  assert.equal(d.check, 'docker-overlap:docker0');
  assert.equal(d.message, "Docker's bridge docker0 has 10.77.0.1/16, inside weft network e2e (10.77.0.0/16): its route takes weft's traffic");

  const g = vx();
  g.links.push({ ifname: 'docker0', ifindex: 99, mtu: 1500, flags: ['UP'], addr_info: [{ family: 'inet', local: '172.17.0.1', prefixlen: 16 }] } as DoctorFacts['links'][number]);
  assert.deepEqual(failing(g), []);

  const h = vx();
  h.agent.status!.store = { url: 'etcd://127.0.0.1:2379', healthy: false, error: 'the store did not answer within 2000 ms' };
  assert.equal(only(h).message, 'the agent cannot reach its store etcd://127.0.0.1:2379 (the store did not answer within 2000 ms): its lease is not renewed and it stops seeing peers change');
});

test("the backend's port: a peer that answers on the underlay but not across the tunnel, with the port the backend uses", () => {
  const f = vx();
  Object.assign(path(f), { small: false, big: false, port: 8472 });
  const p = only(f);
  assert.equal(p.check, `path:e2e:${PEER}:port`);
  assert.equal(
    p.message,
    "peer h2 (192.168.132.12) answers on the underlay but not on the backend's port (vxlan, UDP 8472): its gateway 10.77.243.1 does not answer across the tunnel — a firewall on either host or between them drops UDP 8472, unless a check above names a missing route or entry",
  );
  assert.match(p.fix!, /^allow UDP 8472 between the hosts/);
  // a routed backend has no port: the general verdict stays
  const g = vx();
  Object.assign(path(g), { small: false, big: false });
  assert.equal(only(g).check, `path:e2e:${PEER}`);
});

test("a container's interface MTU against its port on the bridge", () => {
  const f = vx();
  f.endpoints = [{ container: 'ctr1', network: 'e2e', ifname: 'eth0', hostIf: 'vw67a20927', mtu: 1450 }];
  const okRun = judge(f);
  assert.deepEqual(okRun.filter((x) => !x.ok), []);
  assert.equal(okRun.find((x) => x.check === 'mtu:weft0')?.message, "MTU of weft0 and its ports is at most the backend's (1450); containers' interfaces match their ports");

  f.endpoints[0]!.mtu = 1400;
  const low = only(f);
  assert.equal(low.check, 'mtu:vw67a20927');
  assert.equal(low.message, "MTU of container ctr1's eth0 (1400) differs from its port vw67a20927 on weft0 (1450): packets larger than 1400 bytes to the container are dropped");
  assert.equal(low.fix, 'ip -n ctr1 link set eth0 mtu 1450  (or weft detach/attach the container)');

  const g = vx();
  g.endpoints = [{ container: 'ctr1', network: 'e2e', ifname: 'eth0', hostIf: 'vw67a20927', mtu: 1450 }];
  g.links.find((l) => l.ifname === 'vw67a20927')!.mtu = 1400;
  const port = only(g);
  assert.equal(port.message, "MTU of container ctr1's eth0 (1450) differs from its port vw67a20927 on weft0 (1400): packets larger than 1400 bytes to and from the container are dropped");
  assert.equal(port.fix, 'ip link set vw67a20927 mtu 1450');

  // an interface doctor could not look into (a Docker container by id): nothing claimed
  const h = vx();
  h.endpoints = [{ container: 'docker:abc', network: 'e2e', ifname: 'eth0', hostIf: 'vw67a20927' }];
  assert.deepEqual(failing(h), []);
});
