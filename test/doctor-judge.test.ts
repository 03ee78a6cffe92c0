import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { formatFindings } from '../src/cli/doctor.js';
import { formatDuration, judge } from '../src/doctor/judge.js';
import type { DoctorFacts, Finding } from '../src/doctor/types.js';

/**
 * The judging of `weft doctor` on recorded facts: two healthy hosts as gatherFacts saw them on a test bed,
 * then one thing broken at a time; each test checks the finding's message (the cause in the user's words).
 */

/** Facts recorded by gatherFacts, kept as JSON beside the sources (this file runs from dist/test/). */
function fixture(name: string): DoctorFacts {
  return JSON.parse(readFileSync(new URL(`../../test/fixtures/${name}`, import.meta.url), 'utf8')) as DoctorFacts;
}

/** Recorded on test-bed host h1 (2 hosts, vxlan, 1 container each) by gatherFacts. */
const VXLAN_FACTS = fixture('doctor-facts-vxlan.json');

/** Recorded on test-bed host h1 (2 hosts, host-gw, 1 container each) by gatherFacts. */
const HOSTGW_FACTS = fixture('doctor-facts-host-gw.json');

const clone = <T>(x: T): T => structuredClone(x);
const vx = () => clone(VXLAN_FACTS);
const hg = () => clone(HOSTGW_FACTS);
const failing = (fs: Finding[]) => fs.filter((f) => !f.ok);
const errors = (fs: Finding[]) => fs.filter((f) => !f.ok && f.severity === 'error');
/** The one failing finding (asserts there is exactly one). */
function onlyFailure(f: DoctorFacts): Finding {
  const bad = failing(judge(f));
  assert.equal(bad.length, 1, `expected one failing finding, got:\n${bad.map((b) => b.message).join('\n')}`);
  return bad[0]!;
}
const link = (f: DoctorFacts, name: string) => {
  const l = f.links.find((x) => x.ifname === name);
  assert.ok(l, `fixture has ${name}`);
  return l;
};
const PEER_VX = '10.77.243.0/24';
const PEER_HG = '10.77.145.0/24';

test('healthy hosts (vxlan and host-gw): every check passes', () => {
  for (const f of [vx(), hg()]) {
    const out = judge(f);
    assert.deepEqual(failing(out), []);
    const checks = out.map((x) => x.check);
    for (const c of ['agent', 'ip_forward', 'iptables', 'underlay:eth0', 'lease:e2e', 'bridge:weft0', 'mtu:weft0', f.agent.status!.networks[0]!.backend === 'vxlan' ? 'rp_filter:weft.1' : 'rp_filter:eth0'])
      assert.ok(checks.includes(c), `check ${c} ran: ${checks.join(' ')}`);
  }
  const v = judge(vx());
  assert.ok(v.some((x) => x.check === `peer:e2e:${PEER_VX}` && x.message === 'peer h2 (192.168.132.12): route to 10.77.243.0/24 via weft.1, neighbour and fdb entry in place'));
  assert.ok(v.some((x) => x.message === 'lease 10.77.172.0/24 of network e2e expires in 5s (the agent renews it)'));
  const h = judge(hg());
  assert.ok(h.some((x) => x.check === `peer:e2e:${PEER_HG}` && x.message === 'peer h2 (192.168.244.12): route to 10.77.145.0/24 via 192.168.244.12 dev eth0'));
});

test('no agent: names the socket; network checks are skipped', () => {
  const f = vx();
  f.agent = { error: "no weft agent at /run/weft/weft.sock (start one with 'weft agent', or pass --api SOCK)" };
  const out = judge(f);
  const a = out.find((x) => x.check === 'agent')!;
  assert.equal(a.ok, false);
  assert.equal(a.severity, 'error');
  assert.equal(a.message, "no agent answers at /run/weft/weft.sock: nothing follows peers or renews this host's lease");
  assert.match(a.fix!, /weft agent --api \/run\/weft\/weft\.sock/);
  assert.deepEqual(errors(out).map((x) => x.check), ['agent']);
  assert.ok(out.some((x) => x.check === 'networks' && x.severity === 'warn' && /skipped/.test(x.message)));
  // another kind of failure keeps its reason
  f.agent = { error: 'the agent at /run/weft/weft.sock did not answer within 5000 ms' };
  assert.equal(judge(f)[0]!.message, "no agent answers at /run/weft/weft.sock (the agent at /run/weft/weft.sock did not answer within 5000 ms): nothing follows peers or renews this host's lease");
});

test('IP forwarding off', () => {
  const f = vx();
  f.ipForward = '0';
  const b = onlyFailure(f);
  assert.equal(b.check, 'ip_forward');
  assert.equal(b.severity, 'error');
  assert.equal(b.message, 'IP forwarding is off (net.ipv4.ip_forward=0): containers cannot reach other hosts');
  assert.equal(b.fix, 'sysctl -w net.ipv4.ip_forward=1');
  f.ipForward = undefined;
  assert.equal(onlyFailure(f).message, 'cannot read net.ipv4.ip_forward');
});

test('FORWARD policy DROP without weft\'s jump (what Docker does): traffic to the network is dropped', () => {
  const f = vx();
  f.iptables.forward = ['-P FORWARD DROP', '-A FORWARD -j DOCKER-USER', '-A FORWARD -j DOCKER-FORWARD'];
  f.iptables.dockerUser = ['-N DOCKER-USER'];
  const b = onlyFailure(f);
  assert.equal(b.check, 'iptables');
  assert.equal(b.severity, 'error');
  assert.equal(b.message, "FORWARD policy is DROP and weft's accept rules are not in FORWARD (Docker does this): traffic to 10.77.0.0/16 is dropped");
  assert.match(b.fix!, /iptables -I FORWARD 1 -j WEFT-FORWARD/);
  // without the store the CIDR comes from weft's own chain
  delete f.store;
  assert.ok(judge(f).some((x) => x.message === "FORWARD policy is DROP and weft's accept rules are not in FORWARD (Docker does this): traffic to 10.77.0.0/16 is dropped"));
});

test('FORWARD policy DROP, jump via DOCKER-USER: fine', () => {
  const f = vx();
  f.iptables.forward = ['-P FORWARD DROP', '-A FORWARD -j DOCKER-USER', '-A FORWARD -j DOCKER-FORWARD'];
  f.iptables.dockerUser = ['-N DOCKER-USER', '-A DOCKER-USER -j WEFT-FORWARD'];
  const out = judge(f);
  assert.deepEqual(failing(out), []);
  assert.equal(out.find((x) => x.check === 'iptables')!.message, "weft's accept rules are in FORWARD (via DOCKER-USER) (policy DROP)");
});

test('FORWARD policy ACCEPT without the jump: fine when FORWARD is empty, a warning when it has rules', () => {
  const f = vx();
  f.iptables.forward = ['-P FORWARD ACCEPT'];
  f.iptables.weftChain = undefined;
  const out = judge(f);
  assert.deepEqual(failing(out), []);
  assert.equal(out.find((x) => x.check === 'iptables')!.message, "FORWARD accepts everything (policy ACCEPT, no rules): weft's accept rules are not needed");
  f.iptables.forward = ['-P FORWARD ACCEPT', '-A FORWARD -i eth0 -p tcp --dport 22 -j DROP'];
  const b = onlyFailure(f);
  assert.equal(b.severity, 'warn');
  assert.equal(b.message, "FORWARD has 1 rule(s) but weft's accept rules are not in it: traffic to 10.77.0.0/16 passes only while none of them drops it (policy ACCEPT)");
  f.iptables.forward = ['-P FORWARD ACCEPT', '-A FORWARD -j DOCKER-USER'];
  f.iptables.unreadable = ['DOCKER-USER'];
  assert.equal(onlyFailure(f).message, "FORWARD has 1 rule(s) but weft's accept rules are not in it (iptables cannot show DOCKER-USER, which FORWARD jumps to): traffic to 10.77.0.0/16 passes only while none of them drops it (policy ACCEPT)");
});

test('a blanket DROP ahead of the jump, and a DROP policy with an empty WEFT-FORWARD', () => {
  const f = vx();
  f.iptables.forward = ['-P FORWARD ACCEPT', '-A FORWARD -j DROP', '-A FORWARD -j WEFT-FORWARD'];
  const b = onlyFailure(f);
  assert.equal(b.severity, 'error');
  assert.equal(b.message, `FORWARD drops everything ("-A FORWARD -j DROP") before weft's accept rules: traffic to 10.77.0.0/16 is dropped`);
  const g = vx();
  g.iptables.forward = ['-P FORWARD DROP', '-A FORWARD -j WEFT-FORWARD'];
  g.iptables.weftChain = ['-N WEFT-FORWARD'];
  assert.equal(onlyFailure(g).message, 'FORWARD policy is DROP and WEFT-FORWARD has no accept rules for 10.77.0.0/16: traffic to 10.77.0.0/16 is dropped');
});

test('iptables unreadable: a warning', () => {
  const f = vx();
  f.iptables = { error: 'iptables: command not found' };
  const b = onlyFailure(f);
  assert.equal(b.severity, 'warn');
  assert.equal(b.message, 'cannot read iptables (iptables: command not found): forwarding rules not checked');
});

test('bridge down, missing, without its gateway address', () => {
  const f = vx();
  link(f, 'weft0').flags = ['BROADCAST', 'MULTICAST'];
  const b = onlyFailure(f);
  assert.equal(b.check, 'bridge:weft0');
  assert.equal(b.severity, 'error');
  assert.equal(b.message, 'bridge weft0 is down: containers of e2e on this host are cut off');
  assert.equal(b.fix, 'ip link set weft0 up');

  const g = vx();
  g.links = g.links.filter((l) => l.ifname !== 'weft0');
  assert.equal(onlyFailure(g).message, 'bridge weft0 is missing: containers of e2e on this host are cut off');

  const h = vx();
  link(h, 'weft0').addr_info = [];
  const c = onlyFailure(h);
  assert.equal(c.message, 'bridge weft0 lacks the gateway address 10.77.172.1/24: containers of e2e have no way out');
  assert.equal(c.fix, 'ip addr add 10.77.172.1/24 dev weft0');
});

test('MTU of the bridge or a container port larger than the backend\'s', () => {
  const f = vx();
  link(f, 'weft0').mtu = 1500;
  const b = onlyFailure(f);
  assert.equal(b.check, 'mtu:weft0');
  assert.equal(b.message, "MTU of weft0 (1500) is larger than the backend's (1450): large packets are dropped");
  assert.equal(b.fix, 'ip link set weft0 mtu 1450');
  const g = vx();
  link(g, 'vw67a20927').mtu = 1500;
  assert.equal(onlyFailure(g).message, "MTU of vw67a20927 (a container's port on weft0) (1500) is larger than the backend's (1450): large packets are dropped");
});

test('vxlan: route to a peer subnet missing (and strict rp_filter then drops arrivals too)', () => {
  const f = vx();
  f.routes = f.routes.filter((r) => r.dst !== PEER_VX);
  const b = onlyFailure(f);
  assert.equal(b.check, `peer:e2e:${PEER_VX}:route`);
  assert.equal(b.severity, 'error');
  assert.equal(b.message, 'no route to peer subnet 10.77.243.0/24 (host h2, 192.168.132.12): the agent has not reconciled — check its log');
  assert.match(b.fix!, /^ip route replace 10\.77\.243\.0\/24 via 10\.77\.243\.0 dev weft\.1 onlink/);

  f.rpFilter.all = 1;
  const out = failing(judge(f));
  assert.equal(out.length, 2);
  const rp = out.find((x) => x.check === 'rp_filter:weft.1')!;
  assert.equal(rp.severity, 'warn');
  assert.equal(rp.message, 'rp_filter is strict (1) on weft.1 and there is no route back to 10.77.243.0/24: packets from there are dropped on arrival too');
  // strict rp_filter with every route in place is fine
  const g = vx();
  g.rpFilter['weft.1'] = 1;
  assert.deepEqual(failing(judge(g)), []);
});

test('vxlan: route to a peer goes elsewhere', () => {
  const f = vx();
  f.routes = f.routes.map((r) => (r.dst === PEER_VX ? { dst: PEER_VX, gateway: '192.168.132.1', dev: 'eth0', flags: [] } : r));
  assert.equal(
    onlyFailure(f).message,
    'route to peer subnet 10.77.243.0/24 (host h2, 192.168.132.12) goes via 192.168.132.1 dev eth0, not via 10.77.243.0 dev weft.1: the agent has not reconciled — check its log',
  );
});

test("vxlan: fdb entry for a peer's VtepMAC missing, or pointing elsewhere", () => {
  const f = vx();
  f.fdb['weft.1'] = [];
  const b = onlyFailure(f);
  assert.equal(b.check, `peer:e2e:${PEER_VX}:fdb`);
  assert.equal(b.message, "vxlan: fdb entry for peer h2's VtepMAC (7a:d1:77:9b:36:4b → 192.168.132.12) missing on weft.1: packets to 10.77.243.0/24 are not sent to 192.168.132.12");
  assert.equal(b.fix, 'bridge fdb replace 7a:d1:77:9b:36:4b dev weft.1 dst 192.168.132.12 self permanent');
  const g = vx();
  g.fdb['weft.1'] = [{ mac: '7a:d1:77:9b:36:4b', dst: '192.168.132.99', flags: ['self'], state: 'permanent' }];
  assert.equal(onlyFailure(g).check, `peer:e2e:${PEER_VX}:fdb`);
  // the peer restarted with a new VTEP (new MAC in its lease) and this host still has the old one
  const h = vx();
  h.store!.networks[0]!.leases[1]!.backendData.VtepMAC = '7a:00:00:00:00:01';
  const out = failing(judge(h)).map((x) => x.check);
  assert.deepEqual(out, [`peer:e2e:${PEER_VX}:neigh`, `peer:e2e:${PEER_VX}:fdb`]);
});

test('vxlan: neighbour entry missing', () => {
  const f = vx();
  f.neigh['weft.1'] = [];
  const b = onlyFailure(f);
  assert.equal(b.message, "vxlan: neighbour entry for peer h2's gateway 10.77.243.0 (→ 7a:d1:77:9b:36:4b) missing on weft.1: packets to 10.77.243.0/24 cannot be addressed");
  assert.equal(b.fix, 'ip neigh replace 10.77.243.0 lladdr 7a:d1:77:9b:36:4b dev weft.1 nud permanent');
});

test('vxlan: without the store the VtepMAC comes from the neighbour entry; lease not checked', () => {
  const f = vx();
  delete f.store;
  const out = failing(judge(f));
  assert.deepEqual(out.map((x) => [x.check, x.severity]), [['lease:e2e', 'warn']]);
  assert.equal(out[0]!.message, 'lease of e2e not checked: no store here (pass --store URL)');
  f.fdb['weft.1'] = [];
  assert.ok(errors(judge(f)).some((x) => x.message.startsWith("vxlan: fdb entry for peer h2's VtepMAC (7a:d1:77:9b:36:4b → 192.168.132.12) missing on weft.1")));
});

test('vxlan device down, missing, MTU too large, wrong local address', () => {
  const f = vx();
  link(f, 'weft.1').flags = ['BROADCAST', 'MULTICAST'];
  const b = onlyFailure(f);
  assert.equal(b.message, 'vxlan device weft.1 is down: no traffic of e2e reaches other hosts');
  assert.equal(b.fix, 'ip link set weft.1 up');

  const g = vx();
  g.links = g.links.filter((l) => l.ifname !== 'weft.1');
  assert.equal(errors(judge(g))[0]!.message, 'vxlan device weft.1 is missing: no traffic of e2e reaches other hosts');

  const h = vx();
  link(h, 'weft.1').mtu = 1500;
  const m = onlyFailure(h);
  assert.equal(m.message, "MTU of weft.1 (1500) is larger than the underlay's (1500) minus VXLAN's 50 bytes: large packets are dropped");
  assert.equal(m.fix, 'ip link set weft.1 mtu 1450');

  const i = vx();
  link(i, 'weft.1').linkinfo!.info_data!.local = '192.168.132.77';
  assert.equal(onlyFailure(i).message, "vxlan device weft.1 sends from 192.168.132.77, but this host's address is 192.168.132.11: peers drop its packets");
});

test('host-gw: peer off this L2 segment', () => {
  const f = hg();
  f.agent.status!.networks[0]!.peers[0]!.publicIp = '172.31.9.9';
  f.routes = f.routes.filter((r) => r.dst !== PEER_HG);
  const b = onlyFailure(f);
  assert.equal(b.check, `peer:e2e:${PEER_HG}`);
  assert.equal(b.severity, 'error');
  assert.equal(b.message, "peer h2 (172.31.9.9) is not on this host's L2 segment (192.168.244.0/24): host-gw cannot route to it — use vxlan");
});

test('host-gw: route to a peer subnet missing', () => {
  const f = hg();
  f.routes = f.routes.filter((r) => r.dst !== PEER_HG);
  const b = onlyFailure(f);
  assert.equal(b.message, 'no route to peer subnet 10.77.145.0/24 (host h2, 192.168.244.12): the agent has not reconciled — check its log');
  assert.match(b.fix!, /^ip route replace 10\.77\.145\.0\/24 via 192\.168\.244\.12 dev eth0/);
});

test('lease expired (gone from the store), past its expiry, or held by another host', () => {
  const f = vx();
  f.store!.networks[0]!.leases = f.store!.networks[0]!.leases.filter((l) => l.hostId !== 'h1');
  const b = onlyFailure(f);
  assert.equal(b.check, 'lease:e2e');
  assert.equal(b.severity, 'error');
  assert.equal(b.message, 'lease 10.77.172.0/24 of network e2e has expired (it is gone from the store): peers drop their routes to this host');

  const g = vx();
  g.now = g.store!.networks[0]!.leases[0]!.expiresAt! + 75_000;
  // the peer's lease is past expiry too, but only our own is judged
  assert.equal(onlyFailure(g).message, 'lease 10.77.172.0/24 of network e2e expired 1m 15s ago');

  const h = vx();
  h.store!.networks[0]!.leases[0]!.publicIp = '192.168.132.50';
  h.store!.networks[0]!.leases[0]!.hostId = 'h9';
  assert.equal(onlyFailure(h).message, 'lease 10.77.172.0/24 of network e2e is now held by 192.168.132.50 (h9), not this host (192.168.132.11): its subnet was given away');

  const i = vx();
  i.store = { url: 'etcd://10.0.0.1:2379', error: 'the store etcd://10.0.0.1:2379 did not answer within 5000 ms', networks: [] };
  const [down, s] = failing(judge(i));
  assert.equal(down!.check, 'store');
  assert.equal(down!.severity, 'error');
  assert.equal(down!.message, 'the store etcd://10.0.0.1:2379 is unreachable (the store etcd://10.0.0.1:2379 did not answer within 5000 ms): leases are not renewed and new hosts cannot join (forwarding carries on)');
  assert.equal(s!.severity, 'warn');
  assert.match(s!.message, /^lease of e2e not checked: cannot read the store etcd:\/\/10\.0\.0\.1:2379/);
});

test('a network the host could not join, underlay down, no network at all', () => {
  const f = vx();
  f.agent.status!.failed = { blue: 'vxlan VNI 99999999 is out of range 0–16777215' };
  const b = onlyFailure(f);
  assert.equal(b.message, 'network blue is not running on this host: vxlan VNI 99999999 is out of range 0–16777215');

  const g = vx();
  link(g, 'eth0').flags = ['BROADCAST', 'MULTICAST'];
  const u = onlyFailure(g);
  assert.equal(u.message, 'underlay interface eth0 is down: no traffic leaves this host');
  assert.equal(u.fix, 'ip link set eth0 up');

  const h = vx();
  h.agent.status!.networks = [];
  const n = onlyFailure(h);
  assert.equal(n.severity, 'warn');
  assert.equal(n.message, 'this host runs no network yet');
});

test('human output: one line per check with ✓ ✗ ! and the fix', () => {
  const f = vx();
  f.ipForward = '0';
  f.iptables.forward = ['-P FORWARD ACCEPT', '-A FORWARD -j DOCKER-USER'];
  const text = formatFindings(judge(f));
  const lines = text.trimEnd().split('\n');
  assert.ok(lines.includes('✗ IP forwarding is off (net.ipv4.ip_forward=0): containers cannot reach other hosts'));
  assert.equal(lines[lines.indexOf('✗ IP forwarding is off (net.ipv4.ip_forward=0): containers cannot reach other hosts') + 1], '    fix: sysctl -w net.ipv4.ip_forward=1');
  assert.ok(lines.some((l) => l.startsWith("! FORWARD has 1 rule(s) but weft's accept rules are not in it")));
  assert.ok(lines.includes('✓ bridge weft0 is up with 10.77.172.1/24'));
});

test('formatDuration', () => {
  assert.equal(formatDuration(0), '0s');
  assert.equal(formatDuration(42_400), '42s');
  assert.equal(formatDuration(75_000), '1m 15s');
  assert.equal(formatDuration((3 * 3600 + 5 * 60) * 1000), '3h 5m');
  assert.equal(formatDuration((49 * 3600) * 1000), '2d 1h');
});

test('--ping: answered, and a failure explained by the findings on this host', () => {
  const route = { dst: '10.77.243.5', gateway: '10.77.243.0', dev: 'weft.1', flags: ['onlink'] };
  const f = vx();
  f.ping = { target: '10.77.243.5', answered: true, route };
  const okp = judge(f).find((x) => x.check === 'ping:10.77.243.5')!;
  assert.equal(okp.ok, true);
  assert.equal(okp.message, '10.77.243.5 (a container on host h2) answers a ping from this host (via 10.77.243.0 dev weft.1)');

  // unanswered while the route to h2's subnet is missing: the ping finding names that cause
  const g = vx();
  g.routes = g.routes.filter((r) => r.dst !== PEER_VX);
  g.ping = { target: '10.77.243.5', answered: false, route: { dst: '10.77.243.5', gateway: '192.168.132.1', dev: 'eth0' } };
  const p = judge(g).find((x) => x.check === 'ping:10.77.243.5')!;
  assert.equal(p.ok, false);
  assert.equal(p.severity, 'error');
  assert.equal(
    p.message,
    '10.77.243.5 (a container on host h2) does not answer a ping from this host: no route to peer subnet 10.77.243.0/24 (host h2, 192.168.132.12): the agent has not reconciled — check its log',
  );
  assert.match(p.fix!, /^ip route replace 10\.77\.243\.0\/24/);

  // unanswered with this host's side in order: look at the other host
  const h = vx();
  h.ping = { target: '10.77.243.5', answered: false, route };
  const q = onlyFailure(h);
  assert.equal(q.message, "10.77.243.5 (a container on host h2) does not answer a ping from this host, though this host's side looks right (via 10.77.243.0 dev weft.1): run weft doctor on host h2 (192.168.132.12)");

  // an address in no network this host knows
  const i = vx();
  i.ping = { target: '172.16.0.9', answered: false, route: { dst: '172.16.0.9', gateway: '192.168.132.1', dev: 'eth0' } };
  assert.equal(onlyFailure(i).message, "172.16.0.9 does not answer a ping from this host: it is in none of this host's networks or their subnets (10.77.172.0/24)");

  // a local address no container holds
  const j = vx();
  j.ping = { target: '10.77.172.99', answered: false, route: { dst: '10.77.172.99', dev: 'weft0' }, endpoints: [{ address: '10.77.172.2/24', container: 'c1', network: 'e2e' }] };
  assert.equal(onlyFailure(j).message, '10.77.172.99 (a container on this host, bridge weft0) does not answer a ping from this host: no container on this host has that address');
  // a local container behind a bridge that is down
  const k = vx();
  link(k, 'weft0').flags = ['BROADCAST', 'MULTICAST'];
  k.ping = { target: '10.77.172.2', answered: false, route: { dst: '10.77.172.2', dev: 'weft0' }, endpoints: [{ address: '10.77.172.2/24', container: 'c1', network: 'e2e' }] };
  assert.equal(
    judge(k).find((x) => x.check === 'ping:10.77.172.2')!.message,
    '10.77.172.2 (a container on this host, bridge weft0) does not answer a ping from this host (container c1): bridge weft0 is down: containers of e2e on this host are cut off',
  );
});
