import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HostGwBackend } from '../src/backends/host-gw.js';
import { createBackend, implementedBackends } from '../src/backends/registry.js';
import type { BackendContext } from '../src/backends/types.js';
import { VxlanBackend } from '../src/backends/vxlan.js';
import { log } from '../src/util/log.js';
import { WeftError } from '../src/util/errors.js';

const ctx = (Type: string, extra: Record<string, unknown> = {}): BackendContext => ({
  networkName: 'n',
  network: { Network: '10.9.0.0/16', Backend: { Type, ...extra } },
  underlay: { iface: 'eth0', ip: '192.168.5.5', mtu: 1500 },
  log,
});

test('registry picks the backend by Backend.Type', () => {
  assert.ok(createBackend(ctx('host-gw')) instanceof HostGwBackend);
  const v = createBackend(ctx('vxlan'));
  assert.ok(v instanceof VxlanBackend);
  assert.equal(v.mtu, 1450);
  assert.equal((v as VxlanBackend).device, 'weft.1');
  assert.equal((v as VxlanBackend).port, 8472);
  assert.deepEqual(implementedBackends().slice(0, 2), ['host-gw', 'vxlan']);
});

test('registry: known but unimplemented, and unknown types', () => {
  assert.throws(() => createBackend(ctx('bgp')), (e: unknown) => e instanceof WeftError && e.message === 'backend bgp is not implemented yet');
  assert.throws(() => createBackend(ctx('frobnicate')), /unknown backend type "frobnicate"/);
  assert.throws(() => createBackend(ctx('vxlan', { VNI: 1 << 24 })), /VNI .* out of range/);
  assert.throws(() => createBackend(ctx('vxlan', { VNI: 123456789 })), WeftError);
});
