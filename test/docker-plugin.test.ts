/**
 * The Docker plugin protocol over a real unix socket with Docker-shaped JSON bodies, against a fake
 * DockerBackendOps: two hosts sharing one in-memory "store" (networks, leases, addresses).
 */
import { waitFor } from '../src/testbed/wait.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { DockerPlugin, type DockerBackendOps, type HostNetwork, type WeftNetworkOptions } from '../src/adapters/docker/plugin.js';
import { FileStateStore } from '../src/adapters/docker/state.js';

/** A tiny weft: networks split into /subnetLen leases, one per host; addresses allocated per lease. */
class FakeCluster {
  networks = new Map<string, { subnet: string; subnetLen: number; docker?: unknown }>();
  /** network → host → lease index */
  leases = new Map<string, Map<string, number>>();
  /** network → ip → host */
  addresses = new Map<string, Map<string, string>>();
  veths = new Map<string, string>(); // hostIf → host
  calls: string[] = [];
  owners: string[] = [];

  ops(host: string, dockerNames: Record<string, string> = {}): DockerBackendOps {
    const c = this;
    const base = (subnet: string) => subnet.split('/')[0]!.split('.').map(Number);
    const leaseOf = (name: string, idx: number) => {
      const n = c.networks.get(name)!;
      const b = base(n.subnet);
      const size = 2 ** (32 - n.subnetLen);
      const v = ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) + idx * size;
      return { ip: (k: number) => [((v + k) >>> 24) & 255, ((v + k) >>> 16) & 255, ((v + k) >>> 8) & 255, (v + k) & 255].join('.'), size };
    };
    const hostNet = (name: string): HostNetwork => {
      const idx = c.leases.get(name)!.get(host)!;
      const l = leaseOf(name, idx);
      const n = c.networks.get(name)!;
      return { name, network: n.subnet, subnet: `${l.ip(0)}/${n.subnetLen}`, gateway: l.ip(1), bridge: 'weft0', mtu: 1450 };
    };
    return {
      async ensureNetwork(name: string, subnet: string, opts: WeftNetworkOptions & { docker?: unknown }) {
        c.calls.push(`${host} ensure ${name} ${subnet}`);
        const have = c.networks.get(name);
        if (have && have.subnet !== subnet) throw new Error(`weft network ${name} already exists with subnet ${have.subnet}`);
        if (!have) {
          c.networks.set(name, { subnet, subnetLen: opts.subnetLen ?? 24, docker: opts.docker });
          c.leases.set(name, new Map());
          c.addresses.set(name, new Map());
        }
      },
      async joinNetwork(name: string) {
        const n = c.networks.get(name);
        if (!n) throw new Error(`no weft network ${name}`);
        const held = c.leases.get(name)!;
        if (!held.has(host)) {
          const total = 2 ** (n.subnetLen - Number(n.subnet.split('/')[1]));
          const used = new Set(held.values());
          let i = 0;
          while (used.has(i)) i++;
          if (i >= total) {
            throw new Error(`network ${name} ${n.subnet} is exhausted: ${total} subnets held by ${[...held.keys()].join(', ')}`);
          }
          held.set(host, i);
          c.calls.push(`${host} join ${name}`);
        }
        return hostNet(name);
      },
      async allocateAddress(name: string, req: { address?: string; owner: string }) {
        c.owners.push(req.owner);
        const hn = hostNet(name);
        const l = leaseOf(name, c.leases.get(name)!.get(host)!);
        const addrs = c.addresses.get(name)!;
        const len = hn.subnet.split('/')[1];
        if (req.address) {
          const holder = addrs.get(req.address);
          if (holder) throw new Error(`address ${req.address} is already in use on host ${holder}`);
          addrs.set(req.address, host);
          return `${req.address}/${len}`;
        }
        for (let k = 2; k < l.size - 1; k++) {
          if (!addrs.has(l.ip(k))) {
            addrs.set(l.ip(k), host);
            return `${l.ip(k)}/${len}`;
          }
        }
        throw new Error(`no free address in ${hn.subnet} on host ${host}`);
      },
      async releaseAddress(name: string, ip: string) {
        c.calls.push(`${host} release ${name} ${ip}`);
        c.addresses.get(name)?.delete(ip);
      },
      async createVeth(name: string, req: { endpointId: string; mac: string }) {
        const hostIf = `vd${req.endpointId.slice(0, 8)}`;
        c.veths.set(hostIf, host);
        c.calls.push(`${host} veth+ ${hostIf}`);
        return { hostIf, peerIf: `vp${req.endpointId.slice(0, 8)}`, mac: req.mac };
      },
      async deleteVeth(_name: string, hostIf: string) {
        c.calls.push(`${host} veth- ${hostIf}`);
        c.veths.delete(hostIf);
      },
      async removeNetwork(name: string) {
        const addrs = c.addresses.get(name);
        if (addrs && addrs.size) {
          throw new Error(`network ${name} still has ${addrs.size} endpoint(s): ${[...addrs].map(([ip, h]) => `${ip} on host ${h}`).join(', ')}`);
        }
        c.calls.push(`${host} remove ${name}`);
        c.networks.delete(name);
        c.leases.delete(name);
        c.addresses.delete(name);
      },
      async dockerNetworkName(id: string) {
        return dockerNames[id];
      },
    };
  }
}

function post(socket: string, method: string, body: unknown): Promise<{ status: number; json: any; contentType: string }> {
  const text = body === undefined ? '' : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: socket,
        method: 'POST',
        path: method,
        headers: { Accept: 'application/vnd.docker.plugins.v1.2+json', 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) },
      },
      (res) => {
        let data = '';
        res.on('data', (c) => (data += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: data ? JSON.parse(data) : undefined, contentType: String(res.headers['content-type']) }));
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

async function ok(socket: string, method: string, body: unknown): Promise<any> {
  const r = await post(socket, method, body);
  assert.equal(r.status, 200, `${method}: ${JSON.stringify(r.json)}`);
  assert.equal(r.json.Err, undefined, `${method}: ${r.json.Err}`);
  return r.json;
}

const NET_A = 'a'.repeat(64);
const NET_B = 'b'.repeat(64);

async function setup(t: { after(fn: () => Promise<void>): void }) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wdp-'));
  const cluster = new FakeCluster();
  const plugins: DockerPlugin[] = [];
  const mk = async (host: string, names: Record<string, string>, stateFile = path.join(dir, `${host}.json`)) => {
    const p = new DockerPlugin({ ops: cluster.ops(host, names), state: new FileStateStore(stateFile), pluginDir: path.join(dir, host), nameTimeoutMs: 1000 });
    await p.start();
    plugins.push(p);
    return p;
  };
  t.after(async () => {
    for (const p of plugins) await p.stop();
    await rm(dir, { recursive: true, force: true });
  });
  return { dir, cluster, mk };
}

/** What `docker network create -d weft --ipam-driver weft --subnet POOL` sends, in Docker's order. */
async function dockerNetworkCreate(sock: string, id: string, pool: string, ipamOpts: Record<string, string> = {}, generic: Record<string, string> = {}) {
  assert.deepEqual(await ok(sock, '/Plugin.Activate', {}), { Implements: ['NetworkDriver', 'IpamDriver'] });
  await ok(sock, '/NetworkDriver.GetCapabilities', {});
  await ok(sock, '/IpamDriver.GetCapabilities', {});
  const spaces = await ok(sock, '/IpamDriver.GetDefaultAddressSpaces', {});
  const pool1 = await ok(sock, '/IpamDriver.RequestPool', { AddressSpace: spaces.GlobalDefaultAddressSpace, Pool: pool, SubPool: '', Options: ipamOpts, V6: false });
  assert.equal(pool1.Pool, pool);
  const gw = await ok(sock, '/IpamDriver.RequestAddress', { PoolID: pool1.PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
  await ok(sock, '/NetworkDriver.CreateNetwork', {
    NetworkID: id,
    Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': generic },
    IPv4Data: [{ AddressSpace: spaces.GlobalDefaultAddressSpace, Gateway: gw.Address, Pool: pool }],
    IPv6Data: [],
  });
  return { poolId: pool1.PoolID as string, gateway: gw.Address as string };
}

/** What `docker run --network N [--ip IP]` sends; returns the endpoint's address and Join answer. */
async function dockerRun(sock: string, netId: string, poolId: string, epId: string, ip = '') {
  const addr = await ok(sock, '/IpamDriver.RequestAddress', { PoolID: poolId, Address: ip, Options: {} });
  const ce = await ok(sock, '/NetworkDriver.CreateEndpoint', {
    NetworkID: netId,
    EndpointID: epId,
    Interface: { Address: addr.Address, AddressIPv6: '', MacAddress: '' },
    Options: { 'com.docker.network.endpoint.exposedports': [], 'com.docker.network.portmap': [] },
  });
  const join = await ok(sock, '/NetworkDriver.Join', { NetworkID: netId, EndpointID: epId, SandboxKey: `/var/run/docker/netns/${epId.slice(0, 12)}`, Options: {} });
  await ok(sock, '/NetworkDriver.ProgramExternalConnectivity', { NetworkID: netId, EndpointID: epId, Options: {} });
  const info = await ok(sock, '/NetworkDriver.EndpointOperInfo', { NetworkID: netId, EndpointID: epId });
  return { address: addr.Address as string, mac: ce.Interface?.MacAddress as string, join, info };
}

async function dockerStop(sock: string, netId: string, poolId: string, epId: string, address: string) {
  await ok(sock, '/NetworkDriver.RevokeExternalConnectivity', { NetworkID: netId, EndpointID: epId });
  await ok(sock, '/NetworkDriver.Leave', { NetworkID: netId, EndpointID: epId });
  await ok(sock, '/NetworkDriver.DeleteEndpoint', { NetworkID: netId, EndpointID: epId });
  await ok(sock, '/IpamDriver.ReleaseAddress', { PoolID: poolId, Address: address.split('/')[0] });
}

async function dockerNetworkRm(sock: string, netId: string, poolId: string, gateway: string) {
  const r = await post(sock, '/NetworkDriver.DeleteNetwork', { NetworkID: netId });
  if (r.status !== 200 || r.json?.Err) return r;
  await ok(sock, '/IpamDriver.ReleaseAddress', { PoolID: poolId, Address: gateway.split('/')[0] });
  await ok(sock, '/IpamDriver.ReleasePool', { PoolID: poolId });
  return r;
}

const waitUntilTrue = (cond: () => boolean) => waitFor('the plugin state', 2000, cond, 10);

test('activation, capabilities, unknown methods and bad requests', async (t) => {
  const { mk } = await setup(t);
  const p = await mk('A', {});
  const s = p.socketPath;
  assert.match(s, /A\/weft\.sock$/);
  const act = await post(s, '/Plugin.Activate', undefined);
  assert.equal(act.status, 200);
  assert.equal(act.contentType, 'application/vnd.docker.plugins.v1.2+json');
  assert.deepEqual(act.json, { Implements: ['NetworkDriver', 'IpamDriver'] });
  assert.deepEqual(await ok(s, '/NetworkDriver.GetCapabilities', {}), { Scope: 'local', ConnectivityScope: 'global' });
  assert.deepEqual(await ok(s, '/IpamDriver.GetCapabilities', {}), { RequiresMACAddress: false, RequiresRequestReplay: false });
  assert.deepEqual(await ok(s, '/IpamDriver.GetDefaultAddressSpaces', {}), { LocalDefaultAddressSpace: 'weft', GlobalDefaultAddressSpace: 'weft' });
  for (const m of ['/NetworkDriver.DiscoverNew', '/NetworkDriver.DiscoverDelete']) assert.deepEqual(await ok(s, m, { DiscoveryType: 1, DiscoveryData: {} }), {});
  const unknown = await post(s, '/NetworkDriver.AllocateNetwork', {});
  assert.equal(unknown.status, 404);
  assert.match(unknown.json.Err, /unknown plugin method \/NetworkDriver\.AllocateNetwork/);
  // the internal follow-up call is not reachable from outside
  assert.equal((await post(s, '/weft.AdoptNetwork', { NetworkID: 'x' })).status, 404);
  const noPool = await post(s, '/IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '', SubPool: '', Options: {}, V6: false });
  assert.equal(noPool.status, 500);
  assert.match(noPool.json.Err, /^weft: the weft IPAM driver needs a subnet: docker network create -d weft --ipam-driver weft --subnet/);
  const v6 = await post(s, '/IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: 'fd00::/64', SubPool: '', Options: {}, V6: true });
  assert.match(v6.json.Err, /IPv6 pools are not supported/);
  const hostBits = await post(s, '/IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '10.40.0.1/16', SubPool: '', Options: {}, V6: false });
  assert.match(hostBits.json.Err, /invalid subnet "10.40.0.1\/16"/);
  const badLen = await post(s, '/IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '10.40.0.0/16', SubPool: '', Options: { 'weft.subnet-len': 'x' }, V6: false });
  assert.match(badLen.json.Err, /invalid weft.subnet-len "x"/);
  const notJson = await new Promise<number>((resolve) => {
    const req = http.request({ socketPath: s, method: 'POST', path: '/IpamDriver.RequestPool' }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.end('{nope');
  });
  assert.equal(notJson, 400);
  // a network whose subnet did not come from weft's IPAM
  const foreign = await post(s, '/NetworkDriver.CreateNetwork', { NetworkID: NET_A, Options: {}, IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '172.30.0.0/16', Gateway: '172.30.0.1/16' }], IPv6Data: [] });
  assert.match(foreign.json.Err, /subnet 172.30.0.0\/16 was not allocated by weft: use --ipam-driver weft/);
});

test('create on A, run on A and B, static --ip, conflicts, exhaustion, removal', async (t) => {
  const { cluster, mk } = await setup(t);
  const a = await mk('A', { [NET_A]: 'prodnet' });
  const b = await mk('B', { [NET_B]: 'prodnet' });

  const na = await dockerNetworkCreate(a.socketPath, NET_A, '10.40.0.0/16');
  // gateway is the placeholder (first usable address, pool length); nothing is leased at create time
  assert.equal(na.gateway, '10.40.0.1/16');
  await waitUntilTrue(() => cluster.networks.has('prodnet'));
  assert.equal(cluster.networks.get('prodnet')!.subnet, '10.40.0.0/16');
  assert.deepEqual(cluster.networks.get('prodnet')!.docker, { name: 'prodnet', options: {}, ipamOptions: {} });
  assert.equal(cluster.leases.get('prodnet')!.size, 0);
  await waitUntilTrue(() => a.snapshot().networks[NET_A]?.network === 'prodnet');

  // the same network created on B (as weft's sync does) maps onto the same weft network
  const nb = await dockerNetworkCreate(b.socketPath, NET_B, '10.40.0.0/16');
  await waitUntilTrue(() => b.snapshot().networks[NET_B]?.network === 'prodnet');

  // docker run on A: A joins (lease 10.40.0.0/24), first free address .2 with the lease's /24
  const ra = await dockerRun(a.socketPath, NET_A, na.poolId, 'e1'.repeat(32));
  assert.equal(ra.address, '10.40.0.2/24');
  assert.match(ra.mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  assert.equal(parseInt(ra.mac.slice(0, 2), 16) & 3, 2, 'locally administered unicast MAC');
  assert.deepEqual(ra.join, {
    InterfaceName: { SrcName: `vp${'e1e1e1e1'}`, DstPrefix: 'eth' },
    Gateway: '10.40.0.1',
    GatewayIPv6: '',
    StaticRoutes: [{ Destination: '10.40.0.0/16', RouteType: 0, NextHop: '10.40.0.1' }],
    DisableGatewayService: false,
  });
  assert.deepEqual(ra.info.Value, { network: 'prodnet', address: '10.40.0.2/24', mac: ra.mac, hostInterface: 'vde1e1e1e1', gateway: '10.40.0.1' });
  assert.equal(cluster.veths.get('vde1e1e1e1'), 'A');

  // docker run on B with --ip inside B's lease: honoured
  const rb = await dockerRun(b.socketPath, NET_B, nb.poolId, 'e2'.repeat(32), '10.40.1.9');
  assert.equal(rb.address, '10.40.1.9/24');
  assert.equal(rb.join.Gateway, '10.40.1.1');

  // --ip taken on the other host: weft's message
  const taken = await post(a.socketPath, '/IpamDriver.RequestAddress', { PoolID: na.poolId, Address: '10.40.1.9', Options: {} });
  assert.equal(taken.status, 500);
  assert.equal(taken.json.Err, 'weft: address 10.40.1.9 is already in use on host B');
  // --ip outside the pool
  const outside = await post(a.socketPath, '/IpamDriver.RequestAddress', { PoolID: na.poolId, Address: '10.41.0.5', Options: {} });
  assert.equal(outside.json.Err, 'weft: address 10.41.0.5 is not inside the network\'s subnet 10.40.0.0/16');

  // DeleteNetwork while this host still has an endpoint (Docker checks this itself first): refused
  const busy = await post(a.socketPath, '/NetworkDriver.DeleteNetwork', { NetworkID: NET_A });
  assert.match(busy.json.Err, /^weft: network prodnet still has 1 endpoint\(s\) on this host/);

  // stop the container on A: veth gone, address released (without prefix length, as Docker sends it)
  await dockerStop(a.socketPath, NET_A, na.poolId, 'e1'.repeat(32), ra.address);
  assert.equal(cluster.veths.has('vde1e1e1e1'), false);
  assert.ok(cluster.calls.includes('A release prodnet 10.40.0.2'));
  assert.deepEqual(a.snapshot().endpoints, {});

  // Docker removes its network whatever the driver says: A's record goes, the weft network stays for B
  assert.equal((await dockerNetworkRm(a.socketPath, NET_A, na.poolId, na.gateway)).status, 200);
  assert.deepEqual(a.snapshot(), { pools: {}, networks: {}, endpoints: {} });
  assert.equal(cluster.networks.has('prodnet'), true, 'kept while B has an endpoint');
  assert.ok(!cluster.calls.includes('A remove prodnet'));

  await dockerStop(b.socketPath, NET_B, nb.poolId, 'e2'.repeat(32), rb.address);
  assert.equal((await dockerNetworkRm(b.socketPath, NET_B, nb.poolId, nb.gateway)).status, 200);
  assert.equal(cluster.networks.has('prodnet'), false, 'removed everywhere once no endpoint is left');
  assert.ok(cluster.calls.includes('B remove prodnet'));
  assert.deepEqual(b.snapshot(), { pools: {}, networks: {}, endpoints: {} });
  assert.equal(cluster.veths.size, 0);
  // weft's IPAM gives one owner one address: each allocation must have its own
  assert.equal(new Set(cluster.owners).size, cluster.owners.length);
  assert.ok(cluster.owners.every((o) => o.startsWith('docker:')));
});

test('exhaustion fails docker run (not network create) with weft\'s message', async (t) => {
  const { cluster, mk } = await setup(t);
  const a = await mk('A', { [NET_A]: 'tiny' });
  const b = await mk('B', { [NET_B]: 'tiny' });
  // one /24 split into /26 leases: four subnets (flannel's minimum); and --ipam-opt naming the subnet length
  const na = await dockerNetworkCreate(a.socketPath, NET_A, '10.50.0.0/24', { 'weft.subnet-len': '26' });
  const nb = await dockerNetworkCreate(b.socketPath, NET_B, '10.50.0.0/24', { 'weft.subnet-len': '26' });
  await waitUntilTrue(() => cluster.networks.get('tiny')?.subnetLen === 26);
  for (const [i, h] of ['C', 'D', 'E', 'F'].entries()) cluster.leases.get('tiny')!.set(h, i); // four other hosts hold all four
  const r = await post(a.socketPath, '/IpamDriver.RequestAddress', { PoolID: na.poolId, Address: '', Options: {} });
  assert.equal(r.json.Err, 'weft: network tiny 10.50.0.0/24 is exhausted: 4 subnets held by C, D, E, F');
  cluster.leases.get('tiny')!.delete('F');
  const ok1 = await ok(b.socketPath, '/IpamDriver.RequestAddress', { PoolID: nb.poolId, Address: '', Options: {} });
  assert.equal(ok1.Address, '10.50.0.194/26');
});

test('state survives a plugin restart (Docker does not replay CreateNetwork/CreateEndpoint)', async (t) => {
  const { dir, cluster, mk } = await setup(t);
  const stateFile = path.join(dir, 'A-state.json');
  const a1 = await mk('A', { [NET_A]: 'prodnet' }, stateFile);
  const na = await dockerNetworkCreate(a1.socketPath, NET_A, '10.40.0.0/16', { 'weft.network': 'custom' }, { 'weft.backend': 'vxlan' });
  assert.equal(a1.snapshot().networks[NET_A]!.network, 'custom', '--ipam-opt weft.network wins over the Docker name');
  const addr = await ok(a1.socketPath, '/IpamDriver.RequestAddress', { PoolID: na.poolId, Address: '', Options: {} });
  await ok(a1.socketPath, '/NetworkDriver.CreateEndpoint', { NetworkID: NET_A, EndpointID: 'e3'.repeat(32), Interface: { Address: addr.Address, AddressIPv6: '', MacAddress: '02:42:0a:28:00:02' }, Options: {} });
  await a1.stop();
  const saved = JSON.parse(await readFile(stateFile, 'utf8'));
  assert.equal(saved.endpoints['e3'.repeat(32)].mac, '02:42:0a:28:00:02');

  const a2 = await mk('A', {}, stateFile);
  const join = await ok(a2.socketPath, '/NetworkDriver.Join', { NetworkID: NET_A, EndpointID: 'e3'.repeat(32), SandboxKey: '/x', Options: {} });
  assert.equal(join.InterfaceName.SrcName, 'vpe3e3e3e3');
  assert.equal(join.Gateway, '10.40.0.1');
  await dockerStop(a2.socketPath, NET_A, na.poolId, 'e3'.repeat(32), addr.Address);
  assert.equal((await dockerNetworkRm(a2.socketPath, NET_A, na.poolId, na.gateway)).status, 200);
  assert.equal(cluster.networks.has('custom'), false);
});

test('published ports: programmed, refused when taken, revoked, restored at plugin start, undone on failure', async (t) => {
  const { dir, cluster } = await setup(t);
  const stateFile = path.join(dir, 'P-state.json');
  const published: Array<Array<{ endpointId: string; network: string; ip: string; ports: unknown[] }>> = [];
  let fail = false;
  const mkp = async () => {
    const p = new DockerPlugin({
      ops: {
        ...cluster.ops('A', { [NET_A]: 'prodnet' }),
        publishPorts: async (all) => {
          if (fail) throw new Error('iptables-restore: no nat table');
          published.push(all.map((e) => ({ ...e })));
        },
      },
      state: new FileStateStore(stateFile),
      pluginDir: path.join(dir, 'P'),
      nameTimeoutMs: 1000,
    });
    await p.start();
    t.after(() => p.stop());
    return p;
  };
  const p1 = await mkp();
  assert.deepEqual(published.pop(), [], 'start reconciles: nothing published yet');
  const na = await dockerNetworkCreate(p1.socketPath, NET_A, '10.40.0.0/16');
  const e1 = 'e1'.repeat(32);
  const e2 = 'e2'.repeat(32);
  const r1 = await dockerRun(p1.socketPath, NET_A, na.poolId, e1);
  await dockerRun(p1.socketPath, NET_A, na.poolId, e2);
  const portmap = (hostPort: number, port: number) => ({ 'com.docker.network.portmap': [{ Proto: 6, IP: '', Port: port, HostIP: '', HostPort: hostPort, HostPortEnd: hostPort }] });
  await ok(p1.socketPath, '/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET_A, EndpointID: e1, Options: portmap(8080, 80) });
  const ip1 = r1.address.split('/')[0];
  assert.deepEqual(published.at(-1), [{ endpointId: e1, network: 'prodnet', ip: ip1, ports: [{ proto: 'tcp', hostPort: 8080, port: 80 }] }]);
  // the same host port for another container: refused, naming the holder
  const taken = await post(p1.socketPath, '/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET_A, EndpointID: e2, Options: portmap(8080, 81) });
  assert.match(taken.json.Err, /^weft: host port 8080->81\/tcp is already published by container endpoint e1e1e1e1e1e1 /);
  // -p 80 without a host port: refused (Docker allocates none for a plugin)
  const noHost = await post(p1.socketPath, '/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET_A, EndpointID: e2, Options: { 'com.docker.network.portmap': [{ Proto: 6, Port: 80, HostPort: 0 }] } });
  assert.match(noHost.json.Err, /explicit host port/);
  // a failure of the kernel rules leaves nothing half made: e2 publishes nothing
  fail = true;
  const broken = await post(p1.socketPath, '/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET_A, EndpointID: e2, Options: portmap(9090, 90) });
  assert.match(broken.json.Err, /cannot publish 9090->90\/tcp: iptables-restore: no nat table/);
  assert.equal(p1.snapshot().endpoints[e2]!.ports, undefined);
  fail = false;
  // restart: the saved ports are published again before Docker calls anything
  await p1.stop();
  published.length = 0;
  const p2 = await mkp();
  assert.deepEqual(published.pop(), [{ endpointId: e1, network: 'prodnet', ip: ip1, ports: [{ proto: 'tcp', hostPort: 8080, port: 80 }] }]);
  // docker stop: revoked
  await ok(p2.socketPath, '/NetworkDriver.RevokeExternalConnectivity', { NetworkID: NET_A, EndpointID: e1 });
  assert.deepEqual(published.pop(), []);
  // published again, then removed with the endpoint (Leave without a Revoke first)
  await ok(p2.socketPath, '/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET_A, EndpointID: e1, Options: portmap(8080, 80) });
  assert.equal(published.pop()!.length, 1);
  await ok(p2.socketPath, '/NetworkDriver.Leave', { NetworkID: NET_A, EndpointID: e1 });
  assert.deepEqual(published.pop(), []);
  // a container Docker removed while the plugin was down (no Revoke ever came): unpublished at start
  await ok(p2.socketPath, '/NetworkDriver.ProgramExternalConnectivity', { NetworkID: NET_A, EndpointID: e2, Options: portmap(9090, 90) });
  assert.equal(published.pop()!.length, 1);
  // an endpoint made since the plugin started is never judged (Docker may not show it yet)
  const e3 = 'e3'.repeat(32);
  await dockerRun(p2.socketPath, NET_A, na.poolId, e3);
  const ip2 = p2.snapshot().endpoints[e2]!.address.split('/')[0]!;
  assert.ok(cluster.addresses.get('prodnet')!.has(ip2));
  assert.deepEqual(await p2.pruneStaleEndpoints(async () => undefined), [], 'Docker not answering: kept');
  assert.deepEqual(await p2.pruneStaleEndpoints(async (ep) => ep.id !== e2), [e2]);
  assert.deepEqual(published.pop(), []);
  assert.equal(p2.snapshot().endpoints[e2], undefined, 'the endpoint is forgotten');
  assert.equal(cluster.addresses.get('prodnet')!.has(ip2), false, 'its address is released');
  assert.ok(p2.snapshot().endpoints[e1], 'the endpoint Docker still has is kept');
  assert.ok(p2.snapshot().endpoints[e3], 'an endpoint newer than the plugin start is kept');
});
