import assert from 'node:assert/strict';
import { waitFor } from '../src/testbed/wait.js';
import { readFile, rm } from 'node:fs/promises';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import type { NetworkConfig } from '../src/config/types.js';
import { bridgeJson, getLink, ipJson } from '../src/system/ip.js';
import { createTestbed, type Testbed } from '../src/testbed/index.js';
import { createBackend } from '../src/backends/all.js';
import { testBackendContext } from '../src/testbed/cluster.js';
import { findUnderlay } from '../src/system/underlay.js';
import { log } from '../src/util/log.js';
import { addClusterNode, buildCluster, pingMatrix, reconcileAll, type ClusterNode } from '../src/testbed/cluster.js';

const network: NetworkConfig = { Network: '10.245.0.0/16', Backend: { Type: 'vxlan' } };
let tb: Testbed;
let nodes: ClusterNode[];

async function state(ns: string) {
  const o = { netns: ns };
  return {
    routes: await ipJson<any[]>(['-4', 'route', 'show', 'table', 'all'], o),
    neigh: await ipJson<any[]>(['-4', 'neigh', 'show', 'dev', 'weft.1'], o),
    fdb: await bridgeJson<any[]>(['fdb', 'show', 'dev', 'weft.1'], o),
  };
}

before(async () => {
  tb = await createTestbed({ hosts: 3 });
  nodes = await buildCluster(tb, { network });
});
after(async () => {
  await tb?.destroy();
  assert.deepEqual((await ipJson<any[]>(['netns', 'list'])).filter((n) => n.name.startsWith(tb.prefix)), []);
});

test('vxlan: device weft.1 is flannel-compatible and the lease carries VNI and VtepMAC', async () => {
  const n1 = nodes[0]!;
  const l = await getLink('weft.1', { netns: n1.host.ns });
  assert.ok(l);
  const d = l.linkinfo!.info_data!;
  assert.equal(l.linkinfo!.info_kind, 'vxlan');
  assert.equal(d.id, 1);
  assert.equal(d.port, 8472);
  assert.equal(d.learning, false);
  assert.equal(d.local, n1.host.ip);
  assert.equal(d.link, 'eth0');
  assert.equal(l.mtu, 1450);
  assert.equal(n1.backend.mtu, 1450);
  assert.deepEqual(n1.lease.backendData, { VNI: 1, VtepMAC: l.address });
  assert.deepEqual(l.addr_info!.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['10.245.1.0/32']);
  assert.ok(l.flags!.includes('UP'));
  // per peer: fdb, permanent neighbour, onlink route
  const s = await state(n1.host.ns);
  const [n2, n3] = [nodes[1]!, nodes[2]!];
  for (const p of [n2, n3]) {
    const mac = p.lease.backendData.VtepMAC as string;
    const gw = p.lease.subnet.replace('/24', '');
    assert.ok(s.fdb.some((f) => f.mac === mac && f.dst === p.host.ip && f.state === 'permanent'), `fdb ${mac} → ${p.host.ip}`);
    assert.ok(s.neigh.some((n) => n.dst === gw && n.lladdr === mac && n.state.includes('PERMANENT')), `neigh ${gw}`);
    assert.ok(s.routes.some((r) => r.dst === p.lease.subnet && r.gateway === gw && r.dev === 'weft.1' && r.flags.includes('onlink')), `route ${p.lease.subnet}`);
  }
  // init again adopts the device: same MAC
  assert.deepEqual(await n1.backend.init(), n1.lease.backendData);
});

test('vxlan: 3 hosts × 2 containers, all-pairs ping', async () => {
  assert.deepEqual(await pingMatrix(tb, nodes), []);
});

test('vxlan: wire format on the underlay is UDP 8472 with VNI 1', async () => {
  const [n1, n2] = [nodes[0]!, nodes[1]!];
  const pcap = `/tmp/${tb.prefix}-vxlan.pcap`;
  const dump = tb.spawn(n1.host.ns, ['tcpdump', '-i', 'eth0', '-n', '-U', '-c', '2', '-w', pcap, 'udp', 'port', '8472']);
  const exited = once(dump, 'exit');
  await new Promise<void>((resolve, reject) => {
    let err = '';
    dump.stderr!.on('data', (b: Buffer) => {
      err += b;
      if (/listening on/.test(err)) resolve();
    });
    dump.once('exit', () => reject(new Error(`tcpdump exited: ${err}`)));
  });
  const src = n1.containers[0]!;
  const dst = n2.containers[1]!;
  await waitFor('a ping is answered', 15_000, () => tb.ping(src.ns, dst.ip, { count: 1, timeoutSec: 2 }));
  await exited;
  const buf = await readFile(pcap);
  await rm(pcap, { force: true });
  assert.equal(buf.readUInt32LE(0), 0xa1b2c3d4, 'pcap magic');
  assert.equal(buf.readUInt32LE(20), 1, 'ethernet link type');
  const frames: Buffer[] = [];
  for (let off = 24; off + 16 <= buf.length; ) {
    const len = buf.readUInt32LE(off + 8);
    frames.push(buf.subarray(off + 16, off + 16 + len));
    off += 16 + len;
  }
  assert.equal(frames.length, 2);
  const ipStr = (b: Buffer, o: number) => [...b.subarray(o, o + 4)].join('.');
  const macStr = (b: Buffer, o: number) => [...b.subarray(o, o + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
  const seen: string[] = [];
  for (const f of frames) {
    assert.equal(f.readUInt16BE(12), 0x0800, 'outer IPv4');
    const ihl = (f[14]! & 0x0f) * 4;
    assert.equal(f[14 + 9], 17, 'UDP');
    const udp = 14 + ihl;
    assert.equal(f.readUInt16BE(udp + 2), 8472, 'UDP dst port 8472');
    const vx = udp + 8;
    assert.equal(f[vx], 0x08, 'VXLAN flags: I bit');
    assert.equal(f.readUIntBE(vx + 4, 3), 1, 'VNI 1');
    const inner = vx + 8;
    assert.equal(f.readUInt16BE(inner + 12), 0x0800, 'inner IPv4');
    const innerIp = inner + 14;
    assert.equal(f[innerIp + 9], 1, 'inner ICMP');
    const outerSrc = ipStr(f, 14 + 12);
    const innerSrc = ipStr(f, innerIp + 12);
    const innerDst = ipStr(f, innerIp + 16);
    if (outerSrc === n1.host.ip) {
      assert.equal(ipStr(f, 14 + 16), n2.host.ip);
      assert.equal(macStr(f, inner), n2.lease.backendData.VtepMAC, 'inner dst MAC = peer VtepMAC');
      assert.equal(macStr(f, inner + 6), n1.lease.backendData.VtepMAC);
      seen.push(`request ${innerSrc}>${innerDst}`);
    } else {
      assert.equal(outerSrc, n2.host.ip);
      seen.push(`reply ${innerSrc}>${innerDst}`);
    }
  }
  assert.deepEqual(seen.sort(), [`reply ${dst.ip}>${src.ip}`, `request ${src.ip}>${dst.ip}`]);
});

test('vxlan: reconcile twice changes nothing', async () => {
  const before = await Promise.all(tb.hosts.map((h) => state(h.ns)));
  const logCount = nodes.map((n) => n.logs.length);
  await reconcileAll(nodes);
  await reconcileAll(nodes);
  assert.deepEqual(await Promise.all(tb.hosts.map((h) => state(h.ns))), before);
  nodes.forEach((n, i) => assert.deepEqual(n.logs.slice(logCount[i]).filter((l) => /changes/.test(l.msg)), []));
});

test('vxlan: a restarted agent (new backend object) adopts the device and changes nothing', async () => {
  const n1 = nodes[0]!;
  const before = await state(n1.host.ns);
  const fresh = createBackend(testBackendContext(network, await findUnderlay({}, { netns: n1.host.ns }), log, { netns: n1.host.ns }));
  assert.deepEqual(await fresh.init(), n1.lease.backendData, 'same VtepMAC after restart');
  await fresh.activate(n1.lease);
  await fresh.reconcile(nodes.map((n) => n.lease));
  assert.deepEqual(await state(n1.host.ns), before);
  await waitFor('a ping is answered', 15_000, () => tb.ping(n1.containers[0]!.ns, nodes[2]!.containers[1]!.ip));
});

// Issue 15: a change of peers is applied against what the last reconcile applied, without reading the kernel
// (three reads, three processes); the periodic reconcile reads and repairs drift.
test('vxlan: a change of peers without kernel reads ends where a full reconcile does; a full one repairs drift', async () => {
  const [n1, n2] = nodes as [ClusterNode, ClusterNode];
  const all = nodes.map((n) => n.lease);
  await n1.backend.reconcile(all, undefined, { readKernel: true });
  const full = await state(n1.host.ns);
  await n1.backend.reconcile([n1.lease, n2.lease], undefined, { readKernel: false });
  const s = await state(n1.host.ns);
  assert.deepEqual(s.routes.filter((r) => r.dev === 'weft.1' && r.gateway).map((r) => r.dst), [n2.lease.subnet], 'departed peers lost their routes');
  assert.deepEqual(s.neigh.map((x) => x.dst), [n2.lease.subnet.replace('/24', '')]);
  assert.deepEqual(s.fdb.filter((f) => f.dst).map((f) => [f.mac, f.dst]), [[n2.lease.backendData.VtepMAC, n2.host.ip]]);
  await n1.backend.reconcile(all, undefined, { readKernel: false });
  assert.deepEqual(await state(n1.host.ns), full, 'the peers came back exactly');
  // drift: a route deleted by hand is not seen without a read (that is the point), and repaired by a full reconcile
  await ipJson(['route', 'del', n2.lease.subnet, 'dev', 'weft.1'], { netns: n1.host.ns }).catch(() => undefined);
  await n1.backend.reconcile(all, undefined, { readKernel: false });
  assert.ok(!(await state(n1.host.ns)).routes.some((r) => r.dst === n2.lease.subnet), 'no read: the deletion is not seen');
  await n1.backend.reconcile(all, undefined, { readKernel: true });
  assert.deepEqual(await state(n1.host.ns), full, 'repaired');
});

test('vxlan: a dropped peer loses route, neighbour and fdb entry; a fourth host joins', async () => {
  const [n1, n2, n3] = nodes as [ClusterNode, ClusterNode, ClusterNode];
  await reconcileAll([n1, n2], [n1.lease, n2.lease]);
  for (const [n, other] of [[n1, n2], [n2, n1]] as const) {
    const s = await state(n.host.ns);
    assert.deepEqual(s.routes.filter((r) => r.dev === 'weft.1' && r.gateway).map((r) => r.dst), [other.lease.subnet]);
    assert.deepEqual(s.neigh.map((x) => x.dst), [other.lease.subnet.replace('/24', '')]);
    assert.deepEqual(s.fdb.filter((f) => f.dst).map((f) => [f.mac, f.dst]), [[other.lease.backendData.VtepMAC, other.host.ip]]);
  }
  assert.equal(await tb.ping(n1.containers[0]!.ns, n3.containers[0]!.ip), false);
  const n4 = await addClusterNode(tb, await tb.addHost(), { network });
  nodes = [n1, n2, n3, n4];
  await reconcileAll(nodes);
  assert.deepEqual(await pingMatrix(tb, nodes), []);
});

test('vxlan: a peer that re-created its device (new VtepMAC) is followed', async () => {
  const [n1, n2] = nodes as [ClusterNode, ClusterNode];
  await n2.backend.teardown();
  n2.lease = { ...n2.lease, backendData: await n2.backend.init() };
  await n2.backend.activate(n2.lease);
  await reconcileAll(nodes);
  const s = await state(n1.host.ns);
  assert.ok(s.fdb.some((f) => f.mac === n2.lease.backendData.VtepMAC && f.dst === n2.host.ip));
  assert.equal(s.fdb.filter((f) => f.dst === n2.host.ip).length, 1, 'old MAC removed');
  await waitFor('a ping is answered', 15_000, () => tb.ping(n1.containers[0]!.ns, n2.containers[0]!.ip, { timeoutSec: 2 }));
});

test('vxlan: peers with another VNI or without a VtepMAC are skipped with a logged reason', async () => {
  const n1 = nodes[0]!;
  const before = await state(n1.host.ns);
  const bad = [
    { network: 'testnet', subnet: '10.245.98.0/24', publicIp: '192.0.2.98', backendType: 'vxlan', backendData: { VNI: 7, VtepMAC: '0a:00:00:00:00:07' } },
    { network: 'testnet', subnet: '10.245.99.0/24', publicIp: '192.0.2.99', backendType: 'vxlan', backendData: {} },
  ];
  await n1.backend.reconcile([...nodes.map((n) => n.lease), ...bad]);
  assert.deepEqual(await state(n1.host.ns), before);
  assert.ok(n1.logs.some((l) => l.level === 50 && /skipping peer 192\.0\.2\.98 .*VNI 7/.test(l.msg)));
  assert.ok(n1.logs.some((l) => l.level === 50 && /skipping peer 192\.0\.2\.99 .*no valid VtepMAC/.test(l.msg)));
});

test('vxlan: custom VNI and port; teardown removes the device', async () => {
  const h = await tb.addHost();
  const net2: NetworkConfig = { Network: '10.246.0.0/16', Backend: { Type: 'vxlan', VNI: 42, Port: 4789 } };
  const n = await addClusterNode(tb, h, { network: net2, containers: 0, bridge: 'weft1' });
  const l = await getLink('weft.42', { netns: h.ns });
  assert.equal(l?.linkinfo?.info_data?.id, 42);
  assert.equal(l?.linkinfo?.info_data?.port, 4789);
  assert.equal(n.lease.backendData.VNI, 42);
  await n.backend.teardown();
  assert.equal(await getLink('weft.42', { netns: h.ns }), null);
});
