import assert from 'node:assert/strict';
import { test } from 'node:test';
import { peerChanges, planPeers, wgDeviceName, type WantedPeer } from '../../src/backends/wireguard/peers.js';
import type { Lease } from '../../src/lease/types.js';
import { generateWgKeyPair, parseWgDump, type WgPeerState } from '../../src/system/wireguard.js';

const K = [0, 1, 2, 3].map(() => generateWgKeyPair().publicKey);
const lease = (subnet: string, publicIp: string, data: Record<string, unknown>): Lease =>
  ({ network: 'n', subnet, publicIp, backendType: 'wireguard', backendData: data, expiresAt: 0 }) as unknown as Lease;
const opts = { network: '10.9.0.0/16', ownSubnet: '10.9.1.0/24', ownIp: '192.168.5.1', ownKey: K[0], defaultPort: 51820, keepalive: 0 };

test('device names: ≤ 15 characters, stable, different per network and per host', () => {
  const a = wgDeviceName('e2e', 'h1');
  assert.match(a, /^weftwg-[0-9a-f]{8}$/);
  assert.ok(a.length <= 15);
  assert.equal(wgDeviceName('e2e', 'h1'), a);
  assert.notEqual(wgDeviceName('e2e', 'h2'), a);
  assert.notEqual(wgDeviceName('other', 'h1'), a);
  // the separator keeps ("ab","c") and ("a","bc") apart
  assert.notEqual(wgDeviceName('ab', 'c'), wgDeviceName('a', 'bc'));
});

test('planPeers: a peer per valid lease with allowed-ips = its subnet and endpoint = publicIp:ListenPort', () => {
  const plan = planPeers(
    [
      lease('10.9.1.0/24', '192.168.5.1', { PublicKey: K[0], ListenPort: 51820 }), // own
      lease('10.9.2.0/24', '192.168.5.2', { PublicKey: K[1], ListenPort: 51900 }),
      lease('10.9.3.0/24', '192.168.5.3', { PublicKey: K[2] }), // port defaults
    ],
    opts,
  );
  assert.deepEqual(plan.refused, []);
  assert.deepEqual(
    plan.peers.map((p) => [p.publicKey, p.endpoint, p.allowedIps]),
    [
      [K[1], '192.168.5.2:51900', ['10.9.2.0/24']],
      [K[2], '192.168.5.3:51820', ['10.9.3.0/24']],
    ],
  );
});

test('planPeers refuses leases without a key, with a bad port, outside the network, with our key or a shared key', () => {
  const plan = planPeers(
    [
      lease('10.9.2.0/24', '192.168.5.2', {}),
      lease('10.9.3.0/24', '192.168.5.3', { PublicKey: 'not-a-key' }),
      lease('10.9.4.0/24', '192.168.5.4', { PublicKey: K[1], ListenPort: 70000 }),
      lease('10.8.5.0/24', '192.168.5.5', { PublicKey: K[2] }),
      lease('10.9.6.0/24', '192.168.5.6', { PublicKey: K[0] }),
      lease('10.9.7.0/24', '192.168.5.7', { PublicKey: K[3] }),
      lease('10.9.8.0/24', '192.168.5.8', { PublicKey: K[3] }),
    ],
    opts,
  );
  assert.deepEqual(plan.peers, []);
  assert.deepEqual(
    plan.refused.map((r) => [r.subnet, r.why.split(' ').slice(0, 4).join(' ')]),
    [
      ['10.9.2.0/24', 'its lease has no'],
      ['10.9.3.0/24', 'its lease has no'],
      ['10.9.4.0/24', 'its ListenPort 70000 is'],
      ['10.8.5.0/24', 'its subnet is outside'],
      ['10.9.6.0/24', "it publishes this host's"],
      ['10.9.7.0/24', 'another lease publishes the'],
      ['10.9.8.0/24', 'another lease publishes the'],
    ],
  );
});

const want = (key: string, subnet: string, ip: string, port = 51820): WantedPeer => ({ publicKey: key, endpoint: `${ip}:${port}`, allowedIps: [subnet], keepalive: 0, subnet, publicIp: ip });
const have = (key: string, subnet: string, ip: string, port = 51820): WgPeerState => ({ publicKey: key, endpoint: `${ip}:${port}`, allowedIps: [subnet], latestHandshake: 1, rxBytes: 0, txBytes: 0, keepalive: 0 });

test('peerChanges: nothing for a device that already matches (sessions survive a resync)', () => {
  assert.deepEqual(peerChanges([have(K[1]!, '10.9.2.0/24', '192.168.5.2')], [want(K[1]!, '10.9.2.0/24', '192.168.5.2')]), []);
});

test('peerChanges: adds new peers, removes gone ones, and replaces a peer whose key rotated', () => {
  const args = peerChanges(
    [have(K[1]!, '10.9.2.0/24', '192.168.5.2'), have(K[2]!, '10.9.3.0/24', '192.168.5.3')],
    [want(K[3]!, '10.9.2.0/24', '192.168.5.2'), want(K[2]!, '10.9.3.0/24', '192.168.5.3')],
  );
  assert.deepEqual(args, ['peer', K[1], 'remove', 'peer', K[3], 'endpoint', '192.168.5.2:51820', 'allowed-ips', '10.9.2.0/24', 'persistent-keepalive', 'off']);
});

test('peerChanges: a changed subnet, port or keepalive updates the peer in place', () => {
  const h = [have(K[1]!, '10.9.2.0/24', '192.168.5.2')];
  assert.deepEqual(peerChanges(h, [want(K[1]!, '10.9.9.0/24', '192.168.5.2')]).slice(0, 6), ['peer', K[1], 'endpoint', '192.168.5.2:51820', 'allowed-ips', '10.9.9.0/24']);
  assert.deepEqual(peerChanges(h, [want(K[1]!, '10.9.2.0/24', '192.168.5.2', 51821)]).slice(0, 4), ['peer', K[1], 'endpoint', '192.168.5.2:51821']);
  assert.deepEqual(peerChanges(h, [{ ...want(K[1]!, '10.9.2.0/24', '192.168.5.2'), keepalive: 25 }]).slice(-2), ['persistent-keepalive', '25']);
});

test('peerChanges: a roamed endpoint is left alone when we set this one last, and corrected by a fresh agent', () => {
  const roamed = [{ ...have(K[1]!, '10.9.2.0/24', '192.168.5.2'), endpoint: '203.0.113.9:40000' }];
  const w = [want(K[1]!, '10.9.2.0/24', '192.168.5.2')];
  assert.deepEqual(peerChanges(roamed, w, new Map([[K[1]!, '192.168.5.2:51820']])), []);
  assert.equal(peerChanges(roamed, w).length, 8);
  assert.equal(peerChanges(roamed, w, new Map()).length, 8);
});

test('parseWgDump reads the interface line and the peers of `wg show IF dump`', () => {
  const text = [
    ['cHJpdmF0ZQ==', K[0], '51820', 'off'].join('\t'),
    [K[1], '(none)', '192.168.5.2:51820', '10.9.2.0/24', '1700000000', '1234', '5678', 'off'].join('\t'),
    [K[2], '(none)', '(none)', '10.9.3.0/24,10.9.4.0/24', '0', '0', '0', '25'].join('\t'),
    [K[3], '(none)', '(none)', '(none)', '0', '0', '0', 'off'].join('\t'),
  ].join('\n');
  const d = parseWgDump(`${text}\n`);
  assert.equal(d.publicKey, K[0]);
  assert.equal(d.listenPort, 51820);
  assert.equal(d.hasPrivateKey, true);
  assert.deepEqual(d.peers[0], { publicKey: K[1], endpoint: '192.168.5.2:51820', allowedIps: ['10.9.2.0/24'], latestHandshake: 1700000000, rxBytes: 1234, txBytes: 5678, keepalive: 0 });
  assert.deepEqual(d.peers[1]!.allowedIps, ['10.9.3.0/24', '10.9.4.0/24']);
  assert.equal(d.peers[1]!.endpoint, undefined);
  assert.equal(d.peers[1]!.keepalive, 25);
  assert.deepEqual(d.peers[2]!.allowedIps, []);
  assert.equal(parseWgDump('(none)\t(none)\t0\toff\n').hasPrivateKey, false);
});

test('planPeers with connected networks: a peer also allows its own host\'s subnets there, never another host\'s, never overlapping', () => {
  const own = [
    lease('10.9.1.0/24', '192.168.5.1', { PublicKey: K[0] }),
    { ...lease('10.9.2.0/24', '192.168.5.2', { PublicKey: K[1] }), hostId: 'h2' },
    lease('10.9.3.0/24', '192.168.5.3', { PublicKey: K[2] }), // no host id: matched by underlay address
  ];
  const other = (subnet: string, ip: string, hostId?: string): Lease => ({ ...lease(subnet, ip, {}), network: 'o', backendType: 'host-gw', ...(hostId ? { hostId } : {}) });
  const connected = [
    {
      name: 'o',
      cidr: '10.8.0.0/16',
      leases: [
        other('10.8.1.0/24', '192.168.5.1'), // ours: no peer gets it
        other('10.8.2.0/24', '192.168.5.99', 'h2'), // h2 by host id (another address)
        other('10.8.3.0/24', '192.168.5.3'),
        other('10.8.3.0/24', '192.168.5.3'), // a dual-stack twin: taken once, not refused
        other('10.8.4.0/24', '192.168.5.4'), // a host that is no peer here
        other('10.7.5.0/24', '192.168.5.3'), // outside its network
      ],
    },
    { name: 'bad', cidr: '10.9.0.0/16', leases: [other('10.9.200.0/24', '192.168.5.3')] }, // overlaps this network
  ];
  const plan = planPeers(own, { ...opts, ownHostId: 'h1', connected });
  assert.deepEqual(
    plan.peers.map((p) => [p.publicKey, p.allowedIps, p.subnet]),
    [
      [K[1], ['10.9.2.0/24', '10.8.2.0/24'], '10.9.2.0/24'],
      [K[2], ['10.9.3.0/24', '10.8.3.0/24'], '10.9.3.0/24'],
    ],
  );
  assert.ok(plan.peers.every((p) => !('lease' in p)), 'no planning leftovers');
  assert.deepEqual(
    plan.refused.map((r) => [r.subnet, r.why.split(' ').slice(0, 4).join(' ')]),
    [
      ['10.7.5.0/24', 'its subnet is outside'],
      ['10.9.200.0/24', 'connected network bad: its'],
    ],
  );
  // disconnected: back to the own subnets only
  assert.deepEqual(planPeers(own, { ...opts, ownHostId: 'h1', connected: [] }).peers.map((p) => p.allowedIps), [['10.9.2.0/24'], ['10.9.3.0/24']]);
  // the device is told the union (a change of allowed-ips updates the peer in place)
  const h = [have(K[1]!, '10.9.2.0/24', '192.168.5.2')];
  assert.deepEqual(peerChanges(h, [plan.peers[0]!]).slice(0, 6), ['peer', K[1], 'endpoint', '192.168.5.2:51820', 'allowed-ips', '10.9.2.0/24,10.8.2.0/24']);
});
