import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { UDPD_BINARY } from '../../src/backends/udp/index.js';
import { parseStats, planUdpPeers, renderTable, udpDeviceName, DROPS } from '../../src/backends/udp/table.js';
import type { Lease } from '../../src/lease/types.js';

/**
 * The udp backend's routing table and peer filter without root: the TypeScript plan (leases → table) and
 * weft-udpd's own verdicts on datagrams (`weft-udpd check`) and on packets from the TUN (`weft-udpd route`),
 * which run the same C functions as the data path.
 */

const lease = (subnet: unknown, publicIp: unknown, data: Record<string, unknown> = {}): Lease =>
  ({ network: 'n', subnet, publicIp, backendType: 'udp', backendData: data, expiresAt: 0 }) as unknown as Lease;
const opts = { network: '10.9.0.0/16', ownSubnet: '10.9.1.0/24', ownIp: '192.168.5.1', defaultPort: 8285 };

test('device names: weft-tun + 7 hex digits (15 characters), stable, different per network and per host', () => {
  const a = udpDeviceName('e2e', 'h1');
  assert.match(a, /^weft-tun[0-9a-f]{7}$/);
  assert.equal(a.length, 15);
  assert.equal(udpDeviceName('e2e', 'h1'), a);
  assert.notEqual(udpDeviceName('e2e', 'h2'), a);
  assert.notEqual(udpDeviceName('other', 'h1'), a);
  assert.notEqual(udpDeviceName('ab', 'c'), udpDeviceName('a', 'bc'));
});

test('planUdpPeers: a row per peer lease (subnet → publicIp:Port, default port), own lease left out, sorted', () => {
  const plan = planUdpPeers(
    [lease('10.9.3.0/24', '192.168.5.3'), lease('10.9.1.0/24', '192.168.5.1', { Port: 8285 }), lease('10.9.2.0/24', '192.168.5.2', { Port: 9000 })],
    opts,
  );
  assert.deepEqual(plan.refused, []);
  assert.deepEqual(plan.peers, [
    { subnet: '10.9.2.0/24', ip: '192.168.5.2', port: 9000 },
    { subnet: '10.9.3.0/24', ip: '192.168.5.3', port: 8285 },
  ]);
});

test('planUdpPeers: refuses untrusted leases with a reason and keeps the good ones', () => {
  const plan = planUdpPeers(
    [
      lease('10.9.2.0/24', '192.168.5.2'),
      lease('not-a-cidr', '192.168.5.3'),
      lease(42, '192.168.5.4'),
      lease('10.9.5.0/24', 'nope'),
      lease('10.9.6.0/24', '192.168.5.6', { Port: 70000 }),
      lease('10.9.7.0/24', '192.168.5.7', { Port: '8285' }),
      lease('10.8.0.0/24', '192.168.5.8'),
      lease('10.9.1.128/25', '192.168.5.9'), // inside our own lease
    ],
    opts,
  );
  assert.deepEqual(plan.peers, [{ subnet: '10.9.2.0/24', ip: '192.168.5.2', port: 8285 }]);
  const why = Object.fromEntries(plan.refused.map((r) => [r.publicIp, r.why]));
  assert.match(why['192.168.5.3']!, /not an IPv4 CIDR/);
  assert.match(why['192.168.5.4']!, /not an IPv4 CIDR/);
  assert.match(why['nope']!, /PublicIP/);
  assert.match(why['192.168.5.6']!, /Port 70000/);
  assert.match(why['192.168.5.7']!, /Port "8285"/);
  assert.match(why['192.168.5.8']!, /outside the network/);
  assert.match(why['192.168.5.9']!, /overlaps this host/);
});

test('planUdpPeers: two leases on one endpoint, or overlapping, are both refused (a sender is known by ip:port)', () => {
  const plan = planUdpPeers(
    [lease('10.9.2.0/24', '192.168.5.2'), lease('10.9.3.0/24', '192.168.5.2'), lease('10.9.4.0/24', '192.168.5.4'), lease('10.9.4.0/23', '192.168.5.5'), lease('10.9.8.0/24', '192.168.5.2', { Port: 9000 })],
    opts,
  );
  assert.deepEqual(plan.peers, [{ subnet: '10.9.8.0/24', ip: '192.168.5.2', port: 9000 }]);
  assert.equal(plan.refused.length, 4);
  assert.ok(plan.refused.filter((r) => /same endpoint 192\.168\.5\.2:8285/.test(r.why)).length === 2);
  assert.ok(plan.refused.filter((r) => /overlaps another/.test(r.why)).length === 2);
});

test('renderTable and parseStats', () => {
  assert.equal(renderTable('10.9.1.7/24', [{ subnet: '10.9.2.0/24', ip: '192.168.5.2', port: 8285 }]).split('\n').slice(1).join('\n'), 'own 10.9.1.0/24\npeer 10.9.2.0/24 192.168.5.2 8285\n');
  assert.equal(renderTable(undefined, []).split('\n').filter((l) => l && !l.startsWith('#')).length, 0);
  const st = parseStats('{"pid":12,"at":5,"peers":2,"txPackets":3,"rxBytes":100,"unknownPeer":4,"spoofedSource":5,"reloads":1}');
  assert.equal(st?.pid, 12);
  assert.equal(st?.counters.txPackets, 3);
  assert.equal(st?.counters.rxBytes, 100);
  assert.equal(st?.drops.unknownPeer, 4);
  assert.equal(st?.drops.total, 9);
  assert.deepEqual(Object.keys(st!.drops).sort(), [...DROPS, 'total'].sort());
  for (const bad of ['', '{"pid":', 'null', '[]', '{"pid":-1}', '{"pid":"12"}']) assert.equal(parseStats(bad), undefined, bad);
});

// ---------------------------------------------------------------- the C filter (weft-udpd check / route)

const haveBinary = fs.existsSync(UDPD_BINARY);
const skipC = haveBinary ? false : `${UDPD_BINARY} is not built (npm run build)`;

/** A minimal IPv4 header (+ 8 bytes of payload) as hex. */
function ipv4(src: string, dst: string, o: { total?: number; version?: number; ihl?: number } = {}): string {
  const b = Buffer.alloc(28);
  b[0] = ((o.version ?? 4) << 4) | (o.ihl ?? 5);
  b.writeUInt16BE(o.total ?? 28, 2);
  b[8] = 64;
  b[9] = 17;
  src.split('.').forEach((x, i) => (b[12 + i] = Number(x)));
  dst.split('.').forEach((x, i) => (b[16 + i] = Number(x)));
  return b.toString('hex');
}

function withTable(text: string, fn: (file: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-udp-unit-'));
  try {
    const file = path.join(dir, 'udp.table');
    fs.writeFileSync(file, text, { mode: 0o600 });
    fn(file);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const udpd = (...args: string[]) => execFileSync(UDPD_BINARY, args, { encoding: 'utf8' }).trim();

const TABLE = renderTable('10.9.1.0/24', [
  { subnet: '10.9.2.0/24', ip: '192.168.5.2', port: 8285 },
  { subnet: '10.9.3.0/24', ip: '192.168.5.3', port: 8285 },
]);

test('weft-udpd filter: accepts only a current peer sending from its own lease to ours; says why otherwise', { skip: skipC }, () => {
  withTable(TABLE, (t) => {
    const check = (fromIp: string, fromPort: number, pkt: string) => udpd('check', t, fromIp, String(fromPort), pkt);
    assert.equal(check('192.168.5.2', 8285, ipv4('10.9.2.5', '10.9.1.7')), 'accept');
    assert.equal(check('192.168.5.3', 8285, ipv4('10.9.3.5', '10.9.1.7')), 'accept');
    assert.equal(check('192.168.5.9', 8285, ipv4('10.9.2.5', '10.9.1.7')), 'unknownPeer', 'not a peer');
    assert.equal(check('192.168.5.2', 9999, ipv4('10.9.2.5', '10.9.1.7')), 'unknownPeer', 'a peer address, another port');
    assert.equal(check('192.168.5.2', 8285, ipv4('10.9.3.5', '10.9.1.7')), 'spoofedSource', "another peer's subnet");
    assert.equal(check('192.168.5.2', 8285, ipv4('10.9.1.9', '10.9.1.7')), 'spoofedSource', 'our own subnet');
    assert.equal(check('192.168.5.2', 8285, ipv4('8.8.8.8', '10.9.1.7')), 'spoofedSource', 'outside the network');
    assert.equal(check('192.168.5.2', 8285, ipv4('10.9.2.5', '10.9.3.7')), 'notLocal', 'relaying to a third host');
    assert.equal(check('192.168.5.2', 8285, ipv4('10.9.2.5', '10.9.1.7', { total: 60 })), 'malformed', 'length field lies');
    assert.equal(check('192.168.5.2', 8285, ipv4('10.9.2.5', '10.9.1.7', { version: 6 })), 'malformed', 'not IPv4');
    assert.equal(check('192.168.5.2', 8285, ipv4('10.9.2.5', '10.9.1.7', { ihl: 3 })), 'malformed', 'header too short');
    assert.equal(check('192.168.5.2', 8285, 'deadbeef'), 'malformed', 'garbage');
    assert.equal(check('192.168.5.2', 8285, ''), 'malformed', 'empty');
  });
});

test('weft-udpd filter: a connected network (allow line) is accepted as a source from any peer, nothing else is', { skip: skipC }, () => {
  const text = renderTable('10.9.1.0/24', [{ subnet: '10.9.2.0/24', ip: '192.168.5.2', port: 8285 }], ['10.20.0.0/16', 'bogus', '10.20.0.0/16']);
  assert.equal(text.split('\n').filter((l) => l.startsWith('allow ')).join(';'), 'allow 10.20.0.0/16', 'one line per valid CIDR');
  withTable(text, (t) => {
    assert.equal(udpd('check', t, '192.168.5.2', '8285', ipv4('10.20.7.5', '10.9.1.7')), 'accept');
    assert.equal(udpd('check', t, '192.168.5.2', '8285', ipv4('10.21.7.5', '10.9.1.7')), 'spoofedSource');
    assert.equal(udpd('check', t, '192.168.5.9', '8285', ipv4('10.20.7.5', '10.9.1.7')), 'unknownPeer', 'still only from peers');
    assert.equal(udpd('check', t, '192.168.5.2', '8285', ipv4('10.20.7.5', '10.20.1.7')), 'notLocal', 'still only to our lease');
  });
  withTable(TABLE, (t) => assert.equal(udpd('check', t, '192.168.5.2', '8285', ipv4('10.20.7.5', '10.9.1.7')), 'spoofedSource', 'not connected: refused'));
});

test('weft-udpd filter: without an own lease nothing is accepted; bad table lines are skipped', { skip: skipC }, () => {
  withTable('peer 10.9.2.0/24 192.168.5.2 8285\npeer 10.9.3.0/33 192.168.5.3 8285\npeer 10.9.4.0/24 999.1.1.1 8285\npeer 10.9.5.0/24 192.168.5.5 0\ngarbage\n', (t) => {
    assert.equal(udpd('check', t, '192.168.5.2', '8285', ipv4('10.9.2.5', '10.9.1.7')), 'notLocal');
    assert.equal(udpd('check', t, '192.168.5.3', '8285', ipv4('10.9.3.5', '10.9.1.7')), 'unknownPeer');
    assert.equal(udpd('route', t, ipv4('10.9.1.7', '10.9.4.1')), 'noRoute');
    assert.equal(udpd('route', t, ipv4('10.9.1.7', '10.9.5.1')), 'noRoute');
  });
});

test('weft-udpd routing: a TUN packet goes to the peer leasing its destination (longest prefix), else noRoute', { skip: skipC }, () => {
  withTable(`${TABLE}peer 10.9.3.128/25 192.168.5.4 8300\n`, (t) => {
    assert.equal(udpd('route', t, ipv4('10.9.1.7', '10.9.2.9')), '192.168.5.2:8285');
    assert.equal(udpd('route', t, ipv4('10.9.1.7', '10.9.3.9')), '192.168.5.3:8285');
    assert.equal(udpd('route', t, ipv4('10.9.1.7', '10.9.3.200')), '192.168.5.4:8300');
    assert.equal(udpd('route', t, ipv4('10.9.1.7', '10.9.9.9')), 'noRoute');
    assert.equal(udpd('route', t, ipv4('10.9.1.7', '10.9.2.9', { version: 6 })), 'notIpv4');
  });
});
