/**
 * Unit tests (no root, in-memory store) for the Docker adapter's removal edge cases and published ports:
 * ReleaseAddress during "being removed", re-create during removal, a Docker network removed elsewhere while
 * this agent was down, and the port bindings Docker sends in ProgramExternalConnectivity.
 */
import '../src/backends/all.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStore } from '../src/store/memory.js';
import { createNetwork, findNetwork, getNetwork } from '../src/config/registry.js';
import { Ipam } from '../src/ipam/ipam.js';
import { AgentDockerOps, type AgentLike, type RunnerLike, DOCKER_NETWORKS_PREFIX, type DockerNetworkRecord } from '../src/adapters/docker/agent-ops.js';
import { DockerNetworkSync } from '../src/adapters/docker/sync.js';
import type { DockerApi, DockerNetworkSummary } from '../src/adapters/docker/docker-api.js';
import { parsePortMap, portsClash } from '../src/adapters/docker/ports.js';
import { dnatRuleLines } from '../src/system/iptables.js';
import { waitFor } from '../src/testbed/wait.js';

async function clusterWithNetwork(name = 'prodnet') {
  const store = new MemoryStore();
  const config = await createNetwork(store, name, { Network: '10.40.0.0/16', Backend: { Type: 'vxlan' } });
  const runner = (pool: string): RunnerLike => ({
    name,
    config,
    lease: { subnet: pool } as RunnerLike['lease'],
    gateway: pool.replace(/0\/24$/, '1'),
    bridge: 'weft0',
    backend: { mtu: 1450 },
    module: {},
    plan: { pool },
  });
  const agent = (hostId: string, pool: string): AgentLike => ({
    store,
    hostId,
    runners: new Map([[name, runner(pool)]]),
    failed: new Map(),
    join: async () => undefined,
  });
  const rec: DockerNetworkRecord = { network: name, dockerName: name, subnet: '10.40.0.0/16', options: {}, ipamOptions: {}, createdBy: 'h1', owned: true };
  await store.put(DOCKER_NETWORKS_PREFIX + name, JSON.stringify(rec));
  return { store, config, a: new AgentDockerOps(agent('h1', '10.40.1.0/24')), b: new AgentDockerOps(agent('h2', '10.40.2.0/24')) };
}

test('ReleaseAddress while the network is being removed succeeds even with endpoints left elsewhere', async () => {
  const { store, a, b } = await clusterWithNetwork();
  const ipam = new Ipam(store);
  await ipam.allocate({ network: 'prodnet', subnet: '10.40.2.0/24', owner: 'x', address: '10.40.2.9' });
  await ipam.allocate({ network: 'prodnet', subnet: '10.40.2.0/24', owner: 'y', address: '10.40.2.10' });
  // docker network rm on h1: refused by weft (endpoints left), marked as being removed
  await assert.rejects(a.removeNetwork('prodnet'), /still has 2 endpoint\(s\): 10\.40\.2\.(9|10) on host \?/);
  assert.ok(JSON.parse((await store.get(DOCKER_NETWORKS_PREFIX + 'prodnet'))!.value).removing);
  // docker rm of the first container on h2: its address is free and Docker is told so
  await b.releaseAddress('prodnet', '10.40.2.9');
  assert.ok(await findNetwork(store, 'prodnet'), 'kept while 10.40.2.10 remains');
  // the last one: the network goes everywhere
  await b.releaseAddress('prodnet', '10.40.2.10');
  assert.equal(await findNetwork(store, 'prodnet'), undefined);
  assert.equal(await store.get(DOCKER_NETWORKS_PREFIX + 'prodnet'), undefined);
});

test('docker network create of a network being removed is refused with the reason', async () => {
  const { store, a } = await clusterWithNetwork();
  await new Ipam(store).allocate({ network: 'prodnet', subnet: '10.40.2.0/24', owner: 'x', address: '10.40.2.9' });
  await a.checkNetwork('10.40.0.0/16', {}); // same network, not being removed: accepted
  await assert.rejects(a.removeNetwork('prodnet'));
  await assert.rejects(a.checkNetwork('10.40.0.0/16', {}), /network prodnet \(10\.40\.0\.0\/16\) is being removed \(docker network rm on host h1 at .*\); it goes away once its last container is gone \(1 endpoint\(s\): 10\.40\.2\.9 on host \?\): create it again after that/);
  assert.ok(await getNetwork(store, 'prodnet'));
});

test('removing a Docker network whose record is gone leaves a weft network Docker did not make', async () => {
  const { store, a } = await clusterWithNetwork();
  await store.delete(DOCKER_NETWORKS_PREFIX + 'prodnet');
  await a.removeNetwork('prodnet');
  assert.ok(await findNetwork(store, 'prodnet'), 'a weft network with no Docker record is not Docker\'s to remove');
});

/** A Docker API holding networks in memory. */
function fakeDocker(networks: DockerNetworkSummary[]) {
  const removed: string[] = [];
  const created: string[] = [];
  const api = {
    listNetworks: async () => networks.map((n) => ({ ...n })),
    inspectNetwork: async (id: string) => ({ ...networks.find((n) => n.Id === id || n.Name === id)! }),
    removeNetwork: async (id: string) => {
      const i = networks.findIndex((n) => n.Id === id || n.Name === id);
      removed.push(networks[i]!.Name);
      networks.splice(i, 1);
    },
    createNetwork: async (spec: { Name: string }) => {
      created.push(spec.Name);
      networks.push({ Id: `id-${spec.Name}`, Name: spec.Name, Driver: 'weft', Created: new Date().toISOString() });
      return { Id: `id-${spec.Name}` };
    },
  };
  return { api: api as unknown as DockerApi, removed, created };
}

test('agent start: a Docker network removed on another host while this agent was down is removed here', async () => {
  const store = new MemoryStore();
  const before = new Date(Date.now() - 60_000).toISOString();
  const rec: DockerNetworkRecord = { network: 'kept', dockerName: 'kept', subnet: '10.41.0.0/16', options: {}, ipamOptions: {}, createdBy: 'h1', owned: true };
  await store.put(DOCKER_NETWORKS_PREFIX + 'kept', JSON.stringify(rec));
  const { api, removed, created } = fakeDocker([
    { Id: 'id-gone', Name: 'gone', Driver: 'weft', Created: before, Containers: {} },
    { Id: 'id-kept', Name: 'kept', Driver: 'weft', Created: before, Containers: {} },
    { Id: 'id-other', Name: 'other', Driver: 'bridge', Created: before, Containers: {} },
  ]);
  const sync = new DockerNetworkSync(store, api, 'weft');
  sync.start();
  await waitFor('stale network removed', 5000, async () => {
    await sync.settled();
    return removed.includes('gone');
  });
  assert.deepEqual(removed, ['gone'], 'only the weft network without a record');
  assert.deepEqual(created, []);
  // a network Docker makes after the agent started is the user's own, waiting for its record: kept
  const fresh = fakeDocker([{ Id: 'id-new', Name: 'new', Driver: 'weft', Created: new Date(Date.now() + 1000).toISOString(), Containers: {} }]);
  const sync2 = new DockerNetworkSync(store, fresh.api, 'weft');
  sync2.start();
  await new Promise((r) => setTimeout(r, 50));
  await sync2.settled();
  assert.deepEqual(fresh.removed, []);
  await sync.stop();
  await sync2.stop();
});

test('port bindings from ProgramExternalConnectivity', () => {
  const opts = (pm: unknown) => ({ 'com.docker.network.portmap': pm });
  assert.deepEqual(parsePortMap(null), []);
  assert.deepEqual(parsePortMap({}), []);
  assert.deepEqual(
    parsePortMap(opts([
      { Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: 8080, HostPortEnd: 8080 },
      { Proto: 17, IP: '', Port: 53, HostIP: '10.0.0.1', HostPort: 5353, HostPortEnd: 0 },
      { Proto: 6, IP: '', Port: 80, HostIP: '::', HostPort: 8080, HostPortEnd: 8080 },
    ])),
    [
      { proto: 'tcp', hostPort: 8080, port: 80 },
      { proto: 'udp', hostIp: '10.0.0.1', hostPort: 5353, port: 53 },
    ],
  );
  assert.throws(() => parsePortMap(opts([{ Proto: 6, Port: 80, HostPort: 0 }])), /explicit host port \(-p HOSTPORT:80\)/);
  assert.throws(() => parsePortMap(opts([{ Proto: 6, Port: 80, HostPort: 8080, HostPortEnd: 8082 }])), /ranges are not supported/);
  assert.throws(() => parsePortMap(opts([{ Proto: 1, Port: 80, HostPort: 8080 }])), /protocol 1/);
  assert.throws(() => parsePortMap(opts('nope')), /invalid com\.docker\.network\.portmap/);
  assert.throws(() => parsePortMap(opts([{ Proto: 6, Port: 80, HostPort: 70000 }])), /invalid/);
  assert.ok(portsClash({ proto: 'tcp', hostPort: 80, port: 1 }, { proto: 'tcp', hostPort: 80, port: 2, hostIp: '10.0.0.1' }));
  assert.ok(!portsClash({ proto: 'tcp', hostPort: 80, port: 1 }, { proto: 'udp', hostPort: 80, port: 1 }));
  assert.ok(!portsClash({ proto: 'tcp', hostPort: 80, port: 1, hostIp: '10.0.0.2' }, { proto: 'tcp', hostPort: 80, port: 1, hostIp: '10.0.0.1' }));
  assert.deepEqual(dnatRuleLines([{ proto: 'tcp', hostPort: 8080, ip: '10.40.1.2', port: 80, networkCidr: '10.40.0.0/16', owner: 'abc' }]), [
    '-A WEFT-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "weft: abc" -j DNAT --to-destination 10.40.1.2:80',
    '-A WEFT-DNAT-HAIRPIN -s 10.40.0.0/16 -d 10.40.1.2/32 -p tcp -m tcp --dport 80 -m conntrack --ctstate DNAT -m comment --comment "weft: abc" -j MASQUERADE',
  ]);
});
