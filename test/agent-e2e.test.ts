import { cidrWithin } from '../src/net/ipv4.js';
import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { gatewayCidr } from '../src/ipam/addresses.js';
import { once } from 'node:events';
import { after, describe, test } from 'node:test';
import { callAgent } from '../src/agent/client.js';
import type { Endpoint } from '../src/agent/types.js';
import { listLeases } from '../src/lease/leases.js';
import { createNetwork } from '../src/config/registry.js';
import { openStore } from '../src/store/index.js';
import { networkKeys } from '../src/store/layout.js';
import { ipJson } from '../src/system/ip.js';
import { alive } from '../src/testbed/agents.js';
import { needsRoot } from './helpers/require-root.js';
import { destroyLeftovers, fdb, links, neigh, NETWORK, routeIn, routes, sleep, waitUntil, weft, withCluster, LEASE_TTL } from './helpers/agent-cluster.js';

/**
 * End-to-end, for each kernel backend: real `weft agent` processes in test-bed host namespaces against one
 * embedded SQLite store in a temp dir. Every test builds its own test bed (unique prefix) and always
 * destroys it (withCluster).
 */

const VXDEV = 'weft.1';

// A test cancelled by its timeout never reaches withCluster's teardown: destroy what is left at the end.
after(() => destroyLeftovers());
const haveBird = existsSync('/usr/sbin/bird') || existsSync('/usr/bin/bird');
const re = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

function e2e(backend: 'host-gw' | 'vxlan' | 'bgp', cidr: string): void {
  const cluster = (hosts: number, containersPerHost: number) => ({ backend, cidr, hosts, containersPerHost });

  const skip = needsRoot('iptables') ?? (backend === 'bgp' && !haveBird ? 'needs bird (Debian bird2)' : undefined);
  // each test has its own 60 s bound; the suite's is their sum (170 s cancelled the last three on a loaded machine)
  describe(`agent e2e (${backend})`, { timeout: 7 * 60_000, skip }, () => {
    test('3 hosts × 2 containers: every pair pings', { timeout: 60_000 }, () =>
      withCluster(cluster(3, 2), async (c) => {
        const subnets = await Promise.all(c.tb.hosts.map((h) => c.subnetOf(h)));
        assert.equal(new Set(subnets).size, 3, `distinct leases: ${subnets.join(' ')}`);
        for (const s of subnets) assert.ok(cidrWithin(s, cidr), `${s} inside ${cidr}`);
        assert.equal(c.containers.length, 6);
        for (const ct of c.containers) assert.ok(cidrWithin(`${ct.ip}/32`, await c.subnetOf(ct.host)), `${ct.label} ${ct.ip} in its host's lease`);
        for (const h of c.tb.hosts) {
          // flannel's subnet.env: the network's own file, and the single file for weft0's network
          const dir = c.agent(h).stateDir;
          const env = readFileSync(path.join(dir, NETWORK, 'subnet.env'), 'utf8');
          assert.match(env, new RegExp(`^FLANNEL_NETWORK=${re(cidr)}\nFLANNEL_SUBNET=${re(gatewayCidr(await c.subnetOf(h)))}\nFLANNEL_MTU=[0-9]+\nFLANNEL_IPMASQ=false\n$`));
          assert.equal(readFileSync(path.join(dir, 'subnet.env'), 'utf8'), env);
        }
        await c.assertAllPairs();
      }));

    test('a fourth host joins, reaches every container and is reached by all', { timeout: 60_000 }, () =>
      withCluster(cluster(3, 2), async (c) => {
        const h4 = await c.tb.addHost();
        await c.startAgent(h4);
        await Promise.all([...c.agents.values()].map((a) => a.waitForPeers(3)));
        await c.addContainers(h4, 2);
        const fresh = c.on(h4.id);
        const old = c.containers.filter((x) => x.host !== h4.id);
        const pairs = [...fresh.flatMap((f) => old.map((o) => [f, o] as const)), ...old.flatMap((o) => fresh.map((f) => [o, f] as const))];
        assert.equal(pairs.length, 2 * 2 * 6);
        const failed: string[] = [];
        await Promise.all(
          pairs.map(async ([src, dst], i) => {
            await sleep((i % 6) * 20);
            if (!(await c.tb.ping(src.ns, dst.ip, { timeoutSec: 2 }))) failed.push(`${src.label}→${dst.label}`);
          }),
        );
        assert.deepEqual(failed, []);
      }));

    test("a removed host (agent stopped, host gone, lease expired) vanishes from the others' routes", { timeout: 60_000 }, () =>
      withCluster(cluster(3, 1), async (c) => {
        const h3 = c.tb.host('h3');
        const subnet = await c.subnetOf(h3);
        const vtep = backend === 'vxlan' ? (await links(h3.ns)).find((l) => l.ifname === VXDEV)?.address : undefined;
        if (backend === 'vxlan') assert.ok(vtep, 'h3 has a VTEP');
        const gw = subnet.split('/')[0]!;
        const others = c.tb.hosts.filter((h) => h.id !== 'h3');
        const present = async (ns: string): Promise<string[]> => {
          const found: string[] = [];
          const rs = await routes(ns);
          if (rs.some((r) => r.dst === subnet)) found.push('route');
          if (backend === 'host-gw' && rs.some((r) => r.gateway === h3.ip)) found.push('route via h3');
          if (backend === 'vxlan') {
            if ((await fdb(ns, VXDEV)).some((f) => f.mac === vtep || f.dst === h3.ip)) found.push('fdb');
            if ((await neigh(ns, VXDEV)).some((n) => n.dst === gw)) found.push('neigh');
          }
          return found;
        };
        const want = backend === 'vxlan' ? ['route', 'fdb', 'neigh'] : backend === 'host-gw' ? ['route', 'route via h3'] : ['route'];
        for (const h of others) assert.deepEqual(await present(h.ns), want, `${h.id} routes to h3 before its removal`);

        const a3 = c.agent(h3);
        await a3.stop('SIGTERM');
        assert.ok(!alive(a3.pid), 'agent stopped');
        await c.tb.removeHost(h3);
        c.agents.delete('h3');
        await waitUntil(`h3's ${subnet} to vanish from h1 and h2`, (LEASE_TTL + 8) * 1000, async () => {
          for (const h of others) {
            const p = await present(h.ns);
            if (p.length) return `${h.id} still has ${p.join(', ')}`;
          }
          return true;
        });
        await Promise.all(others.map((h) => c.agent(h).waitForPeers(1)));
        await c.assertAllPairs(c.containers.filter((x) => x.host !== 'h3'));
      }));

    test('agent kill -9 + restart during iperf3 and ping loses no flow, keeps lease, IPs and data plane', { timeout: 60_000 }, () =>
      withCluster(cluster(2, 2), async (c) => {
        const [a1, a2] = c.on('h1');
        const [b1, b2] = c.on('h2');
        const h1 = c.tb.host('h1');
        const agent = c.agent(h1);
        const subnetBefore = await c.subnetOf(h1);
        const epsBefore = await callAgent<Endpoint[]>(agent.api, 'GET', '/endpoints');
        assert.equal(epsBefore.length, 2);
        const snapshot = async () => ({
          routes: await routes(h1.ns),
          links: (await links(h1.ns)).map((l) => `${l.ifname}#${l.ifindex}@${l.address}`).sort(),
          ...(backend === 'vxlan' ? { fdb: await fdb(h1.ns, VXDEV), neigh: await neigh(h1.ns, VXDEV) } : {}),
        });
        const before = await snapshot();
        assert.ok(before.links.some((l) => l.startsWith('weft0#')));
        if (backend === 'vxlan') assert.ok(before.links.some((l) => l.startsWith(`${VXDEV}#`)));
        const subnetB = await c.subnetOf('h2');
        assert.ok(before.routes.some((r) => r.dst === subnetB), 'route to h2 before');

        // anything deleted from h1's links, addresses or routes during the restart is a flap
        const monitor = c.tb.spawn(h1.ns, ['ip', '-o', 'monitor', 'link', 'address', 'route']);
        let monitorOut = '';
        monitor.stdout!.on('data', (d: Buffer) => (monitorOut += d.toString()));
        const server = c.tb.spawn(b1!.ns, ['iperf3', '-s', '-1', '-p', '5201']);
        await waitUntil('the iperf3 server to listen', 5_000, async () =>
          (await c.tb.exec(b1!.ns, ['ss', '-ltnH', 'sport = :5201'])).stdout.includes('5201'),
        );
        const iperf = c.tb.exec(a1!.ns, ['timeout', '30', 'iperf3', '-c', b1!.ip, '-p', '5201', '-t', '6', '-i', '0.5', '-J'], { allowFail: true });
        const ping = c.tb.exec(a2!.ns, ['ping', '-n', '-q', '-i', '0.05', '-c', '120', '-W', '2', '-w', '30', b2!.ip], { allowFail: true });
        await sleep(1500);
        const oldPid = agent.pid;
        await agent.stop('SIGKILL');
        assert.ok(!alive(oldPid), 'agent was killed');
        await sleep(300);
        await agent.start(); // same flags
        assert.notEqual(agent.pid, oldPid);
        await agent.waitForPeers(1);
        const [ip, pg] = await Promise.all([iperf, ping]);
        if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');

        assert.equal(ip.code, 0, `iperf3 failed: ${ip.stderr}${ip.stdout.slice(0, 500)}`);
        const report = JSON.parse(ip.stdout) as {
          intervals: Array<{ sum: { bytes: number; start: number } }>;
          end: { sum_sent: { bytes: number }; sum_received: { bytes: number } };
          error?: string;
        };
        assert.equal(report.error, undefined);
        assert.ok(report.intervals.length >= 10, `${report.intervals.length} intervals`);
        const empty = report.intervals.filter((i) => i.sum.bytes === 0).map((i) => i.sum.start);
        assert.deepEqual(empty, [], 'iperf3 intervals without any transfer');
        assert.ok(report.end.sum_received.bytes > 0);
        assert.equal(pg.code, 0, `ping: ${pg.stdout}${pg.stderr}`);
        assert.match(pg.stdout, /120 packets transmitted, 120 received, 0% packet loss/);

        // same lease, same endpoints, same addresses in the containers
        assert.equal(await c.subnetOf(h1), subnetBefore);
        const epsAfter = await callAgent<Endpoint[]>(agent.api, 'GET', '/endpoints');
        const key = (e: Endpoint) => `${e.container} ${e.address} ${e.mac} ${e.hostIf}`;
        assert.deepEqual(epsAfter.map(key).sort(), epsBefore.map(key).sort());
        for (const ct of [a1!, a2!]) {
          const addrs = await ipJson<Array<{ addr_info: Array<{ family: string; local: string }> }>>(['addr', 'show', 'dev', 'eth0'], { netns: ct.ns });
          assert.deepEqual(addrs[0]!.addr_info.filter((a) => a.family === 'inet').map((a) => a.local), [ct.ip]);
        }
        // no flap: same devices (ifindex, MAC), same routes (and fdb/neigh), nothing deleted meanwhile
        await sleep(300);
        assert.deepEqual(await snapshot(), before);
        monitor.kill('SIGTERM');
        await Promise.race([once(monitor, 'close'), sleep(2000)]);
        const deleted = monitorOut.split('\n').filter((l) => /^Deleted/.test(l.trim()));
        assert.deepEqual(deleted, [], 'kernel objects deleted during the agent restart');
      }));

    test('CLI: attach errors are one clear line; detach frees the address; ps --json lists endpoints', { timeout: 60_000 }, () =>
      withCluster(cluster(2, 2), async (c) => {
        const h1 = c.tb.host('h1');
        const api = c.agent(h1).api;
        const own = await c.subnetOf(h1);
        const other = await c.subnetOf('h2');
        const c3 = await c.tb.addContainer(h1, 'c3');
        const [a1, a2] = c.on('h1');

        const fails = async (args: string[], msg: RegExp) => {
          const r = await weft([...args, '--api', api]);
          assert.notEqual(r.code, 0, `weft ${args.join(' ')} succeeded: ${r.stdout}`);
          const lines = r.stderr.trim().split('\n');
          assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
          assert.match(lines[0]!, msg);
        };
        await fails(['attach', `${c.tb.prefix}-nosuch`], new RegExp(`^weft: unknown container "${c.tb.prefix}-nosuch": not a network namespace`));
        const outside = other.replace(/\.0\/\d+$/, '.7');
        await fails(['attach', c3, outside], new RegExp(`^weft: requested address ${re(outside)} is outside this host's subnet ${re(own)}$`));
        await fails(['attach', c3, a1!.ip], new RegExp(`^weft: address ${re(a1!.ip)} in ${re(own)} is already taken by netns:${re(a1!.ns)}$`));
        await fails(['attach', c3, '--network', 'nosuchnet'], new RegExp(`^weft: unknown network "nosuchnet" \\(this host runs: ${NETWORK}\\)$`));
        // nothing half-made by the failures
        assert.deepEqual((await links(c3)).map((l) => l.ifname), ['lo']);

        // detach frees the address and removes the host-side veth
        const eps = await callAgent<Endpoint[]>(api, 'GET', '/endpoints');
        const ep2 = eps.find((e) => e.container === a2!.ns);
        assert.ok(ep2, 'c2 endpoint listed');
        assert.ok((await links(h1.ns)).some((l) => l.ifname === ep2.hostIf), 'host veth present before detach');
        const d = await weft(['detach', a2!.ns, '--api', api]);
        assert.equal(d.code, 0, d.stderr);
        assert.match(d.stdout, new RegExp(`^detached ${re(a2!.ns)} from ${NETWORK} \\(${re(a2!.ip)}/`));
        assert.ok(!(await links(h1.ns)).some((l) => l.ifname === ep2.hostIf), 'host veth removed');
        assert.deepEqual((await links(a2!.ns)).map((l) => l.ifname), ['lo']);
        const again = await weft(['detach', a2!.ns, '--api', api]);
        assert.notEqual(again.code, 0);
        assert.match(again.stderr.trim(), new RegExp(`^weft: ${re(a2!.ns)} is not attached on this host$`));

        const at = await weft(['attach', c3, a2!.ip, '--api', api]);
        assert.equal(at.code, 0, at.stderr);
        assert.equal(at.stdout.trim(), `${a2!.ip}/${own.split('/')[1]}`);
        // the container that took the freed address is reachable at once: from a neighbour on the same
        // bridge (which had the old container's MAC cached) and from another host
        assert.ok(await c.tb.ping(a1!.ns, a2!.ip, { timeoutSec: 2 }), 'same-host neighbour reaches the re-used address');
        assert.ok(await c.tb.ping(c.on('h2')[0]!.ns, a2!.ip, { timeoutSec: 2 }), 'another host reaches it');

        const ps = await weft(['ps', '--json', '--api', api]);
        assert.equal(ps.code, 0, ps.stderr);
        const listed = JSON.parse(ps.stdout) as Endpoint[];
        const macOf = async (ns: string) => (await links(ns)).find((l) => l.ifname === 'eth0')?.address;
        const rows = listed.map((e) => `${e.container}|${e.network}|${e.address.split('/')[0]}|${e.mac}`).sort();
        assert.deepEqual(rows, [`${a1!.ns}|${NETWORK}|${a1!.ip}|${await macOf(a1!.ns)}`, `${c3}|${NETWORK}|${a2!.ip}|${await macOf(c3)}`].sort());
      }));

    test('a network created while agents run is joined by all; a container attached to it too gets ethwe0 routing only that network', { timeout: 60_000 }, () =>
      withCluster(cluster(2, 1), async (c) => {
        const second = backend === 'vxlan' ? '10.213.0.0/16' : backend === 'host-gw' ? '10.214.0.0/16' : '10.215.0.0/16';
        const store = await openStore(c.storeUrl);
        try {
          // one bgp network per store (one BIRD per host): beside a bgp network, the second one is host-gw
          await createNetwork(store, 'second', { Network: second, Backend: { Type: backend === 'bgp' ? 'host-gw' : backend } });
        } finally {
          await store.close();
        }
        await waitUntil('both agents to join "second" and see each other', 15_000, async () => {
          const sts = await Promise.all([...c.agents.values()].map((a) => a.status()));
          return sts.every((st) => st?.networks.find((n) => n.name === 'second')?.peers.length === 1);
        });
        const [x, y] = [c.on('h1')[0]!, c.on('h2')[0]!];
        const eps = await Promise.all([c.agent('h1').attach(x.ns, { network: 'second' }), c.agent('h2').attach(y.ns, { network: 'second' })]);
        for (const ep of eps) {
          assert.equal(ep.ifname, 'ethwe0');
          assert.ok(cidrWithin(ep.address, second), `${ep.address} in ${second}`);
        }
        const xr = await routes(x.ns);
        assert.equal(xr.filter((r) => r.dst === 'default').length, 1, 'one default route, still via eth0');
        assert.equal(xr.find((r) => r.dst === 'default')?.dev, 'eth0');
        assert.equal(xr.find((r) => r.dst === second)?.dev, 'ethwe0');
        assert.ok(await c.tb.ping(x.ns, eps[1]!.address.split('/')[0]!, { timeoutSec: 2 }), 'x reaches y over the second network');
        await c.assertAllPairs(); // the first network is untouched
      }));

    test('weft reset (API) removes bridge, backend device, routes, container veths, WEFT chains and the lease', { timeout: 60_000 }, () =>
      withCluster(cluster(2, 1), async (c) => {
        const h2 = c.tb.host('h2');
        const a2 = c.agent(h2);
        const subnet = await c.subnetOf(h2);
        // An open FORWARD chain needs no accept rules: weft adds none (no netfilter hook in the data path).
        assert.doesNotMatch((await c.tb.exec(h2.ns, ['iptables-save'])).stdout, /WEFT/);
        // Docker's DROP policy does: the restarted agent adds them, and traffic still flows.
        await c.tb.exec(h2.ns, ['iptables', '-w', '-P', 'FORWARD', 'DROP']);
        await a2.stop('SIGKILL');
        await a2.start();
        await a2.waitForPeers(1);
        await c.assertAllPairs();
        const before = await links(h2.ns);
        assert.ok(before.some((l) => l.ifname === 'weft0'));
        if (backend === 'vxlan') assert.ok(before.some((l) => l.ifname === VXDEV));
        assert.ok(before.some((l) => /^vw/.test(l.ifname)), 'a container veth');
        assert.match((await c.tb.exec(h2.ns, ['iptables-save'])).stdout, /WEFT-FORWARD/);
        assert.ok((await routes(h2.ns)).some((r) => r.dst !== subnet && routeIn(r.dst, cidr)), 'a route to h1');

        const res = await callAgent<{ networks: string[] }>(a2.api, 'POST', '/reset');
        assert.deepEqual(res.networks, [NETWORK]);
        await waitUntil('the agent to exit after reset', 10_000, async () => !alive(a2.pid));

        const left = (await links(h2.ns)).filter(
          (l) => /^(weft|vw)/.test(l.ifname) || l.linkinfo?.info_kind === 'vxlan' || l.linkinfo?.info_kind === 'bridge',
        );
        assert.deepEqual(left.map((l) => l.ifname), []);
        assert.deepEqual((await routes(h2.ns)).filter((r) => routeIn(r.dst, cidr)), []);
        assert.doesNotMatch((await c.tb.exec(h2.ns, ['iptables-save'])).stdout, /WEFT/);
        for (const ct of c.on('h2')) assert.deepEqual((await links(ct.ns)).map((l) => l.ifname), ['lo']);

        const store = await openStore(c.storeUrl);
        try {
          const leases = await listLeases(store, NETWORK);
          assert.equal(leases.length, 1, `only h1's lease is left: ${JSON.stringify(leases)}`);
          assert.ok(!leases.some((l) => l.subnet === subnet || l.hostId === 'h2'));
          const keys = networkKeys(store, NETWORK);
          assert.equal(await store.get(keys.host('h2')), undefined);
          assert.deepEqual(await store.list(keys.endpointsPrefix('h2')), []);
        } finally {
          await store.close();
        }
        // h1 drops h2 at once (its lease was deleted, not left to expire)
        await waitUntil(`h2's ${subnet} to vanish from h1`, 3_000, async () => !(await routes(c.tb.host('h1').ns)).some((r) => r.dst === subnet));
      }));
  });
}

e2e('host-gw', '10.246.0.0/16');
e2e('vxlan', '10.247.0.0/16');
e2e('bgp', '10.248.0.0/16');
