/**
 * The Docker front end for the network models: two namespaced hosts with a real dockerd each and a weft
 * agent serving the plugin. `docker network create -d weft -o weft.backend=l2` and `-o backend=macvlan` on
 * one host; containers on both hosts ping each other by IP in the one subnet.
 */
import '../src/backends/all.js';
import assert from 'node:assert/strict';
import { openStore } from '../src/store/index.js';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { AgentProcess } from '../src/testbed/agents.js';
import { createTestbed, type TestbedHost } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';
import { DOCKERD, ensureBusyboxImage, run, startDockerd, type Dockerd } from './helpers/dockerd.js';

const skip = process.getuid?.() !== 0 ? 'needs root (network namespaces)' : !existsSync(DOCKERD) ? `needs dockerd (${DOCKERD})` : false;

test('docker network create -d weft -o backend=l2 / macvlan: containers on two hosts ping in one subnet', { skip, timeout: 300_000 }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wmd-'));
  const storeUrl = `sqlite://${dir}/weft.db`;
  await (await openStore(storeUrl, { create: true })).close(); // agents never create a database
  const tb = await createTestbed({ hosts: 2 });
  const daemons: Dockerd[] = [];
  const agents: AgentProcess[] = [];
  t.after(async () => {
    for (const a of agents) await a.stop().catch(() => {});
    for (const d of daemons) await d.stop().catch(() => {});
    await tb.destroy();
    await rm(dir, { recursive: true, force: true });
  });
  for (const h of tb.hosts as TestbedHost[]) {
    const d = await startDockerd({ netns: h.ns, dir: path.join(dir, h.id) });
    daemons.push(d);
    await ensureBusyboxImage(d);
    const a = new AgentProcess(h, { storeUrl, dir, args: ['--docker', '--docker-plugin-dir', d.pluginDir, '--docker-host', `unix://${d.socket}`] });
    agents.push(await a.start());
  }
  const [A, B] = daemons as [Dockerd, Dockerd];

  for (const [name, subnet, opt] of [
    ['l2net', '10.91.0.0/16', 'weft.backend=l2'],
    ['mvnet', '10.92.0.0/16', 'backend=macvlan'],
  ] as const) {
    await A.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', subnet, '-o', opt, name]);
    await waitFor(`${name} on B`, 20_000, async () => (await B.docker(['network', 'inspect', '-f', '{{.Driver}}', name])).stdout.trim() === 'weft');
    await B.dockerOk(['run', '-d', '--name', `srv-${name}`, '--network', name, 'busybox:local', 'sleep', '300']);
    const ipB = await B.dockerOk(['inspect', '-f', `{{.NetworkSettings.Networks.${name}.IPAddress}}`, `srv-${name}`]);
    const st = await agents[1]!.status();
    const net = st?.networks.find((n) => n.name === name);
    assert.equal(net?.backend, opt.split('=')[1], `${name} runs the backend the -o option named`);
    const out = await A.dockerOk(['run', '--rm', '--network', name, 'busybox:local', 'sh', '-c', `ip -o -4 addr show eth0; ping -c 2 -W 2 ${ipB}`], { timeoutMs: 60_000 });
    assert.match(out, new RegExp(`inet 10\\.9[12]\\.\\d+\\.\\d+/16 `), `${name}: an address with the whole network's prefix`);
    assert.match(out, /2 packets received/, `${name}: A's container pings B's ${ipB}:\n${out}`);
    if (name === 'l2net') {
      // l2 programs Docker containers' MACs too: A's VXLAN port sends to B's container without flooding
      const mac = await B.dockerOk(['inspect', '-f', `{{.NetworkSettings.Networks.${name}.MacAddress}}`, `srv-${name}`]);
      const dev = `wl2.${(net?.status as { device?: string } | undefined)?.device?.split('.')[1] ?? '1'}`;
      await waitFor(`B's container MAC ${mac} in A's fdb of ${dev}`, 15_000, async () => {
        const r = await run('bridge', ['-n', tb.hosts[0]!.ns, 'fdb', 'show', 'dev', dev]);
        return r.stdout.includes(`${mac} dst ${tb.hosts[1]!.ip}`);
      });
    }
  }
  // a subnet overlapping another weft network is refused by `docker network create` itself
  const overlap = await A.docker(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.91.128.0/17', 'bad']);
  assert.notEqual(overlap.code, 0);
  assert.match(overlap.stderr, /overlaps network "l2net"/);
});
