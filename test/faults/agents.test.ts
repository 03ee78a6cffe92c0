import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { callAgent } from '../../src/agent/client.js';
import type { Endpoint } from '../../src/agent/types.js';
import { LeaseManager } from '../../src/lease/manager.js';
import { listLeases } from '../../src/lease/leases.js';
import { openStore } from '../../src/store/index.js';
import { networkKeys } from '../../src/store/layout.js';
import type { Store } from '../../src/store/types.js';
import { alive } from '../../src/testbed/agents.js';
import { nsExec } from '../../src/testbed/index.js';
import { destroyLeftovers, NETWORK, routes, waitUntil, withCluster, type Cluster } from '../helpers/agent-cluster.js';
import { needsRoot } from '../helpers/require-root.js';

/**
 * The fault suite (npm run test:faults): what must hold when agents crash mid-work, hosts die, hosts
 * churn and attaches storm in. Real agents in namespaces against one SQLite store.
 */

after(() => destroyLeftovers());

/** Store records of the network: endpoint records and address records, by owner. */
async function records(c: Cluster): Promise<{ endpoints: Array<{ owner: string; address: string }>; addresses: Array<{ owner: string; address: string }> }> {
  const store = await openStore(c.storeUrl);
  try {
    const keys = networkKeys(store, NETWORK);
    const endpoints = (await store.list(keys.endpointsRoot)).map((e) => JSON.parse(e.value) as { owner: string; address: string });
    const addresses = (await store.list(keys.ipamPrefix)).map((e) => ({ owner: String(JSON.parse(e.value).Owner), address: e.key.slice(e.key.lastIndexOf('/') + 1) }));
    return { endpoints, addresses };
  } finally {
    await store.close();
  }
}

/** The container's weft interfaces (eth0, ethwe0, …). */
async function ifaces(ns: string): Promise<string[]> {
  const out = (await nsExec(ns, ['ip', '-o', 'link', 'show'], { allowFail: true })).stdout;
  return out
    .split('\n')
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
    .filter((n): n is string => !!n && n !== 'lo');
}

/** Resident set size of a process in kB. */
function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

describe('faults: agents', { timeout: 600_000, skip: needsRoot('iptables', 'ebtables') }, () => {
  test('kill -9 during a burst of attaches: after the restart nothing is leaked or doubled, and every container attaches', { timeout: 120_000 }, () =>
    withCluster({ backend: 'vxlan', cidr: '10.241.0.0/16', hosts: 2, containersPerHost: 0 }, async (c) => {
      const h1 = c.tb.hosts[0]!;
      const agent = c.agent(h1);
      const cts: string[] = [];
      for (let i = 0; i < 24; i++) cts.push(await c.tb.addContainer(h1, `b${i}`));
      // every container once, a third of them twice, all at once; the agent dies in the middle
      const calls = [...cts, ...cts.filter((_, i) => i % 3 === 0)].map((ns) => callAgent<Endpoint>(agent.api, 'POST', '/attach', { container: ns }, { timeoutMs: 20_000 }).catch((e: Error) => e));
      await waitUntil('some attaches done', 20_000, async () => (await records(c)).endpoints.length >= 4);
      const pid = agent.pid;
      await agent.stop('SIGKILL');
      assert.ok(!alive(pid));
      await Promise.all(calls);
      await agent.start();
      // the restarted agent makes store and kernel agree: a container has an interface iff it has a record
      await waitUntil('records and interfaces agree', 30_000, async () => {
        const r = await records(c);
        for (const ns of cts) {
          const eps = r.endpoints.filter((e) => e.owner === `netns:${ns}`);
          const addrs = r.addresses.filter((a) => a.owner === `netns:${ns}`);
          const ifs = await ifaces(ns);
          if (eps.length > 1 || addrs.length > 1 || ifs.length > 1) return `${ns}: ${eps.length} records, ${addrs.length} addresses, ${ifs.join(',')}`;
          if (eps.length !== ifs.length || eps.length !== addrs.length) return `${ns}: ${eps.length} records, ${addrs.length} addresses, interfaces ${ifs.join(',') || 'none'}`;
        }
        return true;
      });
      // now every container attaches (again): one address each, all distinct
      const eps = await Promise.all(cts.map((ns) => agent.attach(ns)));
      assert.equal(new Set(eps.map((e) => e.address)).size, cts.length, 'distinct addresses');
      for (const ns of cts) assert.deepEqual(await ifaces(ns), ['eth0'], `${ns} has exactly eth0`);
      const r = await records(c);
      assert.equal(r.endpoints.length, cts.length, 'one record per container');
      assert.equal(r.addresses.length, cts.length, 'one address per container');
      // and they answer from the other host
      const h2 = c.tb.hosts[1]!;
      const peer = await c.tb.addContainer(h2, 'p');
      await c.agent(h2).attach(peer);
      for (const e of eps.slice(0, 4)) {
        const ip = e.address.split('/')[0]!;
        await waitUntil(`${ip} answers from h2`, 15_000, async () => (await nsExec(peer, ['ping', '-n', '-q', '-c', '1', '-W', '1', ip], { allowFail: true })).code === 0);
      }
    }),
  );

  test('500 concurrent attaches over 3 hosts with duplicates mixed in: distinct addresses, one interface each', { timeout: 240_000 }, () =>
    withCluster({ backend: 'host-gw', cidr: '10.242.0.0/16', hosts: 3, containersPerHost: 0 }, async (c) => {
      const per = 150;
      const all: Array<{ host: string; ns: string }> = [];
      for (const h of c.tb.hosts) for (let i = 0; i < per; i++) all.push({ host: h.id, ns: await c.tb.addContainer(h, `s${i}`) });
      const dups = all.filter((_, i) => i % 9 === 0).slice(0, 500 - all.length);
      const jobs = [...all, ...dups];
      assert.equal(jobs.length, 500);
      const results = await Promise.all(jobs.map((j) => c.agent(j.host).attach(j.ns).then((e) => ({ ...j, ep: e }))));
      const byNs = new Map<string, string>();
      for (const r of results) {
        const had = byNs.get(r.ns);
        if (had) assert.equal(r.ep.address, had, `a duplicate attach of ${r.ns} got another address`);
        byNs.set(r.ns, r.ep.address);
      }
      assert.equal(byNs.size, all.length);
      const owners = new Map<string, string[]>();
      for (const [ns, a] of byNs) owners.set(a, [...(owners.get(a) ?? []), ns]);
      const twice = [...owners].filter(([, o]) => o.length > 1).map(([a, o]) => `${a}: ${o.join(', ')}`);
      assert.deepEqual(twice, [], 'every container has its own address');
      const r = await records(c);
      assert.equal(r.endpoints.length, all.length, 'one endpoint record per container');
      assert.equal(r.addresses.length, all.length, 'one address record per container');
      for (const j of all.filter((_, i) => i % 25 === 0)) assert.deepEqual(await ifaces(j.ns), ['eth0'], `${j.ns}`);
    }),
  );

  test('host death: peers drop its routes within the TTL; its subnet is not re-leased during the grace period', { timeout: 120_000 }, () =>
    withCluster({ backend: 'host-gw', cidr: '10.243.0.0/22', hosts: 3, containersPerHost: 0, subnetMin: '10.243.0.0', subnetMax: '10.243.2.0' }, async (c) => {
      const h3 = c.tb.hosts[2]!;
      const dead = await c.subnetOf(h3);
      const t0 = Date.now();
      await c.agent(h3).stop('SIGKILL');
      await c.tb.removeHost(h3);
      // a newcomer within the TTL and the grace period does not get the dead host's subnet (the range is full):
      // the lease key outlives the holder by the grace period, so every client of the layout sees it taken
      const store: Store = await openStore(c.storeUrl);
      try {
        const newcomer = new LeaseManager(store, NETWORK, { hostId: 'newcomer' });
        await assert.rejects(newcomer.acquire({ publicIp: '192.0.2.50' }), /is full/);
        // LEASE_TTL + GRACE (6 + 2 s in the cluster helper): then the routes go from the peers
        for (const h of c.tb.hosts) {
          await waitUntil(`${h.id} dropped its route to ${dead}`, 25_000, async () => !(await routes(h.ns)).some((r) => r.dst === dead));
        }
        const took = Date.now() - t0;
        assert.ok(took >= 6_000, `routes went ${took} ms after the death: not before the lease's TTL`);
        // and after the grace period the subnet is free again
        await waitUntil('the newcomer gets the freed subnet', 20_000, async () => (await newcomer.acquire({ publicIp: '192.0.2.50' })).subnet === dead || 'another subnet');
      } finally {
        await store.close();
      }
    }),
  );

  test('200 join/leave cycles beside running agents: no duplicate subnet at any moment, no leak, flat agent RSS', { timeout: 240_000 }, () =>
    withCluster({ backend: 'host-gw', cidr: '10.244.0.0/16', hosts: 2, containersPerHost: 0 }, async (c) => {
      const pids = [...c.agents.values()].map((a) => a.pid);
      const store = await openStore(c.storeUrl);
      const seen: string[] = [];
      const watch = store.watch(networkKeys(store, NETWORK).subnetsPrefix, () => {
        void listLeases(store, NETWORK).then((ls) => {
          const subnets = ls.map((l) => l.subnet);
          if (new Set(subnets).size !== subnets.length) seen.push(subnets.join(' '));
        });
      });
      try {
        // warm up, then take the baseline
        for (let i = 0; i < 10; i++) {
          const m = new LeaseManager(store, NETWORK, { hostId: `churn-w${i}`, ttlSeconds: 30 });
          await m.acquire({ publicIp: `192.0.2.${(i % 200) + 1}` });
          await m.release();
        }
        const before = pids.map(rssKb);
        const deadline = Date.now() + 180_000;
        let cycles = 0;
        for (; cycles < 200 && Date.now() < deadline; cycles++) {
          const m = new LeaseManager(store, NETWORK, { hostId: `churn-${cycles}`, ttlSeconds: 30 });
          await m.acquire({ publicIp: `192.0.2.${(cycles % 200) + 1}` });
          await m.release();
        }
        assert.equal(cycles, 200, 'all 200 cycles ran within the time bound');
        await waitUntil('only the two agents hold leases', 10_000, async () => (await listLeases(store, NETWORK)).length === 2);
        for (const h of c.tb.hosts) {
          await waitUntil(`${h.id} routes only its one peer`, 15_000, async () => (await routes(h.ns)).filter((r) => r.dst.startsWith('10.244.') && r.gateway).length === 1);
        }
        const afterRss = pids.map(rssKb);
        afterRss.forEach((kb, i) => assert.ok(kb < before[i]! * 1.3 + 5_000, `agent ${i + 1} RSS grew from ${before[i]} kB to ${kb} kB`));
        assert.deepEqual(seen, [], 'two live leases named one subnet');
        assert.equal((await store.list(networkKeys(store, NETWORK).hostsPrefix)).filter((e) => e.key.includes('churn')).length, 0, 'left hosts leave no records');
      } finally {
        watch.close();
        await store.close();
      }
    }),
  );
});
