import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { getNetwork, listNetworks } from '../src/config/registry.js';
import { listLeases } from '../src/lease/leases.js';
import { LeaseManager } from '../src/lease/manager.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { needsEtcd, startEtcd, type TestEtcd } from './helpers/etcd.js';
import { pino } from 'pino';
import type { Logger } from '../src/util/log.js';

/** weft reads and writes a network stored the way flannel does, under /coreos.com/network in etcd. */

let etcd: TestEtcd;
let client: Etcd3;
let store: Store;
const quiet = pino({ level: 'silent' }) as unknown as Logger;

/** A real etcd is started for the run; without the binary the tests are reported as skipped with the reason. */
const skip = needsEtcd();

before(async () => {
  if (skip) return;
  etcd = await startEtcd();
  client = new Etcd3({ hosts: etcd.endpoint });
  // written by hand, as a flannel user would: etcdctl put /coreos.com/network/config '…'
  await client
    .put('/coreos.com/network/config')
    .value('{"Network":"10.5.0.0/16","SubnetMin":"10.5.72.0","SubnetMax":"10.5.73.0","Backend":{"Type":"vxlan"}}');
  store = await openStore(`${etcd.url}/coreos.com/network`);
});

after(async () => {
  await store?.close();
  client?.close();
  await etcd?.stop();
});

test('the hand-written flannel config is read (as network "default", or under any name)', { skip }, async () => {
  assert.equal(store.flannelLayout, true);
  const nets = await listNetworks(store);
  assert.deepEqual(nets.map((n) => n.name), ['default']);
  assert.deepEqual(nets[0]!.config, {
    Network: '10.5.0.0/16',
    SubnetLen: 24,
    SubnetMin: '10.5.72.0',
    SubnetMax: '10.5.73.0',
    Backend: { Type: 'vxlan', VNI: 1, Port: 8472 },
  });
  assert.equal((await getNetwork(store, 'whatever')).Network, '10.5.0.0/16');
});

test("a lease a flannel daemon wrote is respected, and weft's lease key and JSON are flannel's exactly", { skip }, async () => {
  const flannelsLease = '{"PublicIP":"192.168.9.9","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:0b:0c:0d:0e:0f"}}';
  const etcdLease = client.lease(60);
  await etcdLease.put('/coreos.com/network/subnets/10.5.73.0-24').value(flannelsLease);

  const mgr = new LeaseManager(store, 'default', { hostId: 'host-a', ttlSeconds: 60, log: quiet });
  const lease = await mgr.acquire({ publicIp: '192.168.1.5', backendData: { VNI: 1, VtepMAC: '62:ea:3b:12:34:56' } });
  assert.equal(lease.subnet, '10.5.72.0/24');

  const raw = await client.getAll().prefix('/coreos.com/network/subnets/').strings();
  assert.deepEqual(Object.keys(raw).sort(), ['/coreos.com/network/subnets/10.5.72.0-24', '/coreos.com/network/subnets/10.5.73.0-24']);
  assert.equal(
    raw['/coreos.com/network/subnets/10.5.72.0-24'],
    '{"PublicIP":"192.168.1.5","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"62:ea:3b:12:34:56"}}',
  );
  assert.equal(raw['/coreos.com/network/subnets/10.5.73.0-24'], flannelsLease);

  // the lease is an etcd lease with (about) our TTL, as flannel's are
  const resp = await client.get('/coreos.com/network/subnets/10.5.72.0-24').exec();
  const leaseId = resp.kvs[0]!.lease;
  assert.notEqual(String(leaseId), '0');
  const ttl = await client.leaseClient.leaseTimeToLive({ ID: leaseId });
  assert.ok(Number(ttl.grantedTTL) >= 60 && Number(ttl.TTL) > 50, `granted ${ttl.grantedTTL}, left ${ttl.TTL}`);

  const leases = await listLeases(store, 'default');
  assert.deepEqual(
    leases.map((l) => [l.subnet, l.publicIp, l.hostId]),
    [
      ['10.5.72.0/24', '192.168.1.5', 'host-a'],
      ['10.5.73.0/24', '192.168.9.9', undefined],
    ],
  );
  // the config key is untouched
  assert.equal(
    await client.get('/coreos.com/network/config').string(),
    '{"Network":"10.5.0.0/16","SubnetMin":"10.5.72.0","SubnetMax":"10.5.73.0","Backend":{"Type":"vxlan"}}',
  );
  await etcdLease.revoke();
});
