import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { NetworkConfig } from '../src/config/types.js';
import { ipJson } from '../src/system/ip.js';
import { createTestbed, type Testbed } from '../src/testbed/index.js';
import { createBackend } from '../src/backends/all.js';
import { testBackendContext } from '../src/testbed/cluster.js';
import { findUnderlay } from '../src/system/underlay.js';
import { log } from '../src/util/log.js';
import { needsRoot } from './helpers/require-root.js';
import { addClusterNode, buildCluster, pingMatrix, reconcileAll, type ClusterNode } from '../src/testbed/cluster.js';

const network: NetworkConfig = { Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } };
let tb: Testbed;
let nodes: ClusterNode[];

const routes = (ns: string) => ipJson<any[]>(['-4', 'route', 'show', 'table', 'all'], { netns: ns });
const routeMap = async (ns: string) =>
  Object.fromEntries((await ipJson<any[]>(['-4', 'route', 'show', 'dev', 'eth0'], { netns: ns })).filter((r) => r.gateway && r.dst !== 'default').map((r) => [r.dst, r.gateway]));

/** Network namespaces: root only; reported as skipped with the reason otherwise. */
const skip = needsRoot();

before(async () => {
  if (skip) return;
  tb = await createTestbed({ hosts: 3 });
  nodes = await buildCluster(tb, { network });
});
after(async () => {
  if (skip) return;
  await tb?.destroy();
  assert.deepEqual((await ipJson<any[]>(['netns', 'list'])).filter((n) => n.name.startsWith(tb.prefix)), []);
});

test('host-gw: 3 hosts × 2 containers, all-pairs ping', { skip }, async () => {
  assert.equal(nodes[0]!.backend.mtu, 1500, 'MTU = link MTU');
  assert.deepEqual(await nodes[0]!.backend.init(), {});
  assert.deepEqual(await routeMap(tb.hosts[0]!.ns), { '10.244.2.0/24': tb.hosts[1]!.ip, '10.244.3.0/24': tb.hosts[2]!.ip });
  assert.deepEqual(await pingMatrix(tb, nodes), []);
});

test('host-gw: reconcile twice changes nothing', { skip }, async () => {
  const before = await Promise.all(tb.hosts.map((h) => routes(h.ns)));
  const logCount = nodes.map((n) => n.logs.length);
  await reconcileAll(nodes);
  await reconcileAll(nodes);
  const afterR = await Promise.all(tb.hosts.map((h) => routes(h.ns)));
  assert.deepEqual(afterR, before);
  // and it did not even try: no route changes were logged
  nodes.forEach((n, i) => assert.deepEqual(n.logs.slice(logCount[i]).filter((l) => /route changes/.test(l.msg)), []));
});

test('host-gw: a restarted agent (new backend object) changes nothing', { skip }, async () => {
  const n1 = nodes[0]!;
  const before = await routes(n1.host.ns);
  const sys = { netns: n1.host.ns };
  const fresh = createBackend(testBackendContext(network, await findUnderlay({}, sys), log, sys));
  await fresh.init();
  await fresh.activate(n1.lease);
  await fresh.reconcile(nodes.map((n) => n.lease));
  assert.deepEqual(await routes(n1.host.ns), before);
});

// Issue 15: a change of peers is applied against the routes the last reconcile applied, without reading them
// (one process fewer per peer event); the periodic reconcile reads and repairs drift.
test('host-gw: a change of peers without kernel reads ends where a full reconcile does; a full one repairs drift', { skip }, async () => {
  const [n1, n2] = nodes as [ClusterNode, ClusterNode];
  const all = nodes.map((n) => n.lease);
  await n1.backend.reconcile(all, undefined, { readKernel: true });
  const full = await routes(n1.host.ns);
  await n1.backend.reconcile([n1.lease, n2.lease], undefined, { readKernel: false });
  assert.deepEqual(await routeMap(n1.host.ns), { [n2.lease.subnet]: n2.host.ip }, 'departed peers lost their routes');
  await n1.backend.reconcile(all, undefined, { readKernel: false });
  assert.deepEqual(await routes(n1.host.ns), full, 'the peers came back exactly');
  await ipJson(['route', 'del', n2.lease.subnet], { netns: n1.host.ns }).catch(() => undefined);
  await n1.backend.reconcile(all, undefined, { readKernel: false });
  assert.equal((await routeMap(n1.host.ns))[n2.lease.subnet], undefined, 'no read: the deletion is not seen');
  await n1.backend.reconcile(all, undefined, { readKernel: true });
  assert.deepEqual(await routes(n1.host.ns), full, 'repaired');
});

test('host-gw: a peer dropped from the set loses its routes; a new host joins', { skip }, async () => {
  const [n1, n2, n3] = nodes as [ClusterNode, ClusterNode, ClusterNode];
  await reconcileAll([n1, n2], [n1.lease, n2.lease]);
  assert.deepEqual(await routeMap(n1.host.ns), { '10.244.2.0/24': n2.host.ip });
  assert.deepEqual(await routeMap(n2.host.ns), { '10.244.1.0/24': n1.host.ip });
  assert.equal(await tb.ping(n1.containers[0]!.ns, n3.containers[0]!.ip), false);
  // a fourth host joins
  const h4 = await tb.addHost();
  const n4 = await addClusterNode(tb, h4, { network });
  const all = [n1, n2, n3, n4];
  await reconcileAll(all);
  assert.deepEqual(await pingMatrix(tb, all), []);
  // peer moved to a new public IP: the route follows
  const moved = { ...n3.lease, publicIp: n4.host.ip };
  await n1.backend.reconcile([n1.lease, n2.lease, moved, n4.lease]);
  assert.equal((await routeMap(n1.host.ns))['10.244.3.0/24'], n4.host.ip);
  await reconcileAll(all);
  nodes = all;
});

test('host-gw: refuses a peer off the L2 segment, naming it', { skip }, async () => {
  const n1 = nodes[0]!;
  const off = { network: 'testnet', subnet: '10.244.99.0/24', publicIp: '198.51.100.7', backendType: 'host-gw', backendData: {} };
  const beforeR = await routeMap(n1.host.ns);
  await n1.backend.reconcile([...nodes.map((n) => n.lease), off]);
  assert.deepEqual(await routeMap(n1.host.ns), beforeR, 'no route for the off-segment peer');
  const err = n1.logs.find((l) => l.level === 50 && /refusing peer 198\.51\.100\.7/.test(l.msg));
  assert.ok(err, 'an error log names the peer');
  assert.match(err!.msg, /not on the L2 segment of eth0/);
  assert.equal(err!.subnet, '10.244.99.0/24');
  // other peers still work
  assert.deepEqual(await pingMatrix(tb, nodes), []);
});

test('host-gw: teardown removes its routes only', { skip }, async () => {
  const n1 = nodes[0]!;
  await n1.backend.teardown();
  assert.deepEqual(await routeMap(n1.host.ns), {});
  const def = await ipJson<any[]>(['-4', 'route', 'show', 'default'], { netns: n1.host.ns });
  assert.equal(def.length, 1, 'default route untouched');
});
