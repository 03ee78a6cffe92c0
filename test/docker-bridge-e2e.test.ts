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

/**
 * flannel's DOCKER_NETWORK_OPTIONS path with real dockerd: agent → `weft docker-opts` → dockerd started
 * with what it printed. Containers on Docker's default bridge (no --network) on two hosts ping each other
 * and a weft-attached container; no address is handed out twice.
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
  // a second weft attach on h2 never takes an address Docker hands out
  const second = await agents[1]!.attach(await tb.addContainer(h2, 'w2'));
  assert.ok(!cidrContains(ips[1]!.replace(/\.\d+$/, '.128/25'), second.address.split('/')[0]!), `second weft address ${second.address} stays in the lower half`);
});
