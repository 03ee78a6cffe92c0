import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Endpoints, type NetworkDirectory } from '../../src/agent/endpoints.js';
import type { NetworkRunner } from '../../src/agent/network-runner.js';
import { registerEndpointDriver } from '../../src/backends/endpoints/registry.js';
import type { EndpointDriver } from '../../src/backends/endpoints/types.js';
import { memoryCluster, quiet } from '../helpers/lease-fakes.js';
import { fakeKernel } from '../helpers/kernel-fakes.js';

// Issue 15: every resync listed the ebtables rules (twice) and the links with nothing changed.
let sourceCalls = 0;
let fixNext: string[] = [];
registerEndpointDriver({
  name: 'recording-ep',
  join: async () => ({ mac: '02:00:00:00:00:01' }),
  prepare: async () => {
    throw new Error('unused');
  },
  leave: async () => true,
  exists: async () => true,
  reconcileSources: async () => {
    sourceCalls++;
    const f = fixNext;
    fixNext = [];
    return f;
  },
} as unknown as EndpointDriver);

test('endpoint resync: source filters are listed again only after a rule or link change, or after a pass that fixed something', async () => {
  const { admin: store } = memoryCluster();
  const net = { name: 'n1', module: { endpointDriver: 'recording-ep' }, plan: { pool: '10.5.0.0/24' }, bridge: undefined } as unknown as NetworkRunner;
  const dir: NetworkDirectory = { get: () => net, all: () => [net] };
  const eps = new Endpoints(store, 'h0', dir, [], quiet);
  const kernel = fakeKernel();
  eps.kernel = kernel;
  await eps.reconcile(net);
  assert.equal(sourceCalls, 1, 'the first pass lists');
  await eps.reconcile(net);
  assert.equal(sourceCalls, 1, 'nothing changed: skipped');
  assert.equal(eps.listingsSkipped, 1);
  kernel.bump('nft'); // a rule deleted by hand
  await eps.reconcile(net);
  assert.equal(sourceCalls, 2, 'a rule change: listed');
  kernel.bump('link');
  fixNext = ['vw00000001'];
  await eps.reconcile(net);
  assert.equal(sourceCalls, 3, 'a link change: listed');
  await eps.reconcile(net);
  assert.equal(sourceCalls, 4, 'the pass before fixed a port: listed again');
  await eps.reconcile(net);
  assert.equal(sourceCalls, 4);
  kernel.off = true; // the watch is gone
  await eps.reconcile(net);
  await eps.reconcile(net);
  assert.equal(sourceCalls, 6, 'no watch: every pass lists');
  await store.close();
});
