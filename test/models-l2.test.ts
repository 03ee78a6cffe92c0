import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { macForAddress } from '../src/agent/endpoints.js';
import { cidrWithin } from '../src/net/ipv4.js';
import { createNetwork } from '../src/config/registry.js';
import { openStore } from '../src/store/index.js';
import { nsExec } from '../src/testbed/index.js';
import { destroyLeftovers, fdb, links, neigh, waitUntil, withCluster } from './helpers/agent-cluster.js';

/**
 * l2 end to end: one subnet spanning three hosts (a VXLAN port on each host bridge), real agents, two
 * containers per host. Lean: one cluster for every check.
 */

after(() => destroyLeftovers());
const skip = process.getuid?.() !== 0 ? 'needs root (network namespaces)' : false;
const CIDR = '10.61.0.0/16';

describe('l2 backend e2e', { skip, timeout: 150_000 }, () => {
  test('3 hosts × 2 containers in ONE subnet: all pairs ping, neighbours learn peer MACs, any free IP, taken IPs refused', { timeout: 140_000 }, () =>
    withCluster({ backend: 'l2', cidr: CIDR, hosts: 3, containersPerHost: 2 }, async (c) => {
      // every container is in the same /16 with the one shared gateway, whichever host it is on
      for (const ct of c.containers) assert.ok(cidrWithin(`${ct.ip}/32`, CIDR), `${ct.label} ${ct.ip} in ${CIDR}`);
      const st = await c.agent('h1').status();
      assert.equal(st?.networks[0]?.gateway, '10.61.0.1');
      assert.equal(new Set(c.containers.map((x) => x.ip)).size, 6, 'addresses are unique cluster-wide');

      await c.assertAllPairs();
      // one network in the store: no isolation chain, FORWARD untouched (the cheap case)
      const chain = await nsExec(c.tb.hosts[0]!.ns, ['iptables', '-S', 'WEFT-ISOLATION'], { allowFail: true });
      assert.notEqual(chain.code, 0, 'no WEFT-ISOLATION chain with a single network');

      // ARP crossed hosts: h1-c1's neighbour table holds h2-c1 with its own MAC (not a router's)
      const [a] = c.on('h1');
      const [b] = c.on('h2');
      const entries = await neigh(a!.ns, 'eth0');
      const entry = entries.find((n) => n.dst === b!.ip);
      assert.equal(entry?.lladdr, macForAddress(b!.ip), `neighbour of ${b!.ip} in ${a!.ns}: ${JSON.stringify(entries)}`);
      // and the gateway is answered by the container's own host: its bridge's MAC
      await nsExec(a!.ns, ['ping', '-c', '1', '-W', '2', '10.61.0.1'], { allowFail: true });
      const br = (await links(c.tb.hosts[0]!.ns)).find((l) => l.ifname === 'weft0');
      const gw = (await neigh(a!.ns, 'eth0')).find((n) => n.dst === '10.61.0.1');
      assert.equal(gw?.lladdr, br?.address, 'the shared gateway resolves to the local bridge');
      // the host's bridge holds every remote container as a permanent neighbour (programmed from the store):
      // traffic the host routes into the network (from a connected one) needs no ARP from the shared gateway
      await waitUntil('h1 knows h2-c1 as a permanent neighbour on weft0', 10_000, async () => {
        const n = (await neigh(c.tb.hosts[0]!.ns, 'weft0')).find((x) => x.dst === b!.ip);
        return (n?.lladdr === macForAddress(b!.ip) && (n.state ?? []).includes('PERMANENT')) || JSON.stringify(n);
      });
      assert.ok(!(await neigh(c.tb.hosts[0]!.ns, 'weft0')).some((x) => x.dst === a!.ip && (x.state ?? []).includes('PERMANENT')), 'no permanent entry for a local container');

      // peers are all-zeros entries (head-end replication); remote containers' MACs are programmed from the store
      await waitUntil('fdb entries for the remote MACs on h1', 15_000, async () => {
        const f = await fdb(c.tb.hosts[0]!.ns, 'wl2.1');
        const zeros = f.filter((e) => e.mac === '00:00:00:00:00:00' && e.dst).map((e) => e.dst).sort();
        const remote = c.containers.filter((x) => x.host !== 'h1').map((x) => macForAddress(x.ip));
        return zeros.length === 2 && remote.every((m) => f.some((e) => e.mac === m && e.dst)) ? true : JSON.stringify(f);
      });

      // a user may pick any free address of the subnet, on any host
      const ns = await c.tb.addContainer('h3', 'pick');
      const ep = await c.agent('h3').attach(ns, { network: 'e2e', address: '10.61.200.7' });
      assert.equal(ep.address, '10.61.200.7/16');
      await waitUntil(`h1-c1 pings the picked address`, 20_000, async () => c.tb.ping(a!.ns, '10.61.200.7', { timeoutSec: 1 }));
      // …but not one another host's container has (cluster-wide uniqueness)
      const ns2 = await c.tb.addContainer('h2', 'dup');
      await assert.rejects(c.agent('h2').attach(ns2, { network: 'e2e', address: '10.61.200.7' }), /10\.61\.200\.7.*already taken.*on host h3/);
      await assert.rejects(c.agent('h2').attach(ns2, { network: 'e2e', address: '10.62.0.9' }), /outside/);
      // and nothing was left half made in the refused container
      const left = await nsExec(ns2, ['ip', '-o', 'link', 'show']);
      assert.doesNotMatch(left.stdout, /eth0/, 'no interface left after a refused attach');

      // the GRE variant: this kernel has no gretap, so every agent refuses to join, naming the module, and makes nothing
      const store = await openStore(c.storeUrl);
      try {
        await createNetwork(store, 'l2gre', { Network: '10.64.0.0/16', Backend: { Type: 'l2', Encap: 'gre' } });
      } finally {
        await store.close();
      }
      await waitUntil('h1 says why it cannot join l2gre', 20_000, async () => {
        const why = (await c.agent('h1').status())?.failed?.l2gre ?? '';
        return /no gretap support \(module gretap, CONFIG_NET_IPGRE\)/.test(why) || why || 'not yet';
      });
      assert.ok(!(await links(c.tb.hosts[0]!.ns)).some((l) => /^wg[0-9a-f]{8}$/.test(l.ifname)), 'no gretap port left');
    }),
  );
});
