/**
 * Issue 9 on a real etcd in flannel's layout (/coreos.com/network), with a second client that writes
 * flannel's lease JSON by hand through its own etcd3 connection, as flanneld would:
 *   1. weft host W holds a lease, dies; its lease expires; the other client leases W's old subnet (it writes
 *      no hosts/ record); W restarts. W must not overwrite that live lease: it takes the other subnet.
 *   2. a hand-written dual-stack lease (`10.244.2.0-24&fd44:0:0:2::-64`, PublicIPv6) is a peer for weft:
 *      it comes out of watchLeases, host-gw routes to it, and containers on both hosts reach each other.
 */
import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { createNetwork } from '../src/config/registry.js';
import type { NetworkConfig } from '../src/config/types.js';
import { LeaseManager } from '../src/lease/manager.js';
import type { Lease } from '../src/lease/types.js';
import { FLANNEL_NETWORK_NAME } from '../src/store/layout.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { addClusterNode, pingMatrix, type ClusterNode } from '../src/testbed/cluster.js';
import { createTestbed, type Testbed } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';
import { ETCD_BIN, startEtcd, type TestEtcd } from './helpers/etcd.js';
import { captureLog, quiet } from './helpers/lease-fakes.js';

const skip = !existsSync(ETCD_BIN) ? `etcd not found at ${ETCD_BIN}` : undefined;
const skipNs = skip ?? (process.getuid?.() !== 0 ? 'needs root for network namespaces' : undefined);
const PREFIX = '/coreos.com/network';

describe('weft next to flannel on etcd (issue 9)', { skip }, () => {
  let etcd: TestEtcd;
  let raw: Etcd3;
  const stores: Store[] = [];
  const open = async () => {
    const s = await openStore(`${etcd.url}${PREFIX}`);
    stores.push(s);
    return s;
  };
  /** flanneld's way: create-only txn on subnets/<key> with a lease of ttl seconds. */
  const flannelWrite = async (key: string, value: unknown, ttl: number) => {
    const lease = raw.lease(ttl, { autoKeepAlive: false });
    const id = await lease.grant();
    const k = `${PREFIX}/subnets/${key}`;
    const res = await raw.if(k, 'Create', '==', 0).then(raw.put(k).value(JSON.stringify(value)).lease(id)).commit();
    return res.succeeded;
  };
  const rawGet = (key: string) => raw.get(`${PREFIX}/subnets/${key}`).string();

  before(async () => {
    etcd = await startEtcd();
    raw = new Etcd3({ hosts: etcd.endpoint });
  });
  after(async () => {
    for (const s of stores) await s.close();
    raw?.close();
    await etcd?.stop();
  });

  test('a restarting weft host never overwrites the live lease another client wrote on its old subnet', async () => {
    const admin = await open();
    await raw.delete().prefix(`${PREFIX}/`).exec();
    await createNetwork(admin, FLANNEL_NETWORK_NAME, { Network: '10.56.0.0/16', SubnetMin: '10.56.1.0', SubnetMax: '10.56.2.0', Backend: { Type: 'host-gw' } });
    // 1. W leases, then is killed (no release): its lease runs out after its TTL (grace 0: as short as before)
    const w = await new LeaseManager(await open(), FLANNEL_NETWORK_NAME, { hostId: 'w', ttlSeconds: 2, graceSeconds: 0, log: quiet }).acquire({ publicIp: '192.0.2.10' });
    const wKey = w.subnet.replace('/', '-');
    await waitFor('W\'s lease to expire', 20_000, async () => (await rawGet(wKey)) === null);
    // 2. the other client leases W's old subnet, as flannel does (no hosts/ record)
    const theirs = { PublicIP: '192.0.2.20', BackendType: 'host-gw', BackendData: {} };
    assert.ok(await flannelWrite(wKey, theirs, 120));
    // 3. W restarts
    const cap = captureLog();
    const again = await new LeaseManager(await open(), FLANNEL_NETWORK_NAME, { hostId: 'w', ttlSeconds: 2, graceSeconds: 0, log: cap.log }).acquire({ publicIp: '192.0.2.10' });
    assert.notEqual(again.subnet, w.subnet, 'W took another subnet');
    assert.deepEqual(JSON.parse((await rawGet(wKey))!), theirs, "the other host's lease is untouched");
    assert.ok(cap.lines().some((l) => l.level === 40 && /not provably this host's \(it names PublicIP 192\.0\.2\.20/.test(l.msg)), JSON.stringify(cap.lines()));
  });

  describe('a hand-written dual-stack lease is routed to', { skip: skipNs }, () => {
    // Two leasable subnets: the testbed's hosts 1 and 2 have 10.244.1.0/24 and 10.244.2.0/24.
    const network: NetworkConfig = { Network: '10.244.0.0/16', SubnetMin: '10.244.1.0', SubnetMax: '10.244.2.0', Backend: { Type: 'host-gw' } };
    let tb: Testbed | undefined;
    let nodes: ClusterNode[] = [];
    before(async () => {
      tb = await createTestbed({ hosts: 2 });
      nodes = await Promise.all(tb.hosts.map((h) => addClusterNode(tb!, h, { network, containers: 1 })));
    });
    after(async () => {
      await tb?.destroy();
    });

    test('watchLeases shows it as a peer; host-gw routes it; containers on both hosts ping', async () => {
      const admin = await open();
      await raw.delete().prefix(`${PREFIX}/`).exec();
      await createNetwork(admin, FLANNEL_NETWORK_NAME, { ...network });
      const [n1, n2] = nodes as [ClusterNode, ClusterNode];
      // host 2 is "flanneld" with a dual-stack lease; host 1 is weft and holds its own subnet
      const v4 = n2.lease.subnet.replace('/', '-');
      assert.ok(await flannelWrite(`${v4}&fd44:0:0:2::-64`, { PublicIP: n2.host.ip, PublicIPv6: 'fd44::2', BackendType: 'host-gw', BackendData: {} }, 120));
      // The dual-stack key holds 10.244.2.0/24, so the only subnet left for weft is host 1's.
      const own = new LeaseManager(await open(), FLANNEL_NETWORK_NAME, { hostId: n1.host.id, log: quiet });
      const lease = await own.acquire({ publicIp: n1.host.ip });
      assert.equal(lease.subnet, n1.lease.subnet, 'not leased again under the plain key');
      let peers: Lease[] = [];
      const w = own.watchLeases((all) => (peers = all.filter((l) => l.subnet !== lease.subnet)));
      try {
        await waitFor('the dual-stack lease as a peer', 20_000, async () => peers.length === 1);
        assert.deepEqual([peers[0]!.subnet, peers[0]!.subnetV6, peers[0]!.publicIp, peers[0]!.publicIpV6], [n2.lease.subnet, 'fd44:0:0:2::/64', n2.host.ip, 'fd44::2']);
        await n1.backend.reconcile(peers);
        await n2.backend.reconcile([n1.lease]); // the flannel host's side: its route back to weft's subnet
        assert.deepEqual(await pingMatrix(tb!, nodes), []);
      } finally {
        w.close();
      }
    });
  });
});
