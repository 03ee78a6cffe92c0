import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { callAgent } from '../src/agent/client.js';
import { ipToInt } from '../src/net/ipv4.js';
import { cidrWithin } from '../src/net/ipv4.js';
import { nsExec, type Testbed } from '../src/testbed/index.js';
import type { RunResult } from '../src/system/exec.js';
import { destroyLeftovers, links, routes, waitUntil, withCluster } from './helpers/agent-cluster.js';

/**
 * bridge end to end: each host's eth0 is enslaved to its host bridge and its address and routes move
 * there; containers sit on the underlay segment itself in per-host ranges weft computes (the leases).
 */

after(() => destroyLeftovers());
const skip = process.getuid?.() !== 0 ? 'needs root (network namespaces)' : false;

describe('bridge backend e2e', { skip, timeout: 150_000 }, () => {
  test('3 hosts × 2 containers on the underlay segment: the hosts keep their connectivity while and after enslaving; reset moves back', { timeout: 140_000 }, async () => {
    // a bounded probe from every host to the next one's underlay address, running while the agents enslave eth0
    const probes: Array<Promise<RunResult>> = [];
    let tbRef: Testbed | undefined;
    await withCluster(
      {
        backend: 'bridge',
        cidr: (u) => u,
        config: (u) => ({ SubnetLen: 28, SubnetMin: u.replace(/0\/24$/, '128') }),
        hosts: 3,
        containersPerHost: 2,
        beforeAgents: (tb) => {
          tbRef = tb;
          for (const [i, h] of tb.hosts.entries()) {
            const next = tb.hosts[(i + 1) % tb.hosts.length]!;
            probes.push(nsExec(h.ns, ['ping', '-n', '-q', '-i', '0.05', '-c', '200', '-W', '1', next.ip], { allowFail: true }));
          }
        },
      },
      async (c) => {
        const underlay = `${c.tb.hosts[0]!.ip.split('.').slice(0, 3).join('.')}.0/24`;
        // every host's address and default route are on its bridge now, with eth0 a port of it
        for (const h of c.tb.hosts) {
          const ls = await links(h.ns);
          const eth0 = ls.find((l) => l.ifname === 'eth0') as { master?: string } | undefined;
          assert.equal(eth0?.master, 'weft0', `${h.id}: eth0 enslaved`);
          const rs = await routes(h.ns);
          assert.ok(rs.some((r) => r.dst === 'default' && r.dev === 'weft0'), `${h.id} default route on the bridge: ${JSON.stringify(rs)}`);
        }
        // the probes ran through the move: at most a couple of packets lost
        const results = await Promise.all(probes);
        for (const r of results) {
          const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
          assert.ok(m, r.stdout + r.stderr);
          assert.ok(Number(m[1]) - Number(m[2]) <= 2, `underlay probe lost too much while enslaving: ${m[0]}`);
        }
        // containers are on the underlay subnet, each host in its own range, gateway = the host's own address
        const subnets = await Promise.all(c.tb.hosts.map((h) => c.subnetOf(h)));
        assert.equal(new Set(subnets).size, 3);
        for (const ct of c.containers) {
          const lease = subnets[c.tb.hosts.findIndex((h) => h.id === ct.host)]!;
          assert.ok(cidrWithin(`${ct.ip}/32`, lease), `${ct.label} ${ct.ip} in its host's range ${lease}`);
          assert.ok(ipToInt(ct.ip) >= ipToInt(underlay.replace(/0\/24$/, '128')));
        }
        await c.assertAllPairs();
        // containers reach the other hosts' underlay addresses directly (same segment)
        assert.ok(await c.tb.ping(c.containers[0]!.ns, c.tb.hosts[2]!.ip, { count: 2, timeoutSec: 2 }));

        // an agent killed and restarted finds its underlay on the bridge and adopts everything as it is
        const h2 = c.tb.hosts[1]!;
        await c.agent(h2).stop('SIGKILL');
        await c.startAgent(h2).catch((e) => {
          throw new Error(`${(e as Error).message}\n${readFileSync(c.agent(h2).logFile, 'utf8').split('\n').slice(-30).join('\n')}`);
        });
        await waitUntil('h2 runs the network again', 15_000, async () => ((await c.agent(h2).status())?.networks.length === 1 ? true : JSON.stringify(await c.agent(h2).status())));
        await c.assertAllPairs();

        // `weft reset` (through h1's agent) moves the address and routes back onto eth0
        const h1 = c.tb.hosts[0]!;
        await callAgent(c.agent(h1).api, 'POST', '/reset');
        const eth0 = (await links(h1.ns)).find((l) => l.ifname === 'eth0') as { master?: string } | undefined;
        assert.equal(eth0?.master, undefined, 'eth0 freed');
        const rs = await routes(h1.ns);
        assert.ok(rs.some((r) => r.dst === 'default' && r.dev === 'eth0'), `default route back on eth0: ${JSON.stringify(rs)}`);
        await waitUntil('h1 reaches h2 over eth0 after reset', 10_000, async () => c.tb.ping(h1.ns, c.tb.hosts[1]!.ip, { timeoutSec: 1 }));
      },
    );
    assert.ok(tbRef);
  });
});
