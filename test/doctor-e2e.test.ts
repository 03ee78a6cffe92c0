import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe as suite, test } from 'node:test';
import { createNetwork } from '../src/config/registry.js';
import type { Finding } from '../src/doctor/types.js';
import { openStore } from '../src/store/index.js';
import { networkKeys } from '../src/store/layout.js';
import { bridgeJson, ipJson } from '../src/system/ip.js';
import { NETNS_DIR } from '../src/system/netns.js';
import { AgentProcess, runWeft, WEFT_BIN } from '../src/testbed/agents.js';
import { createTestbed, nsExec, type Testbed, type TestbedHost } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';
import { ETCD_BIN } from './helpers/etcd.js';
import { needsRoot } from './helpers/require-root.js';

/**
 * `weft doctor` end to end: a test bed of 2 hosts (own prefix "dr…"), real agents on vxlan against a SQLite
 * store in a temp dir, one container per host. Doctor runs inside host h1's namespace (as on a real host):
 * healthy → all ok, exit 0; then one thing broken at a time in h1 → doctor names it, exit 1; repaired →
 * healthy again; agent stopped → "no agent answers". Agents are stopped by PID; the test bed always destroyed.
 */

const NET = 'drnet';
const CIDR = '10.213.0.0/16';
const VXDEV = 'weft.1';

interface DoctorRun {
  code: number;
  stdout: string;
  stderr: string;
  findings: Finding[];
}

function prefix(): string {
  const abc = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return 'dr' + [...randomBytes(5)].map((b) => abc[b % abc.length]).join('');
}

/** Runs `weft doctor` inside a namespace (nsenter --net), like a user on that host; bounded by a timeout. */
function doctor(ns: string, args: string[], timeoutMs = 20_000): Promise<DoctorRun> {
  return new Promise((resolve) => {
    execFile('nsenter', [`--net=${NETNS_DIR}/${ns}`, process.execPath, WEFT_BIN, 'doctor', ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const c = (err as NodeJS.ErrnoException | null)?.code;
      let findings: Finding[] = [];
      if (args.includes('--json')) {
        try {
          findings = (JSON.parse(stdout) as { findings: Finding[] }).findings;
        } catch {
          /* asserted by the caller */
        }
      }
      resolve({ code: err ? (typeof c === 'number' ? c : 1) : 0, stdout, stderr, findings });
    });
  });
}

const failing = (r: DoctorRun) => r.findings.filter((f) => !f.ok);
const describe = (r: DoctorRun) => `exit ${r.code}; stderr: ${r.stderr.trim()}; failing: ${JSON.stringify(failing(r), null, 1)}`;

/** Teardowns still owed: run by after() when the test was cancelled by its timeout before its finally ran. */
const owed = new Set<() => Promise<void>>();
after(async () => {
  for (const t of [...owed]) await t().catch(() => {});
});

suite('weft doctor on a 2-host vxlan test bed: healthy, then names each broken thing', { timeout: 200_000, skip: needsRoot('iptables') }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-doctor-e2e-'));
  const storeUrl = `sqlite://${path.join(dir, 'weft.db')}`;
  const agents: AgentProcess[] = [];
  let tb: Testbed | undefined;
  const teardown = async () => {
    owed.delete(teardown);
    for (const a of agents) await a.stop('SIGKILL').catch(() => {});
    await tb?.destroy().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  };
  owed.add(teardown);
  const ips: string[] = [];
  let h1: TestbedHost, h2: TestbedHost, a1: AgentProcess, c1: string, c1Port: string;
  let peerSubnet: string, peerGw: string, opts: string[];
  const sh = (cmd: string) => nsExec(h1.ns, cmd);

  before(async () => {
    tb = await createTestbed({ prefix: prefix(), hosts: 2 });
    const store = await openStore(storeUrl, { create: true });
    try {
      await createNetwork(store, NET, { Network: CIDR, Backend: { Type: 'vxlan' } });
    } finally {
      await store.close();
    }
    for (const h of tb.hosts) agents.push(await new AgentProcess(h, { storeUrl, dir, leaseTtlSeconds: 60, graceSeconds: 2 }).start());
    await Promise.all(agents.map((a) => a.waitForPeers(1)));
    for (const [i, h] of tb.hosts.entries()) {
      const ns = await tb.addContainer(h, 'c1');
      const ep = await agents[i]!.attach(ns);
      ips.push(ep.address.split('/')[0]!);
      if (i === 0) c1Port = ep.hostIf;
    }
    [h1, h2] = tb.hosts as [TestbedHost, TestbedHost];
    a1 = agents[0]!;
    c1 = h1.containers[0]!;
    const st = (await a1.status())!;
    peerSubnet = st.networks[0]!.peers[0]!.subnet;
    peerGw = peerSubnet.split('/')[0]!;
    opts = ['--api', a1.api, '--store', storeUrl, '--json'];
  });

  after(async () => {
    await teardown();
    if (tb) {
      const left = (await ipJson<Array<{ name: string }>>(['netns', 'list'])).map((n) => n.name).filter((n) => n === tb!.prefix || n.startsWith(`${tb!.prefix}-`));
      assert.deepEqual(left, [], 'namespaces left behind');
    }
  });

  const healthy = async (when: string) => {
    const r = await doctor(h1.ns, opts);
    assert.equal(r.code, 0, `${when}: ${describe(r)}`);
    assert.ok(r.findings.length >= 10, `${when}: all checks ran (${r.findings.length})`);
    assert.deepEqual(failing(r), [], `${when}: all ok`);
    assert.ok(r.findings.some((f) => f.check === `peer:${NET}:${peerSubnet}` && f.ok && f.message.includes('neighbour and fdb entry in place')));
  };

  /** After a repair the agent may still be catching up (a probe, a resync): await a clean run, then check it fully. */
  const healthyAgain = async (when: string) => {
    await waitFor(`doctor all ✓ ${when}`, 20_000, async () => {
      const r = await doctor(h1.ns, opts);
      return (r.code === 0 && failing(r).length === 0) || describe(r);
    });
    await healthy(when);
  };

  /**
   * Breaks something, runs doctor, expects an error finding `check` whose message matches `message`.
   * The agent repairs routes/fdb on its 30 s resync, so a repair racing the run is retried (bounded).
   */
  const expectBroken = async (what: string, breakIt: () => Promise<unknown>, check: string, message: RegExp, extra: string[] = [], severity: 'error' | 'warn' = 'error'): Promise<DoctorRun> => {
    let last: DoctorRun | undefined;
    for (let attempt = 0; attempt < 3; attempt++) {
      await breakIt();
      last = await doctor(h1.ns, [...opts, ...extra]);
      const hit = last.findings.find((f) => f.check === check && !f.ok && f.severity === severity);
      if (hit) {
        if (severity === 'error') assert.equal(last.code, 1, `${what}: exit 1`);
        assert.match(hit.message, message, `${what}: message`);
        return last;
      }
    }
    assert.fail(`${what}: doctor did not report ${check}: ${describe(last!)}`);
  };

  test('healthy: the data plane works and every check passes (JSON, --ping, human output)', async () => {
    await waitFor('h1-c1 pings h2-c1 before anything is broken', 15_000, () => tb!.ping(c1, ips[1]!, { count: 1, timeoutSec: 2 }));
    await healthy('healthy host');
    const pinged = await doctor(h1.ns, [...opts, '--ping', ips[1]!]);
    assert.equal(pinged.code, 0, describe(pinged));
    const pf = pinged.findings.find((f) => f.check === `ping:${ips[1]}`);
    assert.ok(pf?.ok, describe(pinged));
    assert.equal(pf.message, `${ips[1]} (a container on host h2) answers a ping from this host (via ${peerGw} dev ${VXDEV})`);
    const human = await doctor(h1.ns, ['--api', a1.api, '--store', storeUrl]);
    assert.equal(human.code, 0, describe(human));
    assert.match(human.stdout, /^✓ agent answers at /m);
    assert.match(human.stdout, /^✓ bridge weft0 is up with /m);
    assert.match(human.stdout, /^all checks passed$/m);
  });

  test('doctor --all: every agent answers through the store; one cluster-wide report', async () => {
    const r = await runWeft(['doctor', '--all', '--store', storeUrl, '--json'], { timeoutMs: 30_000 });
    const rep = JSON.parse(r.stdout) as { ok: boolean; hosts: Array<{ hostId: string; ok: boolean; findings: Finding[]; error?: string }> };
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(rep.hosts.map((h) => [h.hostId, h.ok, h.error]), [['h1', true, undefined], ['h2', true, undefined]]);
    for (const h of rep.hosts) assert.ok(h.findings.some((f) => f.check === 'bridge:weft0' && f.ok), `${h.hostId} ran its checks`);
    // human output: one line per host
    await sh('ip link set weft0 down');
    const human = await runWeft(['doctor', '--all', '--store', storeUrl], { timeoutMs: 30_000 });
    await sh('ip link set weft0 up');
    assert.equal(human.code, 1, human.stdout);
    assert.match(human.stdout, /^== h1 \([\d.]+\): 1 error\(s\), 0 warning\(s\)\n  ✗ bridge weft0 is down: containers of drnet on this host are cut off$/m);
    assert.match(human.stdout, /^== h2 \([\d.]+\): all \d+ checks passed$/m);
    assert.match(human.stdout, /^1 of 2 host\(s\) have errors$/m);
  });

  test('the route to the peer subnet deleted (also named by --ping)', async () => {
    await expectBroken(
      'route deleted',
      () => sh(`ip route del ${peerSubnet} dev ${VXDEV} 2>/dev/null || true`),
      `peer:${NET}:${peerSubnet}:route`,
      new RegExp(`^no route to peer subnet ${peerSubnet.replace(/\./g, '\\.')} \\(host h2, ${h2.ip.replace(/\./g, '\\.')}\\): the agent has not reconciled — check its log$`),
    );
    await expectBroken(
      'route deleted, --ping',
      () => sh(`ip route del ${peerSubnet} dev ${VXDEV} 2>/dev/null || true`),
      `ping:${ips[1]}`,
      new RegExp(`^${ips[1]!.replace(/\./g, '\\.')} \\(a container on host h2\\) does not answer a ping from this host: no route to peer subnet ${peerSubnet.replace(/\./g, '\\.')} `),
      ['--ping', ips[1]!],
    );
    await sh(`ip route replace ${peerSubnet} via ${peerGw} dev ${VXDEV} onlink`);
  });

  test("the fdb entry for the peer's VtepMAC deleted", async () => {
    const entry = (await bridgeJson<Array<{ mac: string; dst?: string }>>(['fdb', 'show', 'dev', VXDEV], { netns: h1.ns })).find((f) => f.dst === h2.ip);
    assert.ok(entry, 'h1 has an fdb entry towards h2');
    await expectBroken(
      'fdb entry deleted',
      () => sh(`bridge fdb del ${entry.mac} dev ${VXDEV} dst ${h2.ip} self 2>/dev/null || true`),
      `peer:${NET}:${peerSubnet}:fdb`,
      new RegExp(`^vxlan: fdb entry for peer h2's VtepMAC \\(${entry.mac} → ${h2.ip.replace(/\./g, '\\.')}\\) missing on weft\\.1`),
    );
    await sh(`bridge fdb replace ${entry.mac} dev ${VXDEV} dst ${h2.ip} self permanent`);
  });

  test('IP forwarding off', async () => {
    const fwd = await expectBroken(
      'ip_forward=0',
      () => sh('sysctl -qw net.ipv4.ip_forward=0'),
      'ip_forward',
      /^IP forwarding is off \(net\.ipv4\.ip_forward=0\): containers cannot reach other hosts$/,
    );
    assert.equal(fwd.findings.find((f) => f.check === 'ip_forward')!.fix, 'sysctl -w net.ipv4.ip_forward=1');
    await sh('sysctl -qw net.ipv4.ip_forward=1');
  });

  test('the bridge down (human output names it with its fix)', async () => {
    await expectBroken('bridge down', () => sh('ip link set weft0 down'), 'bridge:weft0', /^bridge weft0 is down: containers of drnet on this host are cut off$/);
    const humanDown = await doctor(h1.ns, ['--api', a1.api, '--store', storeUrl]);
    assert.equal(humanDown.code, 1);
    assert.match(humanDown.stdout, /^✗ bridge weft0 is down: containers of drnet on this host are cut off\n {4}fix: ip link set weft0 up$/m);
    assert.match(humanDown.stdout, /^1 error\(s\), 0 warning\(s\)$/m);
    await sh('ip link set weft0 up');
  });

  test("FORWARD policy DROP and weft's jump gone (what a Docker install does)", async () => {
    await expectBroken(
      'FORWARD DROP without the jump',
      () => sh('iptables -w 5 -P FORWARD DROP && (iptables -w 5 -D FORWARD -j WEFT-FORWARD 2>/dev/null || true)'),
      'iptables',
      new RegExp(`^FORWARD policy is DROP and weft's accept rules are not in FORWARD \\(Docker does this\\): traffic to ${CIDR.replace(/\./g, '\\.')} is dropped$`),
    );
    // back as it was: policy ACCEPT, and the jump where weft's chain exists
    await sh('iptables -w 5 -P FORWARD ACCEPT; if iptables -w 5 -S WEFT-FORWARD >/dev/null 2>&1; then iptables -w 5 -C FORWARD -j WEFT-FORWARD 2>/dev/null || iptables -w 5 -I FORWARD 1 -j WEFT-FORWARD; fi');
  });

  test("a container's interface MTU lowered (not the bridge's), then its port's: doctor names the container and its port", async () => {
    try {
      await expectBroken(
        "c1's eth0 at MTU 1400",
        () => nsExec(c1, 'ip link set eth0 mtu 1400'),
        `mtu:${c1Port}`,
        new RegExp(`^MTU of container ${esc(c1)}'s eth0 \\(1400\\) differs from its port ${c1Port} on weft0 \\(1450\\): packets larger than 1400 bytes to the container are dropped$`),
      );
    } finally {
      await nsExec(c1, 'ip link set eth0 mtu 1450');
    }
    await healthyAgain("with c1's MTU back");
    try {
      const r = await expectBroken(
        `c1's port ${c1Port} at MTU 1400`,
        () => sh(`ip link set ${c1Port} mtu 1400`),
        `mtu:${c1Port}`,
        new RegExp(`^MTU of container ${esc(c1)}'s eth0 \\(1450\\) differs from its port ${c1Port} on weft0 \\(1400\\): packets larger than 1400 bytes to and from the container are dropped$`),
      );
      assert.equal(r.findings.find((f) => f.check === `mtu:${c1Port}`)!.fix, `ip link set ${c1Port} mtu 1450`);
      assert.ok(!r.findings.some((f) => f.check === 'mtu:weft0' && !f.ok), "the bridge's MTU is not blamed");
    } finally {
      await sh(`ip link set ${c1Port} mtu 1450`);
    }
    await healthyAgain("with c1's port MTU back");
  });

  test("the backend's port blocked on the peer (UDP 8472 dropped in h2's INPUT), then open again", async () => {
    const rule = '-p udp --dport 8472 -j DROP';
    try {
      const r = await expectBroken(
        'UDP 8472 dropped on h2',
        () => nsExec(h2.ns, `iptables -w 5 -C INPUT ${rule} 2>/dev/null || iptables -w 5 -I INPUT ${rule}`),
        `path:${NET}:${peerSubnet}:port`,
        new RegExp(`^peer h2 \\(${esc(h2.ip)}\\) answers on the underlay but not on the backend's port \\(vxlan, UDP 8472\\): its gateway [\\d.]+ does not answer across the tunnel`),
      );
      assert.match(r.findings.find((f) => f.check === `path:${NET}:${peerSubnet}:port`)!.fix!, /^allow UDP 8472 between the hosts/);
      assert.ok(!r.findings.some((f) => f.check === `path:${NET}:${peerSubnet}:underlay`), 'the underlay is not blamed');
    } finally {
      await nsExec(h2.ns, `while iptables -w 5 -D INPUT ${rule} 2>/dev/null; do :; done`);
    }
    await healthyAgain('with UDP 8472 open again');
  });

  test("the bridge's MTU above the backend's", async () => {
    await expectBroken('bridge MTU 1500', () => sh('ip link set weft0 mtu 1500'), 'mtu:weft0', /^MTU of weft0 \(1500\) is larger than the backend's \(1450\): large packets are dropped$/);
    await sh('ip link set weft0 mtu 1450');
  });

  // --- the checks of issue 17: each broken, named, repaired ---
  const esc = (t: string) => t.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const withStore = async <T>(fn: (s: Awaited<ReturnType<typeof openStore>>) => Promise<T>): Promise<T> => {
    const s = await openStore(storeUrl, { create: true });
    try {
      return await fn(s);
    } finally {
      await s.close();
    }
  };
  const leaseKey = (subnet: string) => withStore(async (s) => networkKeys(s, NET).subnet(subnet));
  const ownLeaseKey = async () => leaseKey((await a1.status())!.networks[0]!.subnet);

  test('path MTU: the switch port of h2 lowered to 1400 (a silent black hole for full-size packets)', async () => {
    await expectBroken(
      'switch port MTU 1400',
      () => nsExec(tb!.switchNs, 'ip link set h2 mtu 1400'),
      `pmtu:${NET}:${peerSubnet}`,
      new RegExp(`^path MTU to peer h2 \\(${esc(h2.ip)}\\) is below the network's MTU 1450: a 1450-byte packet with DF set does not cross \\(small ones do\\)`),
    );
    await nsExec(tb!.switchNs, 'ip link set h2 mtu 1500');
  });

  test('peer unreachable on the underlay (its switch port down)', async () => {
    await expectBroken(
      'h2 unplugged',
      () => nsExec(tb!.switchNs, 'ip link set h2 down'),
      `path:${NET}:${peerSubnet}:underlay`,
      new RegExp(`^peer h2 \\(${esc(h2.ip)}\\) does not answer on the underlay`),
    );
    await nsExec(tb!.switchNs, 'ip link set h2 up');
  });

  test('store unreachable', async () => {
    const r = await doctor(h1.ns, ['--api', a1.api, '--store', 'etcd://127.0.0.1:1', '--json']);
    assert.equal(r.code, 1, describe(r));
    const f = r.findings.find((x) => x.check === 'store');
    assert.ok(f && !f.ok && f.severity === 'error', describe(r));
    assert.match(f.message, /^the store etcd:\/\/127\.0\.0\.1:1 is unreachable \(/);
  });

  test("this host's lease expired (gone from the store), then about to expire", async () => {
    const key = await ownLeaseKey();
    const value = (await withStore((s) => s.get(key)))!.value;
    await expectBroken('lease deleted', () => withStore((s) => s.delete(key)), `lease:${NET}`, /has expired \(it is gone from the store\): peers drop their routes to this host$/);
    await withStore((s) => s.put(key, value, { ttlSeconds: 5 }));
    await expectBroken('lease with 5 s left', () => withStore((s) => s.put(key, value, { ttlSeconds: 5 })), `lease-expiring:${NET}`, /expires in [0-5]s although it is renewed every 20s: renewals are failing$/, [], 'warn');
    await withStore((s) => s.put(key, value, { ttlSeconds: 60 }));
  });

  test("lease conflict: another host's lease with this host's PublicIP", async () => {
    const fake = '10.213.252.0/24';
    const key = await leaseKey(fake);
    const value = JSON.stringify({ PublicIP: h1.ip, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:52' } });
    await expectBroken('lease of h9 on h1', () => withStore((s) => s.put(key, value, { ttlSeconds: 60 })), `lease-conflict:${NET}:${fake}`, new RegExp(`^lease ${esc(fake)} of network ${NET} is held by another holder \\(no weft host id\\) but its PublicIP ${esc(h1.ip)} is this host's`));
    await withStore((s) => s.delete(key));
  });

  test('a route, a neighbour and an fdb entry no lease explains', async () => {
    await expectBroken('stale route', () => sh(`ip route replace 10.213.250.0/24 dev ${VXDEV}`), `extra:${NET}:route:10.213.250.0/24`, /no lease in the store has that subnet: stale/, [], 'warn');
    await sh('ip route del 10.213.250.0/24 2>/dev/null || true');
    await expectBroken('stale neighbour', () => sh(`ip neigh replace 10.213.250.0 lladdr 02:00:00:00:00:50 dev ${VXDEV} nud permanent`), `extra:${NET}:neigh:10.213.250.0`, /^neighbour entry 10\.213\.250\.0 → 02:00:00:00:00:50 on weft\.1 matches no lease of drnet: stale$/, [], 'warn');
    await sh(`ip neigh del 10.213.250.0 dev ${VXDEV} 2>/dev/null || true`); // the agent's resync may have removed it already
    await expectBroken('stale fdb entry', () => sh(`bridge fdb replace 02:00:00:00:00:50 dev ${VXDEV} dst 192.0.2.50 self permanent`), `extra:${NET}:fdb:02:00:00:00:00:50`, /^fdb entry 02:00:00:00:00:50 → 192\.0\.2\.50 on weft\.1 matches no lease of drnet: stale$/, [], 'warn');
    await sh(`bridge fdb del 02:00:00:00:00:50 dev ${VXDEV} dst 192.0.2.50 self 2>/dev/null || true`); // likewise
  });

  test("Docker's bridge on the weft network's addresses", async () => {
    await expectBroken('docker0 in 10.213.0.0/16', () => sh('ip link add docker0 type bridge 2>/dev/null; ip addr replace 10.213.251.1/24 dev docker0'), 'docker-overlap:docker0', /^Docker's bridge docker0 has 10\.213\.251\.1\/24, inside weft network drnet \(10\.213\.0\.0\/16\)/);
    await sh('ip link del docker0');
  });

  test('rp_filter strict while a peer route is missing', async () => {
    await expectBroken(
      'rp_filter=1, route gone',
      () => sh(`sysctl -qw net.ipv4.conf.all.rp_filter=1; ip route del ${peerSubnet} dev ${VXDEV} 2>/dev/null || true`),
      `rp_filter:${VXDEV}`,
      /^rp_filter is strict \(1\) on weft\.1 and there is no route back to /,
      [],
      'warn',
    );
    await sh(`sysctl -qw net.ipv4.conf.all.rp_filter=0; ip route replace ${peerSubnet} via ${peerGw} dev ${VXDEV} onlink`);
  });

  test('everything repaired: healthy again, the data plane works again', async () => {
    await healthy('after the repairs');
    await waitFor('h1-c1 pings h2-c1 after the repairs', 15_000, () => tb!.ping(c1, ips[1]!, { count: 1, timeoutSec: 2 }));
  });

  test('the agent stopped', async () => {
    await a1.stop('SIGTERM');
    const down = await doctor(h1.ns, opts);
    assert.equal(down.code, 1, describe(down));
    const agentFinding = down.findings.find((f) => f.check === 'agent');
    assert.ok(agentFinding && !agentFinding.ok && agentFinding.severity === 'error', describe(down));
    assert.equal(agentFinding.message, `no agent answers at ${a1.api}: nothing follows peers or renews this host's lease`);
    // --all names the host whose agent is gone (its lease is still live)
    const all = await runWeft(['doctor', '--all', '--store', storeUrl, '--wait', '3', '--json'], { timeoutMs: 30_000 });
    assert.equal(all.code, 1);
    const rep = JSON.parse(all.stdout) as { hosts: Array<{ hostId: string; ok: boolean; error?: string }> };
    assert.deepEqual(rep.hosts.map((h) => [h.hostId, h.ok]), [['h1', false], ['h2', true]]);
    assert.match(rep.hosts[0]!.error!, /^host h1 \([\d.]+\) holds a lease but its agent did not answer within 3 s/);
  });
});

suite('weft doctor with the store stopped under a running agent (etcd in the host namespace, killed by PID, started again)', { timeout: 200_000, skip: needsRoot('iptables') ?? (fs.existsSync(ETCD_BIN) ? undefined : `needs ${ETCD_BIN} (etcd-server)`) }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-doctor-store-'));
  const PORT = 23790;
  let tb: Testbed | undefined;
  let h: TestbedHost;
  let agent: AgentProcess | undefined;
  let etcd: ChildProcess | undefined;
  let url: string;
  let opts: string[];
  const teardown = async () => {
    owed.delete(teardown);
    await agent?.stop('SIGKILL').catch(() => {});
    await tb?.destroy().catch(() => {}); // kills what it spawned (etcd) by PID
    fs.rmSync(dir, { recursive: true, force: true });
  };
  owed.add(teardown);
  /** etcd on the host's underlay address, on the same data every time (a restart, not a new store). */
  const startEtcd = () => {
    const client = `http://${h.ip}:${PORT}`;
    const peer = `http://${h.ip}:${PORT + 1}`;
    etcd = tb!.spawn(h.ns, [
      ETCD_BIN, '--name', 'dr', '--data-dir', path.join(dir, 'etcd'),
      '--listen-client-urls', client, '--advertise-client-urls', client,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `dr=${peer}`,
      '--logger', 'zap', '--log-level', 'error',
    ]);
  };
  const weftIn = (args: string[]) => nsExec(h.ns, [process.execPath, WEFT_BIN, ...args], { allowFail: true });
  const etcdAnswers = async () => (await weftIn(['network', 'ls', '--store', url, '--json'])).code === 0;

  before(async () => {
    tb = await createTestbed({ prefix: prefix(), hosts: 1 });
    h = tb.hosts[0]!;
    url = `etcd://${h.ip}:${PORT}`;
    opts = ['--api', '', '--store', url, '--json'];
    startEtcd();
    await waitFor('etcd answers', 20_000, etcdAnswers);
    const created = await weftIn(['network', 'create', NET, '--subnet', '10.212.0.0/16', '--backend', 'vxlan', '--store', url, '--ignore-host-routes']);
    assert.equal(created.code, 0, created.stderr);
    agent = await new AgentProcess(h, { storeUrl: url, dir, leaseTtlSeconds: 60 }).start();
    opts[1] = agent.api;
    await waitFor('the agent runs the network', 20_000, async () => (await agent!.status())?.networks.length === 1);
  });

  after(async () => {
    await teardown();
    if (tb) {
      const left = (await ipJson<Array<{ name: string }>>(['netns', 'list'])).map((n) => n.name).filter((n) => n === tb!.prefix || n.startsWith(`${tb!.prefix}-`));
      assert.deepEqual(left, [], 'namespaces left behind');
    }
  });

  /** Doctor until it is all ✓ with the store (both views) named ok: the agent's probe runs every 5 s. */
  const allOk = async (when: string) => {
    const r = await waitFor(`doctor all ✓ ${when}`, 30_000, async () => {
      const run = await doctor(h.ns, opts);
      return (run.code === 0 && failing(run).length === 0 && run) || describe(run);
    });
    assert.ok(r.findings.some((f) => f.check === 'store' && f.ok), describe(r));
    assert.ok(!r.findings.some((f) => f.check === 'store:agent'), 'the agent reaches its store');
    assert.ok(r.findings.some((f) => f.check === 'bridge:weft0' && f.ok), 'the host checks ran');
  };

  test('healthy with etcd up', async () => {
    await allOk('with etcd up');
  });

  test('etcd killed: doctor names the store as it reaches it AND as the agent does; etcd back: all ✓', async () => {
    const pid = etcd!.pid!;
    const exited = new Promise((r) => etcd!.once('exit', r));
    process.kill(pid, 'SIGKILL');
    await exited;
    try {
      // the agent notices on its next probe (every 5 s): await the run that names both
      const r = await waitFor('doctor names the store on both sides', 30_000, async () => {
        const run = await doctor(h.ns, opts);
        const cli = run.findings.find((f) => f.check === 'store' && !f.ok);
        const ag = run.findings.find((f) => f.check === 'store:agent' && !f.ok);
        return (cli && ag && run) || describe(run);
      });
      assert.equal(r.code, 1, describe(r));
      const cli = r.findings.find((f) => f.check === 'store')!;
      const ag = r.findings.find((f) => f.check === 'store:agent')!;
      assert.equal(cli.severity, 'error');
      assert.match(cli.message, new RegExp(`^the store ${url.replace(/[.]/g, '\\.')} is unreachable \\(`));
      assert.equal(ag.severity, 'error');
      assert.match(ag.message, new RegExp(`^the agent cannot reach its store ${url.replace(/[.]/g, '\\.')} \\(.*\\): its lease is not renewed`));
      // forwarding state is the agent's, not the store's: the host's own checks still pass
      assert.ok(r.findings.some((f) => f.check === 'bridge:weft0' && f.ok), describe(r));
    } finally {
      startEtcd();
    }
    await waitFor('etcd answers again', 20_000, etcdAnswers);
    await allOk('with etcd back');
  });
});
