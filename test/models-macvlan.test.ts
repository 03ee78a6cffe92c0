import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { shimName } from '../src/backends/macvlan/index.js';
import { createNetwork } from '../src/config/registry.js';
import { listLeases } from '../src/lease/leases.js';
import { openStore } from '../src/store/index.js';
import { cidrWithin, intToIp, ipToInt } from '../src/net/ipv4.js';
import { destroyLeftovers, links, routes, waitUntil, withCluster } from './helpers/agent-cluster.js';

/** macvlan end to end: containers as macvlan interfaces on each host's NIC, one L2 segment, real agents. */

after(() => destroyLeftovers());
const skip = process.getuid?.() !== 0 ? 'needs root (network namespaces)' : false;
const CIDR = '10.62.0.0/16';

describe('macvlan backend e2e', { skip, timeout: 150_000 }, () => {
  test('3 hosts × 2 containers: all pairs ping, no clash, the host reaches its containers; a missing parent is refused', { timeout: 140_000 }, () =>
    withCluster({ backend: 'macvlan', cidr: CIDR, hosts: 3, containersPerHost: 2 }, async (c) => {
      assert.equal(new Set(c.containers.map((x) => x.ip)).size, 6, 'no two containers share an address');
      for (const ct of c.containers) assert.ok(cidrWithin(`${ct.ip}/32`, CIDR));
      // the containers' interfaces are macvlans on the host's eth0 (no bridge)
      const inner = (await links(c.containers[0]!.ns)).find((l) => l.ifname === 'eth0');
      assert.equal(inner?.linkinfo?.info_kind, 'macvlan');
      assert.ok(!(await links(c.tb.hosts[0]!.ns)).some((l) => l.ifname === 'weft0'), 'no host bridge');

      await c.assertAllPairs();

      // the host reaches its own containers through its shim
      for (const h of c.tb.hosts) {
        for (const ct of c.on(h.id)) assert.ok(await c.tb.ping(h.ns, ct.ip, { count: 2, timeoutSec: 2 }), `${h.id} → ${ct.label}`);
      }
      // without --gateway the shim is the containers' gateway: the network on-link, the rest routed by the host
      for (const h of c.tb.hosts) {
        const ct = c.on(h.id)[0]!;
        const shim = intToIp(ipToInt((await c.agent(h).status())!.networks[0]!.subnet.split('/')[0]!) + 1);
        const rs = await routes(ct.ns);
        assert.ok(rs.some((r) => r.dst === 'default' && r.gateway === shim && r.dev === 'eth0'), `${ct.label}: default via ${shim}: ${JSON.stringify(rs)}`);
        assert.ok(rs.some((r) => r.dst === CIDR && r.dev === 'eth0' && !r.gateway), `${ct.label}: ${CIDR} on-link`);
        assert.ok(await c.tb.ping(ct.ns, h.ip, { count: 2, timeoutSec: 2 }), `${ct.label} → its host's underlay address ${h.ip} (via the shim)`);
      }

      // a network whose parent does not exist: every agent refuses to join it, says why, and makes nothing
      const store = await openStore(c.storeUrl);
      try {
        await createNetwork(store, 'noparent', { Network: '10.63.0.0/16', Backend: { Type: 'macvlan', Parent: 'nope0' } });
        await waitUntil('h1 reports why it cannot join noparent', 20_000, async () => {
          const st = await c.agent('h1').status();
          return /parent interface nope0 does not exist/.test(st?.failed?.noparent ?? '') || JSON.stringify(st?.failed ?? {});
        });
        assert.deepEqual(await listLeases(store, 'noparent'), [], 'no lease held');
        assert.ok(!(await links(c.tb.hosts[0]!.ns)).some((l) => l.ifname === shimName('noparent')), 'no shim made');
      } finally {
        await store.close();
      }
    }),
  );
});
