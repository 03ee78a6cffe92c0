import { waitFor } from '../src/testbed/wait.js';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { createNetwork } from '../src/config/registry.js';
import { Ipam } from '../src/ipam/ipam.js';
import { hostRecordToJson, leaseToJson } from '../src/lease/codec.js';
import { listLeases } from '../src/lease/leases.js';
import { LeaseManager } from '../src/lease/manager.js';
import type { Lease } from '../src/lease/types.js';
import { networkKeys } from '../src/store/layout.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import type { Logger } from '../src/util/log.js';
import { startEtcd, type TestEtcd } from './helpers/etcd.js';

/** A logger that keeps what it was told. */
function captureLog(): { log: Logger; lines: () => Array<{ level: number; msg: string }> } {
  const out: string[] = [];
  const log = pino({ level: 'info', base: undefined }, { write: (s: string) => void out.push(s) }) as unknown as Logger;
  return { log, lines: () => out.map((l) => JSON.parse(l) as { level: number; msg: string }) };
}
const quiet = pino({ level: 'silent' }) as unknown as Logger;


interface Backing {
  /** A fresh store instance (another "host") on the same backing store. */
  open(): Promise<Store>;
}

let netSeq = 0;

function leaseSuite(kind: string, setup: () => Promise<Backing>, teardown: () => Promise<void>): void {
  describe(`LeaseManager on ${kind}`, () => {
    let backing: Backing;
    let admin: Store;
    const opened: Store[] = [];
    const open = async () => {
      const s = await backing.open();
      opened.push(s);
      return s;
    };
    /** A new network with `count` /24 subnets starting at 10.<n>.0.0. */
    const network = async (count: number, extra: Record<string, unknown> = {}) => {
      const n = ++netSeq;
      const name = `net${n}`;
      await createNetwork(admin, name, {
        Network: `10.${n}.0.0/16`,
        SubnetMin: `10.${n}.0.0`,
        SubnetMax: `10.${n}.${count - 1}.0`,
        Backend: { Type: 'vxlan', VNI: n },
        ...extra,
      });
      return name;
    };
    const mgr = (store: Store, net: string, hostId: string, opts: { ttlSeconds?: number; graceSeconds?: number; log?: Logger } = {}) =>
      new LeaseManager(store, net, { hostId, log: quiet, ...opts });
    const leaseGone = (net: string, subnet: string) => async () => (await admin.get(networkKeys(admin, net).subnet(subnet))) === undefined;

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
          mgr(s, net, `host-${i}`).acquire({ publicIp: `192.168.1.${i + 1}`, backendData: { VNI: 1, VtepMAC: `02:00:00:00:00:${i.toString(16).padStart(2, '0')}` } }),
        ),
      );
      const subnets = new Set(leases.map((l) => l.subnet));
      assert.equal(subnets.size, 20, `distinct: ${[...subnets].join(' ')}`);
      const listed = await listLeases(admin, net);
      assert.equal(listed.length, 20);
      for (const l of leases) {
        const seen = listed.find((x) => x.subnet === l.subnet)!;
        assert.equal(seen.publicIp, l.publicIp);
        assert.equal(seen.hostId, l.hostId);
      }
    });

    test('a restarting host with the same host id gets the same lease back (live or expired)', async () => {
      const net = await network(50);
      const first = await mgr(await open(), net, 'stable').acquire({ publicIp: '192.168.2.1', backendData: { VNI: 1 } });
      // restart while the lease is still live: a new process, a new store connection
      const again = await mgr(await open(), net, 'stable').acquire({ publicIp: '192.168.2.1', backendData: { VNI: 1 } });
      assert.equal(again.subnet, first.subnet);
      assert.equal((await listLeases(admin, net)).length, 1);
      // restart after the lease expired: still ours (grace protects it from others, not from us)
      const short = mgr(await open(), net, 'stable', { ttlSeconds: 2 });
      await short.acquire({ publicIp: '192.168.2.1' });
      await waitFor('lease expiry', 20_000, leaseGone(net, first.subnet));
      const back = await mgr(await open(), net, 'stable').acquire({ publicIp: '192.168.2.9' });
      assert.equal(back.subnet, first.subnet);
      assert.equal(back.publicIp, '192.168.2.9');
    });

    test('an agent restart (new store connection, same host id) gets the same lease and the same IPs', async () => {
      const net = await network(30);
      const boot = async () => {
        const store = await open();
        const lease = await mgr(store, net, 'restarter').acquire({ publicIp: '192.168.8.1', backendData: { VNI: 1 } });
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
      // and a new container after the restart gets an address none of them has
      const next = await new Ipam(second.store).allocate({ network: net, subnet: second.lease.subnet, owner: 'ctr-d' });
      assert.ok(!first.ips.includes(next.cidr));
    });

    test('renew keeps a short lease alive; release frees it', async () => {
      const net = await network(4);
      const m = mgr(await open(), net, 'renewer', { ttlSeconds: 2 });
      const lease = await m.acquire({ publicIp: '192.168.3.1' });
      m.start();
      await new Promise((r) => setTimeout(r, 4500));
      assert.ok(!(await leaseGone(net, lease.subnet)()), 'lease still live after 2 TTLs');
      const renewed = await m.renew();
      assert.equal(renewed.subnet, lease.subnet);
      await m.release();
      assert.ok(await leaseGone(net, lease.subnet)());
      assert.equal(await admin.get(networkKeys(admin, net).host('renewer')), undefined);
    });

    test('an expired subnet is not given to another host within the grace period', async () => {
      const net = await network(1);
      const a = await mgr(await open(), net, 'host-a', { ttlSeconds: 2 }).acquire({ publicIp: '192.168.4.1' });
      await waitFor('lease expiry', 20_000, leaseGone(net, a.subnet));
      await assert.rejects(
        mgr(await open(), net, 'host-b', { graceSeconds: 3600 }).acquire({ publicIp: '192.168.4.2' }),
        (err: Error) => {
          assert.match(err.message, new RegExp(`network "${net}" .* is full: all 1 /24 subnet are taken`));
          assert.match(err.message, /grace period: 10\.\d+\.0\.0\/24 \(host-a, 192\.168\.4\.1\)/);
          return true;
        },
      );
      // after the grace period (here: 0 s) it is free for others
      const b = await mgr(await open(), net, 'host-b', { graceSeconds: 0 }).acquire({ publicIp: '192.168.4.2' });
      assert.equal(b.subnet, a.subnet);
      // `weft reset` on the long-gone host-a must not free what host-b holds now
      await mgr(await open(), net, 'host-a').release();
      assert.deepEqual((await listLeases(admin, net)).map((l) => [l.hostId, l.subnet]), [['host-b', a.subnet]]);
      assert.equal(await admin.get(networkKeys(admin, net).host('host-a')), undefined);
    });

    test('a returning host whose subnet was taken gets a new one and says so loudly', async () => {
      const net = await network(2);
      const a = await mgr(await open(), net, 'host-a', { ttlSeconds: 2 }).acquire({ publicIp: '192.168.5.1' });
      const c = mgr(await open(), net, 'host-c');
      const cLease = await c.acquire({ publicIp: '192.168.5.3' });
      assert.notEqual(cLease.subnet, a.subnet);
      await waitFor('lease expiry', 20_000, leaseGone(net, a.subnet));
      const b = await mgr(await open(), net, 'host-b', { graceSeconds: 0 }).acquire({ publicIp: '192.168.5.2' });
      assert.equal(b.subnet, a.subnet, 'b gets the only free subnet: a\'s');
      await c.release();
      const cap = captureLog();
      const a2 = await mgr(await open(), net, 'host-a', { log: cap.log }).acquire({ publicIp: '192.168.5.1' });
      assert.equal(a2.subnet, cLease.subnet);
      const warn = cap.lines().find((l) => l.level === 40);
      assert.ok(warn, 'a warning was logged');
      assert.match(warn.msg, new RegExp(`SUBNET CHANGED.*${a.subnet.replace(/\./g, '\\.')}.*host-b`));
      const byHost = Object.fromEntries((await listLeases(admin, net)).map((l) => [l.hostId, l.subnet]));
      assert.deepEqual(byHost, { 'host-a': cLease.subnet, 'host-b': a.subnet });
      // b releasing leaves a's new lease alone
      await mgr(await open(), net, 'host-b').release();
      assert.deepEqual((await listLeases(admin, net)).map((l) => [l.hostId, l.subnet]), [['host-a', cLease.subnet]]);
    });

    test("a returning host does not grab its old subnet from a host between that host's lease and record writes", async () => {
      const net = await network(3);
      const keys = networkKeys(admin, net);
      const a = await mgr(await open(), net, 'host-a', { ttlSeconds: 2 }).acquire({ publicIp: '192.168.9.1' });
      await waitFor('lease expiry', 20_000, leaseGone(net, a.subnet));
      // host-b has just written the lease for a's old subnet; its host record follows 100 ms later
      await admin.put(keys.subnet(a.subnet), leaseToJson({ publicIp: '192.168.9.2', backendType: 'vxlan', backendData: {} }), { ttlSeconds: 60 });
      const record = hostRecordToJson({ hostId: 'host-b', subnet: a.subnet, publicIp: '192.168.9.2', expiresAt: Date.now() + 60_000 });
      const late = new Promise((r) => setTimeout(r, 100)).then(() => admin.put(keys.host('host-b'), record));
      const a2 = await mgr(await open(), net, 'host-a').acquire({ publicIp: '192.168.9.1' });
      await late;
      assert.notEqual(a2.subnet, a.subnet);
      assert.equal((await admin.get(keys.subnet(a.subnet)))?.value, '{"PublicIP":"192.168.9.2","BackendType":"vxlan","BackendData":{}}');
    });

    test('exhaustion names the network, its size and the holders', async () => {
      const net = await network(2);
      await mgr(await open(), net, 'h1').acquire({ publicIp: '192.168.6.1' });
      await mgr(await open(), net, 'h2').acquire({ publicIp: '192.168.6.2' });
      await assert.rejects(mgr(await open(), net, 'h3').acquire({ publicIp: '192.168.6.3' }), (err: Error) => {
        assert.match(err.message, new RegExp(`^network "${net}" \\(10\\.\\d+\\.0\\.0/16\\) is full: all 2 /24 subnets are taken`));
        assert.match(err.message, /held by 10\.\d+\.\d\.0\/24 by 192\.168\.6\.\d \(h\d\), 10\.\d+\.\d\.0\/24 by 192\.168\.6\.\d \(h\d\)/);
        assert.ok(err.message.includes('(h1)') && err.message.includes('(h2)'));
        return true;
      });
    });

    test('watchLeases gives the full live set on every change', async () => {
      const net = await network(8);
      const seen: Lease[][] = [];
      const w = mgr(await open(), net, 'watcher').watchLeases((all) => seen.push(all));
      try {
        await waitFor('initial resync', 20_000, async () => seen.length > 0);
        assert.deepEqual(seen.at(-1), []);
        const m = mgr(await open(), net, 'w1');
        const l = await m.acquire({ publicIp: '192.168.7.1', backendData: { VtepMAC: 'x' } });
        await waitFor('the new lease with its host id', 20_000, async () => seen.at(-1)?.some((x) => x.subnet === l.subnet && x.hostId === 'w1') ?? false);
        assert.deepEqual(seen.at(-1)!.map((x) => x.backendData), [{ VtepMAC: 'x' }]);
        await m.release();
        await waitFor('the release', 20_000, async () => seen.at(-1)?.length === 0);
      } finally {
        w.close();
      }
    });
  });
}

let dir = '';
leaseSuite(
  'sqlite',
  async () => {
    dir = await mkdtemp(join(tmpdir(), 'weft-lease-'));
    return { open: () => openStore(`sqlite://${join(dir, 'weft.db')}`, { create: true }) };
  },
  () => rm(dir, { recursive: true, force: true }),
);

let etcd: TestEtcd | undefined;
leaseSuite(
  'etcd',
  async () => {
    etcd = await startEtcd();
    return { open: () => openStore(`${etcd!.url}/weft-test`) };
  },
  async () => etcd?.stop(),
);
