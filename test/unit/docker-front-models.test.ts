import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { AgentDockerOps, type AgentLike } from '../../src/adapters/docker/agent-ops.js';
import { DockerPlugin, parseWeftOptions, type DockerBackendOps } from '../../src/adapters/docker/plugin.js';
import { findNetwork } from '../../src/config/registry.js';
import { openStore } from '../../src/store/index.js';
import { MemoryState } from '../helpers/docker-fakes.js';

/**
 * The Docker front end for the network models, without Docker: `-o weft.subnet-min/-max` (the bridge model's
 * per-host ranges clear of the hosts' addresses, as `weft network create --subnet-min/--subnet-max`), and a
 * macvlan endpoint's interface — which Docker moves back to the host after Leave — removed at DeleteEndpoint.
 */

const dir = mkdtempSync(path.join(os.tmpdir(), 'weft-docker-front-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('-o weft.subnet-min / subnet-max: parsed in both spellings, a non-address refused, stored in the network config', async () => {
  assert.deepEqual(parseWeftOptions({ backend: 'bridge', 'weft.subnet-len': '28', 'weft.subnet-min': '192.168.5.128', subnetmax: '192.168.5.224' }), {
    backend: 'bridge',
    subnetLen: 28,
    subnetMin: '192.168.5.128',
    subnetMax: '192.168.5.224',
  });
  assert.throws(() => parseWeftOptions({ 'weft.subnet-min': '192.168.5' }), /invalid weft\.subnet-min "192\.168\.5" \(an IPv4 address/);

  const store = await openStore(`sqlite://${path.join(dir, 'weft.db')}`, { create: true });
  try {
    const agent: AgentLike = { store, hostId: 'h1', runners: new Map(), failed: new Map(), join: async () => undefined };
    const ops = new AgentDockerOps(agent);
    // the config's own rules apply (a SubnetMin that is no subnet start is refused before Docker creates anything)
    await assert.rejects(ops.checkNetwork('192.168.5.0/24', parseWeftOptions({ backend: 'bridge', 'subnet-len': '28', 'subnet-min': '192.168.5.130' })), /SubnetMin.*not the start of a \/28 subnet/);
    const opts = parseWeftOptions({ backend: 'bridge', 'subnet-len': '28', 'subnet-min': '192.168.5.128' });
    await ops.checkNetwork('192.168.5.0/24', opts);
    await ops.ensureNetwork('seg', '192.168.5.0/24', opts);
    const cfg = await findNetwork(store, 'seg');
    assert.equal(cfg?.SubnetLen, 28);
    assert.equal(cfg?.SubnetMin, '192.168.5.128');
    assert.equal(cfg?.Backend.Type, 'bridge');
  } finally {
    await store.close();
  }
});


/** Runs one container through the plugin (create → join → leave → delete); returns the interfaces deleteVeth was asked to remove, per call. */
async function lifecycle(macvlan: boolean): Promise<Array<[string, string]>> {
  const deleted: Array<[string, string]> = [];
  const ops: DockerBackendOps = {
    async ensureNetwork() {},
    async joinNetwork(name) {
      return { name, network: '10.92.0.0/16', subnet: '10.92.1.0/24', gateway: '10.92.1.1', bridge: 'weft0', mtu: 1500 };
    },
    async allocateAddress() {
      return '10.92.1.2/16';
    },
    async releaseAddress() {},
    // the macvlan driver has no host end: both names are the interface Docker moves
    async createVeth(_n, req) {
      const id = req.endpointId.slice(0, 4);
      return { hostIf: macvlan ? `wp${id}` : `wd${id}`, peerIf: `wp${id}`, mac: req.mac };
    },
    async deleteVeth(_name, hostIf) {
      deleted.push([call, hostIf]);
    },
    async removeNetwork() {},
  };
  let call = '';
  const plugin = new DockerPlugin({ ops, state: new MemoryState(), socketPath: path.join(dir, `p${macvlan ? 'm' : 'v'}.sock`) });
  await plugin.start();
  try {
    const ok = async (m: string, b: unknown) => {
      call = m.split('.')[1]!;
      const r = await plugin.call(m, b, false);
      assert.equal(r.status, 200, `${m}: ${JSON.stringify(r.body)}`);
      return r.body as Record<string, unknown>;
    };
    const NET = 'a'.repeat(64);
    const EP = 'e'.repeat(64);
    await ok('/IpamDriver.RequestPool', { AddressSpace: 'weft', Pool: '10.92.0.0/16', SubPool: '', Options: { 'weft.network': 'mvnet' }, V6: false });
    await ok('/NetworkDriver.CreateNetwork', { NetworkID: NET, Options: {}, IPv4Data: [{ AddressSpace: 'weft', Pool: '10.92.0.0/16', Gateway: '10.92.0.1/16' }], IPv6Data: [] });
    const addr = (await ok('/IpamDriver.RequestAddress', { PoolID: '10.92.0.0/16', Address: '', Options: {} })).Address as string;
    await ok('/NetworkDriver.CreateEndpoint', { NetworkID: NET, EndpointID: EP, Interface: { Address: addr, AddressIPv6: '', MacAddress: '' }, Options: {} });
    await ok('/NetworkDriver.Join', { NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/x', Options: {} });
    await ok('/NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP });
    await ok('/NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: EP });
    assert.deepEqual(plugin.snapshot().endpoints, {}, 'the endpoint is forgotten');
  } finally {
    await plugin.stop();
  }
  return deleted;
}

test('a macvlan endpoint: the interface Docker moves back to the host after Leave is removed at DeleteEndpoint', async () => {
  // Leave runs while the macvlan is still in the container (nothing to find on the host); Docker then
  // restores it to the host under its name, and DeleteEndpoint removes it (it leaked before)
  assert.deepEqual(await lifecycle(true), [['Leave', 'wpeeee'], ['DeleteEndpoint', 'wpeeee']]);
  // a veth: removing the host end at Leave removes both ends; DeleteEndpoint has nothing left to do
  assert.deepEqual(await lifecycle(false), [['Leave', 'wdeeee']]);
});
