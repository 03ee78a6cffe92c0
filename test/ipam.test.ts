import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ipam } from '../src/ipam/ipam.js';
import { ipToInt } from '../src/lease/subnets.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { startEtcd, type TestEtcd } from './helpers/etcd.js';

function ipamSuite(kind: string, setup: () => Promise<() => Promise<Store>>, teardown: () => Promise<void>, concurrent: number): void {
  describe(`IPAM on ${kind}`, () => {
    let open: () => Promise<Store>;
    const opened: Store[] = [];
    const store = async () => {
      const s = await open();
      opened.push(s);
      return s;
    };
    before(async () => {
      open = await setup();
    });
    after(async () => {
      for (const s of opened) await s.close();
      await teardown();
    });

    test(`${concurrent} concurrent allocations get ${concurrent} distinct addresses`, async () => {
      const ipam = new Ipam(await store());
      const subnet = '10.9.4.0/22';
      const t0 = Date.now();
      const got = await Promise.all(Array.from({ length: concurrent }, (_, i) => ipam.allocate({ network: 'n', subnet, owner: `c${i}` })));
      const ms = Date.now() - t0;
      const addrs = new Set(got.map((a) => a.address));
      assert.equal(addrs.size, concurrent);
      for (const a of got) {
        assert.ok(ipToInt(a.address) >= ipToInt('10.9.4.2') && ipToInt(a.address) <= ipToInt('10.9.7.254'), a.address);
        assert.equal(a.cidr, `${a.address}/22`);
        assert.equal(a.gateway, '10.9.4.1');
      }
      // next-free is the lowest free: exactly the first `concurrent` addresses
      const sorted = [...addrs].map(ipToInt).sort((x, y) => x - y);
      assert.equal(sorted[0], ipToInt('10.9.4.2'));
      assert.equal(sorted.at(-1), ipToInt('10.9.4.2') + concurrent - 1);
      assert.equal((await ipam.list({ network: 'n', subnet })).length, concurrent);
      assert.ok(ms < 30_000, `took ${ms} ms`);
    });

    test('concurrent allocations from several store instances never share an address', async () => {
      const subnet = '10.9.8.0/24';
      const ipams = await Promise.all(Array.from({ length: 5 }, async () => new Ipam(await store())));
      const got = await Promise.all(
        ipams.flatMap((ipam, k) => Array.from({ length: 20 }, (_, i) => ipam.allocate({ network: 'n', subnet, owner: `p${k}-${i}` }))),
      );
      assert.equal(new Set(got.map((a) => a.address)).size, 100);
    });

    test('concurrent calls for one owner agree on one address', async () => {
      const ipam = new Ipam(await store());
      const got = await Promise.all(Array.from({ length: 10 }, () => ipam.allocate({ network: 'n', subnet: '10.9.12.0/24', owner: 'same' })));
      assert.deepEqual(new Set(got.map((a) => a.address)), new Set(['10.9.12.2']));
      assert.equal((await ipam.list({ network: 'n', subnet: '10.9.12.0/24' })).length, 1);
    });

    test('requested, invalid and taken addresses', async () => {
      const ipam = new Ipam(await store());
      const subnet = '10.9.9.0/24';
      const req = (owner: string, address: string) => ipam.allocate({ network: 'n', subnet, owner, address });
      assert.equal((await req('a', '10.9.9.50')).cidr, '10.9.9.50/24');
      assert.equal((await req('b', '10.9.9.51/24')).address, '10.9.9.51');
      await assert.rejects(req('c', '10.9.9.50'), /^WeftError: address 10\.9\.9\.50 in 10\.9\.9\.0\/24 is already taken by a$/);
      await assert.rejects(req('c', '10.9.10.5'), /10\.9\.10\.5 is outside this host's subnet 10\.9\.9\.0\/24/);
      await assert.rejects(req('c', '10.9.9.0'), /10\.9\.9\.0 is the network address of 10\.9\.9\.0\/24/);
      await assert.rejects(req('c', '10.9.9.255'), /10\.9\.9\.255 is the broadcast address/);
      await assert.rejects(req('c', '10.9.9.1'), /10\.9\.9\.1 is the gateway of 10\.9\.9\.0\/24/);
      await assert.rejects(req('c', '10.9.9.7/16'), /has prefix \/16 but this host's subnet is 10\.9\.9\.0\/24/);
      await assert.rejects(req('c', 'ten'), /"ten" is not an IPv4 address/);
      // same owner: same address, also when it asks for it again; another address is refused
      assert.equal((await req('a', '10.9.9.50')).address, '10.9.9.50');
      assert.equal((await ipam.allocate({ network: 'n', subnet, owner: 'a' })).address, '10.9.9.50');
      await assert.rejects(req('a', '10.9.9.60'), /a already has address 10\.9\.9\.50/);
      // next free skips the gateway and what is taken
      assert.equal((await ipam.allocate({ network: 'n', subnet, owner: 'd' })).address, '10.9.9.2');
    });

    test('release by owner or by address; a restart (new store instance) keeps and never reuses addresses', async () => {
      const subnet = '10.9.10.0/24';
      const first = new Ipam(await store());
      const x = await first.allocate({ network: 'n', subnet, owner: 'x' });
      const y = await first.allocate({ network: 'n', subnet, owner: 'y' });
      const restarted = new Ipam(await store());
      assert.deepEqual(await restarted.allocate({ network: 'n', subnet, owner: 'x' }), x);
      const z = await restarted.allocate({ network: 'n', subnet, owner: 'z' });
      assert.ok(![x.address, y.address].includes(z.address));
      assert.deepEqual((await restarted.release({ network: 'n', subnet, owner: 'x' })).map((a) => a.address), [x.address]);
      assert.deepEqual((await restarted.release({ network: 'n', subnet, address: `${y.address}/24` })).map((a) => a.owner), ['y']);
      assert.deepEqual((await restarted.list({ network: 'n', subnet })).map((a) => a.owner), ['z']);
      assert.equal((await restarted.allocate({ network: 'n', subnet, owner: 'w' })).address, x.address);
    });

    test('a full subnet is a clear error', async () => {
      const ipam = new Ipam(await store());
      const subnet = '10.9.11.0/29'; // .2 – .6
      for (let i = 0; i < 5; i++) await ipam.allocate({ network: 'n', subnet, owner: `f${i}` });
      await assert.rejects(ipam.allocate({ network: 'n', subnet, owner: 'f5' }), /no free address in 10\.9\.11\.0\/29 of network "n": all 5 container addresses are allocated/);
    });
  });
}

let dir = '';
ipamSuite(
  'sqlite',
  async () => {
    dir = await mkdtemp(join(tmpdir(), 'weft-ipam-'));
    return () => openStore(`sqlite://${join(dir, 'weft.db')}`, { create: true });
  },
  () => rm(dir, { recursive: true, force: true }),
  500,
);

let etcd: TestEtcd | undefined;
ipamSuite(
  'etcd',
  async () => {
    etcd = await startEtcd();
    return () => openStore(`${etcd!.url}/weft-ipam`);
  },
  async () => etcd?.stop(),
  500,
);
