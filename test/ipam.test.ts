/** IPAM on the real stores (sqlite file, etcd); the suite is test/helpers/ipam-suite.ts. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../src/store/index.js';
import { startEtcd, type TestEtcd } from './helpers/etcd.js';
import { ipamSuite } from './helpers/ipam-suite.js';

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
