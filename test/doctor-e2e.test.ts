import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { createNetwork } from '../src/config/registry.js';
import type { Finding } from '../src/doctor/types.js';
import { openStore } from '../src/store/index.js';
import { bridgeJson, ipJson } from '../src/system/ip.js';
import { NETNS_DIR } from '../src/system/netns.js';
import { AgentProcess, WEFT_BIN } from '../src/testbed/agents.js';
import { createTestbed, nsExec, type Testbed } from '../src/testbed/index.js';

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

test('weft doctor on a 2-host vxlan test bed: healthy, then names each broken thing', { timeout: 150_000 }, async () => {
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
  try {
    tb = await createTestbed({ prefix: prefix(), hosts: 2 });
    const store = await openStore(storeUrl, { create: true });
    try {
      await createNetwork(store, NET, { Network: CIDR, Backend: { Type: 'vxlan' } });
    } finally {
      await store.close();
    }
    for (const h of tb.hosts) agents.push(await new AgentProcess(h, { storeUrl, dir, leaseTtlSeconds: 60, graceSeconds: 2 }).start());
    await Promise.all(agents.map((a) => a.waitForPeers(1)));
    const ips: string[] = [];
    for (const [i, h] of tb.hosts.entries()) {
      const ns = await tb.addContainer(h, 'c1');
      ips.push((await agents[i]!.attach(ns)).address.split('/')[0]!);
    }
    const [h1, h2] = tb.hosts as [typeof tb.hosts[0], typeof tb.hosts[0]];
    const [a1] = agents as [AgentProcess];
    const c1 = h1.containers[0]!;
    // the data plane works: h1's container reaches h2's
    assert.ok(await tb.ping(c1, ips[1]!, { count: 1, timeoutSec: 2 }), 'h1-c1 pings h2-c1 before anything is broken');

    const st = (await a1.status())!;
    const peerSubnet = st.networks[0]!.peers[0]!.subnet;
    const peerGw = peerSubnet.split('/')[0]!;
    const opts = ['--api', a1.api, '--store', storeUrl, '--json'];
    const sh = (cmd: string) => nsExec(h1.ns, cmd);

    // healthy
    const healthy = async (when: string) => {
      const r = await doctor(h1.ns, opts);
      assert.equal(r.code, 0, `${when}: ${describe(r)}`);
      assert.ok(r.findings.length >= 10, `${when}: all checks ran (${r.findings.length})`);
      assert.deepEqual(failing(r), [], `${when}: all ok`);
      assert.ok(r.findings.some((f) => f.check === `peer:${NET}:${peerSubnet}` && f.ok && f.message.includes('neighbour and fdb entry in place')));
    };
    await healthy('healthy host');

    // --ping of h2's container from h1: answered
    const pinged = await doctor(h1.ns, [...opts, '--ping', ips[1]!]);
    assert.equal(pinged.code, 0, describe(pinged));
    const pf = pinged.findings.find((f) => f.check === `ping:${ips[1]}`);
    assert.ok(pf?.ok, describe(pinged));
    assert.equal(pf.message, `${ips[1]} (a container on host h2) answers a ping from this host (via ${peerGw} dev ${VXDEV})`);

    // human output of a healthy host
    const human = await doctor(h1.ns, ['--api', a1.api, '--store', storeUrl]);
    assert.equal(human.code, 0, describe(human));
    assert.match(human.stdout, /^✓ agent answers at /m);
    assert.match(human.stdout, /^✓ bridge weft0 is up with /m);
    assert.match(human.stdout, /^all checks passed$/m);

    /**
     * Breaks something, runs doctor, expects an error finding `check` whose message matches `message`.
     * The agent repairs routes/fdb on its 30 s resync, so a repair racing the run is retried (bounded).
     */
    const expectBroken = async (what: string, breakIt: () => Promise<unknown>, check: string, message: RegExp, extra: string[] = []): Promise<DoctorRun> => {
      let last: DoctorRun | undefined;
      for (let attempt = 0; attempt < 3; attempt++) {
        await breakIt();
        last = await doctor(h1.ns, [...opts, ...extra]);
        const hit = last.findings.find((f) => f.check === check && !f.ok && f.severity === 'error');
        if (hit) {
          assert.equal(last.code, 1, `${what}: exit 1`);
          assert.match(hit.message, message, `${what}: message`);
          return last;
        }
      }
      assert.fail(`${what}: doctor did not report ${check}: ${describe(last!)}`);
    };

    // 1. the route to the peer's subnet deleted
    await expectBroken(
      'route deleted',
      () => sh(`ip route del ${peerSubnet} dev ${VXDEV} 2>/dev/null || true`),
      `peer:${NET}:${peerSubnet}:route`,
      new RegExp(`^no route to peer subnet ${peerSubnet.replace(/\./g, '\\.')} \\(host h2, ${h2.ip.replace(/\./g, '\\.')}\\): the agent has not reconciled — check its log$`),
    );
    // … and --ping of h2's container names the same cause
    await expectBroken(
      'route deleted, --ping',
      () => sh(`ip route del ${peerSubnet} dev ${VXDEV} 2>/dev/null || true`),
      `ping:${ips[1]}`,
      new RegExp(`^${ips[1]!.replace(/\./g, '\\.')} \\(a container on host h2\\) does not answer a ping from this host: no route to peer subnet ${peerSubnet.replace(/\./g, '\\.')} `),
      ['--ping', ips[1]!],
    );
    await sh(`ip route replace ${peerSubnet} via ${peerGw} dev ${VXDEV} onlink`);

    // 2. the fdb entry for the peer's VtepMAC deleted
    const entry = (await bridgeJson<Array<{ mac: string; dst?: string }>>(['fdb', 'show', 'dev', VXDEV], { netns: h1.ns })).find((f) => f.dst === h2.ip);
    assert.ok(entry, 'h1 has an fdb entry towards h2');
    await expectBroken(
      'fdb entry deleted',
      () => sh(`bridge fdb del ${entry.mac} dev ${VXDEV} dst ${h2.ip} self 2>/dev/null || true`),
      `peer:${NET}:${peerSubnet}:fdb`,
      new RegExp(`^vxlan: fdb entry for peer h2's VtepMAC \\(${entry.mac} → ${h2.ip.replace(/\./g, '\\.')}\\) missing on weft\\.1`),
    );
    await sh(`bridge fdb replace ${entry.mac} dev ${VXDEV} dst ${h2.ip} self permanent`);

    // 3. IP forwarding off
    const fwd = await expectBroken(
      'ip_forward=0',
      () => sh('sysctl -qw net.ipv4.ip_forward=0'),
      'ip_forward',
      /^IP forwarding is off \(net\.ipv4\.ip_forward=0\): containers cannot reach other hosts$/,
    );
    assert.equal(fwd.findings.find((f) => f.check === 'ip_forward')!.fix, 'sysctl -w net.ipv4.ip_forward=1');
    await sh('sysctl -qw net.ipv4.ip_forward=1');

    // 4. the bridge down (and the human output names it with its fix)
    await expectBroken('bridge down', () => sh('ip link set weft0 down'), 'bridge:weft0', /^bridge weft0 is down: containers of drnet on this host are cut off$/);
    const humanDown = await doctor(h1.ns, ['--api', a1.api, '--store', storeUrl]);
    assert.equal(humanDown.code, 1);
    assert.match(humanDown.stdout, /^✗ bridge weft0 is down: containers of drnet on this host are cut off\n {4}fix: ip link set weft0 up$/m);
    assert.match(humanDown.stdout, /^1 error\(s\), 0 warning\(s\)$/m);
    await sh('ip link set weft0 up');

    // 5. FORWARD policy DROP and weft's jump gone (what a Docker install does to a host)
    await expectBroken(
      'FORWARD DROP without the jump',
      () => sh('iptables -w 5 -P FORWARD DROP && (iptables -w 5 -D FORWARD -j WEFT-FORWARD 2>/dev/null || true)'),
      'iptables',
      new RegExp(`^FORWARD policy is DROP and weft's accept rules are not in FORWARD \\(Docker does this\\): traffic to ${CIDR.replace(/\./g, '\\.')} is dropped$`),
    );
    // back as it was: policy ACCEPT, and the jump where weft's chain exists
    await sh('iptables -w 5 -P FORWARD ACCEPT; if iptables -w 5 -S WEFT-FORWARD >/dev/null 2>&1; then iptables -w 5 -C FORWARD -j WEFT-FORWARD 2>/dev/null || iptables -w 5 -I FORWARD 1 -j WEFT-FORWARD; fi');

    // 6. the bridge's MTU above the backend's
    await expectBroken(
      'bridge MTU 1500',
      () => sh('ip link set weft0 mtu 1500'),
      'mtu:weft0',
      /^MTU of weft0 \(1500\) is larger than the backend's \(1450\): large packets are dropped$/,
    );
    await sh('ip link set weft0 mtu 1450');

    // everything repaired: healthy again, and the data plane works again
    await healthy('after the repairs');
    assert.ok(await tb.ping(c1, ips[1]!, { count: 1, timeoutSec: 2 }), 'h1-c1 pings h2-c1 after the repairs');

    // 7. the agent stopped (by PID)
    await a1.stop('SIGTERM');
    const down = await doctor(h1.ns, opts);
    assert.equal(down.code, 1, describe(down));
    const agentFinding = down.findings.find((f) => f.check === 'agent');
    assert.ok(agentFinding && !agentFinding.ok && agentFinding.severity === 'error', describe(down));
    assert.equal(agentFinding.message, `no agent answers at ${a1.api}: nothing follows peers or renews this host's lease`);
  } finally {
    await teardown();
    if (tb) {
      const left = (await ipJson<Array<{ name: string }>>(['netns', 'list'])).map((n) => n.name).filter((n) => n === tb!.prefix || n.startsWith(`${tb!.prefix}-`));
      assert.deepEqual(left, [], 'namespaces left behind');
    }
  }
});
