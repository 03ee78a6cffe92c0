import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import '../src/backends/all.js';
import { PID_FILE, stopWireguardGo, wgDeviceName } from '../src/backends/wireguard/index.js';
import { createNetwork } from '../src/config/registry.js';
import { openStore } from '../src/store/index.js';
import { ipJson } from '../src/system/ip.js';
import { AgentProcess } from '../src/testbed/agents.js';
import { createTestbed } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';

/**
 * Issue 11 item 3 with a real agent: a network's MTU override reaches subnet.env and the container's
 * interface; one larger than the underlay minus the backend's overhead is refused, and `weft status` says why.
 */

const skip = process.getuid?.() !== 0 ? 'needs root (network namespaces)' : !fs.existsSync('/usr/bin/wireguard-go') ? 'wireguard-go is not installed' : false;

test('MTU override: applied to subnet.env and containers when it fits, refused with the reason when too large', { skip, timeout: 90_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-mtu-'));
  const storeUrl = `sqlite://${path.join(dir, 'weft.db')}`;
  const tb = await createTestbed({ hosts: 1 });
  const agent = new AgentProcess(tb.hosts[0]!, { storeUrl, dir });
  try {
    const store = await openStore(storeUrl, { create: true });
    try {
      await createNetwork(store, 'fits', { Network: '10.81.0.0/16', MTU: 1300, Backend: { Type: 'wireguard' } });
      await createNetwork(store, 'big', { Network: '10.82.0.0/16', MTU: 1421, Backend: { Type: 'wireguard' } });
      await createNetwork(store, 'vx', { Network: '10.83.0.0/16', MTU: 1451, Backend: { Type: 'vxlan' } });
    } finally {
      await store.close();
    }
    await agent.start();
    const st = await waitFor('the agent to run "fits" and refuse the others', 15_000, async () => {
      const s = await agent.status();
      return s && s.networks.some((n) => n.name === 'fits') && s.failed?.big && s.failed?.vx ? s : undefined;
    });
    assert.equal(st.networks.find((n) => n.name === 'fits')!.mtu, 1300);
    assert.match(st.failed!.big!, /MTU 1421 is too large for the underlay: eth0 has MTU 1500 and wireguard needs 80 bytes of it \(at most 1420\)/);
    assert.match(st.failed!.vx!, /MTU 1451 is too large .* vxlan needs 50 bytes of it \(at most 1450\)/);
    assert.match(fs.readFileSync(path.join(agent.stateDir, 'fits', 'subnet.env'), 'utf8'), /^FLANNEL_MTU=1300$/m);
    const ns = await tb.addContainer(tb.hosts[0]!, 'c1');
    await agent.attach(ns, { network: 'fits' });
    const links = await ipJson<Array<{ ifname: string; mtu: number }>>(['link', 'show'], { netns: ns });
    assert.equal(links.find((l) => l.ifname === 'eth0')?.mtu, 1300);
  } finally {
    await agent.stop('SIGTERM').catch(() => {});
    await stopWireguardGo(path.join(agent.stateDir, 'fits', PID_FILE), wgDeviceName('fits', tb.hosts[0]!.id));
    await tb.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
