import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { callAgent } from '../src/agent/client.js';
import { isolationRules } from '../src/system/iptables.js';
import { nsExec } from '../src/testbed/index.js';
import { destroyLeftovers, routes, waitUntil, weft, withCluster, type Cluster, type Container } from './helpers/agent-cluster.js';

/**
 * Networks are isolated unless connected: two networks on the same three hosts, one container of each per
 * host. Every cross-network ping fails, every same-network ping succeeds; `weft network connect` opens the
 * way, `disconnect` closes it again.
 */

after(() => destroyLeftovers());
const skip = process.getuid?.() !== 0 ? 'needs root (network namespaces)' : false;

test('isolationRules: a rule per direction between unconnected networks, none for one network or connected ones', () => {
  const a = { name: 'a', cidr: '10.1.0.0/16' };
  const b = { name: 'b', cidr: '10.2.0.0/16' };
  const c = { name: 'c', cidr: '10.3.0.0/16' };
  assert.deepEqual(isolationRules([a], new Set()), []);
  const two = isolationRules([b, a], new Set());
  assert.deepEqual(two.map((r) => `${r[1]}>${r[3]}`), ['10.1.0.0/16>10.2.0.0/16', '10.2.0.0/16>10.1.0.0/16']);
  assert.deepEqual(isolationRules([a, b], new Set(['a+b'])), []);
  const three = isolationRules([a, b, c], new Set(['a+c']));
  assert.equal(three.length, 4, 'a↔b and b↔c, both directions');
  assert.ok(!three.some((r) => (r[1] === a.cidr && r[3] === c.cidr) || (r[1] === c.cidr && r[3] === a.cidr)));
});

/** Pings each (from, to) pair once; returns "from→to" for each that was answered. */
async function answered(pairs: Array<[Container, Container]>): Promise<string[]> {
  const ok: string[] = [];
  await Promise.all(
    pairs.map(async ([f, t]) => {
      const r = await nsExec(f.ns, ['ping', '-n', '-c', '1', '-W', '1', t.ip], { allowFail: true });
      if (r.code === 0) ok.push(`${f.label}→${t.label}`);
    }),
  );
  return ok.sort();
}

function isolation(backend: 'host-gw' | 'vxlan' | 'bgp' | 'udp' | 'wireguard' | 'l2' | 'macvlan', cidrs: [string, string]): void {
  describe(`network isolation (${backend})`, { skip, timeout: 170_000 }, () => {
    test('cross-network pings fail until connected, succeed after connect, fail after disconnect', { timeout: 160_000 }, () =>
      withCluster(
        { backend, cidr: cidrs[0], hosts: 3, containersPerHost: 1, config: () => ({ IPMasq: true }), networks: [{ name: 'other', cidr: cidrs[1], backend: backend === 'bgp' ? 'host-gw' : backend }] }, // one bgp network per store: its neighbour is host-gw
        async (c: Cluster) => {
          const red = [...c.containers];
          const blue: Container[] = [];
          for (const h of c.tb.hosts) {
            const ns = await c.tb.addContainer(h, 'b1');
            const ep = await c.agent(h).attach(ns, { network: 'other' });
            blue.push({ ns, label: `${h.id}-b1`, ip: ep.address.split('/')[0]!, host: h.id });
          }
          const cross = red.flatMap((r) => blue.flatMap((b) => [[r, b], [b, r]] as Array<[Container, Container]>));
          const store = ['--store', c.storeUrl];

          await c.assertAllPairs(red);
          await c.assertAllPairs(blue);
          await waitUntil('every cross-network ping fails', 20_000, async () => {
            const ok = await answered(cross);
            return ok.length === 0 || ok.join(' ');
          });
          // egress still works (masquerade): a container reaches the underlay switch
          const sw = `${c.tb.hosts[0]!.ip.split('.').slice(0, 3).join('.')}.1`;
          assert.ok(await c.tb.ping(red[1]!.ns, sw, { count: 2, timeoutSec: 2 }), 'egress to the underlay');

          // a container in both networks: eth0 with the default route, ethwe0 routing only its own network
          const both = red[0]!;
          const second = await c.agent(both.host).attach(both.ns, { network: 'other' });
          assert.equal(second.ifname, 'ethwe0');
          const rs = await routes(both.ns);
          assert.ok(rs.some((r) => r.dst === 'default' && r.dev === 'eth0'), JSON.stringify(rs));
          assert.ok(rs.some((r) => r.dst === cidrs[1] && r.dev === 'ethwe0'), JSON.stringify(rs));
          assert.ok(!rs.some((r) => r.dst === 'default' && r.dev === 'ethwe0'));
          const far = blue.find((b) => b.host !== both.host)!;
          assert.ok(await c.tb.ping(both.ns, far.ip, { count: 2, timeoutSec: 2 }), 'a member of both reaches the other network');

          // from here on `both` is a member of both networks: leave it out of the cross-network pairs
          const strangers = cross.filter(([f, t]) => f !== both && t !== both);
          const con = await weft(['network', 'connect', 'e2e', 'other', ...store]);
          assert.equal(con.code, 0, con.stderr);
          await waitUntil('every cross-network ping succeeds after connect', 30_000, async () => {
            const ok = await answered(strangers);
            return ok.length === strangers.length || `${ok.length}/${strangers.length}`;
          });

          const dis = await weft(['network', 'disconnect', 'other', 'e2e', ...store]);
          assert.equal(dis.code, 0, dis.stderr);
          await waitUntil('every cross-network ping fails again after disconnect', 30_000, async () => {
            const ok = await answered(strangers);
            return ok.length === 0 || ok.join(' ');
          });
          await c.assertAllPairs(red.slice(1));

          // `weft reset` removes the isolation chain with everything else weft made
          const h3 = c.tb.hosts[2]!;
          assert.equal((await nsExec(h3.ns, ['iptables', '-S', 'WEFT-ISOLATION'], { allowFail: true })).code, 0, 'chain present');
          await callAgent(c.agent(h3).api, 'POST', '/reset');
          assert.notEqual((await nsExec(h3.ns, ['iptables', '-S', 'WEFT-ISOLATION'], { allowFail: true })).code, 0, 'chain removed by reset');
          assert.doesNotMatch((await nsExec(h3.ns, ['iptables', '-S', 'FORWARD'])).stdout, /WEFT-ISOLATION/);

          const bad = await weft(['network', 'connect', 'e2e', 'nosuch', ...store]);
          assert.notEqual(bad.code, 0);
          assert.match(bad.stderr, /no network "nosuch"/);
        },
      ),
    );
  });
}

isolation('host-gw', ['10.71.0.0/16', '10.72.0.0/16']);
isolation('vxlan', ['10.73.0.0/16', '10.74.0.0/16']);
isolation('bgp', ['10.75.0.0/16', '10.76.0.0/16']);
isolation('udp', ['10.77.0.0/16', '10.78.0.0/16']);
isolation('wireguard', ['10.79.0.0/16', '10.80.0.0/16']);
isolation('l2', ['10.81.0.0/16', '10.82.0.0/16']);
isolation('macvlan', ['10.83.0.0/16', '10.84.0.0/16']);
