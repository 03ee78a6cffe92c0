import '../src/backends/all.js';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import type { AgentStatus } from '../src/agent/types.js';
import { createNetwork } from '../src/config/registry.js';
import { openStore } from '../src/store/index.js';
import { AgentProcess, runWeft } from '../src/testbed/agents.js';
import { createTestbed, nsExec, type Testbed } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';
import { needsRoot } from './helpers/require-root.js';

/**
 * /metrics against `weft status --json` on a 2-host vxlan test bed (2 containers on h1, 1 on h2): scraped on
 * the agent's --metrics-addr inside h1's namespace (TCP) and on its API socket; every gauge equals what the
 * status says. The test bed is always destroyed; agents are stopped by PID.
 */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-metrics-e2e-'));
const agents: AgentProcess[] = [];
let tb: Testbed | undefined;
after(async () => {
  for (const a of agents) await a.stop('SIGKILL').catch(() => {});
  await tb?.destroy().catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Prometheus text → "name{labels}" → value. */
function parseProm(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    const hit = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (hit) m.set(`${hit[1]}${hit[2] ?? ''}`, Number(hit[3]));
  }
  return m;
}

test('every gauge on /metrics equals what `weft status --json` says', { timeout: 120_000, skip: needsRoot('curl') }, async () => {
  tb = await createTestbed({ hosts: 2 });
  const storeUrl = `sqlite://${path.join(dir, 'weft.db')}`;
  const store = await openStore(storeUrl, { create: true });
  try {
    await createNetwork(store, 'mnet', { Network: '10.214.0.0/16', Backend: { Type: 'vxlan' } });
  } finally {
    await store.close();
  }
  for (const h of tb.hosts) agents.push(await new AgentProcess(h, { storeUrl, dir, leaseTtlSeconds: 60, args: ['--metrics-addr', '127.0.0.1:9402'] }).start());
  await Promise.all(agents.map((a) => a.waitForPeers(1)));
  const [a1, a2] = agents as [AgentProcess, AgentProcess];
  for (const n of ['c1', 'c2']) await a1.attach(await tb.addContainer(a1.host, n));
  await a2.attach(await tb.addContainer(a2.host, 'c1'));

  // the background probe has counted the endpoints and pinged the peer
  let st!: AgentStatus;
  await waitFor('status shows 2 endpoints and a probed peer', 15_000, async () => {
    const r = await runWeft(['status', '--api', a1.api, '--json']);
    st = JSON.parse(r.stdout) as AgentStatus;
    return st.networks[0]?.endpoints === 2 && st.networks[0].peers[0]?.reachable === true;
  });
  const scrape = await nsExec(a1.host.ns, ['curl', '-sS', '--max-time', '5', 'http://127.0.0.1:9402/metrics']);
  const m = parseProm(scrape.stdout);
  const n = st.networks[0]!;
  const peer = n.peers[0]!;
  const L = '{network="mnet"}';
  assert.equal(m.get(`weft_peers${L}`), n.peers.length);
  assert.equal(m.get(`weft_leases${L}`), n.peers.length + 1);
  assert.equal(m.get(`weft_endpoints${L}`), n.endpoints);
  assert.equal(m.get(`weft_ipam_used${L}`), n.ipam!.used);
  assert.equal(m.get(`weft_ipam_free${L}`), n.ipam!.size - n.ipam!.used);
  assert.equal(m.get(`weft_peer_reachable{network="mnet",peer="${peer.hostId}",public_ip="${peer.publicIp}"}`), 1);
  assert.equal(m.get('weft_store_up'), st.store!.healthy ? 1 : 0);
  assert.equal(m.get(`weft_backend_healthy{network="mnet",backend="vxlan"}`), n.status!.healthy ? 1 : 0);
  const expiry = m.get(`weft_lease_expiry_seconds${L}`)!;
  assert.ok(Math.abs(expiry - (n.leaseExpiresAt! - st.now!) / 1000) < 30, `lease expiry ${expiry} vs status ${(n.leaseExpiresAt! - st.now!) / 1000}`);
  assert.ok((m.get('weft_reconciles_total{network="mnet",result="ok"}') ?? 0) >= 1, 'reconciles counted');
  assert.equal(m.get('weft_store_errors_total'), 0);

  // the same text on the API socket; TCP answers nothing but GET /metrics
  const viaSocket = await nsExec(a1.host.ns, ['curl', '-sS', '--max-time', '5', '--unix-socket', a1.api, 'http://weft/metrics']);
  assert.equal(parseProm(viaSocket.stdout).get(`weft_endpoints${L}`), 2);
  const other = await nsExec(a1.host.ns, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:9402/status']);
  assert.equal(other.stdout, '404');
});
