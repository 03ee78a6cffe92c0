/**
 * LeaseManager on the real stores (sqlite file, etcd): what the memory-store unit tests
 * (test/unit/lease-manager.test.ts) cannot show — acquirers racing on separate connections, renewal by
 * Store.refresh on each store (no write, no watch event, flannel's value unchanged), and an agent restart
 * keeping its lease and addresses across store connections.
 */
import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createNetwork } from '../src/config/registry.js';
import { Ipam } from '../src/ipam/ipam.js';
import { listLeases } from '../src/lease/leases.js';
import { LeaseManager } from '../src/lease/manager.js';
import { networkKeys } from '../src/store/layout.js';
import { openStore } from '../src/store/index.js';
import type { Store, WatchEvent } from '../src/store/types.js';
import { waitFor } from '../src/testbed/wait.js';
import { startEtcd, type TestEtcd } from './helpers/etcd.js';
import { quiet } from './helpers/lease-fakes.js';

let netSeq = 0;

function leaseSuite(kind: string, setup: () => Promise<() => Promise<Store>>, teardown: () => Promise<void>): void {
  describe(`LeaseManager on ${kind}`, () => {
    let backing: () => Promise<Store>;
    let admin: Store;
    const opened: Store[] = [];
    const open = async () => {
      const s = await backing();
      opened.push(s);
      return s;
    };
    const network = async (count: number) => {
      const n = ++netSeq;
      const name = `net${n}`;
      await createNetwork(admin, name, { Network: `10.${n}.0.0/16`, SubnetMin: `10.${n}.0.0`, SubnetMax: `10.${n}.${count - 1}.0`, Backend: { Type: 'vxlan', VNI: n } });
      return name;
    };

    before(async () => {
      backing = await setup();
      admin = await open();
    });
    after(async () => {
      for (const s of opened) await s.close();
      await teardown();
    });

    test('20 concurrent acquirers on separate store instances get 20 distinct subnets', async () => {
      const net = await network(24);
      const stores = await Promise.all(Array.from({ length: 20 }, () => open()));
      const leases = await Promise.all(
        stores.map((s, i) =>
          new LeaseManager(s, net, { hostId: `host-${i}`, log: quiet }).acquire({ publicIp: `192.168.1.${i + 1}`, backendData: { VNI: 1, VtepMAC: `02:00:00:00:00:${i.toString(16).padStart(2, '0')}` } }),
        ),
      );
      assert.equal(new Set(leases.map((l) => l.subnet)).size, 20);
      const listed = await listLeases(admin, net);
      assert.equal(listed.length, 20);
      for (const l of leases) assert.equal(listed.find((x) => x.subnet === l.subnet)?.hostId, l.hostId);
    });

    test('renewal without churn: the lease outlives its TTL with no new revision and no watch event', async () => {
      const net = await network(4);
      const keys = networkKeys(admin, net);
      // key TTL = ttl + grace = 4 s; renewals every 1 s
      const m = new LeaseManager(await open(), net, { hostId: 'renewer', ttlSeconds: 3, graceSeconds: 1, log: quiet });
      const lease = await m.acquire({ publicIp: '192.168.3.1' });
      const before = (await admin.get(keys.subnet(lease.subnet)))!;
      const events: WatchEvent[] = [];
      const w = admin.watch(keys.root, (ev) => events.push(ev));
      try {
        await waitFor('the watch resync', 10_000, async () => events.length > 0);
        m.start();
        const t0 = Date.now();
        // 2.5 key TTLs: only renewals keep it; each check also shows it never changed revision
        await waitFor('2.5 key TTLs to pass', 30_000, async () => {
          const now = await admin.get(keys.subnet(lease.subnet));
          assert.ok(now, `lease gone after ${Date.now() - t0} ms`);
          assert.equal(now.revision, before.revision, 'renewal rewrote the key');
          assert.equal(now.value, before.value);
          return Date.now() - t0 > 10_000;
        });
        assert.deepEqual(events.map((e) => e.type), ['resync'], `watchers woke up: ${JSON.stringify(events.slice(1))}`);
      } finally {
        w.close();
        await m.stop();
      }
      await m.release();
      assert.equal(await admin.get(keys.subnet(lease.subnet)), undefined);
    });

    test('an agent restart (new store connection, same host id) gets the same lease and the same IPs', async () => {
      const net = await network(30);
      const boot = async () => {
        const store = await open();
        const lease = await new LeaseManager(store, net, { hostId: 'restarter', log: quiet }).acquire({ publicIp: '192.168.8.1', backendData: { VNI: 1, VtepMAC: '02:00:00:00:08:01' } });
        const ipam = new Ipam(store);
        const ips = [];
        for (const owner of ['ctr-a', 'ctr-b', 'ctr-c']) ips.push((await ipam.allocate({ network: net, subnet: lease.subnet, owner })).cidr);
        return { store, lease, ips };
      };
      const first = await boot();
      await first.store.close();
      opened.splice(opened.indexOf(first.store), 1);
      const second = await boot();
      assert.equal(second.lease.subnet, first.lease.subnet);
      assert.deepEqual(second.ips, first.ips);
      assert.equal(new Set(first.ips).size, 3);
    });
  });
}

let dir = '';
leaseSuite(
  'sqlite',
  async () => {
    dir = await mkdtemp(join(tmpdir(), 'weft-lease-'));
    return () => openStore(`sqlite://${join(dir, 'weft.db')}`, { create: true });
  },
  () => rm(dir, { recursive: true, force: true }),
);

let etcd: TestEtcd | undefined;
leaseSuite(
  'etcd',
  async () => {
    etcd = await startEtcd();
    return () => openStore(`${etcd!.url}/weft-test`);
  },
  async () => etcd?.stop(),
);
