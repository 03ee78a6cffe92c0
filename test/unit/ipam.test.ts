/** IPAM on the in-memory store (the suite is test/helpers/ipam-suite.ts; sqlite and etcd: test/ipam.test.ts). */
import { MemoryStore } from '../../src/store/memory.js';
import { ipamSuite } from '../helpers/ipam-suite.js';

let shared = new MemoryStore();
ipamSuite(
  'memory',
  async () => {
    shared = new MemoryStore();
    return async () => shared.open();
  },
  async () => {},
  500,
);
