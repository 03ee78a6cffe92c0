import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AgentStatus } from '../../src/agent/types.js';
import { allowed } from '../../src/ui/server.js';
import { buildSnapshot, parseMapContainer, snapshotKey } from '../../src/ui/snapshot.js';
import { uiUrl } from '../../src/cli/ui.js';

/** The web map's data (pure shaping from status + endpoint records) and its access rule. */

const NOW = 1_800_000_000_000;
const st: AgentStatus = {
  hostId: 'h1',
  publicIp: '192.168.1.11',
  iface: 'eth0',
  networks: [
    {
      name: 'demo',
      subnet: '10.9.1.0/24',
      backend: 'vxlan',
      bridge: 'weft0',
      mtu: 1450,
      status: { healthy: true },
      peers: [
        { subnet: '10.9.2.0/24', publicIp: '192.168.1.12', hostId: 'h2', reachable: true },
        { subnet: '10.9.3.0/24', publicIp: '192.168.1.13', hostId: 'h3', reachable: false },
        { subnet: '10.9.4.0/24', publicIp: '192.168.1.14', hostId: 'h4', expiresAt: NOW - 1 },
      ],
    },
  ],
};
const ep = (hostId: string, id: string, address: string, extra: Record<string, unknown> = {}) => ({ network: 'demo', hostId, value: JSON.stringify({ id, address, owner: `ns-${id}`, hostId, ...extra }) });

test('hosts with their subnets and containers, tunnels coloured by health', () => {
  const s = buildSnapshot(st, [ep('h2', 'b', '10.9.2.3/24', { name: 'web' }), ep('h2', 'a', '10.9.2.2/24'), ep('h1', 'c', '10.9.1.2/24'), { network: 'demo', hostId: 'h3', value: '{not json' }, { network: 'demo', hostId: 'h3', value: '{"id":1}' }], NOW);
  assert.deepEqual(s.hosts.map((h) => h.id), ['h1', 'h2', 'h3', 'h4']);
  assert.equal(s.hosts[0]!.self, true);
  assert.deepEqual(s.hosts[1]!.containers.map((c) => [c.address, c.container, c.name]), [['10.9.2.2/24', 'ns-a', undefined], ['10.9.2.3/24', 'ns-b', 'web']]);
  assert.deepEqual(s.hosts[2]!.containers, []);
  assert.deepEqual(s.links.map((l) => [l.to, l.health]), [['h2', 'ok'], ['h3', 'bad'], ['h4', 'bad']]);
  assert.equal(s.links[2]!.why, 'lease 10.9.4.0/24 expired');
  const broken = structuredClone(st);
  broken.networks[0]!.error = 'reconcile failed: EPERM';
  assert.ok(buildSnapshot(broken, [], NOW).links.every((l) => l.health === 'bad' && l.why === 'backend vxlan on h1: reconcile failed: EPERM'));
});

test('snapshotKey changes with what is drawn, not with the time', () => {
  const a = buildSnapshot(st, [], NOW);
  const b = buildSnapshot(st, [], NOW + 5000);
  assert.equal(snapshotKey(a), snapshotKey(b));
  assert.notEqual(snapshotKey(a), snapshotKey(buildSnapshot(st, [ep('h2', 'z', '10.9.2.9/24')], NOW)));
  assert.equal(parseMapContainer({ network: 'demo', hostId: 'h2', value: 'null' }), undefined);
});

test('loopback and the unix socket need no token; anything else needs the right one', () => {
  const token = 'ab'.repeat(24);
  const req = (remoteAddress: string | undefined, q = '', headers = {}) => ({ remoteAddress, url: new URL(`http://x/${q}`), headers });
  assert.ok(allowed(req('127.0.0.1'), token));
  assert.ok(allowed(req('::ffff:127.0.0.1'), token));
  assert.ok(allowed(req(undefined), token));
  assert.ok(!allowed(req('192.168.1.5'), token));
  assert.ok(!allowed(req('192.168.1.5', '?token=' + 'cd'.repeat(24)), token));
  assert.ok(!allowed(req('192.168.1.5', '?token=ab'), token));
  assert.ok(allowed(req('192.168.1.5', '?token=' + token), token));
  assert.ok(allowed(req('192.168.1.5', '', { cookie: `a=b; weft_ui=${token}` }), token));
  assert.equal(uiUrl({ url: 'http://127.0.0.1:9403/', token }), 'http://127.0.0.1:9403/');
  assert.equal(uiUrl({ url: 'http://10.0.0.5:9403/', token }), `http://10.0.0.5:9403/?token=${token}`);
});
