import assert from 'node:assert/strict';
import { test } from 'node:test';
import { judgeUdp } from '../../src/backends/udp/doctor.js';
import type { BackendCheckInput } from '../../src/backends/types.js';

/** The udp backend's doctor checks: pure, facts in, findings out. */

const DEV = 'weft-tun0000001';
function facts(status: Record<string, unknown>, o: { routes?: boolean; up?: boolean; mtu?: number } = {}): BackendCheckInput {
  return {
    network: {
      name: 'e2e',
      subnet: '10.63.1.0/24',
      bridge: 'weft0',
      mtu: 1472,
      backend: 'udp',
      peers: [{ subnet: '10.63.2.0/24', publicIp: '192.168.9.12', hostId: 'h2' }],
      status: { healthy: true, ...status },
    },
    publicIp: '192.168.9.11',
    underlayIface: 'eth0',
    links: [
      { ifname: 'eth0', ifindex: 2, mtu: 1500, flags: ['UP'] },
      { ifname: DEV, ifindex: 3, mtu: o.mtu ?? 1472, flags: o.up === false ? [] : ['UP', 'LOWER_UP'] },
    ] as BackendCheckInput['links'],
    underlay: { ifname: 'eth0', ifindex: 2, mtu: 1500, flags: ['UP'] } as BackendCheckInput['underlay'],
    routes: o.routes === false ? [] : [{ dst: '10.63.2.0/24', dev: DEV }],
    neigh: {},
    fdb: {},
    rpFilter: { all: 0 },
  };
}
const good = { device: DEV, port: 8285, pid: 123, peers: [{ subnet: '10.63.2.0/24', ip: '192.168.9.12', port: 8285 }], drops: { unknownPeer: 0, spoofedSource: 0, notIpv4: 3 } };
const failing = (f: BackendCheckInput) => judgeUdp(f).filter((x) => !x.ok).map((x) => `${x.severity} ${x.check}`);

test('doctor: a healthy udp host has no failing finding', () => {
  assert.deepEqual(failing(facts(good)), []);
});

test('doctor: weft-udpd not running, device down or missing, MTU too large', () => {
  assert.deepEqual(failing(facts({ ...good, healthy: false, pid: undefined, lastExit: 'killed by SIGKILL' })), [`error udp:${DEV}:process`]);
  assert.deepEqual(failing(facts(good, { up: false })), [`error udp:${DEV}`]);
  assert.deepEqual(failing(facts(good, { mtu: 1500 })), [`warn mtu:${DEV}`]);
  const f = facts(good);
  f.links = f.links.filter((l) => l.ifname !== DEV);
  assert.deepEqual(failing(f), [`error udp:${DEV}`]);
});

test('doctor: a peer missing from the table, sent elsewhere, or without a route; foreign datagrams warn', () => {
  assert.deepEqual(failing(facts({ ...good, peers: [] })), ['error peer:e2e:10.63.2.0/24:table']);
  assert.deepEqual(failing(facts({ ...good, peers: [{ ...good.peers[0], ip: '192.168.9.99' }] })), ['error peer:e2e:10.63.2.0/24:table']);
  assert.deepEqual(failing(facts(good, { routes: false })), ['error peer:e2e:10.63.2.0/24:route']);
  const drops = judgeUdp(facts({ ...good, drops: { unknownPeer: 5, spoofedSource: 2 } })).find((x) => x.check === `udp:${DEV}:drops`)!;
  assert.equal(drops.severity, 'warn');
  assert.match(drops.message, /5 datagrams from senders that are not peers and 2 with an inner source/);
});
