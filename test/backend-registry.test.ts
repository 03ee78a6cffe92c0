import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backendModule, createBackend, implementedBackends } from '../src/backends/all.js';
import { HostGwBackend } from '../src/backends/host-gw/index.js';
import type { BackendContext } from '../src/backends/types.js';
import { VxlanBackend } from '../src/backends/vxlan/index.js';
import { log } from '../src/util/log.js';
import { WeftError } from '../src/util/errors.js';

const ctx = (Type: string, extra: Record<string, unknown> = {}): BackendContext => ({
  networkName: 'n',
  network: { Network: '10.9.0.0/16', Backend: { Type, ...extra } },
  underlay: { iface: 'eth0', ip: '192.168.5.5', mtu: 1500 },
  log,
  stateDir: '/nonexistent',
  bridge: 'weft0',
  hostId: 'h',
  sys: {},
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

test('registry: unknown types name the registered ones; bad backend fields', () => {
  assert.throws(() => createBackend(ctx('frobnicate')), (e: unknown) => e instanceof WeftError && /unknown backend type "frobnicate" \(this weft has: host-gw, vxlan/.test(e.message));
  assert.throws(() => createBackend(ctx('vxlan', { VNI: 1 << 24 })), /VNI .* out of range/);
  assert.throws(() => createBackend(ctx('vxlan', { VNI: 123456789 })), WeftError);
});

test('modules carry their MTU overhead, options and ids', () => {
  assert.equal(backendModule('vxlan').mtuOverhead, 50);
  assert.equal(backendModule('host-gw').mtuOverhead, 0);
  assert.deepEqual(backendModule('vxlan').options?.map((o) => o.flag), ['vni', 'port']);
  const vx = backendModule('vxlan');
  assert.deepEqual(vx.allocateIds!({ Type: 'vxlan' }, [{ Type: 'vxlan', VNI: 1 }, { Type: 'vxlan', VNI: 2 }]), { Type: 'vxlan', VNI: 3 });
  assert.deepEqual(vx.allocateIds!({ Type: 'vxlan', VNI: 9 }, [{ Type: 'vxlan', VNI: 9 }]), { Type: 'vxlan', VNI: 9 });
  assert.match(vx.conflict!({ Type: 'vxlan', VNI: 4 }, { name: 'other', backend: { Type: 'vxlan', VNI: 4 } })!, /VNI 4 is already used by network "other"/);
  assert.equal(vx.conflict!({ Type: 'vxlan', VNI: 4 }, { name: 'other', backend: { Type: 'vxlan', VNI: 5 } }), undefined);
  assert.deepEqual(vx.deviceNames!({ Network: '10.1.0.0/16', Backend: { Type: 'vxlan', VNI: 7 } }), ['weft.7']);
});
