import '../src/backends/all.js';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { AgentDockerOps, type AgentLike } from '../src/adapters/docker/agent-ops.js';
import { DockerPlugin, parseWeftOptions } from '../src/adapters/docker/plugin.js';
import { FileStateStore } from '../src/adapters/docker/state.js';
import { BridgeBackend, bridgePlan } from '../src/backends/bridge/index.js';
import { judgeL2 } from '../src/backends/l2/doctor.js';
import { macvlanPlan } from '../src/backends/macvlan/index.js';
import { addressPlan } from '../src/backends/registry.js';
import { backendFieldsFromOptions } from '../src/config/backend-spec.js';
import { connectNetworks, disconnectNetworks, isolationPolicy } from '../src/config/connections.js';
import { createNetwork, listNetworks } from '../src/config/registry.js';
import { AddressPool } from '../src/ipam/addresses.js';
import { Ipam } from '../src/ipam/ipam.js';
import type { Lease } from '../src/lease/types.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { runWeft } from '../src/testbed/agents.js';

/** Unit tests of the network models: address plans, shared pools, options, create-time refusals. No root. */

async function withStore(fn: (store: Store, url: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'weft-models-'));
  const url = `sqlite://${path.join(dir, 'weft.db')}`;
  const store = await openStore(url, { create: true });
  try {
    await fn(store, url);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const lease = (subnet: string, publicIp = '192.168.1.11'): Lease => ({ network: 'n', subnet, publicIp, backendType: 'x', backendData: {}, hostId: 'h1' });

test('AddressPool: a plan range narrows the pool and skips the gateway inside it', () => {
  const p = new AddressPool('10.5.0.0/16', { first: '10.5.1.0', last: '10.5.1.3', gateway: '10.5.1.1' });
  assert.equal(p.size, 3);
  assert.deepEqual([p.at(0), p.at(1), p.at(2)], ['10.5.1.0', '10.5.1.2', '10.5.1.3']);
  assert.throws(() => p.check('10.5.1.1'), /is the gateway/);
  assert.throws(() => p.check('10.5.2.9'), /outside this host's range of 10\.5\.0\.0\/16 \(10\.5\.1\.0–10\.5\.1\.3\)/);
  assert.throws(() => p.check('10.6.0.1'), /outside this host's subnet 10\.5\.0\.0\/16/);
  assert.equal(p.check('10.5.1.3/16'), '10.5.1.3');
  // no range: the old behaviour (gateway = first address, never handed out)
  const plain = new AddressPool('10.5.1.0/24');
  assert.equal(plain.at(0), '10.5.1.2');
  assert.equal(plain.size, 253);
  // the whole network with no gateway (l2 without router): network and broadcast only are excluded
  const whole = new AddressPool('10.7.0.0/30', {});
  assert.deepEqual([whole.size, whole.at(0), whole.at(1)], [2, '10.7.0.1', '10.7.0.2']);
});

test('plans: l2 shares the whole subnet and gateway; macvlan and bridge give each host its lease of the one subnet', () => {
  const l2 = addressPlan(lease('10.61.3.0/24'), { Network: '10.61.0.0/16', Backend: { Type: 'l2' } } as never);
  assert.deepEqual(l2, { pool: '10.61.0.0/16', gateway: '10.61.0.1' });
  assert.deepEqual(macvlanPlan(lease('10.62.3.0/24'), { Network: '10.62.0.0/16', Backend: { Type: 'macvlan', Gateway: '10.62.0.254' } } as never), {
    pool: '10.62.0.0/16',
    first: '10.62.3.2',
    last: '10.62.3.254',
    gateway: '10.62.0.254',
  });
  assert.throws(() => macvlanPlan(lease('10.62.3.0/24'), { Network: '10.62.0.0/16', Backend: { Type: 'macvlan', Gateway: '10.9.0.1' } } as never), /gateway 10\.9\.0\.1 is outside the network/);
  // macvlan without --gateway: the host's shim (the lease's first address) routes what is not on the wire
  assert.equal(macvlanPlan(lease('10.62.3.0/24'), { Network: '10.62.0.0/16', Backend: { Type: 'macvlan' } } as never).gateway, '10.62.3.1');
  // bridge: the host's own address is the gateway unless the user names the physical router
  const b = bridgePlan(lease('192.168.1.128/28'), { Network: '192.168.1.0/24', Backend: { Type: 'bridge' } } as never);
  assert.deepEqual(b, { pool: '192.168.1.0/24', first: '192.168.1.128', last: '192.168.1.143', gateway: '192.168.1.11', bridgeAddress: false });
  assert.equal(bridgePlan(lease('192.168.1.128/28'), { Network: '192.168.1.0/24', Backend: { Type: 'bridge', Gateway: '192.168.1.1' } } as never).gateway, '192.168.1.1');
});

test('Ipam: one pool shared by hosts gives every host distinct addresses; an owner key is per host; release touches only its host', () =>
  withStore(async (store) => {
    const ipam = new Ipam(store);
    const pool = '10.61.0.0/16';
    const range = { gateway: '10.61.0.1' };
    const a = await ipam.allocate({ network: 'n', subnet: pool, range, host: 'h1', owner: 'netns:c1' });
    const b = await ipam.allocate({ network: 'n', subnet: pool, range, host: 'h2', owner: 'netns:c1' });
    assert.notEqual(a.address, b.address, 'the same owner key on two hosts is two containers');
    assert.equal(a.address, '10.61.0.2');
    assert.equal(a.cidr, '10.61.0.2/16');
    assert.equal((await ipam.allocate({ network: 'n', subnet: pool, range, host: 'h1', owner: 'netns:c1' })).address, a.address, 'idempotent per host');
    await ipam.allocate({ network: 'n', subnet: pool, range, host: 'h3', owner: 'netns:x', address: '10.61.200.7' });
    await assert.rejects(ipam.allocate({ network: 'n', subnet: pool, range, host: 'h2', owner: 'netns:y', address: '10.61.200.7' }), /10\.61\.200\.7 in 10\.61\.0\.0\/16 is already taken by netns:x on host h3/);
    await assert.rejects(ipam.allocate({ network: 'n', subnet: pool, range, host: 'h2', owner: 'netns:y', address: '10.61.0.1' }), /gateway/);
    const freed = await ipam.release({ network: 'n', subnet: pool, owner: 'netns:c1', host: 'h2' });
    assert.deepEqual(freed.map((f) => f.address), [b.address]);
    assert.ok((await ipam.list({ network: 'n', subnet: pool })).some((x) => x.address === a.address && x.host === 'h1'), "h1's address stays");
  }),
);

test('network create refuses an overlapping subnet, a VNI in use (l2 too), a too small subnet — nothing is stored', () =>
  withStore(async (store) => {
    await createNetwork(store, 'a', { Network: '10.1.0.0/16', Backend: { Type: 'l2', VNI: 5 } });
    await assert.rejects(createNetwork(store, 'b', { Network: '10.1.128.0/17', Backend: { Type: 'vxlan' } }), /network 10\.1\.128\.0\/17 overlaps network "a" \(10\.1\.0\.0\/16\)/);
    await assert.rejects(createNetwork(store, 'c', { Network: '10.2.0.0/16', Backend: { Type: 'l2', VNI: 5 } }), /VNI 5 is already used by network "a"; pick another with --vni/);
    await assert.rejects(createNetwork(store, 'd', { Network: '10.3.0.0/30', Backend: { Type: 'macvlan' } }), /too small/);
    const l2b = await createNetwork(store, 'e', { Network: '10.4.0.0/16', Backend: { Type: 'l2' } });
    assert.equal(l2b.Backend.VNI, 1, 'the lowest VNI no other l2 network uses');
    assert.equal(l2b.Backend.Port, 4789);
    assert.deepEqual((await listNetworks(store)).map((n) => n.name), ['a', 'e']);
  }),
);

test('connect/disconnect: one key per pair, both orders; the isolation policy follows; unknown networks refused', () =>
  withStore(async (store) => {
    await createNetwork(store, 'red', { Network: '10.1.0.0/16', Backend: { Type: 'host-gw' } });
    await createNetwork(store, 'blue', { Network: '10.2.0.0/16', Backend: { Type: 'host-gw' } });
    assert.deepEqual((await isolationPolicy(store)).connected, new Set());
    assert.deepEqual(await connectNetworks(store, 'red', 'blue'), { created: true });
    assert.deepEqual(await connectNetworks(store, 'blue', 'red'), { created: false });
    assert.deepEqual((await isolationPolicy(store)).connected, new Set(['blue+red']));
    await assert.rejects(connectNetworks(store, 'red', 'red'), /to itself/);
    await assert.rejects(connectNetworks(store, 'red', 'green'), /no network "green"/);
    assert.deepEqual(await disconnectNetworks(store, 'red', 'blue'), { removed: true });
    assert.deepEqual((await isolationPolicy(store)).connected, new Set());
  }),
);

test('backend options are read from the modules: CLI flags and Docker -o alike', () => {
  assert.deepEqual(backendFieldsFromOptions('macvlan', (f) => ({ parent: 'eth1', gateway: '10.0.0.1' })[f]), { Parent: 'eth1', Gateway: '10.0.0.1' });
  assert.deepEqual(backendFieldsFromOptions('l2', (f) => ({ vni: '9' })[f]), { VNI: 9 });
  assert.throws(() => backendFieldsFromOptions('host-gw', (f) => ({ vni: '9' })[f]), /--vni is not an option of backend host-gw \(it is one of vxlan, l2\)/);
  assert.throws(() => backendFieldsFromOptions('vxlan', (f) => ({ vni: 'x' })[f]), /--vni must be a whole number/);
  const o = parseWeftOptions({ 'weft.backend': 'macvlan', parent: 'eth1' });
  assert.deepEqual(o, { backend: 'macvlan', backendOptions: { parent: 'eth1' } });
  assert.throws(() => parseWeftOptions({ backend: 'host-gw', 'weft.parent': 'eth1' }), /-o weft\.parent is not an option of backend host-gw/);
});

function post(socket: string, method: string, body: unknown): Promise<any> {
  const text = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method: 'POST', path: method, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) } }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve(JSON.parse(data || '{}')));
    });
    req.on('error', reject);
    req.end(text);
  });
}

test('Docker plugin: RequestPool refuses what `weft network create` refuses (size, overlap, VNI in use), at create time', () =>
  withStore(async (store) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'weft-models-plugin-'));
    const agent: AgentLike = { store, hostId: 'h1', runners: new Map(), failed: new Map(), join: async () => undefined };
    const plugin = new DockerPlugin({ ops: new AgentDockerOps(agent), state: new FileStateStore(path.join(dir, 'state.json')), pluginDir: dir, nameTimeoutMs: 100 });
    await plugin.start();
    try {
      await createNetwork(store, 'prod', { Network: '10.40.0.0/16', Backend: { Type: 'vxlan', VNI: 3 } });
      const pool = (Pool: string, Options: Record<string, string> = {}) => post(plugin.socketPath, '/IpamDriver.RequestPool', { AddressSpace: 'weft', Pool, SubPool: '', Options, V6: false });
      // the config's rule, not a plugin-only one: a /29 leaves no room for per-host subnets
      assert.match((await pool('10.50.0.0/29')).Err, /subnet 10\.50\.0\.0\/29: invalid network config: Network "10\.50\.0\.0\/29": too small: weft needs at least a \/28/);
      assert.match((await pool('10.40.128.0/17')).Err, /overlaps network "prod"/);
      assert.match((await pool('10.60.0.0/16', { 'weft.vni': '3' })).Err, /VNI 3 is already used by network "prod"/);
      assert.match((await pool('10.60.0.0/16', { 'weft.backend': 'macvlan', 'weft.vni': '3' })).Err, /-o weft\.vni is not an option of backend macvlan/);
      // the same subnet as an existing weft network is that network (another host's Docker creating it too)
      assert.equal((await pool('10.40.0.0/16')).Pool, '10.40.0.0/16');
      assert.equal((await pool('10.60.0.0/16', { 'weft.backend': 'l2' })).Pool, '10.60.0.0/16');
    } finally {
      await plugin.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }),
);

test('weft network create: backend options come from the modules (--parent for macvlan); a wrong one is refused', () =>
  withStore(async (_store, url) => {
    const ok = await runWeft(['network', 'create', 'mv', '--subnet', '10.80.0.0/16', '--backend', 'macvlan', '--parent', 'eth1', '--gateway', '10.80.0.254', '--store', url, '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout).config.Backend, { Type: 'macvlan', Parent: 'eth1', Gateway: '10.80.0.254' });
    const bad = await runWeft(['network', 'create', 'hg', '--subnet', '10.81.0.0/16', '--backend', 'host-gw', '--vni', '4', '--store', url]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--vni is not an option of backend host-gw/);
    const overlap = await runWeft(['network', 'create', 'ov', '--subnet', '10.80.5.0/24', '--backend', 'l2', '--store', url]);
    assert.match(overlap.stderr, /overlaps network "mv"/);
    const again = await openStore(url);
    try {
      assert.deepEqual((await listNetworks(again)).map((n) => n.name), ['mv'], 'nothing half-created');
    } finally {
      await again.close();
    }
  }),
);

test('l2 doctor: a missing flood entry or a device off the bridge is named with the fix', () => {
  const input = (master: string | undefined, fdb: Array<{ mac: string; dst?: string }>) =>
    ({
      network: { name: 'lan', subnet: '10.61.1.0/24', bridge: 'weft0', mtu: 1450, backend: 'l2', peers: [{ subnet: '10.61.2.0/24', publicIp: '192.168.1.12', hostId: 'h2' }] },
      publicIp: '192.168.1.11',
      underlayIface: 'eth0',
      links: [{ ifname: 'wl2.1', ifindex: 5, mtu: 1450, flags: ['UP'], ...(master ? { master } : {}) }],
      routes: [],
      neigh: {},
      fdb: { 'wl2.1': fdb },
      rpFilter: {},
    }) as never;
  const good = judgeL2(input('weft0', [{ mac: '00:00:00:00:00:00', dst: '192.168.1.12' }]), 'wl2.1');
  assert.ok(good.every((x) => x.ok), JSON.stringify(good));
  const bad = judgeL2(input(undefined, []), 'wl2.1');
  assert.deepEqual(bad.filter((x) => !x.ok).map((x) => x.fix), ['ip link set wl2.1 master weft0', 'bridge fdb append 00:00:00:00:00:00 dev wl2.1 dst 192.168.1.12 self permanent']);
  assert.match(judgeL2(input('weft0', []), 'wl2.9')[0]!.message, /wl2\.9 is missing/);
});

test('bridge: a peer host whose address lies in this host range makes the backend unhealthy, naming the fix', async () => {
  const { pino } = await import('pino');
  const network = { Network: '192.168.1.0/24', SubnetLen: 28, Backend: { Type: 'bridge', Uplink: 'nosuchnic0' } } as never;
  const b = new BridgeBackend({ networkName: 'seg', network, underlay: { iface: 'nosuchnic0', ip: '192.168.1.11', mtu: 1500 }, log: pino({ level: 'silent' }), stateDir: os.tmpdir(), bridge: 'weft0', hostId: 'h1', sys: {} });
  await b.activate(lease('192.168.1.0/28'));
  await b.reconcile([lease('192.168.1.16/28', '192.168.1.20'), lease('192.168.1.32/28', '192.168.1.3')]);
  assert.equal(b.status().healthy, false);
  assert.match(String(b.status().detail), /host address 192\.168\.1\.3 lie in this host's range 192\.168\.1\.0\/28.*--subnet-min/);
  await b.reconcile([lease('192.168.1.16/28', '192.168.1.20')]);
  assert.equal(b.status().healthy, true);
});
