import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AgentStatus, NetworkStatus } from '../../src/agent/types.js';
import { backendEncrypts, formatBench } from '../../src/bench/backends.js';
import { onPath, parseServeRecord, pickNetworks } from '../../src/bench/peer.js';
import { UsageError } from '../../src/util/errors.js';

const net = (name: string, backend: string): NetworkStatus => ({ name, backend, subnet: '10.1.1.0/24', bridge: '', mtu: 1500, peers: [] });
const st: AgentStatus = { hostId: 'a', publicIp: '192.0.2.1', iface: 'eth0', networks: [net('blue', 'vxlan'), net('red', 'host-gw'), net('vpn', 'wireguard')] };

test('bench --peer / serve: networks picked by name and backend; unknown names are usage errors (exit 2)', () => {
  assert.deepEqual(pickNetworks(st, undefined, undefined).map((n) => n.name), ['blue', 'red', 'vpn']);
  assert.deepEqual(pickNetworks(st, ['red'], undefined).map((n) => n.name), ['red']);
  assert.deepEqual(pickNetworks(st, [], ['vxlan', 'wireguard']).map((n) => n.name), ['blue', 'vpn']);
  assert.throws(() => pickNetworks(st, ['green'], undefined), (e: unknown) => e instanceof UsageError && e.exitCode === 2 && /unknown network "green" \(this host's agent runs: blue, red, vpn\)/.test(e.message));
  assert.throws(() => pickNetworks(st, ['red'], ['vxlan']), /no network with backend vxlan on this host \(it runs: blue \(vxlan\), red \(host-gw\), vpn \(wireguard\)\)/);
  assert.throws(() => pickNetworks({ ...st, networks: [] }, undefined, undefined), /runs no network/);
});

test('a serve record from the store is parsed as untrusted input', () => {
  const good = { hostId: 'b', publicIp: '192.0.2.2', port: 5201, session: 's1', until: 5, targets: [{ network: 'red', backend: 'host-gw', address: '10.1.2.2', container: 'weft-bench-9-1', mtu: 1500 }] };
  assert.deepEqual(parseServeRecord(JSON.stringify(good)), good);
  // a target with no valid address is dropped; a record with a bad port or underlay address is refused
  const t2 = { ...good, targets: [...good.targets, { network: 'x', backend: 'vxlan', address: 'evil.example', container: 'c', mtu: 1 }] };
  assert.deepEqual(parseServeRecord(JSON.stringify(t2))?.targets, good.targets);
  assert.equal(parseServeRecord(JSON.stringify({ ...good, port: 70000 })), undefined);
  assert.equal(parseServeRecord(JSON.stringify({ ...good, publicIp: 'example.com' })), undefined);
  assert.equal(parseServeRecord('not json'), undefined);
  assert.equal(parseServeRecord('null'), undefined);
});

test('tools on $PATH; wireguard is the encrypted backend; the own-hosts table says where it ran', () => {
  assert.equal(onPath('sh', '/usr/bin:/bin'), true);
  assert.equal(onPath('surely-not-a-command-weft', '/usr/bin:/bin'), false);
  assert.equal(onPath('sh', ''), false);
  assert.equal(backendEncrypts('wireguard'), true);
  assert.equal(backendEncrypts('vxlan'), false);
  const text = formatBench([{ path: 'underlay', gbps: 1, rttUs: 100, cpuPerGbps: 1, mtu: 1500, encrypted: false }], { seconds: 3, reps: 1, peer: { from: 'a', to: 'b' } });
  assert.match(text, /container → container from a to b \(bench containers on the hosts' own agents\); CPU is this \(sending\) host's\./);
});
