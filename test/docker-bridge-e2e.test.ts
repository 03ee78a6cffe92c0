import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { createNetwork } from '../src/config/registry.js';
import { cidrContains } from '../src/net/ipv4.js';
import { openStore } from '../src/store/index.js';
import { AgentProcess, runWeft } from '../src/testbed/agents.js';
import { createTestbed, nsExec, type Testbed, type TestbedHost } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';
import { ensureBusyboxImage, startDockerd, type Dockerd } from './helpers/dockerd.js';
import { needsRoot } from './helpers/require-root.js';
import { spawn } from 'node:child_process';
import { callAgent } from '../src/agent/client.js';
import { sleep } from '../src/testbed/wait.js';

/**
 * Runs tcpdump -n in namespace `ns` on `iface` until it has seen `count` ICMP echo requests matching
 * `filter` (or 15 s passed), with `send` run once it listens; returns "SRC > DST" of each request seen.
 * Seeing the source on the receiving side is what tells a NATed packet from one that kept its address.
 */
async function echoRequests(ns: string, iface: string, filter: string, count: number, send: () => Promise<unknown>): Promise<string[]> {
  const child = spawn('ip', ['netns', 'exec', ns, 'tcpdump', '-l', '-n', '-p', '-i', iface, '-c', String(count), `icmp[icmptype] == icmp-echo and (${filter})`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d));
  child.stderr.on('data', (d: Buffer) => (err += d));
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  try {
    for (let t = Date.now(); !/listening on/.test(err); await sleep(50)) {
      if (child.exitCode !== null || Date.now() - t > 15_000) throw new Error(`tcpdump in ${ns} did not start: ${err.trim()}`);
    }
    await send();
    await Promise.race([exited, sleep(15_000)]);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  return [...out.matchAll(/ IP (\d+\.\d+\.\d+\.\d+) > (\d+\.\d+\.\d+\.\d+): ICMP echo request/g)].map((m) => `${m[1]} > ${m[2]}`);
}

/**
 * flannel's DOCKER_NETWORK_OPTIONS path with real dockerd: agent → `weft docker-opts` → dockerd started
 * with what it printed. Containers on Docker's default bridge (no --network) on two hosts ping each other
 * and a weft-attached container; no address is handed out twice (docker-opts is refused while weft holds
 * one in Docker's half; without an agent it prints the plan the agent left). The receiving host's tcpdump
 * shows traffic to peers keeping the container's own source address and egress masqueraded by weft.
 */

let tb: Testbed | undefined;
const daemons: Dockerd[] = [];
const agents: AgentProcess[] = [];
let dir = '';
after(async () => {
  for (const d of daemons) await d.stop().catch(() => {});
  for (const a of agents) await a.stop('SIGKILL').catch(() => {});
  await tb?.destroy().catch(() => {});
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('docker-opts: default-bridge containers on two hosts reach each other and a weft container, no address twice', { timeout: 240_000, skip: needsRoot('dockerd', 'busybox') }, async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'wdb-'));
  const storeUrl = `sqlite://${dir}/weft.db`;
  tb = await createTestbed({ hosts: 2 });
  const [h1, h2] = tb.hosts as [TestbedHost, TestbedHost];
  const store = await openStore(storeUrl, { create: true });
  try {
    await createNetwork(store, 'dnet', { Network: '10.47.0.0/16', Backend: { Type: 'vxlan' } });
  } finally {
    await store.close();
  }
  for (const h of [h1, h2]) agents.push(await new AgentProcess(h, { storeUrl, dir, leaseTtlSeconds: 60 }).start());
  await Promise.all(agents.map((a) => a.waitForPeers(1, 20_000)));

  // a weft-attached container on h2 first: it takes the lowest address of h2's lower half
  const weftCt = await tb.addContainer(h2, 'w1');
  const weftEp = await agents[1]!.attach(weftCt);
  const weftIp = weftEp.address.split('/')[0]!;

  // a static address in the half of h1's lease Docker would take: docker-opts is refused and changes nothing
  const lease1 = (await agents[0]!.status())!.networks[0]!.subnet;
  const upper = lease1.replace(/\.0\/24$/, '.200');
  const pinned = await tb.addContainer(h1, 's1');
  await agents[0]!.attach(pinned, { address: upper });
  const refused = await runWeft(['docker-opts', '--api', agents[0]!.api]);
  assert.notEqual(refused.code, 0);
  assert.equal(refused.stdout, '');
  assert.equal(
    refused.stderr,
    `weft: cannot make docker0 the bridge of network dnet: Docker's IPAM would hand out ${lease1.replace(/\.0\/24$/, '.128/25')} (--fixed-cidr), where weft has already given ${upper} (${pinned}); detach it (attached again, weft gives them addresses below ${lease1.replace(/\.0\/24$/, '.128')}), then run \`weft docker-opts\` again\n`,
  );
  assert.equal((await agents[0]!.status())?.networks[0]?.bridge, 'weft0', 'still weft0');
  await callAgent(agents[0]!.api, 'POST', '/detach', { container: pinned });

  const ips: string[] = [];
  for (const [i, h] of [h1, h2].entries()) {
    const opts = await runWeft(['docker-opts', '--api', agents[i]!.api]);
    assert.equal(opts.code, 0, opts.stderr);
    const line = opts.stdout.trim();
    const m = /^--bip=(\S+) --fixed-cidr=(\S+) --mtu=(\d+) --ip-masq=false$/.exec(line);
    assert.ok(m, `docker-opts printed: ${line}`);
    const status = await agents[i]!.status();
    assert.equal(status?.networks[0]?.bridge, 'docker0', 'docker0 is the network bridge');
    // the agent left the plan: docker-opts with no agent answering prints the same options (dockerd at boot)
    const offline = await runWeft(['docker-opts', '--api', path.join(dir, 'no-agent.sock'), '--state-dir', agents[i]!.stateDir]);
    assert.equal(offline.stderr, '');
    assert.equal(offline.stdout.trim(), line, 'offline docker-opts prints what the agent printed');
    const d = await startDockerd({ netns: h.ns, dir: path.join(dir, `d${i}`), extraArgs: line.split(' ') });
    daemons.push(d);
    await ensureBusyboxImage(d);
    await d.dockerOk(['run', '-d', '--name', 'def', 'busybox:local', 'sleep', '600']);
    const ip = (await d.dockerOk(['inspect', '-f', '{{.NetworkSettings.IPAddress}}', 'def'])).trim();
    assert.ok(cidrContains(m[2]!, ip), `Docker's address ${ip} is in its --fixed-cidr ${m[2]}`);
    ips.push(ip);
  }
  assert.ok(!cidrContains(ips[1]!.replace(/\.\d+$/, '.128/25'), weftIp), `weft's address ${weftIp} is in the lower half`);
  assert.equal(new Set([...ips, weftIp]).size, 3, 'three distinct addresses');

  // h1's default-bridge container reaches h2's and the weft container (FORWARD accept rules land within a resync)
  const [d1] = daemons;
  for (const target of [ips[1]!, weftIp]) {
    await waitFor(`h1's default-bridge container reaches ${target}`, 60_000, async () => (await d1!.docker(['exec', 'def', 'ping', '-c', '1', '-W', '1', target])).code === 0);
  }
  // and the other way round, from the weft container to h1's Docker container
  await waitFor('the weft container reaches h1\'s Docker container', 30_000, async () => (await nsExec(weftCt, ['ping', '-n', '-q', '-c', '1', '-W', '1', ips[0]!], { allowFail: true })).code === 0);

  // weft's traffic to peers keeps its source address (no dockerd MASQUERADE, --ip-masq=false; weft's own rule
  // RETURNs inside the network): the receiving host sees h1's default-bridge container itself. A ping that
  // was NATed on the way would show h1's address there instead and fail this.
  for (const target of [ips[1]!, weftIp]) {
    const seen = await echoRequests(h2.ns, 'docker0', `dst host ${target}`, 2, () => d1!.docker(['exec', 'def', 'ping', '-c', '3', '-i', '0.3', '-W', '2', target]));
    assert.ok(seen.length >= 2, `h2 saw the echo requests to ${target}: ${seen.join(', ')}`);
    assert.deepEqual([...new Set(seen)], [`${ips[0]} > ${target}`], `h2 sees h1's default-bridge container ${ips[0]} as the source (not NATed)`);
  }
  const back = await echoRequests(h1.ns, 'docker0', `dst host ${ips[0]}`, 2, () => nsExec(weftCt, ['ping', '-n', '-q', '-c', '3', '-i', '0.3', '-W', '2', ips[0]!], { allowFail: true }));
  assert.deepEqual([...new Set(back)], [`${weftIp} > ${ips[0]}`], 'h1 sees the weft container as the source');
  // egress (out of the network, here to h2's underlay address) is masqueraded by weft: h2 sees h1's address
  const egress = await echoRequests(h2.ns, 'eth0', `dst host ${h2.ip}`, 2, async () => {
    const r = await d1!.docker(['exec', 'def', 'ping', '-c', '3', '-i', '0.3', '-W', '2', h2.ip]);
    assert.equal(r.code, 0, `egress ping from the default-bridge container: ${r.stdout}${r.stderr}`);
  });
  assert.ok(egress.length >= 2, `h2 saw the egress echo requests: ${egress.join(', ')}`);
  assert.deepEqual([...new Set(egress)], [`${h1.ip} > ${h2.ip}`], "egress leaves with h1's underlay address (masqueraded)");

  // a second weft attach on h2 never takes an address Docker hands out
  const second = await agents[1]!.attach(await tb.addContainer(h2, 'w2'));
  assert.ok(!cidrContains(ips[1]!.replace(/\.\d+$/, '.128/25'), second.address.split('/')[0]!), `second weft address ${second.address} stays in the lower half`);
});
